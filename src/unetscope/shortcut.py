"""Shortcut samplers: schedules as data, the paper's preset, measured savings, and a search.

A shortcut schedule is a ``Plan`` (cuts = ``DropBlocks`` with their nb, fill and step range; the
relax periods are the gaps between cuts; an optional ``StopEarly``), saved as JSON or YAML. Savings
are measured, never assumed: wall time of the baseline and the shortcut run side by side on the same
seeds, and the FLOPs each actually executes (torch's ``FlopCounterMode``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist
from typing import Union

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .metrics import psnr, ssim
from .models import Cond
from .plan import FILLS, DropBlocks, Plan, PlanError, ReuseEncoder, SkipSteps, StepAction, StopEarly
from .sampler import Sampler, SamplerError, cond_slice
from .sweep import per_sample_cond

__all__ = ["load_schedule", "save_schedule", "paper_preset", "PRESETS", "measure", "plan_flops", "search", "SearchConfig",
           "uniform_cache_cuts", "uniform_reuse_cuts", "run_shortcut", "heldout_ssim", "score_plans", "score_chunk", "ScoreJob",
           "Scores", "ShortcutError", "unit_flops", "action_seconds",
           "predicted_time_fraction", "student_t"]


class ShortcutError(ValueError):
    """A schedule file or search setting that cannot be used."""


# --- schedules as data ---------------------------------------------------------------------------
# what save_schedule writes beside the interventions (a search's record): read past, never used
SCHEDULE_META = ("target", "calibration_seeds", "validation_seeds", "calibration_ssim_mean", "validation_ssim_mean",
                 "predicted_compute", "model", "sampler", "target_ssim", "target_min_ssim", "note")


def load_schedule(path) -> Plan:
    """A schedule from a JSON or YAML file: ``{"interventions": [...]}`` or a bare list."""
    path = Path(path)
    if not path.is_file():
        raise ShortcutError(f"schedule file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ShortcutError(f"schedule file {str(path)!r} cannot be read as UTF-8 text ({type(e).__name__})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ShortcutError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        return Plan.from_dict(obj, SCHEDULE_META)
    return Plan.from_json(text, SCHEDULE_META)


def save_schedule(plan: Plan, path, meta: dict | None = None) -> Path:
    path = Path(path)
    unknown = sorted(set(meta or {}) - set(SCHEDULE_META))
    if unknown:
        raise ShortcutError(f"a schedule's metadata has no key {unknown[0]!r}; it takes {', '.join(SCHEDULE_META)}")
    obj = {**(meta or {}), **plan.to_dict()}
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(obj, sort_keys=False))
    else:
        path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def paper_preset(S: int, K: int, fill: str = "zeros") -> Plan:
    """The schedule of the paper's Fig. 11 (GLIDE: K = 16, S = 100), scaled to K and S.

    GLIDE: nb=6 for 5 steps from t=65; nb=8 for 2 steps (60, 59); relax 58..48; nb=8 for 7 steps
    (47..41); relax 40..32; nb=8 for 7 steps (31..25); stop early at t=18 (the last 17 steps skipped).
    Block counts scale by K/16 and step numbers by S/100 (rounded, at least 1)."""
    if K < 2 or S < 2:
        raise ShortcutError(f"the paper's schedule cuts part of the U-Net over several steps: it needs K >= 2 and S >= 2, "
                            f"got K = {K}, S = {S}")

    def b(v):
        return max(1, min(K, round(v * K / 16)))

    def t(v):
        return max(1, round(v * S / 100))

    cuts = [(6, 65, 5), (8, 60, 2), (8, 47, 7), (8, 31, 7)]
    items, floor = [], S + 1
    for nb, start, n in cuts:
        st = min(t(start), floor - 1)
        n_s = max(1, min(round(n * S / 100), st))
        if st - n_s + 1 < 1 or st < 1:
            continue
        items.append(DropBlocks(b(nb), st, n_s, fill))
        floor = st - n_s + 1
    stop = t(18)
    if stop < floor:
        items.append(StopEarly(stop))
    return Plan(tuple(items))


PRESETS = {"paper": paper_preset, "paper-cache": lambda S, K: paper_preset(S, K, fill="cache")}


# --- measuring -----------------------------------------------------------------------------------
@torch.no_grad()
def plan_flops(sampler: Sampler, plan: Plan, seed: int = 0, cond=None) -> int:
    """FLOPs one sample's run under ``plan`` actually executes (guidance's two halves included)."""
    with FlopCounterMode(display=False) as fc:
        sampler.sample([seed], cond, plan)
    return int(fc.get_total_flops())


@torch.no_grad()
def unit_flops(runner, x, timesteps, cond=None) -> dict[str, int]:
    """FLOPs of each unit (``E[i]``, ``M``, ``D[j]``, ``prepare``, ``head``) in one full evaluation."""
    units = runner.units
    counts: dict[str, int] = {}

    def counted(name, fn):
        def call(*a):
            with FlopCounterMode(display=False) as fc:
                out = fn(*a)
            key = name if name in ("prepare", "M", "head") else f"{name}[{a[0]}]"
            counts[key] = counts.get(key, 0) + int(fc.get_total_flops())
            return out
        return call

    orig = {k: getattr(units, k) for k in ("prepare", "encoder", "middle", "decoder", "head")}
    try:
        for k, name in (("prepare", "prepare"), ("encoder", "E"), ("middle", "M"), ("decoder", "D"), ("head", "head")):
            setattr(units, k, counted(name, orig[k]))
        runner(x, timesteps, cond)
    finally:
        for k in orig:
            delattr(units, k) if k in vars(units) else None
    return counts


def student_t(p: float, df: int) -> float:
    """Student's t quantile ``p`` (0.5 < p < 1) with ``df`` >= 1 degrees of freedom, by Hill's
    expansion around the normal quantile (Comm. ACM 13(10), 1970) for df >= 3: within 0.5% of the
    exact value at p <= 0.95, and for df >= 5 at p <= 0.99; exact for df 1 and 2."""
    z = NormalDist().inv_cdf(p)
    if df >= 3:
        g1 = (z ** 3 + z) / 4
        g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
        g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
        return z + g1 / df + g2 / df ** 2 + g3 / df ** 3
    # exact for one and two degrees of freedom
    return math.tan(math.pi * (p - 0.5)) if df == 1 else (2 * p - 1) / math.sqrt(2 * p * (1 - p))


@torch.no_grad()
def action_seconds(sampler: Sampler, plan: Plan, seeds: list[int], cond: Cond = None, repeats: int = 5,
                   warmup: int = 1, clock=time.perf_counter) -> dict[StepAction, float]:
    """Median seconds of one (guided) U-Net evaluation of the seeds' batch (the sampler's first
    chunk) under each U-Net action ``plan`` takes, and under none, by the timing protocol (warm-up,
    interleaved repeats). Cached fills come from a full evaluation first."""
    from .noise import NoiseBank
    from .plan import NO_ACTION
    from .timing import interleave

    plan = sampler.check_plan(plan)
    m, K = sampler.model, sampler.model.num_blocks
    n = len(seeds)
    seeds = list(seeds)[:sampler.batch_size or n]  # the first chunk, as the sampler batches them
    x = NoiseBank(seeds, m.sample_shape).initial().to(m.device)
    tau = torch.full((len(seeds),), m.schedule.num_train_timesteps // 2, dtype=torch.long, device=m.device)
    c = m.make_cond(cond_slice(cond, range(len(seeds)), n), len(seeds))
    acts = list(dict.fromkeys([NO_ACTION] + [st.action.unet for st in plan.walk(sampler.steps)]))
    sites = sorted({s for a in acts for s in a.needs(K)})
    full = sampler.denoiser(x, tau, c, capture=sites)
    fns = {a: (lambda a=a: sampler.denoiser(x, tau, c, a, fill={s: full.captured[s] for s in a.needs(K)}))
           for a in acts}
    timings, _ = interleave(fns, repeats, warmup, clock, device=m.device)
    return {a: t.median for a, t in timings.items()}


def predicted_time_fraction(sampler: Sampler, plan: Plan, seconds: dict[StepAction, float],
                            seconds_baseline: float | None = None, chunks: int = 1) -> float:
    """The shortcut's time as a fraction of the baseline's, predicted from the seconds of one
    evaluation under each action (``action_seconds``): the sum over the evaluations the plan makes.
    With the baseline's measured seconds (of ``chunks`` batches), each step also pays the
    baseline's time outside the U-Net (the update, the noise: ``seconds_baseline / S`` minus the
    full evaluations)."""
    from .plan import NO_ACTION

    S = sampler.steps
    walk = list(sampler.check_plan(plan).walk(S))
    missing = {st.action.unet for st in walk} - set(seconds)
    if NO_ACTION not in seconds or missing:
        raise ShortcutError("seconds must time every U-Net action of the plan and the full evaluation "
                            "(action_seconds(sampler, plan, ...) gives them)")
    unet = chunks * seconds[NO_ACTION]  # one step's evaluations
    other = max(0.0, seconds_baseline / S - unet) if seconds_baseline else 0.0
    return sum(chunks * seconds[st.action.unet] + other for st in walk) / (S * (unet + other))


def _mad(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x - x.mean())))


@torch.no_grad()
def measure(sampler: Sampler, plan: Plan, seeds: list[int], cond: Cond = None, repeats: int = 3, warmup: int = 1,
            clock=time.perf_counter) -> dict:
    """Baseline vs shortcut on the same seeds: per-sample SSIM/PSNR, FLOPs executed, and wall times
    by the timing protocol (``unetscope.timing``: a warm-up of each side, then ``repeats`` interleaved
    runs; the median and the spread of each, and warnings when they should not be trusted).

    ``time_saving_predicted`` is the time saving the seconds of one evaluation under each of the
    plan's actions predict (``action_seconds``, ``predicted_time_fraction``): where FLOPs run at
    different speeds in different blocks (a CPU's small high-resolution convolutions are slow per
    FLOP), the time saving follows it rather than the compute saving."""
    from .timing import interleave, timing_warnings

    plan = sampler.check_plan(plan)
    if not plan:
        raise ShortcutError("the schedule holds no interventions: the shortcut would be the baseline itself")
    try:
        timings, first = interleave({"baseline": lambda: sampler.sample(seeds, cond),
                                     "shortcut": lambda: sampler.sample(seeds, cond, plan)}, repeats, warmup, clock,
                                    device=sampler.model.device)
    except ValueError as e:
        if isinstance(e, (SamplerError, PlanError)):
            raise
        raise ShortcutError(str(e)) from None
    base, short = first["baseline"], first["shortcut"]
    tb, ts = timings["baseline"], timings["shortcut"]
    chunks = math.ceil(len(seeds) / (sampler.batch_size or len(seeds)))
    predicted = 1 - predicted_time_fraction(sampler, plan, action_seconds(sampler, plan, seeds, cond, clock=clock),
                                            tb.median, chunks)
    a, b = base.images, short.images
    ss, pp = ssim(b, a).numpy(), psnr(b, a).numpy()
    c1 = cond_slice(cond, [0], len(seeds))
    f_base, f_short = plan_flops(sampler, Plan(), seeds[0], c1), plan_flops(sampler, plan, seeds[0], c1)
    fin = pp[np.isfinite(pp)]
    compute_saving = 1 - f_short / f_base
    return dict(
        time_saving=1 - ts.median / tb.median, compute_saving=compute_saving, time_saving_predicted=predicted,
        seconds_baseline=tb.median,
        seconds_shortcut=ts.median, timing=dict(baseline=tb.to_dict(), shortcut=ts.to_dict(), repeats=repeats, warmup=warmup),
        warnings=timing_warnings(tb, ts, compute_saving, predicted),
        flops_baseline=f_base, flops_shortcut=f_short, nfe_baseline=base.nfe, nfe_shortcut=short.nfe,
        ssim=ss.tolist(), psnr=pp.tolist(), ssim_mean=float(ss.mean()), ssim_mad=_mad(ss), ssim_min=float(ss.min()),
        psnr_mean=float(fin.mean()) if len(fin) else math.inf, samples=len(seeds),
        images_baseline=a, images_shortcut=b, trajectory_baseline=base,
    )


# --- search --------------------------------------------------------------------------------------
Cut = Union[DropBlocks, ReuseEncoder, SkipSteps]  # the moves that cut compute over a range of steps


@dataclass(frozen=True)
class _Sched:
    cuts: tuple  # DropBlocks / ReuseEncoder / SkipSteps, sorted by start descending
    stop: int | None

    def plan(self) -> Plan:
        return Plan(tuple(self.cuts) + ((StopEarly(self.stop),) if self.stop else ()))

    def busy(self) -> set[int]:
        return {t for c in self.cuts for t in _span(c)}

    def with_cuts(self, cuts) -> "_Sched":
        return _Sched(tuple(sorted(cuts, key=lambda c: (-c.start, repr(c)))), self.stop)


def _span(c: Cut) -> set[int]:
    """The steps a cut occupies: those it changes and those it removes (a jump passes over them)."""
    return set(c.evaluated_steps()) | set(c.removed_steps())


def uniform_cache_cuts(S: int, every: int, nb: int) -> tuple:
    """DeepCache-style: a full evaluation every ``every`` steps (S, S-every, ..), the bottom nb
    blocks reused from it in between."""
    return tuple(DropBlocks(nb, t - 1, min(every - 1, t - 1), "cache") for t in range(S, 1, -every) if every > 1)


def uniform_reuse_cuts(S: int, every: int) -> tuple:
    """Faster-Diffusion-style: a full evaluation every ``every`` steps, the encoder's outputs
    reused from it in between (``ReuseEncoder``)."""
    return tuple(ReuseEncoder(t - 1, min(every - 1, t - 1)) for t in range(S, 1, -every) if every > 1)


def _grown(c: Cut, n: int | None = None, nb: int | None = None) -> Cut:
    if isinstance(c, DropBlocks):
        return DropBlocks(nb or c.nb, c.start, n or c.n, c.fill)
    return type(c)(c.start, n or c.n)


@dataclass(frozen=True)
class SearchConfig:
    """The settings of ``search``: what to aim for (a quality target or a compute budget), how sure
    to be, and the move set.

    Targets are on the per-sample SSIM against the baseline: ``target_mean`` (the mean),
    ``target_min`` (every sample) and ``target_quantile`` (the ``quantile``-th quantile, e.g. the
    worst 10%); any of them together. With none and no ``budget``, the target is a mean of 0.8.
    ``budget`` (a compute fraction of the baseline) asks instead for the best mean SSIM at that
    compute or less."""

    target_mean: float | None = None
    target_min: float | None = None
    target_quantile: float | None = None
    quantile: float = 0.1  # the quantile target_quantile is on
    budget: float | None = None  # compute fraction to stay within (instead of a quality target)
    confidence: float = 0.9  # a move is kept when the validation seeds' bootstrap lower bound (at this level) meets the target
    nbs: tuple | None = None  # block counts a DropBlocks move may cut (None: 1..K for K <= 8, else K/4, K/2, 3K/4, K)
    fills: tuple = ("zeros", "cache")  # DropBlocks fills
    reuse_encoder: bool = True  # ReuseEncoder moves and uniform starts
    skip_steps: bool = True  # SkipSteps moves (jump over steps, the paper's Eq. 4)
    stop_early: bool = True  # StopEarly moves
    lengths: tuple | None = None  # step counts of a new cut (None: 2, 4, 7, 10 % of S)
    grid: int | None = None  # stride of the start steps tried (None: S/25)
    min_relax: int = 0  # steps left uncut between two cuts (the relax periods)
    every: tuple = (2, 3, 4, 5, 6, 8)  # the uniform schedules' periods
    per_round: int = 12  # candidates evaluated together (one sweep)
    validate_top: int = 3  # calibration winners checked on the validation seeds per round
    max_rounds: int = 40
    seed: int = 0  # of the bootstrap: the search is deterministic

    def __post_init__(self):
        for name in ("target_mean", "target_min", "target_quantile", "budget"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1):
                raise ShortcutError(f"search {name} must be a number in (0, 1], got {v!r}")
        for name in ("quantile", "confidence"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ShortcutError(f"search {name} must be a number in (0, 1), got {v!r}")
        if self.budget is not None and self.has_target:
            raise ShortcutError("give a quality target (target_mean / target_min / target_quantile) or a compute budget, "
                                "not both")
        for name in ("per_round", "max_rounds", "validate_top"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ShortcutError(f"search {name} must be an integer >= 1, got {v!r}")
        if not self.every or any(isinstance(e, bool) or not isinstance(e, int) or e < 2 for e in self.every):
            raise ShortcutError(f"search every must be periods >= 2, got {self.every!r}")
        bad = [f for f in self.fills if f not in FILLS]
        if bad:
            raise ShortcutError(f"search fills must be among {', '.join(FILLS)}, got {bad[0]!r}")

    @property
    def has_target(self) -> bool:
        return any(v is not None for v in (self.target_mean, self.target_min, self.target_quantile))

    @property
    def targets(self) -> dict:
        """The quality targets in force (a mean of 0.8 when neither a target nor a budget is given)."""
        if self.budget is not None:
            return {}
        t = {k: v for k, v in (("mean", self.target_mean), ("min", self.target_min),
                               ("quantile", self.target_quantile)) if v is not None}
        return t or {"mean": 0.8}

    def meets(self, ss: np.ndarray) -> bool:
        """The targets hold on these per-sample SSIMs (point estimates)."""
        t = self.targets
        return (("mean" not in t or ss.mean() >= t["mean"]) and ("min" not in t or ss.min() >= t["min"])
                and ("quantile" not in t or np.quantile(ss, self.quantile) >= t["quantile"]))

    def holds(self, ss: np.ndarray, spread: np.ndarray | None = None) -> bool:
        """The targets hold with a margin: the bootstrap lower bounds (at ``confidence``) of the
        mean and of the quantile, and the minimum itself.

        A mean target must also hold at Student's lower bound ``mean - t * s / sqrt(n)``, with the
        standard deviation ``s`` of ``ss`` and ``spread`` together (the calibration seeds' SSIMs of
        the same schedule, in the search). Per-sample SSIM has a long low tail: a few validation
        seeds, all easy, give a tight bootstrap bound on a schedule whose population mean is at the
        target; the seeds next to them may have seen the tail (docs/shortcuts.md, measured)."""
        t = self.targets
        ss = np.asarray(ss, dtype=float)
        if "min" in t and ss.min() < t["min"]:
            return False
        if "mean" in t or "quantile" in t:
            rng = np.random.default_rng(self.seed)
            boot = ss[rng.integers(0, len(ss), size=(1000, len(ss)))]
            lo = 1 - self.confidence
            if "mean" in t and np.quantile(boot.mean(axis=1), lo) < t["mean"]:
                return False
            if "mean" in t and len(ss) > 1:
                pooled = ss if spread is None else np.concatenate([ss, np.asarray(spread, dtype=float)])
                s = float(pooled.std(ddof=1))
                if ss.mean() - student_t(self.confidence, len(ss) - 1) * s / math.sqrt(len(ss)) < t["mean"]:
                    return False
            if "quantile" in t and np.quantile(np.quantile(boot, self.quantile, axis=1), lo) < t["quantile"]:
                return False
        return True

    def describe_target(self) -> str:
        if self.budget is not None:
            return f"the best mean SSIM at compute <= {self.budget:.3f} of the baseline"
        t = self.targets
        parts = [f"mean SSIM >= {t['mean']}" if "mean" in t else "", f"every sample's SSIM >= {t['min']}" if "min" in t else "",
                 f"the {self.quantile:.0%} quantile of SSIM >= {t['quantile']}" if "quantile" in t else ""]
        return " and ".join(p for p in parts if p)


@dataclass(frozen=True)
class ScoreJob:
    """Plans to score on one chunk of seeds: all a worker needs (no model, no store)."""

    seeds: list[int]
    cond: Cond  # the chunk's conditions, as the sampler takes them
    plans: list[Plan]


@dataclass(frozen=True)
class Scores:
    """A chunk's per-sample SSIM of each plan against the baseline, and the work it took."""

    ssim: np.ndarray  # (plans, seeds)
    evaluations: int  # U-Net evaluations spent (each on the chunk's samples)
    seconds: float
    worker: str  # host/pid of the process that computed it


