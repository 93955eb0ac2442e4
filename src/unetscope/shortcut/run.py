"""A shortcut run: baseline and shortcut measured on the same seeds, stored, and drawn; a recipe's
run (its own sampler against its reference: ``recipe_baseline``, ``check_recipe_settings``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UnetscopeError
from ..plan import Plan
from ..plan_file import Recipe
from ..sampling import Sampler
from ..sweep import per_sample_cond
from .measure import measure

__all__ = ["run_shortcut", "check_recipe_settings", "recipe_baseline", "describe_recipe"]

_NAMES = dict(method=("method", "--scheduler"), steps=("steps", "--steps"), options=("scheduler_options", "--scheduler-opt"),
              eta=("eta", "--eta"))


def check_recipe_settings(recipe: Recipe, error: type[Exception], *, method=None, steps=None, options=None, eta=None,
                          flags: bool | str = False, source: str = "the recipe") -> None:
    """Sampler settings given beside a recipe (None: not given) must be the recipe's own: the first
    that is not is one line naming it and the recipe's value. ``flags``: named as the command line's
    (a string: the flag that gave the method, ``--scheduler`` or ``--sampler``)."""
    def refuse(key: str, given) -> None:
        name = flags if key == "method" and isinstance(flags, str) else _NAMES[key][bool(flags)]
        shown = f"{name} {given}" if flags else f"{name}={given!r}"
        raise error(f"{shown} disagrees with {source} ({describe_sampler(recipe.scheduler, recipe.steps, recipe.options)}"
                    f"{f', eta {recipe.eta:g}' if recipe.eta else ''}): leave {name} out, the recipe sets the sampler")

    if method is not None and method != recipe.scheduler:
        refuse("method", method)
    if steps is not None and steps != recipe.steps:
        refuse("steps", steps)
    if eta is not None and eta != recipe.eta:
        refuse("eta", eta)
    for k, v in (options or {}).items():
        if k not in recipe.options or not _same(recipe.options[k], v):
            refuse("options", f"{k}={v}" if flags else {k: v})
    from ..checks import METHODS
    from ..sampling import check_options, resolve_scheduler

    samplers = [("its scheduler", recipe.scheduler, recipe.options)]
    if recipe.reference is not None:
        samplers.append(("its reference", recipe.reference["scheduler"], recipe.reference["options"]))
    for what, name, opts in samplers:  # names and options known to diffusers, before a model loads
        if name in METHODS:  # unetscope's own: the sampler refuses options there, in one line
            continue
        try:
            check_options(resolve_scheduler(name)[1], opts)
        except UnetscopeError as e:
            raise error(f"{source}: {what}: {e}") from None


def _same(a, b) -> bool:
    """Equal option values (3 and 3.0 alike; True and 1 not)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def describe_sampler(scheduler: str, steps: int, options: dict | None = None) -> str:
    """``dpm++ (solver_order=3) at 12 steps``."""
    opts = f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""
    return f"{scheduler}{opts} at {steps} steps"


def describe_recipe(recipe: Recipe) -> str:
    """The recipe and what it is measured against, in words: ``dpm++ at 12 steps with Plan([...]) against
    ddim at 100 steps`` (no reference: against its own solver without the plan)."""
    own = describe_sampler(recipe.scheduler, recipe.steps, recipe.options)
    cuts = f" with {recipe.plan!r}" if recipe.plan else " alone"
    r = recipe.reference
    against = describe_sampler(r["scheduler"], r["steps"], r["options"]) if r else f"{own} without the plan"
    return f"{own}{cuts} against {against}"


def recipe_baseline(sampler: Sampler, recipe: Recipe) -> Sampler:
    """The sampler a recipe is measured against: its reference, built on ``sampler``'s model with the
    same guidance, clipping, batches and progress (``sampler`` itself where the recipe has no reference,
    or one that is the recipe's own sampler)."""
    r = recipe.reference
    if r is None:
        return sampler
    if (r["scheduler"], r["steps"], r["options"]) == (sampler.method, sampler.steps, sampler.options) and sampler.eta == 0:
        return sampler  # the reference is the recipe's own sampler
    s = sampler.settings()
    variance = s["variance"] if r["scheduler"] == "ddpm" == sampler.method else None  # DDPM's, where both are DDPM
    return Sampler(sampler.model, steps=r["steps"], method=r["scheduler"], options=r["options"] or None,
                   guidance=s["guidance"], variance=variance, clip_x0=s["clip_x0"], batch_size=s["batch_size"],
                   progress=sampler.progress)


def run_shortcut(sampler: Sampler, plan: Plan, seeds: list[int], cond, out_dir, *, repeats: int = 3, name: str = "",
                 baseline: Sampler | None = None, rival: bool = False) -> dict:
    """Baseline and shortcut on the same seeds; writes ``summary.json``, the rows into
    ``results.sqlite``, the SSIM histogram (Fig. 13) and the best/worst grid (Fig. 22).
    ``baseline``: the sampler the shortcut is compared with and timed against (``measure``; None:
    ``sampler`` itself); the summary names both (``sampler``, ``baseline_sampler``). ``rival``: the
    fewest DPM-Solver++ steps whose mean SSIM against the baseline on the same seeds is at least the
    shortcut's, timed against the baseline (``frontier.rival``; ``summary["rival"]``)."""
    from ..figures import histogram_figure, image_grid_figure
    from ..images import to_uint8
    from ..store import ResultStore, run_dir, strict_json, write_atomic

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    m = sampler.model
    res = measure(sampler, plan, seeds, cond, repeats=repeats, baseline=baseline)
    settings = dict(experiment="shortcut", schedule=plan.to_dict(), name=name, model=m.describe(),
                    sampler=sampler.describe(), seeds=list(seeds), cond=cond)
    if baseline is not None and baseline is not sampler:  # a run against its own sampler keeps its name of before
        settings["baseline_sampler"] = res["baseline_sampler"]
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
        schedule=plan.to_dict(), name=name, model=m.describe(), sampler=res["sampler"],
        baseline_sampler=res["baseline_sampler"], seeds=list(seeds),
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
    if rival:  # after the rows are stored: a killed rival costs nothing already measured
        from .frontier import rival as find_rival

        base = baseline or sampler
        found = find_rival(base, list(seeds), cond, res["images_baseline"].float().cpu(), res["ssim_mean"],
                           repeats=repeats)
        summary["rival"] = {k: v for k, v in found.items() if k != "timing"}
        write_atomic(out_dir / "summary.json", strict_json(summary))
    summary["images_shortcut"] = res["images_shortcut"]
    return summary
