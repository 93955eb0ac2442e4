"""Measuring a shortcut: FLOPs executed (torch's ``FlopCounterMode``), seconds per U-Net action and
the time they predict, and baseline-against-shortcut runs by the timing protocol. Savings are
measured, never assumed."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..checks import check_int
from ..metrics import psnr, ssim
from ..models import Cond
from ..plan import Plan, PlanError, StepAction
from ..sampling import Sampler, SamplerError, cond_slice
from .schedules import ShortcutError

__all__ = ["plan_flops", "sample_flops", "unit_flops", "action_seconds", "predicted_time_fraction", "measure",
           "feature_changes", "change_preset"]


@torch.no_grad()
def plan_flops(sampler: Sampler, plan: Plan, seed: int = 0, cond=None) -> int:
    """FLOPs one sample's run under ``plan`` actually executes (guidance's two halves included)."""
    with FlopCounterMode(display=False) as fc:
        sampler.sample([seed], cond, plan)
    return int(fc.get_total_flops())


@torch.no_grad()
def sample_flops(sampler: Sampler, plan: Plan, reused: dict, n: int, cond=None) -> list[int]:
    """FLOPs of each of ``n`` samples' runs under ``plan`` (``reused``: ``Trajectory.reused`` of
    the run, for ``AdaptiveCache`` steps), counted per U-Net action on one sample (``FlopTable``)."""
    from ..flops import FlopTable

    m = sampler.model
    x1 = torch.zeros(1, *m.sample_shape, device=m.device, dtype=m.dtype)
    t1 = torch.full((1,), m.schedule.num_train_timesteps // 2, dtype=torch.long, device=m.device)
    table = FlopTable(m.runner, x1, t1, m.make_cond(cond, 1), sampler.denoiser.rows_per_sample)
    return table.samples(sampler.check_plan(plan), sampler.steps, reused, n, calls=sampler.calls)


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



@torch.no_grad()
def action_seconds(sampler: Sampler, plan: Plan, seeds: list[int], cond: Cond = None, repeats: int = 5,
                   warmup: int = 1, clock=time.perf_counter) -> dict[StepAction, float]:
    """Median seconds of one (guided) U-Net evaluation of the seeds' batch (the sampler's first
    chunk) under each U-Net action ``plan`` takes, and under none, by the timing protocol (warm-up,
    interleaved repeats). Cached fills come from a full evaluation first."""
    from ..noise import NoiseBank
    from ..plan import NO_ACTION
    from ..timing import interleave

    plan = sampler.check_plan(plan)
    m, K = sampler.model, sampler.model.num_blocks
    n = len(seeds)
    seeds = list(seeds)[:sampler.batch_size or n]  # the first chunk, as the sampler batches them
    x = NoiseBank(seeds, m.sample_shape).initial().to(m.device)
    tau = torch.full((len(seeds),), m.schedule.num_train_timesteps // 2, dtype=torch.long, device=m.device)
    c = m.make_cond(cond_slice(cond, range(len(seeds)), n), len(seeds))
    acts = list(dict.fromkeys([NO_ACTION] + [b for st in plan.walk(sampler.steps) for b in _timed(st.action.unet)]))
    sites = sorted({s for a in acts for s in a.needs(K)})
    full = sampler.denoiser(x, tau, c, capture=sites)
    fns = {a: (lambda a=a: sampler.denoiser(x, tau, c, a, fill={s: full.captured[s] for s in a.needs(K)}))
           for a in acts}
    timings, _ = interleave(fns, repeats, warmup, clock, device=m.device)
    return {a: t.median for a, t in timings.items()}


def _timed(a: StepAction) -> list[StepAction]:
    """The actions whose seconds time ``a``: itself; for an ``AdaptiveCache`` step, a full
    evaluation and the cut it makes where a sample reads the cache (``DropBlocks(nb, "cache")``)."""
    from ..plan import NO_ACTION

    if not a.adaptive:
        return [a]
    return [NO_ACTION] + ([StepAction(drop_blocks=a.adaptive, fill="cache")] if a.decides else [])


def predicted_time_fraction(sampler: Sampler, plan: Plan, seconds: dict[StepAction, float],
                            seconds_baseline: float | None = None, chunks: int = 1, reused: dict | None = None) -> float:
    """The shortcut's time as a fraction of the baseline's, predicted from the seconds of one
    evaluation under each action (``action_seconds``): the sum over the evaluations the plan makes.
    With the baseline's measured seconds (of ``chunks`` batches), each step also pays the
    baseline's time outside the U-Net (the update, the noise: ``seconds_baseline / S`` minus the
    full evaluations). An ``AdaptiveCache`` step costs the cut's seconds plus the share of samples
    that ran the deep part (``reused``: ``Trajectory.reused`` of a run) times what the deep part adds."""
    from ..plan import NO_ACTION

    S = sampler.steps
    walk = list(sampler.check_plan(plan).walk(S))
    missing = {b for st in walk for b in _timed(st.action.unet)} - set(seconds)
    if NO_ACTION not in seconds or missing:
        raise ShortcutError("seconds must time every U-Net action of the plan and the full evaluation "
                            "(action_seconds(sampler, plan, ...) gives them)")
    calls = {t: sampler.calls(t) for t in range(1, S + 1)}  # a Heun step calls the U-Net twice
    n_calls = sum(calls.values())
    unet = chunks * seconds[NO_ACTION]  # one call's evaluations
    other = max(0.0, seconds_baseline / S - unet * n_calls / S) if seconds_baseline else 0.0  # per step
    total = 0.0
    for st in walk:
        a = st.action.unet
        if a.decides:
            if reused is None or st.t not in reused:
                raise ShortcutError("an AdaptiveCache plan's time depends on each sample's decisions: pass reused "
                                    "(Trajectory.reused of a run)")
            cut = seconds[_timed(a)[1]]
            t_unet = cut + (1 - float(reused[st.t].float().mean())) * (seconds[NO_ACTION] - cut)
        else:
            t_unet = seconds[NO_ACTION if a.adaptive else a]
        total += calls[st.t] * chunks * t_unet + other
    return total / (n_calls * unet + S * other)


def _mad(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x - x.mean())))


@torch.no_grad()
def measure(sampler: Sampler, plan: Plan, seeds: list[int], cond: Cond = None, repeats: int = 3, warmup: int = 1,
            clock=time.perf_counter, baseline: Sampler | None = None) -> dict:
    """Baseline vs shortcut on the same seeds: per-sample SSIM/PSNR, FLOPs executed, and wall times
    by the timing protocol (``unetscope.timing``: a warm-up of each side, then ``repeats`` interleaved
    runs; the median and the spread of each, and warnings when they should not be trusted).

    ``baseline``: the sampler whose unintervened run the shortcut (``sampler`` under ``plan``) is
    compared with and timed against; None: ``sampler`` itself. Another sampler (of the same model:
    a recipe's reference, say DDIM at 100 steps against DPM-Solver++ at 12) may face an empty plan,
    the solver alone; the baseline's FLOPs and evaluations are its own.

    ``time_saving_predicted`` is the time saving the seconds of one evaluation under each of the
    plan's actions predict (``action_seconds``, ``predicted_time_fraction``): where FLOPs run at
    different speeds in different blocks (a CPU's small high-resolution convolutions are slow per
    FLOP), the time saving follows it rather than the compute saving. Against another sampler it is
    the shortcut's predicted seconds (its evaluations, plus the baseline's measured time per step
    outside the U-Net) over the baseline's measured seconds; None where that cannot be told."""
    from ..timing import interleave, timing_warnings

    plan = sampler.check_plan(plan)
    own = baseline is None or baseline is sampler
    baseline = sampler if baseline is None else baseline
    if not isinstance(baseline, Sampler):
        raise ShortcutError(f"baseline must be a Sampler (of the same model), got {type(baseline).__name__}")
    if baseline.model is not sampler.model:
        raise ShortcutError("the baseline sampler must run the same model object as the shortcut's sampler")
    if not plan and own:
        raise ShortcutError("the schedule holds no interventions: the shortcut would be the baseline itself")
    runs = {"baseline": 0, "shortcut": 0}

    def run(side: str, p: Plan | None):
        """One run of a side, named on its progress bar (the warm-up gives the quality pass's images)."""
        i = runs[side] = runs[side] + 1
        name = f"quality pass (warm-up): {side}" if i <= warmup else f"timed run {i - warmup} of {repeats}: {side}"
        s = baseline if side == "baseline" else sampler
        with s.stage(name):
            return s.sample(seeds, cond, p)

    try:
        timings, first = interleave({"baseline": lambda: run("baseline", None), "shortcut": lambda: run("shortcut", plan)},
                                    repeats, warmup, clock, device=sampler.model.device)
    except ValueError as e:
        if isinstance(e, (SamplerError, PlanError)):
            raise
        raise ShortcutError(str(e)) from None
    base, short = first["baseline"], first["shortcut"]
    tb, ts = timings["baseline"], timings["shortcut"]
    chunks = math.ceil(len(seeds) / (sampler.batch_size or len(seeds)))
    seconds = action_seconds(sampler, plan, seeds, cond, clock=clock)
    if own:
        predicted = 1 - predicted_time_fraction(sampler, plan, seconds, tb.median, chunks, reused=short.reused)
    else:
        predicted = _predicted_against(sampler, plan, seconds, baseline, tb.median, seeds, cond, short.reused, clock)
    a, b = base.images, short.images
    ss, pp = ssim(b, a).numpy(), psnr(b, a).numpy()
    c1 = cond_slice(cond, [0], len(seeds))
    with baseline.stage("counting FLOPs: baseline"):
        f_base = plan_flops(baseline, Plan(), seeds[0], c1)
    if short.reused:  # AdaptiveCache: each sample's FLOPs follow its own decisions
        per = sample_flops(sampler, plan, short.reused, len(seeds), c1)
        f_short = float(np.mean(per))
    else:
        with sampler.stage("counting FLOPs: shortcut"):
            f_short = plan_flops(sampler, plan, seeds[0], c1)
        per = [f_short] * len(seeds)
    fin = pp[np.isfinite(pp)]
    compute_saving = 1 - f_short / f_base
    return dict(
        time_saving=1 - ts.median / tb.median, compute_saving=compute_saving, time_saving_predicted=predicted,
        seconds_baseline=tb.median,
        seconds_shortcut=ts.median, timing=dict(baseline=tb.to_dict(), shortcut=ts.to_dict(), repeats=repeats, warmup=warmup),
        warnings=timing_warnings(tb, ts, compute_saving, predicted),
        flops_baseline=f_base, flops_shortcut=f_short, nfe_baseline=base.nfe, nfe_shortcut=short.nfe,
        compute=[f / f_base for f in per],
        ssim=ss.tolist(), psnr=pp.tolist(), ssim_mean=float(ss.mean()), ssim_mad=_mad(ss), ssim_min=float(ss.min()),
        psnr_mean=float(fin.mean()) if len(fin) else math.inf, samples=len(seeds),
        images_baseline=a, images_shortcut=b, trajectory_baseline=base,
        sampler=sampler.describe(), baseline_sampler=baseline.describe(),
    )


