"""Any diffusers scheduler as a solver: DPM-Solver++, Euler (ancestral), Heun, UniPC, PNDM and the
rest, under the same driver (guided U-Net call, interventions, noise bank) as DDPM and DDIM.

``Sampler(model, steps, method=NAME)`` takes a name of the vocabulary (``SCHEDULERS``) or any diffusers
scheduler class name; options pass through to the scheduler's constructor (``options={"solver_order":
3}``, ``--scheduler-opt solver_order=3``).

How a call of the U-Net is made, for every scheduler (diffusers' own loop, written once):

- ``x_S`` is the noise bank's ``x_S`` times the scheduler's ``init_noise_sigma`` (as a pipeline's
  ``prepare_latents`` does), so one seed starts from the same noise under every scheduler.
- Each call feeds the U-Net ``scale_model_input(x, tau)`` at the scheduler's timestep ``tau``.
- The output becomes an epsilon prediction (the scheduler is built with ``prediction_type="epsilon"``):
  unchanged for an epsilon model, converted for a v or sample model. When the sampler clips
  (``clip_x0``, on for pixel models) the scheduler takes the clipped ``x_est0`` itself
  (``prediction_type="sample"``), and the schedulers that take no ``"sample"`` (PNDM) the epsilon of
  the clipped ``x_est0`` at the call's ``alpha_bar``. A learned variance's channels are dropped.
- A stochastic scheduler's noise comes from the bank: its ``generator`` is one ``torch.Generator`` per
  sample, seeded by the bank's key of (seed, step), so the first draw of step t is the bank's ``eps_t``
  of that sample, whatever its batch-mates.

Steps: the step clock (``sampling.clock``) maps the scheduler's calls to plan steps; every call of a
step (Heun's two, PNDM's Runge-Kutta four) takes the step's action. ``SkipSteps`` and ``StopEarly``
are refused: the walk is the scheduler's (a multistep history, sigmas set for S steps); take fewer
steps. State: everything a scheduler carries between calls is a ``SolverState``, copied by the sweep
engine at a branch point.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..checks import check_eta, check_scheduler_options, check_variance, parse_scheduler_option
from ..models import DiffusionModel
from ..noise import NoiseBank
from .clock import ClockError, StepClock, begins_step
from .records import SamplerError
from .solver import Solver, UNetCall

__all__ = ["SchedulerSolver", "SolverState", "SCHEDULERS", "scheduler_names", "parse_option", "resolve_scheduler",
           "check_options"]

# the vocabulary: name -> (diffusers class, its settings for that name)
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "dpm++": ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2)),
    "dpm++-sde": ("DPMSolverMultistepScheduler", dict(algorithm_type="sde-dpmsolver++", solver_order=2)),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "pndm": ("PNDMScheduler", dict(skip_prk_steps=True)),
    "lms": ("LMSDiscreteScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
}


def scheduler_names() -> list[str]:
    """Every name ``method=`` takes: unetscope's own samplers, then the vocabulary."""
    return ["ddpm", "ddim", *SCHEDULERS]


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--scheduler-opt``: VALUE as JSON where it reads as JSON (3, 0.5, true, "x"), else
    as text; NaN and infinities refused (``unetscope.checks.parse_scheduler_option``, a SamplerError)."""
    return parse_scheduler_option(text, SamplerError)


def resolve_scheduler(method: str):
    """(name, diffusers class, settings) of a scheduler name or class name; one line when unknown."""
    import diffusers

    if method in SCHEDULERS:
        cls_name, settings = SCHEDULERS[method]
    else:
        cls_name, settings = method, {}
    cls = getattr(diffusers, cls_name, None) if isinstance(cls_name, str) and cls_name.endswith("Scheduler") else None
    if cls is None or not inspect.isclass(cls) or not hasattr(cls, "set_timesteps") or not hasattr(cls, "step"):
        raise SamplerError(f"unknown scheduler {method!r}: use one of {', '.join(scheduler_names())}, "
                           "or a diffusers scheduler class name (e.g. DPMSolverSinglestepScheduler)")
    return method, cls, dict(settings)


def check_options(cls, options: Mapping | None) -> dict:
    """The user's scheduler options: keys the class takes, finite values, none that unetscope sets
    (``unetscope.checks.check_scheduler_options``, a SamplerError)."""
    return check_scheduler_options(options, cls, SamplerError)


@dataclass
class SolverState:
    """One group of samples' scheduler between calls: the diffusers scheduler (its history, step
    index, half-done step), the samples' seeds (their noise) and the calls made so far."""

    scheduler: Any
    seeds: list[int]
    calls: int = 0  # U-Net calls made
    generators: list | None = field(default=None, repr=False)  # the current step's, per sample

    def copy(self) -> "SolverState":
        """An independent copy at a step boundary (a branch point of the sweep engine)."""
        if self.generators is not None:
            raise SamplerError("a scheduler state is copied between steps, not inside one")
        return SolverState(copy.deepcopy(self.scheduler), list(self.seeds), self.calls)

    @property
    def n(self) -> int:
        return len(self.seeds)


