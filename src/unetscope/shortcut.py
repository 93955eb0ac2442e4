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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .metrics import psnr, ssim
from .plan import DropBlocks, Plan, PlanError, StepAction, StopEarly
from .sampler import Sampler, cond_slice
from .sweep import per_sample_cond

__all__ = ["load_schedule", "save_schedule", "paper_preset", "PRESETS", "measure", "plan_flops", "search",
           "run_shortcut", "ShortcutError", "unit_flops"]


class ShortcutError(ValueError):
    """A schedule file or search setting that cannot be used."""


# --- schedules as data ---------------------------------------------------------------------------
def load_schedule(path) -> Plan:
    """A schedule from a JSON or YAML file: ``{"interventions": [...]}`` or a bare list."""
    path = Path(path)
    if not path.is_file():
        raise ShortcutError(f"schedule file {str(path)!r} does not exist")
    text = path.read_text()
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
def measure(sampler: Sampler, plan: Plan, seeds: list[int], cond=None, repeats: int = 1, baseline=None) -> dict:
    """Baseline vs shortcut on the same seeds: per-sample SSIM/PSNR, wall times side by side
    (alternating runs, ``repeats`` each, median), and FLOPs executed."""
    plan = sampler._check_plan(plan)
    t_base, t_short = [], []
    base = short = None
    for r in range(max(1, repeats)):
        if baseline is None or r > 0:
            t0 = time.perf_counter()
            b = sampler.sample(seeds, cond)
            t_base.append(time.perf_counter() - t0)
            base = base or b
        t0 = time.perf_counter()
        s_ = sampler.sample(seeds, cond, plan)
        t_short.append(time.perf_counter() - t0)
        short = short or s_
    if baseline is not None:
        base = baseline["trajectory"]
        t_base = t_base or [baseline["seconds"]]
    a, b = base.images, short.images
    ss, pp = ssim(b, a).numpy(), psnr(b, a).numpy()
    c1 = cond_slice(cond, [0], len(seeds))
    f_base, f_short = plan_flops(sampler, Plan(), seeds[0], c1), plan_flops(sampler, plan, seeds[0], c1)
    tb, ts = float(np.median(t_base)), float(np.median(t_short))
    fin = pp[np.isfinite(pp)]
    return dict(
        time_saving=1 - ts / tb, compute_saving=1 - f_short / f_base, seconds_baseline=tb, seconds_shortcut=ts,
        flops_baseline=f_base, flops_shortcut=f_short, nfe_baseline=base.nfe, nfe_shortcut=short.nfe,
        ssim=ss.tolist(), psnr=pp.tolist(), ssim_mean=float(ss.mean()), ssim_mad=_mad(ss), ssim_min=float(ss.min()),
        psnr_mean=float(fin.mean()) if len(fin) else math.inf, samples=len(seeds),
        images_baseline=a, images_shortcut=b, trajectory_baseline=base,
    )


# --- search --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Sched:
    cuts: tuple  # ((nb, start, n, fill), ...) sorted by start descending
    stop: int | None

    def plan(self) -> Plan:
        items = [DropBlocks(nb, st, n, fill) for nb, st, n, fill in self.cuts]
        if self.stop:
            items.append(StopEarly(self.stop))
        return Plan(tuple(items))

    def busy(self) -> set[int]:
        return {t for nb, st, n, _ in self.cuts for t in range(st - n + 1, st + 1)}


def uniform_cache_cuts(S: int, every: int, nb: int) -> tuple:
    """DeepCache-style: a full evaluation every ``every`` steps (S, S-every, ..), the bottom nb
    blocks reused from it in between."""
    return tuple((nb, t - 1, min(every - 1, t - 1), "cache") for t in range(S, 1, -every) if every > 1)


def _cost(s: _Sched, S: int, flops: list[int]) -> int:
    acts = s.plan().actions()
    total, t = 0, S
    while t >= 1:
        a = acts.get(t, StepAction())
        total += flops[a.drop_blocks]
        if a.stop:
            break
        t -= 1
    return total


