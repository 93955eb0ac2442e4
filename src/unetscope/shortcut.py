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
from typing import Union

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .metrics import psnr, ssim
from .models import Cond
from .plan import FILLS, DropBlocks, Plan, PlanError, ReuseEncoder, StepAction, StopEarly
from .sampler import Sampler, SamplerError, cond_slice
from .sweep import per_sample_cond

__all__ = ["load_schedule", "save_schedule", "paper_preset", "PRESETS", "measure", "plan_flops", "search", "SearchConfig",
           "uniform_cache_cuts", "uniform_reuse_cuts", "run_shortcut", "ShortcutError", "unit_flops"]


class ShortcutError(ValueError):
    """A schedule file or search setting that cannot be used."""


# --- schedules as data ---------------------------------------------------------------------------
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
        return Plan.from_dict(obj)
    return Plan.from_json(text)


def save_schedule(plan: Plan, path, meta: dict | None = None) -> Path:
    path = Path(path)
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


def _mad(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x - x.mean())))


@torch.no_grad()
def measure(sampler: Sampler, plan: Plan, seeds: list[int], cond: Cond = None, repeats: int = 3, warmup: int = 1,
            clock=time.perf_counter) -> dict:
    """Baseline vs shortcut on the same seeds: per-sample SSIM/PSNR, FLOPs executed, and wall times
    by the timing protocol (``unetscope.timing``: a warm-up of each side, then ``repeats`` interleaved
    runs; the median and the spread of each, and warnings when they should not be trusted)."""
    from .timing import interleave, timing_warnings

    plan = sampler.check_plan(plan)
    if not plan:
        raise ShortcutError("the schedule holds no interventions: the shortcut would be the baseline itself")
    try:
        timings, first = interleave({"baseline": lambda: sampler.sample(seeds, cond),
                                     "shortcut": lambda: sampler.sample(seeds, cond, plan)}, repeats, warmup, clock)
    except ValueError as e:
        if isinstance(e, (SamplerError, PlanError)):
            raise
        raise ShortcutError(str(e)) from None
    base, short = first["baseline"], first["shortcut"]
    a, b = base.images, short.images
    ss, pp = ssim(b, a).numpy(), psnr(b, a).numpy()
    c1 = cond_slice(cond, [0], len(seeds))
    f_base, f_short = plan_flops(sampler, Plan(), seeds[0], c1), plan_flops(sampler, plan, seeds[0], c1)
    tb, ts = timings["baseline"], timings["shortcut"]
    fin = pp[np.isfinite(pp)]
    compute_saving = 1 - f_short / f_base
    return dict(
        time_saving=1 - ts.median / tb.median, compute_saving=compute_saving, seconds_baseline=tb.median,
        seconds_shortcut=ts.median, timing=dict(baseline=tb.to_dict(), shortcut=ts.to_dict(), repeats=repeats, warmup=warmup),
        warnings=timing_warnings(tb, ts, compute_saving),
        flops_baseline=f_base, flops_shortcut=f_short, nfe_baseline=base.nfe, nfe_shortcut=short.nfe,
        ssim=ss.tolist(), psnr=pp.tolist(), ssim_mean=float(ss.mean()), ssim_mad=_mad(ss), ssim_min=float(ss.min()),
        psnr_mean=float(fin.mean()) if len(fin) else math.inf, samples=len(seeds),
        images_baseline=a, images_shortcut=b, trajectory_baseline=base,
    )


# --- search --------------------------------------------------------------------------------------
Cut = Union[DropBlocks, ReuseEncoder]  # the moves that cut compute over a range of steps


@dataclass(frozen=True)
class _Sched:
    cuts: tuple  # DropBlocks / ReuseEncoder, sorted by start descending
    stop: int | None

    def plan(self) -> Plan:
        return Plan(tuple(self.cuts) + ((StopEarly(self.stop),) if self.stop else ()))

    def busy(self) -> set[int]:
        return {t for c in self.cuts for t in c.evaluated_steps()}

    def with_cuts(self, cuts) -> "_Sched":
        return _Sched(tuple(sorted(cuts, key=lambda c: (-c.start, repr(c)))), self.stop)


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
    return ReuseEncoder(c.start, n or c.n)