class SchedulerSolver(Solver):
    """A diffusers scheduler over ``steps`` steps. ``eta`` and ``variance`` are DDIM's and DDPM's:
    refused here."""

    def __init__(self, model: DiffusionModel, steps: int, method: str = "dpm++", eta: float = 0.0,
                 variance: str | None = None, options: Mapping | None = None, clip_x0: bool = False):
        name, cls, settings = resolve_scheduler(method)
        check_eta(eta, name, SamplerError)  # DDIM's and DDPM's: refused with a scheduler
        check_variance(variance, name, SamplerError)
        self.model, self.steps, self.name, self.clip_x0 = model, steps, name, clip_x0
        self.options, self.scheduler_class = check_options(cls, options), cls
        self._settings = {**settings, **self.options}
        self._pred = "epsilon"  # what the scheduler is handed: "epsilon", or the clipped x_est0 ("sample")
        self._alphas_cumprod = model.schedule.alphas_cumprod.double()
        try:
            sched = self.new_scheduler()
            taus = [float(v) for v in sched.timesteps]
            if not _repeats_allowed(sched) and len(set(taus)) < len(taus):
                raise SamplerError(f"{cls.__name__} with {self.options or 'its defaults'} puts {self.steps} steps on repeated "
                                   f"timesteps ({', '.join(f'{v:g}' for v in taus[:6])}{', ...' if len(taus) > 6 else ''}) of "
                                   "this model's schedule, which diffusers cannot step; take other options or steps")
            self.clock = self._clock(sched)
            if clip_x0:
                # the clipped x_est0 goes to the scheduler as it is (prediction_type="sample") where the
                # scheduler takes it: a round trip through epsilon multiplies rounding by 1/sqrt(alpha_bar),
                # ~100x at a cosine schedule's first step
                self._pred = "sample"
                try:
                    self._clock(self.new_scheduler())
                except Exception:  # noqa: BLE001 - PNDM takes epsilon and v only
                    self._pred = "epsilon"
        except SamplerError:
            raise
        except Exception as e:  # noqa: BLE001 - diffusers refuses a value (e.g. an unknown algorithm_type)
            raise SamplerError(f"{cls.__name__} refuses {self.options or 'its defaults'} at {self.steps} steps: "
                               f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}") from None

    @classmethod
    def accepts(cls, method: str) -> bool:
        return isinstance(method, str)  # the vocabulary or a class name; resolve_scheduler says which are known

    def describe(self) -> dict:
        return dict(method=self.name, scheduler=self.scheduler_class.__name__, options=dict(self.options))

    def settings(self) -> dict:
        return dict(method=self.name, eta=0.0, variance=None, options=dict(self.options))

    def new_scheduler(self):
        """A fresh diffusers scheduler on the model's betas, epsilon-predicting, set to ``steps``."""
        sch = self.model.schedule
        s = self.scheduler_class(num_train_timesteps=sch.num_train_timesteps, trained_betas=sch.betas.numpy(),
                                 prediction_type=self._pred, **self._settings)
        s.set_timesteps(self.steps, device=self.model.device)
        return s

    def _clock(self, sched) -> StepClock:
        try:
            clock = StepClock.of(sched)
        except ClockError as e:
            raise SamplerError(str(e)) from None
        if clock.steps != self.steps:
            raise SamplerError(f"{type(sched).__name__} with {self._settings or 'its defaults'} calls the U-Net "
                               f"{len(clock.step_of_call)} times in {clock.steps} steps for {self.steps} asked: unetscope "
                               "maps plan steps to its calls only where the scheduler takes the steps it was set to")
        return clock

    def calls(self, t: int) -> int:
        """U-Net calls at plan step t (2 for a Heun step but the last, 4 for a PNDM warm-up step, else 1)."""
        return self.clock.calls(t)

    def new_state(self, seeds: Sequence[int]) -> SolverState:
        return SolverState(self.new_scheduler(), [int(s) for s in seeds])

    def initial(self, state: SolverState, x_S: torch.Tensor) -> torch.Tensor:
        """``x_S`` in the scheduler's space: the bank's noise times ``init_noise_sigma``."""
        return x_S * state.scheduler.init_noise_sigma

    def begin(self, states, t, n) -> None:
        if not states or not all(isinstance(s, SolverState) for s in states) or sum(s.n for s in states) != n:
            raise SamplerError("a scheduler's step needs the samples' SolverState (sampler.new_state(seeds)) for its rows")
        if any(s.calls != states[0].calls for s in states):
            raise SamplerError("stacked scheduler states must stand at the same call")
        s0, k = states[0].scheduler, states[0].calls
        if k >= len(s0.timesteps):
            raise SamplerError(f"the scheduler has taken all of its {self.steps} steps")
        if not begins_step(s0):
            raise SamplerError(f"step {t} asked while the scheduler is inside a step")
        for st in states:
            st.generators = NoiseBank(st.seeds, self.model.sample_shape).generators(t)

    def model_input(self, states, x, t, k) -> UNetCall:
        s0 = states[0].scheduler
        tau = s0.timesteps[states[0].calls]
        x_in = torch.cat([st.scheduler.scale_model_input(x[i:j], tau) for st, (i, j) in zip(states, _bounds(states))])
        tt = torch.full((x.shape[0],), float(tau), device=x.device)
        tt = tt.long() if not torch.is_floating_point(s0.timesteps) else tt
        return UNetCall(x_in, tt, self._alpha_bar(s0, tau), tau)

    def advance(self, states, x, t, k, call, x0, eps, frac, land, z=None):
        given = x0 if self._pred == "sample" else eps
        outs = []
        for st, (i, j) in zip(states, _bounds(states)):
            sch = st.scheduler
            kw = {"generator": st.generators} if "generator" in inspect.signature(sch.step).parameters else {}
            outs.append(sch.step(given[i:j], call.key, x[i:j], **kw).prev_sample.to(x.dtype))
            st.calls += 1
        if k == self.calls(t) - 1:
            for st in states:
                st.generators = None
        return torch.cat(outs)

    def _alpha_bar(self, sched, tau) -> float:
        """alpha_bar at the call: from the input scaling of a sigma scheduler (1 / (1 + sigma^2)), else
        the training schedule's at tau (interpolated in log sigma for a fractional tau)."""
        c = float(sched.scale_model_input(torch.ones(1, device=self.model.device), tau).flatten()[0])
        if c != 1.0:
            return c * c
        ac, tf = self._alphas_cumprod, float(tau)
        lo = min(max(int(math.floor(tf)), 0), ac.numel() - 1)
        hi, w = min(lo + 1, ac.numel() - 1), tf - math.floor(tf)
        if w == 0 or hi == lo:
            return float(ac[lo])
        ls = [0.5 * math.log((1 - float(ac[k])) / float(ac[k])) for k in (lo, hi)]
        sigma = math.exp((1 - w) * ls[0] + w * ls[1])
        return 1.0 / (1.0 + sigma * sigma)


def _repeats_allowed(sched) -> bool:
    """Heun, DPM2 and PNDM visit a timestep twice by design (a step's two calls)."""
    return hasattr(sched, "state_in_first_order") or hasattr(sched, "ets")


def _bounds(states: list[SolverState]) -> list[tuple[int, int]]:
    out, i = [], 0
    for s in states:
        out.append((i, i + s.n))
        i += s.n
    return out