def score_chunk(sampler: Sampler, job: ScoreJob, on_evaluation=None) -> Scores:
    """Per-sample SSIM of ``job.plans`` against the baseline on ``job.seeds``, by the sweep engine
    (shared prefixes); pure: the same job gives the same scores in any process (a Ray worker included)."""
    from .sweep import SweepEngine, worker_id

    t0 = time.perf_counter()
    m = sampler.model
    res = SweepEngine(sampler, on_evaluation=on_evaluation).run_chunk(list(job.seeds), job.cond, list(job.plans))
    base = m.decode(res.baseline_x0)
    ss = np.stack([ssim(m.decode(x0), base).numpy() for x0 in res.finals]) if res.finals else \
        np.zeros((0, len(job.seeds)))
    return Scores(ss, res.evaluations, time.perf_counter() - t0, worker_id())


def _chunks(n: int, executor, chunk_size: int | None) -> list[list[int]]:
    """Seed indices in chunks: ``chunk_size`` each, or (None) one chunk per worker of ``executor``."""
    if chunk_size is None:
        chunk_size = math.ceil(n / max(1, executor.parallelism() if executor is not None else 1))
    return [list(range(i, min(i + chunk_size, n))) for i in range(0, n, chunk_size)]


def score_plans(sampler: Sampler, plans: list[Plan], seeds: list[int], cond: Cond = None, *, executor=None,
                chunk_size: int | None = None, on_evaluation=None, workers: dict | None = None) -> tuple[np.ndarray, int]:
    """Per-sample SSIM of each plan against the baseline on ``seeds``, ``(plans, seeds)``, and the
    U-Net evaluations spent. ``executor`` (``unetscope.executor``; None: here): where the chunks of
    seeds (``chunk_size`` each; None: one per worker) are computed; each chunk runs every plan with
    shared prefixes. ``on_evaluation()`` is called once per U-Net evaluation (for a chunk computed on
    a worker, when it returns). ``workers`` (a dict), when given, gains each worker's chunks,
    evaluations, image-evaluations and seconds."""
    from .executor import tally_work

    seeds = list(seeds)
    if not seeds:
        raise ShortcutError("no seeds to score the plans on")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ShortcutError(f"chunk_size must be an integer >= 1 or None (one chunk per worker), got {chunk_size!r}")
    plans = [sampler.check_plan(p) for p in plans]  # a bad plan fails here, not on a worker
    idx = _chunks(len(seeds), executor, chunk_size)
    jobs = [ScoreJob([seeds[i] for i in ix], cond_slice(cond, ix, len(seeds)), plans) for ix in idx]
    out = np.zeros((len(plans), len(seeds)))
    spent = 0
    here = executor is None or getattr(executor, "in_process", False)
    if here:
        results = ((k, score_chunk(sampler, job, on_evaluation)) for k, job in enumerate(jobs))
    else:
        results = executor.map(score_chunk, jobs, sampler)
    for k, r in results:
        out[:, idx[k]] = r.ssim
        spent += r.evaluations
        if workers is not None:
            tally_work(workers, r.worker, r.evaluations, len(idx[k]), r.seconds)
        for _ in range(0 if here or on_evaluation is None else r.evaluations):
            on_evaluation()
    return out, spent