def _predicted_against(sampler: Sampler, plan: Plan, seconds: dict[StepAction, float], baseline: Sampler,
                       seconds_baseline: float, seeds: list[int], cond: Cond, reused: dict, clock) -> float | None:
    """The time saving against another sampler that single evaluations predict: the shortcut's
    evaluations (``seconds``, on its own sampler) plus, per step it walks, the baseline's measured
    time per step outside the U-Net, over the baseline's measured seconds. None where the baseline
    took no time to tell by."""
    from ..plan import NO_ACTION

    if not seconds_baseline > 0:
        return None
    n = len(seeds)
    chunks = math.ceil(n / (sampler.batch_size or n))
    chunks_b = math.ceil(n / (baseline.batch_size or n))
    own_unet = chunks * seconds[NO_ACTION] * sum(sampler.calls(t) for t in range(1, sampler.steps + 1))
    short_unet = predicted_time_fraction(sampler, plan, seconds, None, chunks, reused) * own_unet
    alike = (baseline.denoiser.rows_per_sample == sampler.denoiser.rows_per_sample
             and (baseline.batch_size or n) == (sampler.batch_size or n))
    full_b = seconds[NO_ACTION] if alike else action_seconds(baseline, Plan(), seeds, cond, clock=clock)[NO_ACTION]
    calls_b = sum(baseline.calls(t) for t in range(1, baseline.steps + 1))
    other = max(0.0, seconds_baseline - chunks_b * full_b * calls_b) / baseline.steps  # per step, outside the U-Net
    walked = len(list(sampler.check_plan(plan).walk(sampler.steps)))
    return 1 - (short_unet + walked * other) / seconds_baseline


