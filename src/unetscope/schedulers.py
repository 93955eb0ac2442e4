"""Any diffusers scheduler as a sampler: DPM-Solver++, Euler (ancestral), Heun, UniPC, PNDM and the rest,
driving the same guided U-Net call, the same U-Net interventions and the same noise bank as ``Sampler``.

``Sampler(model, steps, method=NAME)`` builds a ``SchedulerSampler`` for every name but ``ddpm`` and
``ddim`` (unetscope's own, exact implementations). Names are one vocabulary (``SCHEDULERS``), or any
diffusers scheduler class name; options pass through to the scheduler's constructor
(``options={"solver_order": 3}``, ``--scheduler-opt solver_order=3``).

How a call of the U-Net is made, for every scheduler (diffusers' own loop, written once):

- ``x_S`` is the noise bank's ``x_S`` times the scheduler's ``init_noise_sigma`` (as a pipeline's
  ``prepare_latents`` does), so one seed starts from the same noise under every scheduler.
- Each call feeds the U-Net ``scale_model_input(x, tau)`` at the scheduler's timestep ``tau``, through
  the model's guided runner (``Denoiser``), under the plan's action for the call's step.
- The output becomes an epsilon prediction (the scheduler is built with ``prediction_type="epsilon"``):
  unchanged for an epsilon model, converted for a v or sample model. When the sampler clips
  (``clip_x0``, on for pixel models) the scheduler takes the clipped ``x_est0`` itself
  (``prediction_type="sample"``), and the schedulers that take no ``"sample"`` (PNDM) the epsilon of
  the clipped ``x_est0`` at the call's ``alpha_bar``. A learned variance's channels are dropped (these
  solvers take none).
- A stochastic scheduler's noise comes from the bank: its ``generator`` is one ``torch.Generator`` per
  sample, seeded by the bank's key of (seed, step) for the step's noise, so the first draw of step t
  is the bank's ``eps_t`` of that sample, whatever its batch-mates.

Steps. The plan's step t (``S .. 1``) is the scheduler's (S - t + 1)-th step. Heun, DPM2 and PNDM's
first step call the U-Net twice in one step: both calls take the step's action (a cache is refreshed
only by a call that computed the part). ``SkipSteps`` and ``StopEarly`` are refused: the walk is the
scheduler's (a multistep history, and sigmas set for S steps); take fewer steps.

State. Everything a scheduler carries between calls (a multistep history, its step index, a Heun
step's first half) is a ``SolverState``, copied by the sweep engine at a branch point, so prefix
sharing runs on every scheduler.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .models import Cond, DiffusionModel
from .noise import NoiseBank
from .plan import NO_ACTION, Plan, SkipSteps, StepAction, StopEarly
from .sampler import KEEP, NonFiniteSampleError, Sampler, SamplerError, StepOutput, Trajectory, check_seeds, x0_and_eps
from .timing import synchronize

__all__ = ["SchedulerSampler", "SolverState", "SCHEDULERS", "scheduler_names", "parse_option", "resolve_scheduler",
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
# set by unetscope from the model (its training schedule) and the guided call (epsilon)
OWNED = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")
MULTISTEP = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler", "PNDMScheduler",
             "LMSDiscreteScheduler", "DPMSolverSinglestepScheduler", "SASolverScheduler")


def scheduler_names() -> list[str]:
    """Every name ``method=`` takes: unetscope's own samplers, then the vocabulary."""
    return ["ddpm", "ddim", *SCHEDULERS]


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--scheduler-opt``: VALUE as JSON where it reads as JSON (3, 0.5, true, "x"), else
    as text; NaN and infinities refused."""
    import json

    if not isinstance(text, str) or "=" not in text or not text.split("=", 1)[0].strip():
        raise SamplerError(f"a scheduler option is KEY=VALUE (e.g. solver_order=3), got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    low = raw.lower()
    if low in ("true", "false"):
        return key, low == "true"
    if low.lstrip("+-") in ("nan", "inf", "infinity"):
        raise SamplerError(f"scheduler option {key}={raw} is not a finite number")
    try:
        value = json.loads(raw, parse_constant=lambda c: float("nan"))
    except ValueError:
        value = raw
    return key, value


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
    """The user's scheduler options: keys the class takes, finite values, none that unetscope sets."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise SamplerError(f"scheduler options must be a dict of name -> value, got {type(options).__name__}")
    takes = set(inspect.signature(cls.__init__).parameters) - {"self"}
    out = {}
    for k, v in options.items():
        if k in OWNED:
            raise SamplerError(f"scheduler option {k!r} is set by unetscope (from the model's training schedule and the "
                               "guided epsilon prediction); leave it out")
        if k not in takes:
            raise SamplerError(f"{cls.__name__} takes no option {k!r}; it takes {', '.join(sorted(takes - set(OWNED)))}")
        if isinstance(v, float) and not math.isfinite(v):
            raise SamplerError(f"scheduler option {k}={v!r} is not a finite number")
        if not isinstance(v, (bool, int, float, str, type(None), list)):
            raise SamplerError(f"scheduler option {k} must be a number, true/false, a string or a list, got {type(v).__name__}")
        out[k] = v
    return out


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