class _Evaluator:
    """Per-sample SSIM of schedules on one set of seeds (``score_plans``), each schedule evaluated once."""

    def __init__(self, sampler: Sampler, seeds, cond, progress, executor=None, chunk_size=None, workers=None):
        self.sampler, self.seeds, self.cond = sampler, list(seeds), cond
        self.progress, self.executor, self.chunk_size, self.workers = progress, executor, chunk_size, workers
        self.known: dict[_Sched, np.ndarray] = {}
        self.evaluations = 0

    def __call__(self, cands) -> list[np.ndarray]:
        todo = list(dict.fromkeys(c for c in cands if c not in self.known and (c.cuts or c.stop)))
        if todo:
            ss, spent = score_plans(self.sampler, [c.plan() for c in todo], self.seeds, self.cond, executor=self.executor,
                                    chunk_size=self.chunk_size, on_evaluation=self.progress, workers=self.workers)
            self.evaluations += spent
            for c, row in zip(todo, ss):
                self.known[c] = row
        return [self.known[c] if (c.cuts or c.stop) else np.ones(len(self.seeds)) for c in cands]


def search(sampler: Sampler, seeds: list[int], cond: Cond = None, config: SearchConfig | None = None, *,
           validation_seeds: list[int] | None = None, validation_cond: Cond = None, progress=None, log=None,
           executor=None, chunk_size: int | None = None, **settings) -> dict:
    """Greedy cut-relax-cut search for little compute at a quality target (or for the best
    quality within a compute budget), calibrated on ``seeds`` and checked on ``validation_seeds``.

    Target mode: it starts from the cheapest uniform schedule (DeepCache-style cache cuts every few
    steps, or reusing the encoder every few steps) that meets the target, or from nothing. Each round
    proposes moves on the current schedule (a new ``DropBlocks`` of nb blocks over n steps with zeros
    or the cache, a new ``ReuseEncoder`` or ``SkipSteps`` range, a longer or deeper cut, a later
    ``StopEarly``), ranks them by FLOPs saved (executed FLOPs per U-Net action, counted once),
    evaluates the cheapest ``per_round`` together with the sweep engine (shared prefixes) on the
    calibration seeds, and keeps, among those that meet the target there, the one that saves the
    most compute per SSIM lost whose target also holds on the validation seeds with a margin
    (``SearchConfig.holds``). Stops when no move is kept.

    Budget mode: it starts from the uniform schedules just above the budget that beat the best
    uniform schedule within it, and removes compute by the same moves, the best compute saved per
    SSIM lost first, until within the budget; then keeps the best on the validation seeds.

    Either way the result is never below the best uniform schedule of equal or lower compute on the
    validation seeds: that schedule is returned instead when it is better (``uniform_rival``).

    ``executor`` (``unetscope.executor``; None: this process): where each batch of candidates is
    scored, in chunks of ``chunk_size`` seeds (None: one chunk per worker); the search itself and
    its choices stay here, so the result does not depend on where the scores were computed.
    ``settings`` are ``SearchConfig``'s fields, as keywords."""
    from .flops import FlopTable

    cfg = replace(config or SearchConfig(), **settings) if settings else (config or SearchConfig())
    m, S, K = sampler.model, sampler.steps, sampler.model.num_blocks
    nbs = list(cfg.nbs or (range(1, K + 1) if K <= 8 else sorted({max(1, K // 4), K // 2, (3 * K) // 4, K})))
    lengths = list(cfg.lengths or sorted({max(1, round(v * S / 100)) for v in (2, 4, 7, 10)}))
    grid = cfg.grid or max(1, round(S / 25))
    x1 = torch.zeros(1, *m.sample_shape, device=m.device, dtype=m.dtype)
    t1 = torch.full((1,), m.schedule.num_train_timesteps // 2, dtype=torch.long, device=m.device)
    c1 = m.make_cond(cond_slice(cond, [0], len(seeds)), 1)
    flops = FlopTable(m.runner, x1, t1, c1, sampler.denoiser.rows_per_sample)
    empty = _Sched((), None)
    base_cost = flops.plan(Plan(), S)
    workers: dict = {}  # host/pid -> the work each worker did
    cal = _Evaluator(sampler, seeds, cond, progress, executor, chunk_size, workers)
    val = _Evaluator(sampler, validation_seeds, validation_cond, progress, executor, chunk_size, workers) \
        if validation_seeds else None
    say = log or (lambda _m: None)

    def cost(c: _Sched) -> float:
        return flops.plan(c.plan(), S) / base_cost

    def key(c: _Sched):  # cheapest first; ties broken by the schedule itself (deterministic)
        return (cost(c), repr(c.plan()))

    def holds(cands) -> list[bool]:  # the target with a margin on the validation seeds (calibration if none)
        if val is None:
            return [cfg.meets(ss) for ss in cal(cands)]
        return [cfg.holds(v, spread=c) for v, c in zip(val(cands), cal(cands))]

    def quality(c: _Sched) -> float:  # the estimate a result is judged by: validation, else calibration
        return float((val or cal)([c])[0].mean())

    def new_cuts():  # (make(start, n), whether it reads an earlier step's activations)
        for nb in nbs:
            for fill in cfg.fills:
                yield (lambda st, n, nb=nb, fill=fill: DropBlocks(nb, st, n, fill)), fill == "cache"
        if cfg.reuse_encoder:
            yield (lambda st, n: ReuseEncoder(st, n)), True
        if cfg.skip_steps:
            yield (lambda st, n: SkipSteps(st, n)), False

    def proposals(cur: _Sched):
        busy = cur.busy()
        out = []
        if cfg.stop_early:
            for step in (1, 2, 4):  # a later stop (never above a cut)
                at = cur.stop + step * grid if cur.stop else step * grid
                if at < min(busy, default=S + 1) and at <= S:
                    out.append(_Sched(cur.cuts, at))
        for make, reads in new_cuts():  # a new cut (one that reads a cache starts below the first step)
            for n in lengths:
                for st in range(S - reads, 0, -grid):
                    try:
                        cut = make(st, n)
                    except PlanError:
                        continue
                    span = _span(cut)
                    if cur.stop and min(span) <= cur.stop:
                        continue
                    near = {t for t in busy for d in range(-cfg.min_relax, cfg.min_relax + 1) if t + d in span}
                    if span & busy or near:
                        continue
                    out.append(cur.with_cuts(cur.cuts + (cut,)))
        for i, c in enumerate(cur.cuts):  # grow a cut: longer, or deeper
            grows = [(c.n + max(1, grid // 2), None)]
            if isinstance(c, DropBlocks) and c.nb < K:
                grows.append((c.n, min(K, c.nb + max(1, K // 6))))
            for n2, nb2 in grows:
                try:
                    g = _grown(c, n=n2, nb=nb2)
                except PlanError:
                    continue
                if (cur.stop and min(_span(g)) <= cur.stop) or _span(g) & (busy - _span(c)):
                    continue
                out.append(cur.with_cuts(cur.cuts[:i] + (g,) + cur.cuts[i + 1:]))
        return out

    # the uniform schedules: where the search starts, and what its result must not fall below
    uniform = [_Sched(uniform_cache_cuts(S, e, nb), None) for e in cfg.every for nb in nbs if "cache" in cfg.fills]
    if cfg.reuse_encoder:
        uniform += [_Sched(uniform_reuse_cuts(S, e), None) for e in cfg.every]
    uniform = sorted({u for u in uniform if u.cuts}, key=key)
    history = []

    def greedy(cur: _Sched, accept_ok, done, label: str) -> _Sched:
        """Apply the best move (compute saved per calibration SSIM lost) that ``accept_ok`` allows,
        round after round, until ``done`` or no move is kept."""
        for rnd in range(cfg.max_rounds):
            if done(cur):
                break
            c_now, q_now = cost(cur), float(cal([cur])[0].mean())
            props = sorted({p for p in proposals(cur) if cost(p) < c_now}, key=key)
            kept = None
            for b in range(0, min(len(props), 3 * cfg.per_round), cfg.per_round):
                batch = props[b:b + cfg.per_round]
                try:
                    scores = cal(batch)
                except PlanError:
                    continue
                ranked = sorted(((c_now - cost(p)) / (max(q_now - float(ss.mean()), 0.0) + 0.005), i)
                                for i, (p, ss) in enumerate(zip(batch, scores)) if accept_ok(p, ss))
                winners = [batch[i] for _, i in reversed(ranked)][:cfg.validate_top]
                if winners:
                    ok = holds(winners) if cfg.budget is None else [True] * len(winners)
                    kept = next((w for w, good in zip(winners, ok) if good), None)
                if kept:
                    break
            if kept is None:
                break
            cur = kept
            ss = cal([cur])[0]
            history.append(dict(round=len(history), start=label, plan=cur.plan().to_dict(), compute=cost(cur),
                                ssim_mean=float(ss.mean()), ssim_min=float(ss.min())))
            say(f"round {len(history) - 1}: compute {cost(cur):.3f} of the baseline, calibration mean SSIM {ss.mean():.3f} "
                f"(min {ss.min():.3f}): {cur.plan()!r}")
        return cur

    if cfg.budget is None:
        # 1. the cheapest uniform schedule whose target holds (calibration, then validation with a margin)
        cur = empty
        fits = [u for u, ss in zip(uniform, cal(uniform)) if cfg.meets(ss)]
        for b in range(0, len(fits), 4):
            got = next((u for u, good in zip(fits[b:b + 4], holds(fits[b:b + 4])) if good), None)
            if got:
                cur = got
                break
        if cur.cuts:
            say(f"start: uniform {cur.plan()!r}, compute {cost(cur):.3f}")
        # 2. greedy moves that keep the target
        cur = greedy(cur, lambda p, ss: cfg.meets(ss), lambda c: False, "uniform" if cur.cuts else "empty")
    else:
        B = cfg.budget + 1e-9
        within = [u for u in uniform if cost(u) <= B]
        best_in = max(within, key=lambda u: (float(cal([u])[0].mean()), -cost(u)), default=None) if within else None
        floor = float(cal([best_in])[0].mean()) if best_in else -1.0
        above = sorted((u for u in uniform if cost(u) > B), key=lambda u: -cost(u))
        above = [u for u in reversed(above) if float(cal([u])[0].mean()) > floor][:2] or ([empty] if not best_in else [])
        finals = [best_in] if best_in else []
        for u in above:
            say(f"start: {u.plan()!r}, compute {cost(u):.3f}")
            got = greedy(u, lambda p, ss: float(ss.mean()) > floor, lambda c: cost(c) <= B, "uniform")
            if cost(got) <= B:
                finals.append(got)
        if not finals:
            raise ShortcutError(f"no schedule within the budget ({cfg.budget:.3f} of the baseline's compute) was found: "
                                f"the cheapest uniform schedule needs {min(cost(u) for u in uniform):.3f}")
        cur = max(finals, key=lambda c: (quality(c), -cost(c)))

    # 3. never below the best uniform schedule of equal or lower compute (on the validation seeds)
    rivals = [u for u in uniform if cost(u) <= cost(cur) + 1e-9 and u != cur]
    rival = max(rivals, key=lambda u: (quality(u), -cost(u)), default=None)
    if rival is not None and quality(rival) > quality(cur) and (cfg.budget is not None or cfg.meets((val or cal)([rival])[0])):
        say(f"the uniform schedule {rival.plan()!r} is better on the validation seeds at no more compute: it is the result")
        cur = rival
    ss_cal = cal([cur])[0]
    ss_val = val([cur])[0] if val is not None else None
    return dict(plan=cur.plan(), predicted_compute=cost(cur), history=history, target=cfg.describe_target(),
                calibration_ssim_mean=float(ss_cal.mean()), calibration_ssim_min=float(ss_cal.min()),
                validation_ssim_mean=None if ss_val is None else float(ss_val.mean()),
                validation_ssim_min=None if ss_val is None else float(ss_val.min()),
                validation_holds=None if ss_val is None else bool(cfg.budget is not None or cfg.holds(ss_val, spread=ss_cal)),
                uniform_rival=None if rival is None else dict(plan=rival.plan().to_dict(), compute=cost(rival),
                                                             ssim_mean=quality(rival)),
                evaluations=cal.evaluations + (val.evaluations if val else 0), workers=workers,
                flops_per_nb=[flops(StepAction(drop_blocks=nb)) for nb in range(K + 1)])


@torch.no_grad()
def heldout_ssim(sampler: Sampler, plan: Plan | list[Plan], seeds: list[int], cond: Cond = None, *,
                 executor=None, chunk_size: int | None = None) -> np.ndarray:
    """Per-sample SSIM against the baseline on ``seeds`` (no timing) of ``plan``, ``(seeds,)``; or of
    each of several plans, ``(plans, seeds)``, with one baseline and shared prefixes. ``executor``
    and ``chunk_size`` as in ``score_plans``."""
    several = isinstance(plan, (list, tuple)) and bool(plan) and all(isinstance(p, Plan) for p in plan)
    ss, _ = score_plans(sampler, list(plan) if several else [plan], seeds, cond, executor=executor, chunk_size=chunk_size)
    return ss if several else ss[0]


# --- a shortcut run: measure, store, figures -----------------------------------------------------
def run_shortcut(sampler: Sampler, plan: Plan, seeds: list[int], cond, out_dir, *, repeats: int = 3, name: str = "") -> dict:
    """Baseline and shortcut on the same seeds; writes ``summary.json``, the rows into
    ``results.sqlite``, the SSIM histogram (Fig. 13) and the best/worst grid (Fig. 22)."""
    from .figures import histogram_figure, image_grid_figure
    from .images import to_uint8
    from .store import ResultStore, run_dir, strict_json, write_atomic

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    m = sampler.model
    res = measure(sampler, plan, seeds, cond, repeats=repeats)
    settings = dict(experiment="shortcut", schedule=plan.to_dict(), name=name, model=m.describe(),
                    sampler=sampler.describe(), seeds=list(seeds), cond=cond)
    conds = per_sample_cond(cond, len(seeds))
    run = ResultStore.run_name("shortcut", settings)
    # figures and summaries first, the rows last: rows in the store imply their summary exists
    fig_dir = run_dir(out_dir, "figures", run)
    fig_dir.mkdir(parents=True, exist_ok=True)
    ss = np.asarray(res["ssim"])
    files = [histogram_figure(fig_dir / "ssim_histogram.png", ss, xlabel="SSIM(shortcut, baseline)", ylabel="samples",
                              mark=res["ssim_mean"], low=min(0.5, float(ss.min())),
                              title=f"SSIM of the shortcut (mean = {res['ssim_mean']:.3f}, mad = {res['ssim_mad']:.3f}; Fig. 13)")]
    order = np.argsort(res["ssim"])
    k = min(5, len(seeds))
    picks = [("worst", order[:k]), ("best", order[::-1][:k])]
    tiles, labels = [], []
    for label, idx in picks:
        tiles.append([to_uint8(res["images_baseline"][i]) for i in idx])
        tiles.append([to_uint8(res["images_shortcut"][i]) for i in idx])
        labels += [f"{label}: x0", f"{label}: shortcut"]
    width = max(len(r) for r in tiles)
    tiles = [r + [None] * (width - len(r)) for r in tiles]
    g = image_grid_figure(fig_dir / "best_worst.png", tiles, labels, [f"#{i + 1}" for i in range(width)],
                          "Worst and best samples of the shortcut against the baseline (Fig. 22)")
    if g:
        files.append(g)
    summary = dict(
        time_saving=res["time_saving"], compute_saving=res["compute_saving"],
        time_saving_predicted=res["time_saving_predicted"], ssim_mean=res["ssim_mean"],
        ssim_mad=res["ssim_mad"], ssim_min=res["ssim_min"], psnr_mean=res["psnr_mean"], samples=len(seeds),
        nfe_baseline=res["nfe_baseline"], nfe_shortcut=res["nfe_shortcut"], seconds_baseline=res["seconds_baseline"],
        timing=res["timing"], warnings=res["warnings"], compile=m.compile_stats(),
        seconds_shortcut=res["seconds_shortcut"], flops_baseline=res["flops_baseline"], flops_shortcut=res["flops_shortcut"],
        schedule=plan.to_dict(), name=name, model=m.describe(), sampler=sampler.describe(), seeds=list(seeds),
        per_sample=[dict(seed=s, ssim=res["ssim"][i], psnr=res["psnr"][i]) for i, s in enumerate(seeds)],
        figures=[str(Path(f).relative_to(out_dir)) for f in files], run=run,
    )
    text = strict_json(summary)
    (out_dir / "findings").mkdir(exist_ok=True)
    write_atomic(out_dir / "findings" / f"{run}.json", text)  # every run, for the report
    write_atomic(out_dir / "summary.json", text)  # the latest shortcut run of the folder
    with ResultStore(out_dir / "results.sqlite") as store:
        store.register_run("shortcut", settings)
        stats = {k: res[k] for k in ("time_saving", "compute_saving", "time_saving_predicted", "seconds_baseline",
                                     "seconds_shortcut",
                                     "flops_baseline", "flops_shortcut", "timing", "warnings")}
        store.write(run, [dict(seed=s, variant=plan.to_dict(), cond=c, ssim=res["ssim"][i], psnr=res["psnr"][i],
                               extra=dict(nfe=res["nfe_shortcut"]))
                          for i, (s, c) in enumerate(zip(seeds, conds))], stats=stats)
    summary["images_shortcut"] = res["images_shortcut"]
    return summary
