"""The small interface between the sampling driver and a solver (k-diffusion's one contract, split
where unetscope needs to write into the step).

The driver (``Sampler``) owns everything every sampler shares: validation, the guided U-Net call
under the step's action, NaN diagnosis, chunks, ``compare`` and the progressive loop. A solver owns
only its math and its state between calls:

- ``new_state(seeds)``: what it carries between calls for a group of samples (copied by the sweep
  engine at a branch point);
- ``initial(state, x_S)``: the noise bank's ``x_S`` in the solver's space;
- ``calls(t)``: U-Net calls of step t;
- ``begin(states, t)``: checks and per-step setup before step t's first call;
- ``model_input(states, x, t, k)``: the U-Net's input of call k of step t (a ``UNetCall``);
- ``advance(states, x, t, k, call, x0, eps, frac, land, z)``: the solver's update after that call.

A solver is built as ``cls(model, steps, method, eta=, variance=, options=, clip_x0=)`` (the clipping
is the driver's; a solver that hands the clipped x_est0 on, as the schedulers do, reads ``clip_x0``).
A new sampler is one file: a ``Solver`` subclass, added to ``sampling.SOLVERS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..plan import Plan, SkipSteps, StopEarly
from .records import SamplerError

__all__ = ["Solver", "UNetCall"]


@dataclass
class UNetCall:
    """One U-Net call a solver asks for: its input (model space), the training timesteps (N,), the
    alpha_bar that converts the output, and the solver's own key of the call (a scheduler's timestep)."""

    x_in: torch.Tensor
    timesteps: torch.Tensor
    alpha_bar: float
    key: Any = None


class Solver:
    """A sampler's math behind the driver. ``jumps``: whether ``SkipSteps``/``StopEarly`` take effect
    (else the plan may hold U-Net interventions only); ``stateless``: whether ``x_t`` is the whole
    state, so that a run resumes from a cached ``x_t`` alone."""

    name: str = ""
    jumps = False
    stateless = False
    uses_variance = False  # whether a learned variance's channels are read (else dropped)

    @classmethod
    def accepts(cls, method: str) -> bool:
        """Whether ``method`` names this solver."""
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def settings(self) -> dict:
        """The keywords of ``Sampler`` that build this solver again (method, eta, variance, options)."""
        raise NotImplementedError

    def calls(self, t: int) -> int:
        return 1

    def check_plan(self, plan: Plan) -> None:
        """Refuse what this solver cannot walk (after ``Plan.check``): one that does not jump takes the
        U-Net's interventions only."""
        walk = [] if self.jumps else [it for it in plan.interventions if isinstance(it, (SkipSteps, StopEarly))]
        if walk:
            raise SamplerError(f"scheduler {self.name!r} takes the U-Net's interventions (DropBlocks, ZeroSkips, ReuseEncoder, "
                               f"AdaptiveCache) only, got {walk[0]!r}: its walk is the scheduler's; take fewer steps")

    def new_state(self, seeds: Sequence[int]):
        raise NotImplementedError

    def initial(self, state, x_S: torch.Tensor) -> torch.Tensor:
        return x_S

    def begin(self, states: list, t: int, n: int) -> None:
        """Before step t's first call, on the ``states`` of its ``n`` rows (may be empty where the
        solver needs none)."""

    def model_input(self, states: list, x: torch.Tensor, t: int, k: int) -> UNetCall:
        raise NotImplementedError

    def advance(self, states: list, x: torch.Tensor, t: int, k: int, call: UNetCall, x0: torch.Tensor,
                eps: torch.Tensor, frac, land: int, z=None) -> torch.Tensor:
        raise NotImplementedError
