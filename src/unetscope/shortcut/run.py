"""A shortcut run: baseline and shortcut measured on the same seeds, stored, and drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plan import Plan
from ..sampling import Sampler
from ..sweep import per_sample_cond
from .measure import measure

__all__ = ["run_shortcut"]


def run_shortcut(sampler: Sampler, plan: Plan, seeds: list[int], cond, out_dir, *, repeats: int = 3, name: str = "") -> dict:
    """Baseline and shortcut on the same seeds; writes ``summary.json``, the rows into
    ``results.sqlite``, the SSIM histogram (Fig. 13) and the best/worst grid (Fig. 22)."""
    from ..figures import histogram_figure, image_grid_figure
    from ..images import to_uint8
    from ..store import ResultStore, run_dir, strict_json, write_atomic

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
        per_sample=[dict(seed=s, ssim=res["ssim"][i], psnr=res["psnr"][i], compute=res["compute"][i])
                    for i, s in enumerate(seeds)],
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
                               extra=dict(nfe=res["nfe_shortcut"], compute=res["compute"][i]))
                          for i, (s, c) in enumerate(zip(seeds, conds))], stats=stats)
    summary["images_shortcut"] = res["images_shortcut"]
    return summary
