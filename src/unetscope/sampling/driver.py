"""The sampling driver: one loop for every solver (k-diffusion's one contract; iDDPM's progressive
generator). It validates, runs the guided U-Net call under each step's action (Eq. 5's
interventions), diagnoses NaN, chunks, compares with the baseline and reports progress; the solver
behind it (``sampling.respaced``, ``sampling.schedulers``) owns only its update and its state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from .. import checks
from ..checks import as_int, check_batch_size, check_bool, check_guidance, check_steps
from ..guidance import Denoiser
from ..models import Cond, DiffusionModel
from ..noise import NoiseBank
from ..plan import NO_ACTION, Plan, StepAction
from ..progress import progress_bar
from ..timing import synchronize
from .records import KEEP, NonFiniteSampleError, SamplerError, StepOutput, Trajectory, cond_slice, x0_and_eps
from .respaced import RespacedSolver
from .schedulers import SchedulerSolver
from .solver import Solver

__all__ = ["Sampler", "make_sampler", "make_solver", "SOLVERS", "check_seeds"]

SOLVERS: list[type[Solver]] = [RespacedSolver, SchedulerSolver]  # the first that accepts a method name builds it


def check_seeds(seeds) -> list[int]:
    """Seeds as a list of integers in 0..2^63-1 (a float seed is refused, not truncated); a SamplerError
    otherwise (``unetscope.checks.check_seeds``)."""
    return checks.check_seeds(seeds, SamplerError)


def make_solver(model: DiffusionModel, steps: int, method: str, eta=0.0, variance=None, options=None,
                clip_x0: bool = False) -> Solver:
    """The solver ``method`` names: unetscope's DDPM/DDIM, or a diffusers scheduler."""
    if not isinstance(method, str):
        raise SamplerError(f"method must be a sampler name (ddpm, ddim, dpm++, ...), got {method!r}")
    for cls in SOLVERS:
        if cls.accepts(method):
            return cls(model, steps, method, eta=eta, variance=variance, options=options, clip_x0=clip_x0)
    raise SamplerError(f"unknown sampler {method!r}")


def make_sampler(model: DiffusionModel, steps: int = 100, method: str = "ddpm", **kwargs) -> "Sampler":
    """A ``Sampler`` (the driver) over the solver ``method`` names; the same as ``Sampler(...)``."""
    return Sampler(model, steps=steps, method=method, **kwargs)