@dataclass(frozen=True)
class SearchConfig:
    """The settings of ``search``: the quality target and the move set."""

    target_mean: float | None = 0.8  # mean SSIM to keep on the calibration seeds
    target_min: float | None = None  # minimum per-sample SSIM to keep
    nbs: tuple | None = None  # block counts a DropBlocks move may cut (None: K/4, K/2, 3K/4, K)
    fills: tuple = ("zeros", "cache")  # DropBlocks fills
    reuse_encoder: bool = True  # ReuseEncoder moves and uniform starts
    lengths: tuple | None = None  # step counts of a new cut (None: 2, 4, 7, 10 % of S)
    grid: int | None = None  # stride of the start steps tried (None: S/25)
    min_relax: int = 0  # steps left uncut between two cuts
    per_round: int = 12  # candidates evaluated together (one sweep)
    max_rounds: int = 40

    def __post_init__(self):
        if self.target_mean is None and self.target_min is None:
            raise ShortcutError("give a quality target: a mean SSIM and/or a minimum per-sample SSIM")
        for name, v in (("target mean SSIM", self.target_mean), ("target minimum SSIM", self.target_min)):
            if v is not None and not (isinstance(v, (int, float)) and 0 < v <= 1):
                raise ShortcutError(f"{name} must be in (0, 1], got {v}")
        for name in ("per_round", "max_rounds"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ShortcutError(f"search {name} must be an integer >= 1, got {v!r}")
        bad = [f for f in self.fills if f not in FILLS]
        if bad:
            raise ShortcutError(f"search fills must be among {', '.join(FILLS)}, got {bad[0]!r}")


def search(sampler: Sampler, seeds: list[int], cond: Cond = None, config: SearchConfig | None = None, *,
           progress=None, log=None, **settings) -> dict:
    """Greedy cut-relax-cut search for little compute at the quality target on ``seeds``.

    It starts from the cheapest uniform schedule (DeepCache-style cache cuts, or reusing the
    encoder every few steps) that meets the target, or from nothing. Each round proposes moves on
    the current schedule (a new ``DropBlocks`` of nb blocks over n steps with a fill, a new
    ``ReuseEncoder`` range, a longer or deeper cut, a later stop), ranks them by FLOPs saved
    (executed FLOPs per U-Net action, counted once), evaluates the best ``per_round`` together
    with the sweep engine (shared prefixes) and keeps, among those that meet the target, the one
    that saves the most compute per SSIM lost. Stops when no proposal meets the target.
    ``settings`` are ``SearchConfig``'s fields, as keywords."""
    from .flops import FlopTable
    from .sweep import SweepEngine

    cfg = replace(config or SearchConfig(), **settings) if settings else (config or SearchConfig())
    m, S, K = sampler.model, sampler.steps, sampler.model.num_blocks
    nbs = list(cfg.nbs or sorted({max(1, K // 4), K // 2, (3 * K) // 4, K}))
    lengths = list(cfg.lengths or sorted({max(1, round(v * S / 100)) for v in (2, 4, 7, 10)}))
    grid = cfg.grid or max(1, round(S / 25))
    x1 = torch.zeros(1, *m.sample_shape, device=m.device, dtype=m.dtype)
    t1 = torch.full((1,), m.schedule.num_train_timesteps // 2, dtype=torch.long, device=m.device)
    c1 = m.make_cond(cond_slice(cond, [0], len(seeds)), 1)
    flops = FlopTable(m.runner, x1, t1, c1, sampler.denoiser.rows_per_sample)
    base_cost = _cost(_Sched((), None), S, flops)
    engine = SweepEngine(sampler, on_evaluation=progress)
    base_x0 = None

    def ok(ss: np.ndarray) -> bool:
        return (cfg.target_mean is None or ss.mean() >= cfg.target_mean) and (cfg.target_min is None or ss.min() >= cfg.target_min)

    def new_cuts():  # (make(start, n), whether it reads an earlier step's activations)
        for nb in nbs:
            for fill in cfg.fills:
                yield (lambda st, n, nb=nb, fill=fill: DropBlocks(nb, st, n, fill)), fill == "cache"
        if cfg.reuse_encoder:
            yield (lambda st, n: ReuseEncoder(st, n)), True

    def proposals(cur: _Sched):
        busy = cur.busy()
        out = []
        for step in (1, 2, 4):  # a later stop (never above a cut)
            at = (cur.stop or 0) + step * grid if cur.stop else step * grid
            if at < min(busy, default=S + 1) and at <= S:
                out.append(_Sched(cur.cuts, at))
        for make, reads in new_cuts():  # a new cut (one that reads a cache starts below the first step)
            for n in lengths:
                for st in range(S - reads, 0, -grid):
                    if st - n + 1 < 1 or (cur.stop and st - n + 1 <= cur.stop):
                        continue
                    cut = make(st, n)
                    span = set(cut.evaluated_steps())
                    near = {t for t in busy for d in range(-cfg.min_relax, cfg.min_relax + 1) if t + d in span}
                    if span & busy or near:
                        continue
                    out.append(cur.with_cuts(cur.cuts + (cut,)))
        for i, c in enumerate(cur.cuts):  # grow a cut: longer, or deeper
            grows = [(c.n + max(1, grid // 2), None)]
            if isinstance(c, DropBlocks) and c.nb < K:
                grows.append((c.n, min(K, c.nb + max(1, K // 6))))
            for n2, nb2 in grows:
                if c.start - n2 + 1 < 1 or (cur.stop and c.start - n2 + 1 <= cur.stop):
                    continue
                g = _grown(c, n=n2, nb=nb2)
                if set(g.evaluated_steps()) & (busy - set(c.evaluated_steps())):
                    continue
                out.append(cur.with_cuts(cur.cuts[:i] + (g,) + cur.cuts[i + 1:]))
        return out

    history, evaluated = [], 0

    def evaluate(cands):
        nonlocal evaluated, base_x0
        res = engine.run_chunk(list(seeds), cond, [c.plan() for c in cands])
        evaluated += res.evaluations
        if base_x0 is None:
            base_x0 = m.decode(res.baseline_x0)
        return [ssim(m.decode(x0), base_x0).numpy() for x0 in res.finals]

    def key(c: _Sched):  # cheapest first; ties broken by the schedule itself (deterministic)
        return (_cost(c, S, flops), repr(c.plan()))

    # 1. start from the cheapest uniform schedule that meets the target
    starts = [_Sched(uniform_cache_cuts(S, every, nb), None) for every in (2, 3, 4, 6) for nb in nbs if "cache" in cfg.fills]
    if cfg.reuse_encoder:
        starts += [_Sched(uniform_reuse_cuts(S, every), None) for every in (2, 3, 4, 6)]
    starts = [c for c in starts if c.cuts]
    cur, cur_ss = _Sched((), None), None
    if starts:
        for c, ss in sorted(zip(starts, evaluate(starts)), key=lambda p: key(p[0])):
            if ok(ss):
                cur, cur_ss = c, ss
                break
    if log and cur.cuts:
        log(f"start: {len(cur.cuts)} uniform cuts, compute {_cost(cur, S, flops) / base_cost:.3f}, mean SSIM {cur_ss.mean():.3f}")
    # 2. greedy moves: the best compute saved per SSIM lost among the proposals that hold the target
    for rnd in range(cfg.max_rounds):
        cost_now = _cost(cur, S, flops)
        q_now = 1.0 if cur_ss is None else float(cur_ss.mean())
        props = sorted({p for p in proposals(cur) if _cost(p, S, flops) < cost_now}, key=key)
        accepted, best = None, -1.0
        for b in range(0, min(len(props), 3 * cfg.per_round), cfg.per_round):
            batch = props[b:b + cfg.per_round]
            try:
                scores = evaluate(batch)
            except PlanError:
                continue
            for p, ss in zip(batch, scores):
                if ok(ss):
                    gain = (cost_now - _cost(p, S, flops)) / base_cost / (max(q_now - float(ss.mean()), 0.0) + 0.005)
                    if gain > best:
                        accepted, best = (p, ss), gain
            if accepted:
                break
        if not accepted:
            break
        cur, cur_ss = accepted
        history.append(dict(round=rnd, plan=cur.plan().to_dict(), compute=_cost(cur, S, flops) / base_cost,
                            ssim_mean=float(cur_ss.mean()), ssim_min=float(cur_ss.min())))
        if log:
            log(f"round {rnd}: compute {history[-1]['compute']:.3f} of the baseline, mean SSIM {cur_ss.mean():.3f} "
                f"(min {cur_ss.min():.3f}): {cur.plan()!r}")
    return dict(plan=cur.plan(), predicted_compute=_cost(cur, S, flops) / base_cost, history=history,
                calibration_ssim_mean=float(cur_ss.mean()) if cur_ss is not None else 1.0,
                calibration_ssim_min=float(cur_ss.min()) if cur_ss is not None else 1.0, evaluations=evaluated,
                flops_per_nb=[flops(StepAction(drop_blocks=nb)) for nb in range(K + 1)])


def _cost(s: _Sched, S: int, flops) -> int:
    return flops.plan(s.plan(), S)


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
        time_saving=res["time_saving"], compute_saving=res["compute_saving"], ssim_mean=res["ssim_mean"],
        ssim_mad=res["ssim_mad"], ssim_min=res["ssim_min"], psnr_mean=res["psnr_mean"], samples=len(seeds),
        nfe_baseline=res["nfe_baseline"], nfe_shortcut=res["nfe_shortcut"], seconds_baseline=res["seconds_baseline"],
        timing=res["timing"], warnings=res["warnings"],
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
        stats = {k: res[k] for k in ("time_saving", "compute_saving", "seconds_baseline", "seconds_shortcut",
                                     "flops_baseline", "flops_shortcut", "timing", "warnings")}
        store.write(run, [dict(seed=s, variant=plan.to_dict(), cond=c, ssim=res["ssim"][i], psnr=res["psnr"][i],
                               extra=dict(nfe=res["nfe_shortcut"]))
                          for i, (s, c) in enumerate(zip(seeds, conds))], stats=stats)
    summary["images_shortcut"] = res["images_shortcut"]
    return summary