@torch.no_grad()
def feature_changes(sampler: Sampler, seeds: list[int], cond: Cond = None, sites: list[str] | None = None) -> dict:
    """``{site: {t: mean relative L1 change from step t + 1}}`` of the baseline's unit outputs over
    ``seeds`` (the ``feature-change`` statistics, streamed: two steps held at a time)."""
    from ..features import FeatureTracker

    K = sampler.model.num_blocks
    tr = FeatureTracker(K, sites)
    for d in sampler.sample_progressive(seeds, cond, capture=tr.sites):
        tr.step(d["t"], d["cache"], len(seeds))
    out: dict = {s: {} for s in tr.sites}
    for (s, t), (rel, _) in tr.stats.items():
        out[s][t] = float(rel.mean())
    return out


def change_preset(sampler: Sampler, seeds: list[int], cond: Cond = None, *, threshold: float, nb: int | None = None) -> Plan:
    """The ``change`` preset: ``change_schedule`` on the deep part's measured change (``D[nb-1]``;
    nb default K - 1) over ``seeds``, which should be apart from the seeds it is then measured on."""
    from ..plan import site
    from .schedules import change_schedule

    K = sampler.model.num_blocks
    nb = check_int(K - 1 if nb is None else nb, ShortcutError, "the change preset's nb", 1, K, note="the model's blocks K")
    if sampler.steps < 2:
        raise ShortcutError("the change preset compares adjacent steps: it needs S >= 2")
    ch = feature_changes(sampler, seeds, cond, [site("D", nb - 1)])[site("D", nb - 1)]
    return change_schedule(ch, sampler.steps, nb, threshold)