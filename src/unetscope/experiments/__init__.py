"""The paper's experiments, each a named grid over samples with its analysis and figures.

``run_experiment`` runs one into a run directory: the grid through the sweep engine into
``DIR/results.sqlite`` (resumable), then its findings (``DIR/findings/RUN.json``) and figures
(``DIR/figures/RUN/*.png``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

__all__ = ["EXPERIMENTS", "ORDER", "Experiment", "ExperimentError", "check_experiment", "run_experiment", "render"]

ORDER = ["trajectory", "phases", "skip-vs-block", "block-utility", "consecutive-limit", "relax", "feature-change"]
_CLASSES = {"trajectory": "TrajectoryExperiment", "phases": "Phases", "skip-vs-block": "SkipVsBlock",  # name -> its
            "block-utility": "BlockUtility", "consecutive-limit": "ConsecutiveLimit", "relax": "Relax",  # class, in the
            "feature-change": "FeatureChange"}  # module named like it; imported on first use (ORDER needs no torch)
_REGISTRY: dict = {}


def _registry() -> dict:
    """``EXPERIMENTS``: name -> Experiment, built on first use (the modules import numpy and torch)."""
    if not _REGISTRY:
        built = {}
        for name in ORDER:
            mod = importlib.import_module("." + name.replace("-", "_"), __name__)
            built[name] = getattr(mod, _CLASSES[name])()
        _REGISTRY.update(built)  # whole at once: a thread never sees part of it
    return _REGISTRY


def __getattr__(name: str):
    if name == "EXPERIMENTS":
        return _registry()
    if name in ("Experiment", "ExperimentError"):
        return getattr(importlib.import_module(".common", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _identity(model, sampler, seeds, cond) -> dict:
    return dict(model=model.describe(), sampler=sampler.describe(), seeds=list(seeds), cond=cond)


def _latest(store, name: str, ident: dict, complete: bool = True):
    """The most recent (complete) run of ``name`` on the same model, sampler and samples."""
    for r in reversed(store.runs(name)):
        if all(r["settings"].get(k) == v for k, v in ident.items()):
            if not complete or store.stats(r["run"]).get("complete"):
                return r
    return None


def _same_model_or_refuse(store, model: dict) -> None:
    """A model from a factory is known by its reference and the hash of its weights: a folder whose
    runs hold the same reference with other weights is not resumed with these (or mixed with them)."""
    from .common import ExperimentError

    if "factory" not in model:
        return
    for r in store.runs():
        m = r["settings"].get("model", {})
        if m.get("factory") == model["factory"] and m.get("fingerprint") != model["fingerprint"]:
            raise ExperimentError(f"this folder holds runs of {model['factory']} with other weights (fingerprint "
                                  f"{m.get('fingerprint')}, now {model['fingerprint']}): use a new --out")


def check_experiment(name: str, S: int, K: int, overrides: dict | None = None) -> None:
    """The experiment's name and the user's parameters, checked before anything is written (the
    defaults that depend on earlier results are checked again once those are known)."""
    from .common import ExperimentError

    if name not in ORDER:
        raise ExperimentError(f"experiment must be one of {', '.join(ORDER)}; got {name!r}")
    exp = _registry()[name]
    if not exp.requires:  # the others' defaults come from earlier runs: checked once those are read
        exp.resolve(S, K, dict(overrides or {}), {})


def run_experiment(name: str, model, sampler, seeds: list[int], cond, out_dir, overrides: dict | None = None, *,
                   chunk_size: int = 16, max_batch: int | None = None, image_seeds: int = 4, progress: bool = True,
                   log=print, executor=None) -> dict:
    """Run (or resume) one experiment; dependencies run first if their results are missing.
    ``executor`` (``unetscope.executor``, entered): where the chunks are computed (None: here)."""
    from ..store import ResultStore
    from ..sweep import GridConfig, run_grid

    check_experiment(name, sampler.steps, model.num_blocks, overrides)
    exp = _registry()[name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    S, K = sampler.steps, model.num_blocks
    ident = _identity(model, sampler, seeds, cond)
    deps = {}
    with ResultStore(out_dir / "results.sqlite") as store:
        for d in exp.requires:
            if _latest(store, d, ident) is None:
                partial = _latest(store, d, ident, complete=False)  # an interrupted run resumes with its settings
                log(f"{name} needs {d} on the same model, sampler and samples: "
                    + ("resuming it" if partial else "running it first"))
                run_experiment(d, model, sampler, seeds, cond, out_dir, partial["settings"]["params"] if partial else None,
                               chunk_size=chunk_size, max_batch=max_batch, image_seeds=image_seeds, progress=progress, log=log,
                               executor=executor)
            deps[d] = store.rows(_latest(store, d, ident)["run"])
        _same_model_or_refuse(store, ident["model"])
        p = exp.resolve(S, K, overrides or {}, deps)
        if name == "phases" and not getattr(sampler, "jumps", True) and not p.get("skipped"):
            p["removal"] = "reuse"  # the scheduler keeps its walk: a removed step reuses the last output
        plans = [] if p.get("skipped") else exp.plans(p, S, K)
        for plan in plans:
            plan.check(S, K)
        settings = dict(experiment=name, params=p, **ident)
        run = store.register_run(name, settings)
        batching = dict(chunk_size=chunk_size, max_batch=max_batch)
        before = store.stats(run).get("batching")
        if before is not None and before != batching:  # float rounding depends on how calls are batched
            log(f"note: {run} resumes with chunk_size={chunk_size}, max_batch={max_batch}; its stored rows were computed "
                f"with chunk_size={before['chunk_size']}, max_batch={before['max_batch']} (results differ by float "
                "rounding, ~1e-6 in SSIM)")
        store.set_stat(run, "batching", batching)
        grid = GridConfig(out_dir=out_dir, trajectory_steps=exp.trajectory_steps(p, S), features=exp.features, chunk_size=chunk_size,
                          max_batch=max_batch, image_seeds=list(seeds)[:image_seeds], progress=progress)
        if p.get("skipped"):
            store.set_stat(run, "skipped", p["skipped"])
            stats = dict(plans=0, spent=0, spent_now=0, minimum=0, naive=0, seconds=0.0, seconds_total=0.0, chunks_run=0,
                         workers={})
        else:
            stats = run_grid(store, run, sampler, list(seeds), cond, plans, grid, executor=executor)
            if executor is not None and not getattr(executor, "in_process", True) and stats["workers"]:
                from ..executor import describe_workers

                log(f"{run}: {describe_workers(stats['workers'])}")
        store.set_stat(run, "complete", True)
    summary = render(out_dir, run)
    summary["stats"] = stats
    return summary


def sampler_label(sampler: dict) -> str:
    """A run's sampler as figure titles name it: ``DDPM, S=100`` or ``dpm++ (DPMSolverMultistepScheduler), S=20``."""
    method, S = sampler.get("method", "ddpm"), sampler.get("steps")
    if method in ("ddpm", "ddim"):
        name = method.upper() + (f" eta {sampler['eta']:g}" if sampler.get("eta") else "")
    else:
        opts = ", ".join(f"{k}={v}" for k, v in sorted((sampler.get("options") or {}).items()))
        name = f"{method} ({sampler.get('scheduler', '')}{'; ' + opts if opts else ''})".replace(" ()", "")
    return f"{name}, S={S}"


