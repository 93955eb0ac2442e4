"""One step clock: the plan step that each U-Net call of a diffusers scheduler belongs to.

A plan's step t (``S`` first, like the paper) is the scheduler's (S - t + 1)-th step. Most schedulers
call the U-Net once a step. Heun, KDPM2 (ancestral) and DPM-Solver SDE call it twice (the second call
at the next or an interpolated timestep), PNDM's Runge-Kutta warm-up four times a step, and PLMS
without the warm-up redoes its first step once. The clock reads which calls begin a step off a dry
run of a copy of the scheduler on one number, so unetscope's sampler, the sweep engine and
``accelerate``'s hook map calls to steps through this one code, for every scheduler with a ``step()``.

Live, a call's index is the scheduler's own count (``step_index``, PNDM's ``counter``), or, for a
scheduler that keeps none (DDIM, DDPM), the timestep's place in ``scheduler.timesteps``.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import torch

from ..errors import UnetscopeError

__all__ = ["StepClock", "ClockError", "begins_step", "call_index"]


class ClockError(UnetscopeError, ValueError):
    """A scheduler whose calls cannot be mapped to steps."""


def begins_step(sched) -> bool:
    """Whether the scheduler's next U-Net call begins a step (else it continues the step begun)."""
    if hasattr(sched, "state_in_first_order"):  # Heun, KDPM2 (ancestral), DPM-Solver SDE
        return bool(sched.state_in_first_order)
    if hasattr(sched, "counter") and hasattr(sched, "ets"):  # PNDM
        prk = getattr(sched, "prk_timesteps", None)
        c = sched.counter
        if not sched.config.skip_prk_steps and prk is not None and c < len(prk):
            return c % 4 == 0  # Runge-Kutta: four calls a step
        return not (sched.config.skip_prk_steps and c == 1)  # PLMS's call 1 redoes step 1
    return True


def call_index(sched, timestep=None) -> int | None:
    """The index of the scheduler's next call in ``scheduler.timesteps`` (None: it cannot tell)."""
    if hasattr(type(sched), "step_index"):
        idx = sched.step_index
        if idx is None:  # no step taken yet in this generation: the first call (img2img: its begin index)
            idx = getattr(sched, "begin_index", None) or 0
        return int(idx)
    if hasattr(sched, "counter") and hasattr(sched, "ets"):
        return int(sched.counter)
    if timestep is not None and getattr(sched, "timesteps", None) is not None:
        hits = (torch.as_tensor(sched.timesteps).flatten().double() == float(timestep)).nonzero().flatten()
        if len(hits) == 1:
            return int(hits[0])
    return None


@dataclass(frozen=True)
class StepClock:
    """Calls -> steps for one setting of a scheduler: ``step_of_call[k]`` is the plan step t of its
    k-th U-Net call (S first), ``begins[k]`` whether that call begins the step."""

    steps: int
    step_of_call: tuple[int, ...]
    begins: tuple[bool, ...]

    @classmethod
    def of(cls, sched) -> "StepClock":
        """The clock of ``sched`` (set by ``set_timesteps``), read off a dry run of a copy of it on one
        number from its first call (the original is not touched)."""
        s = copy.deepcopy(sched)
        for attr in ("_step_index", "_begin_index"):  # the copy walks from call 0, whatever the original did
            if hasattr(s, attr):
                setattr(s, attr, None)
        x = torch.zeros(1, 1, device=s.timesteps.device if torch.is_tensor(s.timesteps) else "cpu")
        takes_gen = "generator" in inspect.signature(s.step).parameters
        g = torch.Generator(device=x.device).manual_seed(0)
        begins = []
        for tau in s.timesteps:
            begins.append(begins_step(s))
            s.scale_model_input(x, tau)
            x = s.step(torch.zeros_like(x), tau, x, **({"generator": g} if takes_gen else {})).prev_sample
        if not begins or not begins[0]:
            raise ClockError(f"{type(sched).__name__}'s first call does not begin a step")
        return cls.from_begins(begins)

    @classmethod
    def from_begins(cls, begins) -> "StepClock":
        S = sum(bool(b) for b in begins)
        t, steps = S + 1, []
        for b in begins:
            t -= bool(b)
            steps.append(t)
        return cls(S, tuple(steps), tuple(bool(b) for b in begins))

    def calls(self, t: int) -> int:
        """U-Net calls of step t."""
        return self.step_of_call.count(t)

    def step(self, k: int) -> int:
        """The plan step of call k."""
        if not 0 <= k < len(self.step_of_call):
            raise ClockError(f"call {k} is past the scheduler's {len(self.step_of_call)} calls of {self.steps} steps")
        return self.step_of_call[k]