class SchedulerSampler(Sampler):
    """A diffusers scheduler over ``steps`` steps, as a ``Sampler`` (built by ``Sampler(..., method=NAME)``).

    ``options`` pass to the scheduler's constructor. ``eta`` and ``variance`` are DDIM's and DDPM's:
    refused here. ``sample``, ``compare``, ``sample_progressive`` and ``step`` behave as ``Sampler``'s,
    with the scheduler's state carried in a ``SolverState``."""

    jumps = False  # SkipSteps / StopEarly: refused (the walk is the scheduler's)

    def __init__(self, model: DiffusionModel, steps: int = 20, method: str = "dpm++", eta: float = 0.0,
                 guidance: float = 1.0, variance: str | None = None, clip_x0: bool | None = None,
                 batch_size: int | None = None, progress: bool = False, compile: bool = False,
                 options: Mapping | None = None):
        name, cls, settings = resolve_scheduler(method)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta != 0:
            raise SamplerError(f"eta {eta!r} has no effect with scheduler {name!r}: eta is DDIM's (use method='ddim')")
        if variance is not None:
            raise SamplerError(f"variance {variance!r} has no effect with scheduler {name!r}: it is DDPM's (use method='ddpm')")
        super().__init__(model, steps=steps, method="ddim", eta=0.0, guidance=guidance, variance=None, clip_x0=clip_x0,
                         batch_size=batch_size, progress=progress, compile=compile)
        self.method, self.options, self.scheduler_class = name, check_options(cls, options), cls
        self._settings = {**settings, **self.options}
        self._pred = "epsilon"  # what the scheduler is handed: "epsilon", or the clipped x_est0 ("sample")
        self.variance = None
        sch = model.schedule
        self._alphas_cumprod = sch.alphas_cumprod.double()
        try:
            sched = self.new_scheduler()
            taus = [float(v) for v in sched.timesteps]
            if not self._repeats_allowed(sched) and len(set(taus)) < len(taus):
                raise SamplerError(f"{cls.__name__} with {self.options or 'its defaults'} puts {self.steps} steps on repeated "
                                   f"timesteps ({', '.join(f'{v:g}' for v in taus[:6])}{', ...' if len(taus) > 6 else ''}) of "
                                   "this model's schedule, which diffusers cannot step; take other options or steps")
            self._calls = self._step_calls(sched)  # plan step t -> U-Net calls
            if self.clip_x0:
                # the clipped x_est0 goes to the scheduler as it is (prediction_type="sample") where the
                # scheduler takes it: a round trip through epsilon multiplies rounding by 1/sqrt(alpha_bar),
                # ~100x at a cosine schedule's first step
                self._pred = "sample"
                try:
                    self._step_calls(self.new_scheduler())
                except Exception:  # noqa: BLE001 - PNDM takes epsilon and v only
                    self._pred = "epsilon"
        except SamplerError:
            raise
        except Exception as e:  # noqa: BLE001 - diffusers refuses a value (e.g. an unknown algorithm_type)
            raise SamplerError(f"{cls.__name__} refuses {self.options or 'its defaults'} at {self.steps} steps: "
                               f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}") from None

    # --- the scheduler -----------------------------------------------------------------------
    def new_scheduler(self):
        """A fresh diffusers scheduler on the model's betas, epsilon-predicting, set to ``steps``."""
        sch = self.model.schedule
        s = self.scheduler_class(num_train_timesteps=sch.num_train_timesteps, trained_betas=sch.betas.numpy(),
                                 prediction_type=self._pred, **self._settings)
        s.set_timesteps(self.steps, device=self.model.device)
        return s

    def _step_calls(self, sched) -> dict[int, int]:
        """U-Net calls per plan step, read off a dry run of the scheduler on one number."""
        x = torch.zeros(1, 1, device=self.model.device)
        starts, takes_gen = [], "generator" in inspect.signature(sched.step).parameters
        g = torch.Generator().manual_seed(0)
        for i, tau in enumerate(sched.timesteps):
            starts.append(self._new_step(sched, i))
            sched.scale_model_input(x, tau)
            kw = {"generator": g} if takes_gen else {}
            x = sched.step(torch.zeros_like(x), tau, x, **kw).prev_sample
        steps = sum(starts)
        if steps != self.steps or not starts or not starts[0]:
            raise SamplerError(f"{type(sched).__name__} with {self._settings or 'its defaults'} calls the U-Net "
                               f"{len(starts)} times in {steps} steps for {self.steps} asked: unetscope maps plan steps to "
                               "its calls only where each call begins a step or completes the one begun")
        calls, t = {}, self.steps + 1
        for new in starts:
            t -= bool(new)
            calls[t] = calls.get(t, 0) + 1
        return calls

    @staticmethod
    def _repeats_allowed(sched) -> bool:
        """Heun, DPM2 and PNDM visit a timestep twice by design (a step's two calls)."""
        return hasattr(sched, "state_in_first_order") or hasattr(sched, "ets")

    @staticmethod
    def _new_step(sched, i: int) -> bool:
        """Whether the scheduler's i-th call begins a step (else it completes the step begun: Heun and
        DPM2's second call, PNDM's second call at its first timestep)."""
        if hasattr(sched, "state_in_first_order"):
            return bool(sched.state_in_first_order)
        if hasattr(sched, "counter") and hasattr(sched, "ets"):  # PNDM (PLMS): its call 1 redoes step 1
            if len(getattr(sched, "prk_timesteps", ())) or not getattr(sched.config, "skip_prk_steps", True):
                raise SamplerError("PNDM's Runge-Kutta warm-up (skip_prk_steps=false) calls the U-Net four times a step; "
                                   "use skip_prk_steps=true (the 'pndm' default, as Stable Diffusion's)")
            return sched.counter != 1
        return True

    def calls(self, t: int) -> int:
        """U-Net calls at plan step t (2 for a Heun step but the last, else 1)."""
        return self._calls[t]

    def describe(self) -> dict:
        d = dict(steps=self.steps, method=self.method, scheduler=self.scheduler_class.__name__, options=dict(self.options),
                 guidance=self.guidance, clip_x0=self.clip_x0)
        return d

    def check_plan(self, plan: Plan | Sequence | None) -> Plan:
        plan = super().check_plan(plan)
        walk = [it for it in plan.interventions if isinstance(it, (SkipSteps, StopEarly))]
        if walk:
            raise SamplerError(f"scheduler {self.method!r} takes the U-Net's interventions (DropBlocks, ZeroSkips, ReuseEncoder, "
                               f"AdaptiveCache) only, got {walk[0]!r}: its walk is the scheduler's; take fewer steps")
        return plan

    def new_state(self, seeds: Sequence[int]) -> SolverState:
        return SolverState(self.new_scheduler(), [int(s) for s in seeds])

    def initial(self, bank: NoiseBank, state: SolverState) -> torch.Tensor:
        """``x_S`` in the scheduler's space: the bank's noise times ``init_noise_sigma``."""
        return bank.initial().to(self.model.device) * state.scheduler.init_noise_sigma

    # --- one step -------------------------------------------------------------------------------
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

    def _epsilon(self, out: torch.Tensor, x_in: torch.Tensor, ab: float):
        """The guided output -> (epsilon for the scheduler, x_est0), through x_est0 when it is clipped."""
        x0, eps = x0_and_eps(out[:, :x_in.shape[1]], x_in, ab, self.model.prediction_type, self.clip_x0)
        return eps, x0

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, t: int, cond: Cond, action: StepAction | None = None,
             cache: Mapping[str, torch.Tensor] | None = None, z: torch.Tensor | None = None,
             capture: Iterable[str] = (), state: SolverState | list | None = None) -> StepOutput:
        """Step t: the scheduler's step, its one or two U-Net calls under ``action``. ``state`` is the
        samples' ``SolverState`` (advanced in place), or a list of states whose rows stack into
        ``x_t`` in order (the sweep engine's stacked call: one U-Net call for all of them). ``z`` is
        not used: the noise comes from the states' generators (the bank's)."""
        m, K = self.model, self.model.num_blocks
        a = action or NO_ACTION
        if not isinstance(a, StepAction):
            raise SamplerError(f"action must be a StepAction (Plan.actions() or Plan.walk() give them), got {type(a).__name__}")
        t_in, t = t, (int(t) if isinstance(t, int) and not isinstance(t, bool) else None)
        if t is None or not 1 <= t <= self.steps:
            raise SamplerError(f"t must be an integer in 1..{self.steps} (the sampler's steps), got {t_in!r}")
        if a.jump or a.stop:
            raise SamplerError(f"scheduler {self.method!r} does not jump or stop: take fewer steps")
        if not torch.is_tensor(x_t) or tuple(x_t.shape[1:]) != tuple(m.sample_shape):
            raise SamplerError(f"x_t must be a tensor of shape (N, {', '.join(map(str, m.sample_shape))}), "
                               f"got {tuple(x_t.shape) if torch.is_tensor(x_t) else type(x_t).__name__}")
        states = state if isinstance(state, list) else [state]
        if not all(isinstance(s, SolverState) for s in states) or sum(s.n for s in states) != x_t.shape[0]:
            raise SamplerError("a scheduler's step needs the samples' SolverState (sampler.new_state(seeds)) for its rows")
        if any(s.calls != states[0].calls for s in states):
            raise SamplerError("stacked scheduler states must stand at the same call")
        n = x_t.shape[0]
        c = cond if isinstance(cond, dict) else m.make_cond(cond, n)
        cache = dict(cache or {})
        x, captured, units, deep, x_in0 = x_t, {}, 0.0, None, None
        per = torch.zeros(n, dtype=torch.long)
        for call in range(self._calls[t]):
            s0 = states[0].scheduler
            k = states[0].calls
            if k >= len(s0.timesteps):
                raise SamplerError(f"the scheduler has taken all of its {self.steps} steps")
            if call == 0:
                if not self._new_step(s0, k):
                    raise SamplerError(f"step {t} asked while the scheduler is inside a step")
                for st in states:
                    st.generators = NoiseBank(st.seeds, m.sample_shape).generators(t)
            tau = s0.timesteps[k]
            rows = [x[i:j] for i, j in _bounds(states)]
            x_in = torch.cat([st.scheduler.scale_model_input(r, tau) for st, r in zip(states, rows)])
            if x_in0 is None:
                x_in0 = x_in
            ab = self._alpha_bar(s0, tau)
            fill = a.take(cache, K, t)
            tt = torch.full((n,), float(tau), device=x.device)
            tt = tt.long() if not torch.is_floating_point(s0.timesteps) else tt
            res = self.denoiser(x_in, tt, c, a.unet, fill=fill, capture=capture)
            if not torch.isfinite(res.out).all():
                raise NonFiniteSampleError(f"the model produced NaN or inf at step t={t} (scheduler {self.method}, "
                                           f"timestep {float(tau):g}); nothing was stored")
            eps, x0 = self._epsilon(res.out.to(x.dtype), x_in, ab)
            outs = []
            for st, (i, j) in zip(states, _bounds(states)):
                sch = st.scheduler
                kw = {"generator": st.generators} if "generator" in inspect.signature(sch.step).parameters else {}
                given = (x0 if self._pred == "sample" else eps)[i:j]
                outs.append(sch.step(given, tau, x[i:j], **kw).prev_sample.to(x.dtype))
                st.calls += 1
            x = torch.cat(outs)
            cache.update(res.captured)
            captured.update(res.captured)
            units += res.units_run
            if res.deep is None:
                per += int(round(res.units_run))
            else:
                per += len(a.computes(K)) + a.deep_units() * res.deep.long().cpu()
                deep = res.deep if deep is None else deep | res.deep
        for st in states:
            st.generators = None
        return StepOutput(t=t, land=t - 1, action=a, x_t=x_t, x_est0=x0, eps=eps, frac=None, x_next=x,
                          captured=captured, units_run=units, deep=deep, x_in=x_in0,
                          units_per_sample=per)

    # --- the loop ---------------------------------------------------------------------------
    def sample_progressive(self, seeds: Sequence[int], cond: Cond = None, plan: Plan | None = None,
                           start=None, cache: dict | None = None, capture: Iterable[str] = (),
                           states_at: Iterable[int] = ()) -> Iterator[dict]:
        """As ``Sampler.sample_progressive``; ``start=(t, x_t, state)`` resumes from a ``SolverState``
        at step t; ``states_at``: steps whose yielded dict carries a copy of the state before the step
        (``"state"``: where the sweep engine branches)."""
        plan = self.check_plan(plan)
        m = self.model
        seeds = check_seeds(seeds)
        c = m.make_cond(cond, len(seeds))
        keep = plan.cache_sites(m.num_blocks) | set(capture)
        cache = {} if cache is None else cache
        states_at = set(states_at)
        if start is None:
            state = self.new_state(seeds)
            t, x = self.steps, self.initial(NoiseBank(seeds, m.sample_shape), state)
        else:
            if len(start) != 3 or not isinstance(start[2], SolverState):
                raise SamplerError("a scheduler resumes from start=(t, x_t, SolverState)")
            t, x, state = int(start[0]), start[1].to(m.device), start[2].copy()
        acts = plan.actions()
        for tt in range(t, 0, -1):
            before = state.copy() if tt in states_at else None
            out = self.step(x, tt, c, acts.get(tt, NO_ACTION), cache, capture=keep, state=state)
            cache.update(out.captured)
            yield dict(t=tt, land=tt - 1, x_t=out.x_t, x_in=out.x_in, x_est0=out.x_est0, eps=out.eps, frac=None,
                       x_next=out.x_next, stop=False, units_run=out.units_run, deep=out.deep, cache=cache,
                       units_per_sample=out.units_per_sample, calls=self._calls[tt], state=before)
            x = out.x_next

    @torch.no_grad()
    def sample(self, seeds: Sequence[int], cond=None, plan: Plan | None = None, keep: Sequence[str] = (),
               start=None) -> Trajectory:
        """As ``Sampler.sample``; kept ``x_t`` are the U-Net's inputs (model space, not a sigma
        scheduler's scaled sample), so they compare with ``x_0`` as DDPM's do."""
        keep = (keep,) if isinstance(keep, str) else tuple(keep)
        bad = [k for k in keep if k not in KEEP]
        if bad:
            raise SamplerError(f"keep may hold {', '.join(KEEP)}; got {bad[0]!r}")
        if start is not None:
            raise SamplerError(f"scheduler {self.method!r} samples from x_S (sample_progressive resumes from a SolverState)")
        seeds = check_seeds(seeds)
        plan = self.check_plan(plan)
        m = self.model
        chunks = [seeds] if not self.batch_size else [seeds[i:i + self.batch_size] for i in range(0, len(seeds), self.batch_size)]
        conds = self._split_cond(cond, len(seeds), [len(c) for c in chunks])
        x0s, traj_xt, traj_x0, reused, per_sample = [], {}, {}, {}, []
        steps_run, units, t_start = [], 0, time.perf_counter()
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(chunks) * self.steps, desc=f"sampling ({self.method})", unit="step", leave=False)
        for ci, (chunk, c) in enumerate(zip(chunks, conds)):
            mine, last = torch.zeros(len(chunk), dtype=torch.long), None
            for d in self.sample_progressive(chunk, c, plan):
                if ci == 0:
                    steps_run += [d["t"]] * d["calls"]
                units += d["units_run"]
                mine += d["units_per_sample"]
                if d["deep"] is not None:
                    reused.setdefault(d["t"], []).append((~d["deep"]).cpu())
                for k, store in (("x_t", traj_xt), ("x_est0", traj_x0)):
                    if k in keep:
                        store.setdefault(d["t"], []).append(d["x_in" if k == "x_t" else k].float().cpu())
                last = d
                if bar is not None:
                    bar.update(1)
            x0s.append(last["x_next"].float().cpu())
            per_sample += mine.tolist()
        if bar is not None:
            bar.close()
        synchronize(m.device)
        return Trajectory(x0=torch.cat(x0s), seeds=[int(s) for s in seeds], plan=plan, model=m,
                          x_t={t: torch.cat(v) for t, v in traj_xt.items()}, x_est0={t: torch.cat(v) for t, v in traj_x0.items()},
                          steps_run=steps_run, units_run=units, seconds=time.perf_counter() - t_start,
                          units_per_sample=per_sample, reused={t: torch.cat(v) for t, v in reused.items()})

    @torch.no_grad()
    def compare(self, seeds: Sequence[int], cond=None, plan: Plan | None = None,
                keep: Sequence[str] = ()) -> tuple[Trajectory, Trajectory]:
        """The baseline and the intervened run from the same noise (each from ``x_S``: the sweep engine
        is where a scheduler's prefixes are shared)."""
        plan = self.check_plan(plan)
        return self.sample(seeds, cond, None, keep=keep), self.sample(seeds, cond, plan, keep=keep)


def _bounds(states: list[SolverState]) -> list[tuple[int, int]]:
    out, i = [], 0
    for s in states:
        out.append((i, i + s.n))
        i += s.n
    return out