def search(sampler: Sampler, seeds: list[int], cond=None, *, target_mean: float | None = 0.8, target_min: float | None = None,
           nbs: list[int] | None = None, fills=("zeros", "cache"), lengths: list[int] | None = None, grid: int | None = None,
           min_relax: int = 0, per_round: int = 12, max_rounds: int = 40, progress=None, log=None) -> dict:
    """Greedy cut-relax-cut search for little compute at the quality target on ``seeds``.

    It starts from the cheapest DeepCache-style uniform-cache schedule that meets the target (or
    from nothing). Each round proposes moves on the current schedule (a new cut of nb blocks over n
    steps with a fill, a longer or deeper cut, a later stop), ranks them by FLOPs saved (executed
    FLOPs per nb, counted once), evaluates the best ``per_round`` together with the sweep engine
    (shared prefixes) and keeps, among those that meet the target, the one that saves the most
    compute per SSIM lost. Stops when no proposal meets the target."""
    from .flops import flops_by_drop
    from .sweep import SweepEngine

    if target_mean is None and target_min is None:
        raise ShortcutError("give a quality target: a mean SSIM and/or a minimum per-sample SSIM")
    for name, v in (("target mean SSIM", target_mean), ("target minimum SSIM", target_min)):
        if v is not None and not 0 < v <= 1:
            raise ShortcutError(f"{name} must be in (0, 1], got {v}")
    m, S, K = sampler.model, sampler.steps, sampler.model.num_blocks
    nbs = nbs or sorted({max(1, K // 4), K // 2, (3 * K) // 4, K})
    lengths = lengths or sorted({max(1, round(v * S / 100)) for v in (2, 4, 7, 10)})
    grid = grid or max(1, round(S / 25))
    x1 = torch.zeros(1, *m.sample_shape, device=m.device, dtype=m.dtype)
    t1 = torch.full((1,), m.schedule.num_train_timesteps // 2, dtype=torch.long, device=m.device)
    c1 = m.make_cond(cond_slice(cond, [0], len(seeds)), 1)
    flops = [f * sampler.rows_per_sample for f in flops_by_drop(m.runner, x1, t1, c1)]
    base_cost = _cost(_Sched((), None), S, flops)
    engine = SweepEngine(sampler, on_evaluation=progress)
    base_x0 = None

    def ok(ss: np.ndarray) -> bool:
        return (target_mean is None or ss.mean() >= target_mean) and (target_min is None or ss.min() >= target_min)

    def proposals(cur: _Sched):
        busy = cur.busy()
        out = []
        for step in (1, 2, 4):  # a later stop (never above a cut)
            at = (cur.stop or 0) + step * grid if cur.stop else step * grid
            if at < min(busy, default=S + 1) and at <= S:
                out.append(_Sched(cur.cuts, at))
        for nb in nbs:  # a new cut
            for fill in fills:
                for n in lengths:
                    for st in range(S - (0 if fill == "zeros" else 1), 0, -grid):
                        span = set(range(st - n + 1, st + 1))
                        if st - n + 1 < 1 or (cur.stop and st - n + 1 <= cur.stop):
                            continue
                        near = {t for t in busy for d in range(-min_relax, min_relax + 1) if t + d in span}
                        if span & busy or near:
                            continue
                        out.append(_Sched(tuple(sorted(cur.cuts + ((nb, st, n, fill),), key=lambda c: -c[1])), cur.stop))
        for i, (nb, st, n, fill) in enumerate(cur.cuts):  # grow a cut
            for nb2, n2 in ((nb, n + max(1, grid // 2)), (min(K, nb + max(1, K // 6)), n)):
                if (nb2, n2) == (nb, n) or st - n2 + 1 < 1 or (cur.stop and st - n2 + 1 <= cur.stop):
                    continue
                span = set(range(st - n2 + 1, st + 1))
                if span & (busy - set(range(st - n + 1, st + 1))):
                    continue
                cuts = list(cur.cuts)
                cuts[i] = (nb2, st, n2, fill)
                out.append(_Sched(tuple(cuts), cur.stop))
        return out

    history, evaluated = [], 0

    def evaluate(cands):
        nonlocal evaluated, base_x0
        res = engine.run_chunk(list(seeds), cond, [c.plan() for c in cands])
        evaluated += res.evaluations
        if base_x0 is None:
            base_x0 = m.decode(res.baseline_x0)
        return [ssim(m.decode(x0), base_x0).numpy() for x0 in res.finals]

    # 1. start from the cheapest uniform-cache schedule (DeepCache-style) that meets the target
    starts = [_Sched(uniform_cache_cuts(S, every, nb), None) for every in (2, 3, 4, 6) for nb in nbs if "cache" in fills]
    cur, cur_ss = _Sched((), None), None
    if starts:
        for c, ss in sorted(zip(starts, evaluate(starts)), key=lambda p: (_cost(p[0], S, flops), p[0].cuts)):
            if ok(ss):
                cur, cur_ss = c, ss
                break
    if log and cur.cuts:
        log(f"start: {len(cur.cuts)} uniform cache cuts, compute {_cost(cur, S, flops) / base_cost:.3f}, mean SSIM {cur_ss.mean():.3f}")
    # 2. greedy moves: the best compute saved per SSIM lost among the proposals that hold the target
    for rnd in range(max_rounds):
        cost_now = _cost(cur, S, flops)
        q_now = 1.0 if cur_ss is None else float(cur_ss.mean())
        props = sorted({p for p in proposals(cur) if _cost(p, S, flops) < cost_now},
                       key=lambda p: (_cost(p, S, flops), p.cuts, p.stop or 0))  # ties broken by the schedule itself
        accepted, best = None, -1.0
        for b in range(0, min(len(props), 3 * per_round), per_round):
            batch = props[b:b + per_round]
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
                flops_per_nb=flops)


# --- a shortcut run: measure, store, figures -----------------------------------------------------
def run_shortcut(sampler: Sampler, plan: Plan, seeds: list[int], cond, out_dir, *, repeats: int = 1, name: str = "") -> dict:
    """Baseline and shortcut on the same seeds; writes ``summary.json``, the rows into
    ``results.sqlite``, the SSIM histogram (Fig. 13) and the best/worst grid (Fig. 22)."""
    from .experiments.common import image_grid_figure
    from .store import ResultStore

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = sampler.model
    res = measure(sampler, plan, seeds, cond, repeats=repeats)
    settings = dict(experiment="shortcut", schedule=plan.to_dict(), name=name, model=m.describe(),
                    sampler=sampler.describe(), seeds=list(seeds), cond=cond)
    conds = per_sample_cond(cond, len(seeds))
    with ResultStore(out_dir / "results.sqlite") as store:
        run = store.register_run("shortcut", settings)
        store.write(run, [dict(seed=s, variant=plan.to_dict(), cond=c, ssim=res["ssim"][i], psnr=res["psnr"][i],
                               extra=dict(nfe=res["nfe_shortcut"]))
                          for i, (s, c) in enumerate(zip(seeds, conds))])
        for k in ("time_saving", "compute_saving", "seconds_baseline", "seconds_shortcut", "flops_baseline", "flops_shortcut"):
            store.set_stat(run, k, res[k])
    fig_dir = out_dir / "figures" / run
    fig_dir.mkdir(parents=True, exist_ok=True)
    files = [_histogram(fig_dir / "ssim_histogram.png", np.asarray(res["ssim"]), res["ssim_mean"], res["ssim_mad"])]
    order = np.argsort(res["ssim"])
    k = min(5, len(seeds))
    picks = [("worst", order[:k]), ("best", order[::-1][:k])]
    tiles, labels = [], []
    for label, idx in picks:
        tiles.append([_u8(res["images_baseline"][i]) for i in idx])
        tiles.append([_u8(res["images_shortcut"][i]) for i in idx])
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
        seconds_shortcut=res["seconds_shortcut"], flops_baseline=res["flops_baseline"], flops_shortcut=res["flops_shortcut"],
        schedule=plan.to_dict(), name=name, model=m.describe(), sampler=sampler.describe(), seeds=list(seeds),
        per_sample=[dict(seed=s, ssim=res["ssim"][i], psnr=res["psnr"][i]) for i, s in enumerate(seeds)],
        figures=[str(Path(f).relative_to(out_dir)) for f in files], run=run,
    )
    text = json.dumps(summary, indent=2, default=float) + "\n"
    (out_dir / "summary.json").write_text(text)  # the latest shortcut run of the folder
    (out_dir / "findings").mkdir(exist_ok=True)
    (out_dir / "findings" / f"{run}.json").write_text(text)  # every run, for the report
    summary["images_shortcut"] = res["images_shortcut"]
    return summary


def _u8(img):
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def _histogram(path: Path, ss: np.ndarray, mean: float, mad: float) -> Path:
    from .experiments.common import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.2), dpi=110)
    ax.hist(ss, bins=min(20, max(5, len(ss) // 3)), range=(min(0.5, float(ss.min())), 1.0), color="#4a78b5", edgecolor="white")
    ax.axvline(mean, color="k", ls="--", lw=1)
    ax.set_xlabel("SSIM(shortcut, baseline)")
    ax.set_ylabel("samples")
    ax.set_title(f"SSIM of the shortcut (mean = {mean:.3f}, mad = {mad:.3f}; Fig. 13)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