class Sampler:
    """Sampling over ``steps`` steps with classifier-free guidance, under any solver: DDPM ancestral or
    DDIM (``method="ddpm"|"ddim"``, ``eta``, ``variance``) or a diffusers scheduler (``method="dpm++"``,
    a name of the vocabulary or a class name; ``options`` pass to its constructor).

    ``clip_x0`` defaults to on for pixel-space models and off for latent ones (iDDPM's and GLIDE's
    ``clip_denoised``). ``compile`` compiles the model's units in place, each once
    (``DiffusionModel.compile``); ``model.compile_stats()`` counts. ``progress``: every run shows its
    steps and samples (a bar on a terminal, lines in a log file), named by the pass running (``stage``)."""

    def __init__(self, model: DiffusionModel, steps: int = 100, method: str = "ddpm", eta: float = 0.0,
                 guidance: float = 1.0, variance: str | None = None, clip_x0: bool | None = None,
                 batch_size: int | None = None, progress: bool = False, compile: bool = False,
                 options: Mapping | None = None):
        check_bool(compile, SamplerError, "compile")
        steps = check_steps(steps, model.schedule.num_train_timesteps, SamplerError)
        guidance = check_guidance(guidance, SamplerError, model=model)
        batch_size = check_batch_size(batch_size, SamplerError)
        self.model, self.steps = model, steps
        self.guidance, self.batch_size, self.progress = guidance, batch_size, bool(progress)
        self._stage: str | None = None  # the pass the runs belong to, named on their progress bars
        self.clip_x0 = (not model.latent) if clip_x0 is None else bool(clip_x0)
        self.solver = make_solver(model, steps, method, eta=eta, variance=variance, options=options, clip_x0=self.clip_x0)
        if compile:
            model.compile()
        self.compile = compile
        self.denoiser = Denoiser(model, self.guidance)  # the runner, guided

    @contextmanager
    def stage(self, name: str | None):
        """Name the runs made inside (``"timed run 2 of 3: shortcut"``) on their progress bars."""
        old, self._stage = self._stage, name
        try:
            yield self
        finally:
            self._stage = old

    # --- what the solver decides ---------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.solver.name

    @property
    def jumps(self) -> bool:
        """Whether ``SkipSteps`` and ``StopEarly`` take effect (a scheduler's walk refuses them)."""
        return self.solver.jumps

    @property
    def eta(self) -> float:
        return getattr(self.solver, "eta", 0.0)

    @property
    def variance(self) -> str | None:
        return getattr(self.solver, "variance", None)

    @property
    def options(self) -> dict:
        return dict(getattr(self.solver, "options", {}))

    @property
    def spacing(self):
        """The respaced steps of unetscope's DDPM/DDIM (``schedule.Spacing``)."""
        if not hasattr(self.solver, "spacing"):
            raise AttributeError(f"sampler {self.method!r} walks a diffusers scheduler's timesteps, not respaced steps")
        return self.solver.spacing

    def describe(self) -> dict:
        """The sampler's record in a run's settings (its hash names the run: key order does not count)."""
        return dict(steps=self.steps, **self.solver.describe(), guidance=self.guidance, clip_x0=self.clip_x0)

    def settings(self) -> dict:
        """The keywords that build this sampler again (``Sampler(model, **settings)``: a Ray worker's)."""
        s = self.solver.settings()
        return dict(steps=self.steps, method=s["method"], eta=s["eta"], guidance=self.guidance, variance=s["variance"],
                    clip_x0=self.clip_x0, batch_size=self.batch_size, compile=self.compile, options=s["options"])

    def calls(self, t: int) -> int:
        """U-Net calls at step t (a Heun step takes two)."""
        return self.solver.calls(t)

    def new_state(self, seeds: Sequence[int]):
        """The solver's state for ``seeds`` at x_S (what ``step`` advances)."""
        return self.solver.new_state(check_seeds(seeds))

    def check_plan(self, plan: Plan | Sequence | None) -> Plan:
        """``plan`` as a ``Plan`` checked against this sampler's S, the model's K and the solver's walk."""
        if plan is None:
            plan = Plan()
        elif not isinstance(plan, Plan):
            plan = Plan(tuple(plan))
        plan = plan.check(self.steps, self.model.num_blocks)
        self.solver.check_plan(plan)
        return plan

    def update(self, x0, eps, t: int, land: int, z, frac=None) -> torch.Tensor:
        """Eq. 3 or Eq. 4 from step t's estimates (a jumping solver's: DDPM/DDIM)."""
        return self.solver.update(x0, eps, t, land, z, frac)

    # --- one step -------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, x_t: torch.Tensor, t: int, cond: Cond, action: StepAction | None = None,
             cache: Mapping[str, torch.Tensor] | None = None, z: torch.Tensor | None = None,
             capture: Iterable[str] = (), state=None) -> StepOutput:
        """One sampling step at ``t`` under ``action``: its U-Net calls (guidance, the fills the action
        reads from ``cache``, the outputs ``capture`` names) and the solver's update to ``x_{land}``.

        ``cond`` is the user's conditions or the model's prepared dict (``model.make_cond``). ``state``:
        the rows' solver state (``new_state(seeds)``; advanced in place), or a list of states whose rows
        stack into ``x_t`` in order (one U-Net call for all). DDPM/DDIM need none: ``z`` is then step t's
        noise (needed when the step lands above 0 and adds noise)."""
        m, K = self.model, self.model.num_blocks
        a = action or NO_ACTION
        if not isinstance(a, StepAction):
            raise SamplerError(f"action must be a StepAction (Plan.actions() or Plan.walk() give them), got {type(a).__name__}")
        t_in, t = t, as_int(t)
        if t is None or not 1 <= t <= self.steps:
            raise SamplerError(f"t must be an integer in 1..{self.steps} (the sampler's steps), got {t_in!r}")
        if (a.jump or a.stop) and not self.solver.jumps:
            raise SamplerError(f"scheduler {self.method!r} does not jump or stop: take fewer steps")
        if not torch.is_tensor(x_t) or tuple(x_t.shape[1:]) != tuple(m.sample_shape):
            raise SamplerError(f"x_t must be a tensor of shape (N, {', '.join(map(str, m.sample_shape))}), "
                               f"got {tuple(x_t.shape) if torch.is_tensor(x_t) else type(x_t).__name__}")
        n = x_t.shape[0]
        states = state if isinstance(state, list) else ([] if state is None else [state])
        self.solver.begin(states, t, n)
        land = t - 1 - a.jump
        if land < 0:
            raise SamplerError(f"a jump of {a.jump} from step {t} lands below step 0")
        c = cond if isinstance(cond, dict) else m.make_cond(cond, n)
        calls = self.solver.calls(t)
        cache = cache or {}
        if calls > 1:
            cache = dict(cache)  # a later call of the step reads what an earlier one computed
        x, captured, units, deep, x_in0 = x_t, {}, 0.0, None, None
        per = torch.zeros(n, dtype=torch.long)
        for k in range(calls):
            call = self.solver.model_input(states, x, t, k)
            if x_in0 is None:
                x_in0 = call.x_in
            fill = a.take(cache, K, t)  # the one place a missing fill is reported
            res = self.denoiser(call.x_in, call.timesteps, c, a.unet, fill=fill, capture=capture)
            if not torch.isfinite(res.out).all():  # stop at the first NaN/inf, naming the step and the unit
                self._non_finite(call, c, a, fill, t)
            x0, eps, frac = self.predict(res.out, call.x_in, call.alpha_bar)
            x = None if a.stop else self.solver.advance(states, x, t, k, call, x0, eps, frac, land, z)
            if calls > 1:
                cache.update(res.captured)
            captured.update(res.captured)
            units += res.units_run
            if res.deep is None:
                per += int(round(res.units_run))
            else:
                per += len(a.computes(K)) + a.deep_units() * res.deep.long().cpu()
                deep = res.deep if deep is None else deep | res.deep
        return StepOutput(t=t, land=land, action=a, x_t=x_t, x_est0=x0, eps=eps, frac=frac, x_next=x,
                          captured=captured, units_run=units, deep=deep, x_in=x_in0, units_per_sample=per, calls=calls)

    def predict(self, out: torch.Tensor, x: torch.Tensor, ab: float):
        """Model output at alpha_bar ``ab`` -> (x_est0, eps, var_frac or None), x_est0 clipped if asked;
        a learned variance's channels give ``var_frac`` (read by DDPM, dropped by the schedulers)."""
        C = x.shape[1]
        frac = None
        if out.shape[1] > C:
            out, v = out[:, :C], out[:, C:]
            if self.solver.uses_variance and self.model.variance_type == "learned_range":
                frac = (v + 1) / 2
        x0, eps = x0_and_eps(out, x, ab, self.model.prediction_type, self.clip_x0)
        return x0, eps, frac

    def _non_finite(self, call, c, a, fill, t: int):
        from ..adapters.base import AdapterError

        where = "its output"
        if not torch.isfinite(call.x_in).all():
            where = "its input x_t"
        else:
            try:
                self.denoiser(call.x_in, call.timesteps, c, a.unet, fill=fill, check_finite=True)  # again, unit by unit
            except AdapterError as e:
                where = str(e).split(" outputs")[0]
        tau = float(call.timesteps[0])
        raise NonFiniteSampleError(f"the model produced NaN or inf at step t={t} (timestep {tau:g}"
                                   f"{'' if self.solver.jumps else f', scheduler {self.method}'}): {where}; "
                                   "nothing was stored")

    # --- the loop ---------------------------------------------------------------------------
    def sample_progressive(self, seeds: Sequence[int], cond: Cond = None, plan: Plan | None = None,
                           start: tuple | None = None, cache: dict | None = None,
                           capture: Iterable[str] = (), states_at: Iterable[int] = ()) -> Iterator[dict]:
        """Yield one dict per evaluated step: t, land, x_t, x_in, x_est0, eps, frac, x_next, stop,
        units_run, units_per_sample, deep, calls, cache, state (iDDPM's ``*_loop_progressive``): a loop
        over ``Plan.walk`` and ``step``. ``start=(t, x_t)`` resumes from a cached ``x_t`` at step t
        (``(t, x_t, state)`` with a solver's state, which a scheduler needs); ``capture`` names more sites
        (``"D[j]"``, ``"E[i]"``, ``"M"``) to keep in ``cache`` (prefix sharing); ``states_at``: steps whose
        dict carries a copy of the solver state before the step (``"state"``: where the sweep engine branches)."""
        plan = self.check_plan(plan)
        m = self.model
        seeds = check_seeds(seeds)
        c = m.make_cond(cond, len(seeds))
        keep = plan.cache_sites(m.num_blocks) | set(capture)
        cache = {} if cache is None else cache
        states_at = set(states_at)
        if start is None:
            state = self.solver.new_state(seeds)
            t, x = self.steps, self.solver.initial(state, NoiseBank(seeds, m.sample_shape).initial().to(m.device))
        elif len(start) == 3 and start[2] is not None:
            t, x, state = int(start[0]), start[1].to(m.device), start[2].copy()
        elif not self.solver.stateless:
            raise SamplerError("a scheduler resumes from start=(t, x_t, SolverState)")
        else:
            t, x, state = int(start[0]), start[1].to(m.device), self.solver.new_state(seeds)
        for st in plan.walk(self.steps, start=t):
            before = state.copy() if st.t in states_at else None
            out = self.step(x, st.t, c, st.action, cache, capture=keep, state=state)
            cache.update(out.captured)
            yield dict(t=out.t, land=out.land, x_t=out.x_t, x_in=out.x_in, x_est0=out.x_est0, eps=out.eps, frac=out.frac,
                       x_next=out.x_next, stop=st.action.stop, units_run=out.units_run, deep=out.deep, cache=cache,
                       units_per_sample=out.units_per_sample, calls=out.calls, state=before)
            x = out.x_next

    @torch.no_grad()
    def sample(self, seeds: Sequence[int], cond=None, plan: Plan | None = None, keep: Sequence[str] = (),
               start: tuple[int, torch.Tensor] | None = None) -> Trajectory:
        """Sample one image per seed under ``plan`` (empty: the baseline). ``keep`` may hold ``"x_t"``
        and/or ``"x_est0"`` to keep every step's tensors (off: memory stays flat); a kept ``x_t`` is the
        U-Net's input in model space (a sigma scheduler's scaled sample is not), so it compares with ``x_0``."""
        keep = (keep,) if isinstance(keep, str) else tuple(keep)  # keep="x_t" is one name
        bad = [k for k in keep if k not in KEEP]
        if bad:
            raise SamplerError(f"keep may hold {', '.join(KEEP)}; got {bad[0]!r}")
        if start is not None and not self.solver.stateless:
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
            what = f"sampling ({self.method}, {len(seeds)} sample{'' if len(seeds) == 1 else 's'})"
            bar = progress_bar(len(chunks) * (self.steps if start is None else int(start[0])),
                               f"{self._stage}: {what}" if self._stage else what, unit="step")
        for ci, (chunk, c) in enumerate(zip(chunks, conds)):
            st = None if start is None else (start[0], start[1][sum(map(len, chunks[:ci])):][:len(chunk)])
            last, mine = None, torch.zeros(len(chunk), dtype=torch.long)
            for d in self.sample_progressive(chunk, c, plan, start=st):
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
                    bar.update(d["t"] - max(d["land"], 0) if not d["stop"] else d["t"])
            x0s.append((last["x_est0"] if last["stop"] else last["x_next"]).float().cpu())
            per_sample += mine.tolist()
            if bar is not None:
                bar.set_postfix_str(f"{len(per_sample)}/{len(seeds)} samples")
        if bar is not None:
            bar.close()
        synchronize(m.device)  # the seconds are the work's, not its launches'
        return Trajectory(
            x0=torch.cat(x0s), seeds=[int(s) for s in seeds], plan=plan, model=m,
            x_t={t: torch.cat(v) for t, v in traj_xt.items()}, x_est0={t: torch.cat(v) for t, v in traj_x0.items()},
            steps_run=steps_run, units_run=units, seconds=time.perf_counter() - t_start, units_per_sample=per_sample,
            reused={t: torch.cat(v) for t, v in reused.items()},
        )

    @torch.no_grad()
    def compare(self, seeds: Sequence[int], cond=None, plan: Plan | None = None,
                keep: Sequence[str] = ()) -> tuple[Trajectory, Trajectory]:
        """The baseline and the intervened run from the same noise, in one call. Where ``x_t`` is the
        whole state (DDPM/DDIM), the intervened run starts from the baseline's ``x_t`` at the plan's first
        intervened step (prefix sharing); a scheduler's runs each start from ``x_S`` (the sweep engine is
        where a scheduler's prefixes are shared)."""
        plan = self.check_plan(plan)
        keep = (keep,) if isinstance(keep, str) else tuple(keep)
        first = plan.first_step()
        share = self.solver.stateless and first is not None and first < self.steps and not plan.reads_cache()
        base = self.sample(seeds, cond, None, keep=tuple(set(keep) | ({"x_t"} if share else set())))
        if not share:
            return base, self.sample(seeds, cond, plan, keep=keep)
        inter = self.sample(seeds, cond, plan, keep=keep, start=(first, base.x_t[first]))
        above = [t for t in base.steps_run if t > first]
        inter.steps_run = above + inter.steps_run
        full = len(NO_ACTION.computes(self.model.num_blocks))
        inter.units_run += len(above) * full
        inter.units_per_sample = [u + len(above) * full for u in inter.units_per_sample]
        for k in ("x_t", "x_est0"):
            if k in keep:
                getattr(inter, k).update({t: getattr(base, k)[t] for t in above})
        if "x_t" not in keep:
            base.x_t = {}
        return base, inter

    def _split_cond(self, cond, n: int, sizes: list[int]) -> list:
        if cond is None or len(sizes) == 1:
            return [cond] * len(sizes)
        out, i = [], 0
        for s in sizes:
            out.append(cond_slice(cond, range(i, i + s), n))
            i += s
        return out