def render(out_dir, run: str) -> dict:
    """Findings and figures of a stored run (also used by ``unetscope report``)."""
    from ..store import ResultStore, run_dir, safe_run_name, strict_json, write_atomic
    from ..sweep import load_images

    out_dir = Path(out_dir)
    with ResultStore(out_dir / "results.sqlite") as store:
        info = next(r for r in store.runs() if r["run"] == run)
        rows = store.rows(run)
        stats = store.stats(run)
    s = info["settings"]
    exp = _registry()[info["experiment"]]
    S, K, p = s["sampler"]["steps"], s["model"]["K"], s["params"]
    if stats.get("skipped"):
        summary = dict(run=run, experiment=exp.name, title=exp.title, paper=exp.figure_refs, params=p, model=s["model"],
                       sampler=s["sampler"], samples=len(s["seeds"]), findings=dict(text=f"Not run: {stats['skipped']}.",
                                                                                    skipped=True),
                       figures=[], evaluations=stats)
        (out_dir / "findings").mkdir(exist_ok=True)
        write_atomic(out_dir / "findings" / f"{safe_run_name(run)}.json", strict_json(summary))
        return summary
    findings = exp.analyze(rows, p, S, K)
    images = {seed: load_images(out_dir, run, seed) for seed in s["seeds"][:8]}
    images = {k: v for k, v in images.items() if v}
    fig_dir = run_dir(out_dir, "figures", run)
    fig_dir.mkdir(parents=True, exist_ok=True)
    from ..figures import titled

    with titled(sampler_label(s["sampler"])):  # every figure names the sampler it was made on
        figures = exp.figures(rows, p, S, K, fig_dir, images)
    summary = dict(run=run, experiment=exp.name, title=exp.title, paper=exp.figure_refs, params=p,
                   model=s["model"], sampler=s["sampler"], samples=len(s["seeds"]), findings=findings,
                   figures=[dict(file=f"figures/{run}/{f}", caption=c) for f, c in figures], evaluations=stats)
    (out_dir / "findings").mkdir(exist_ok=True)
    write_atomic(out_dir / "findings" / f"{safe_run_name(run)}.json", strict_json(summary))
    return summary
