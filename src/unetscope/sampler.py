"""The sampling loop: the paper's Eq. 3 in DDIM form, with jumps (Eq. 4) and U-Net interventions (Eq. 5).

One update covers both samplers (k-diffusion style, one contract):

    x_land = sqrt(ab_land) * x_est0 + sqrt(max(1 - ab_land - sd^2, 0)) * eps + sn * z_t

with ``land = t - 1`` normally and ``t - n - 1`` for ``SkipSteps(t, n)``. DDIM: ``sd = sn = eta *
sqrt(posterior variance)``. DDPM: ``sd^2`` is the posterior variance (so the mean is the posterior
mean ``mu(x_t, x_est0)``) and ``sn`` the model's variance: fixed_small (= sd), fixed_large (beta),
or learned_range (iDDPM/GLIDE). Landing on step 0 adds no noise. ``z_t`` comes from the noise bank.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .checks import as_int
from .errors import UnetscopeError
from .guidance import Denoiser
from .models import Cond, DiffusionModel, ModelError
from .noise import NoiseBank
from .plan import NO_ACTION, Plan, StepAction
from .timing import synchronize

__all__ = ["Sampler", "Trajectory", "StepOutput", "SamplerError", "NonFiniteSampleError", "METHODS", "cond_slice"]

METHODS = ("ddpm", "ddim")
KEEP = ("x_t", "x_est0")


class SamplerError(UnetscopeError, ValueError):
    """A sampler setting outside what is allowed."""


class NonFiniteSampleError(SamplerError):
    """The model produced NaN or inf: sampling stops at the first step where it happens."""


def check_seeds(seeds) -> list[int]:
    """Seeds as a list of integers in 0..2^63-1 (a float seed is refused, not truncated)."""
    try:
        seeds = list(seeds)
    except TypeError:
        raise SamplerError(f"seeds must be a sequence of integers, got {type(seeds).__name__}") from None
    if not seeds:
        raise SamplerError("give at least one seed")
    out = []
    for s in seeds:
        v = as_int(s)
        if v is None:
            raise SamplerError(f"seeds must be integers, got {s!r}")
        if not 0 <= v < 2**63:
            raise SamplerError(f"seeds must be in 0..2^63-1, got {v}")
        out.append(v)
    return out


def cond_slice(cond: Cond, idx, n: int) -> Cond:
    """The conditions of samples ``idx`` out of ``n``: one value for all (a class, a prompt), one per
    sample (a list), or a dict of batch-first tensors (raw keyword conditioning)."""
    idx = list(idx)
    if cond is None or isinstance(cond, (int, str)) or (torch.is_tensor(cond) and cond.dim() == 0):
        return cond
    if isinstance(cond, dict):
        return {k: v[idx] for k, v in cond.items()}
    items = list(cond)
    if len(items) == 1:
        return items
    if len(items) != n:
        raise ModelError(f"give one condition per sample ({n}), got {len(items)}")
    return [items[i] for i in idx]


@dataclass
class StepOutput:
    """What one ``Sampler.step`` made (tensors of the step's N samples)."""

    t: int
    land: int  # the step x_next belongs to (t - 1, or below for a jump; 0 is the output)
    action: StepAction
    x_t: torch.Tensor
    x_est0: torch.Tensor  # (N, C, H, W), clipped if the sampler clips
    eps: torch.Tensor
    frac: torch.Tensor | None  # learned variance interpolation (learned_range), else None
    x_next: torch.Tensor | None  # None after a stop
    captured: dict[str, torch.Tensor]  # site -> output, as asked by ``capture`` (per-sample rows)
    units_run: float  # units computed per sample (under AdaptiveCache, the samples' mean)
    deep: torch.Tensor | None = None  # AdaptiveCache: per sample, whether its bottom blocks ran
    x_in: torch.Tensor | None = None  # the U-Net's input, in model space (a sigma scheduler scales x_t; else x_t)
    units_per_sample: torch.Tensor | None = None  # units per sample over the step's calls (set by a scheduler's step)


@dataclass
class Trajectory:
    """The result of one sampling call: ``x0`` (model space) and, on request, every step's
    ``x_t`` and ``x_est0`` (dicts keyed by step number, on the CPU)."""

    x0: torch.Tensor  # (N, C, H, W)
    seeds: list[int]
    plan: Plan
    model: DiffusionModel = field(repr=False)
    x_t: dict[int, torch.Tensor] = field(default_factory=dict)
    x_est0: dict[int, torch.Tensor] = field(default_factory=dict)
    steps_run: list[int] = field(default_factory=list)  # the steps whose U-Net ran, in order
    units_run: float = 0  # encoder + decoder (+ middle) units computed, summed over evaluations (samples' mean)
    seconds: float = 0.0
    units_per_sample: list[int] = field(default_factory=list)  # each sample's units, summed over its evaluations
    reused: dict[int, torch.Tensor] = field(default_factory=dict)  # AdaptiveCache: step -> per sample, cache read

    @property
    def nfe(self) -> int:
        """U-Net evaluations (one per evaluated step; guidance's two halves run as one batch)."""
        return len(self.steps_run)

    @property
    def images(self) -> torch.Tensor:
        """``x0`` as images in [0, 1] (decoded by the VAE for latent models)."""
        return self.model.decode(self.x0)


def x0_and_eps(out: torch.Tensor, x: torch.Tensor, ab: float, kind: str, clip: bool):
    """A model output at alpha_bar ``ab`` -> (x_est0, eps) for an epsilon, v or sample prediction;
    x_est0 clipped to [-1, 1] (and eps made consistent with it) when ``clip``."""
    a, s = math.sqrt(ab), math.sqrt(1 - ab)
    if kind == "epsilon":
        eps = out
        x0 = (x - s * eps) / a
    elif kind == "v_prediction":
        x0 = a * x - s * out
        eps = a * out + s * x
    else:  # "sample"
        x0 = out
        eps = (x - a * x0) / s
    if clip:
        x0 = x0.clamp(-1, 1)
        eps = (x - a * x0) / s
    return x0, eps


class Sampler:
    """DDPM ancestral or DDIM sampling over ``steps`` respaced steps, with classifier-free guidance.

    ``variance`` overrides the model's DDPM variance; ``clip_x0`` defaults to on for pixel-space
    models and off for latent ones (iDDPM's and GLIDE's ``clip_denoised``). ``compile`` compiles the
    model's units in place, each once (``DiffusionModel.compile``); ``model.compile_stats()`` counts.
    """

    jumps = True  # SkipSteps and StopEarly take effect (a scheduler's walk refuses them)

    def __new__(cls, model=None, steps=100, method="ddpm", *args, **kwargs):
        # any other name is a diffusers scheduler: the scheduler-driven sampler (one class, one contract)
        if cls is Sampler and method not in METHODS:
            from .schedulers import SchedulerSampler

            return super().__new__(SchedulerSampler)
        return super().__new__(cls)

    def __init__(self, model: DiffusionModel, steps: int = 100, method: str = "ddpm", eta: float = 0.0,
                 guidance: float = 1.0, variance: str | None = None, clip_x0: bool | None = None,
                 batch_size: int | None = None, progress: bool = False, compile: bool = False,
                 options: Mapping | None = None):
        if options:
            raise SamplerError(f"scheduler options are a diffusers scheduler's; method {method!r} is unetscope's own "
                               f"(got {dict(options)})")
        if not isinstance(compile, bool):
            raise SamplerError(f"compile must be True or False, got {compile!r}")
        if method not in METHODS:
            raise SamplerError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        T = model.schedule.num_train_timesteps
        steps_in, steps = steps, as_int(steps)
        if steps is None or not 1 <= steps <= T:
            raise SamplerError(f"steps must be an integer in 1..{T} (the model's training timesteps), got {steps_in!r}")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (math.isfinite(eta) and 0 <= eta <= 1):
            raise SamplerError(f"eta must be a number in [0, 1], got {eta!r}")
        if eta and method != "ddim":
            raise SamplerError(f"eta {eta} has no effect with method {method!r}: eta is DDIM's (use method='ddim')")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or guidance < 0:
            raise SamplerError(f"guidance must be a finite number >= 0, got {guidance!r}")
        if guidance != 1 and not model.has_null_branch:
            why = "is unconditional" if model.conditioning == "none" else "has no unconditional branch (a null class or a text encoder)"
            raise SamplerError(f"guidance needs an unconditional branch; {model.name} {why}: use guidance 1")
        variance = variance or model.variance_type
        if variance not in ("fixed_small", "fixed_large", "learned_range"):
            raise SamplerError(f"variance must be fixed_small, fixed_large or learned_range, got {variance!r}")
        if variance == "learned_range" and model.variance_type != "learned_range":
            raise SamplerError("variance learned_range needs a model that outputs 2C channels (learned variance)")
        if batch_size is not None:
            if as_int(batch_size) is None or as_int(batch_size) < 1:
                raise SamplerError(f"batch_size must be an integer >= 1 (or None: one batch), got {batch_size!r}")
            batch_size = as_int(batch_size)
        self.model, self.steps, self.method, self.eta = model, steps, method, float(eta)
        self.options: dict = {}  # a diffusers scheduler's options (SchedulerSampler)
        self.guidance, self.variance, self.batch_size, self.progress = float(guidance), variance, batch_size, progress
        self.clip_x0 = (not model.latent) if clip_x0 is None else bool(clip_x0)
        if compile:
            model.compile()
        self.compile = compile
        self.denoiser = Denoiser(model, self.guidance)  # the runner, guided
        self.spacing = model.schedule.respace(steps)
        sp = self.spacing
        self._ab = [float(a) for a in sp.alpha_bar]
        post = sp.posterior_variance
        # log posterior variance, index t-1; step 1's (zero) is replaced by step 2's, as iDDPM clips it
        self._post_log_clipped = torch.log(torch.cat([post[2:3], post[2:]])) if steps > 1 else None
        self._post = [float(v) for v in post]
        self._beta = [float(b) for b in sp.beta]

    def describe(self) -> dict:
        return dict(steps=self.steps, method=self.method, eta=self.eta, guidance=self.guidance,
                    variance=self.variance, clip_x0=self.clip_x0)

    def settings(self) -> dict:
        """The keywords that build this sampler again (``Sampler(model, **settings)``: a Ray worker's)."""
        return dict(steps=self.steps, method=self.method, eta=self.eta, guidance=self.guidance, variance=self.variance,
                    clip_x0=self.clip_x0, batch_size=self.batch_size, compile=self.compile, options=dict(self.options))

    def calls(self, t: int) -> int:
        """U-Net calls at step t: one (a scheduler's Heun step takes two)."""
        return 1

    def check_plan(self, plan: Plan | Sequence | None) -> Plan:
        """``plan`` as a ``Plan`` checked against this sampler's S and the model's K (None: empty)."""
        if plan is None:
            return Plan()
        if not isinstance(plan, Plan):
            plan = Plan(tuple(plan))
        return plan.check(self.steps, self.model.num_blocks)

    # --- one step -------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, x_t: torch.Tensor, t: int, cond: Cond, action: StepAction | None = None,
             cache: Mapping[str, torch.Tensor] | None = None, z: torch.Tensor | None = None,
             capture: Iterable[str] = ()) -> StepOutput:
        """One sampling step at ``t`` under ``action`` (Eq. 3, Eq. 4 for a jump, Eq. 5 for the
        U-Net's interventions): guidance, the fills the action reads from ``cache`` (site ->
        tensor), the outputs ``capture`` names, the prediction and the update to ``x_{land}``.

        ``cond`` is the user's conditions or the model's prepared dict (``model.make_cond``); ``z``
        is the noise of step t (needed when the step lands above 0 and the sampler adds noise)."""
        m, K = self.model, self.model.num_blocks
        a = action or NO_ACTION
        if not isinstance(a, StepAction):
            raise SamplerError(f"action must be a StepAction (Plan.actions() or Plan.walk() give them), got {type(a).__name__}")
        t_in, t = t, as_int(t)
        if t is None or not 1 <= t <= self.steps:
            raise SamplerError(f"t must be an integer in 1..{self.steps} (the sampler's steps), got {t_in!r}")
        if not torch.is_tensor(x_t) or tuple(x_t.shape[1:]) != tuple(m.sample_shape):
            raise SamplerError(f"x_t must be a tensor of shape (N, {', '.join(map(str, m.sample_shape))}), "
                               f"got {tuple(x_t.shape) if torch.is_tensor(x_t) else type(x_t).__name__}")
        n = x_t.shape[0]
        c = cond if isinstance(cond, dict) else m.make_cond(cond, n)
        fill = a.take(cache or {}, K, t)  # the one place a missing fill is reported
        tau = torch.full((n,), self.spacing.tau(t), dtype=torch.long, device=x_t.device)
        res = self.denoiser(x_t, tau, c, a.unet, fill=fill, capture=capture)
        if not torch.isfinite(res.out).all():  # stop at the first NaN/inf, naming the step and the unit
            self._non_finite(x_t, tau, c, a, fill, t)
        x0, eps, frac = self.predict(res.out, x_t, t)
        land = t - 1 - a.jump
        if land < 0:
            raise SamplerError(f"a jump of {a.jump} from step {t} lands below step 0")
        x_next = None if a.stop else self.update(x0, eps, t, land, z, frac)
        return StepOutput(t=t, land=land, action=a, x_t=x_t, x_est0=x0, eps=eps, frac=frac, x_next=x_next,
                          captured=res.captured, units_run=res.units_run, deep=res.deep)

    def _non_finite(self, x_t, tau, c, a, fill, t: int):
        from .adapters.base import AdapterError

        where = "its output"
        if not torch.isfinite(x_t).all():
            where = "its input x_t"
        else:
            try:
                self.denoiser(x_t, tau, c, a.unet, fill=fill, check_finite=True)  # again, unit by unit
            except AdapterError as e:
                where = str(e).split(" outputs")[0]
        raise NonFiniteSampleError(f"the model produced NaN or inf at step t={t} (timestep {int(tau[0])}): {where}; "
                                   "nothing was stored")

    def predict(self, out: torch.Tensor, x: torch.Tensor, t: int):
        """Model output at step t -> (x_est0, eps, var_frac or None), x_est0 clipped if asked."""
        C = x.shape[1]
        frac = None
        if self.model.variance_type == "learned_range":
            out, v = out[:, :C], out[:, C:]
            frac = (v + 1) / 2
        x0, eps = x0_and_eps(out, x, self._ab[t], self.model.prediction_type, self.clip_x0)
        return x0, eps, frac

    def sigmas(self, t: int, frac=None):
        """(sd, sn) at step t: the direction's and the noise's standard deviation."""
        post = self._post[t]
        if self.method == "ddim":
            s = self.eta * math.sqrt(post)
            return s, s
        sd = math.sqrt(post)
        if self.variance == "fixed_small":
            return sd, sd
        if self.variance == "fixed_large":
            return sd, math.sqrt(self._beta[t])
        log_var = frac * math.log(self._beta[t]) + (1 - frac) * float(self._post_log_clipped[t - 1])
        return sd, torch.exp(0.5 * log_var)

    def update(self, x0, eps, t: int, land: int, z, frac=None) -> torch.Tensor:
        """Eq. 3 (land = t-1) or Eq. 4 (a jump): x_t's estimates -> x_land."""
        if land == 0:
            return x0
        sd, sn = self.sigmas(t, frac)
        ab = self._ab[land]
        out = math.sqrt(ab) * x0 + math.sqrt(max(1 - ab - sd * sd, 0.0)) * eps
        if isinstance(sn, torch.Tensor) or sn > 0:
            if z is None:
                raise SamplerError(f"the step at t={t} adds noise: give its noise z (NoiseBank.step(t))")
            out = out + sn * z
        return out

    # --- the loop ---------------------------------------------------------------------------
    def sample_progressive(self, seeds: Sequence[int], cond: Cond = None, plan: Plan | None = None,
                           start: tuple[int, torch.Tensor] | None = None, cache: dict | None = None,
                           capture: Iterable[str] = (), states_at: Iterable[int] = ()) -> Iterator[dict]:
        """Yield one dict per evaluated step: t, land, x_t, x_est0, eps, frac, x_next, stop,
        units_run, deep, cache (iDDPM's ``*_loop_progressive``): a loop over ``Plan.walk`` and ``step``.
        ``start=(t, x_t)`` resumes from a cached state at step t; ``capture`` names more sites
        (``"D[j]"``, ``"E[i]"``, ``"M"``) to keep in ``cache`` (prefix sharing). ``states_at`` is the
        scheduler samplers' (here x_t is the whole state: ``"state"`` is None)."""
        plan = self.check_plan(plan)
        m = self.model
        seeds = check_seeds(seeds)
        bank = NoiseBank(seeds, m.sample_shape)
        c = m.make_cond(cond, len(seeds))
        keep = plan.cache_sites(m.num_blocks) | set(capture)
        cache = {} if cache is None else cache
        if start is None:
            t, x = self.steps, bank.initial().to(m.device)
        else:
            t, x = int(start[0]), start[1].to(m.device)
        for st in plan.walk(self.steps, start=t):
            z = bank.step(st.t).to(m.device) if st.land > 0 and not st.action.stop else None
            out = self.step(x, st.t, c, st.action, cache, z=z, capture=keep)
            cache.update(out.captured)
            yield dict(t=out.t, land=out.land, x_t=out.x_t, x_est0=out.x_est0, eps=out.eps, frac=out.frac,
                       x_next=out.x_next, stop=st.action.stop, units_run=out.units_run, deep=out.deep, cache=cache,
                       units_per_sample=_units_per_sample(out, K=m.num_blocks), x_in=out.x_t, calls=1, state=None)
            x = out.x_next

    @torch.no_grad()
    def sample(self, seeds: Sequence[int], cond=None, plan: Plan | None = None, keep: Sequence[str] = (),
               start: tuple[int, torch.Tensor] | None = None) -> Trajectory:
        """Sample one image per seed under ``plan`` (empty: the baseline). ``keep`` may hold
        ``"x_t"`` and/or ``"x_est0"`` to keep every step's tensors (off: memory stays flat)."""
        keep = (keep,) if isinstance(keep, str) else tuple(keep)  # keep="x_t" is one name
        bad = [k for k in keep if k not in KEEP]
        if bad:
            raise SamplerError(f"keep may hold {', '.join(KEEP)}; got {bad[0]!r}")
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

            bar = tqdm(total=len(chunks) * (self.steps if start is None else int(start[0])), desc="sampling", unit="step", leave=False)
        for ci, (chunk, c) in enumerate(zip(chunks, conds)):
            st = None if start is None else (start[0], start[1][sum(map(len, chunks[:ci])):][:len(chunk)])
            last, mine = None, torch.zeros(len(chunk), dtype=torch.long)
            for d in self.sample_progressive(chunk, c, plan, start=st):
                if ci == 0:
                    steps_run.append(d["t"])
                units += d["units_run"]
                mine += d["units_per_sample"]
                if d["deep"] is not None:
                    reused.setdefault(d["t"], []).append((~d["deep"]).cpu())
                for k, store in (("x_t", traj_xt), ("x_est0", traj_x0)):
                    if k in keep:
                        store.setdefault(d["t"], []).append(d[k].float().cpu())
                last = d
                if bar is not None:
                    bar.update(d["t"] - max(d["land"], 0) if not d["stop"] else d["t"])
            x0s.append((last["x_est0"] if last["stop"] else last["x_next"]).float().cpu())
            per_sample += mine.tolist()
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
        """The baseline and the intervened run from the same noise, in one call. The intervened
        run starts from the baseline's ``x_t`` at the plan's first intervened step (prefix sharing)."""
        plan = self.check_plan(plan)
        keep = (keep,) if isinstance(keep, str) else tuple(keep)
        first = plan.first_step()
        share = first is not None and first < self.steps and not plan.reads_cache()
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


def _units_per_sample(out: StepOutput, K: int) -> torch.Tensor:
    """Units one step computed for each of its samples (exact: the shallow units, and the deep
    part's where an ``AdaptiveCache`` sample ran it)."""
    n = out.x_t.shape[0]
    if out.deep is None:
        return torch.full((n,), int(round(out.units_run)), dtype=torch.long)
    return len(out.action.computes(K)) + out.action.deep_units() * out.deep.long().cpu()
