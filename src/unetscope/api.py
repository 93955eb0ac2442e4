"""The Python twins of the command line: one function per command, with the same parameters.

``model`` is anything ``--model`` takes (``"default"``, a local diffusers folder, ``FILE.py:FACTORY``,
``package.module:FACTORY``) or a model already loaded or wrapped (``unetscope.wrap(...)``). The
sampling settings are the CLI's: ``steps``, ``method`` (``--scheduler``: ``ddpm``, ``ddim``, ``dpm++``,
``euler-a``, ``heun``, ``unipc``, ... or a diffusers scheduler class name), ``scheduler_options``
(``--scheduler-opt``), ``eta``, ``guidance``,
``variance``, ``clip_x0``, ``batch_size``, ``samples`` / ``seeds``, ``cond`` (``--class`` or the
prompts), ``device``, ``dtype``, ``compile`` (``--compile``).

    import unetscope as us
    res = us.experiment("phases", "examples/mnist_unet.py:make_model", "runs/phases", samples=8, steps=20)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .checks import (check_bool, check_dtype, check_grid, check_int, check_seeds, check_shortcut_choice, check_split,
                     check_steps)
from .errors import UnetscopeError
from .executor import make_executor
from .models import Cond, DiffusionModel, ModelError, load_model
from .sampling import Sampler, cond_slice
from .store import folder_lock

__all__ = ["SettingsError", "Setup", "load", "setup", "out_folder", "experiment", "reproduce", "measure_shortcut", "search_shortcut",
           "write_report", "QUICK"]

# reproduce --quick: 16 samples, S = 50, every 5th start step, every 4th block count
QUICK = dict(samples=16, steps=50, t_step=5, nb_stride=4)


class SettingsError(UnetscopeError, ValueError):
    """Settings of a run that do not fit together (reported by the CLI in one line, exit 2)."""


@dataclass
class Setup:
    """A loaded model, its sampler, the seeds and their conditions: what every command starts from."""

    model: DiffusionModel
    sampler: Sampler
    seeds: list[int]
    cond: Cond


def load(model: str | DiffusionModel = "default", device: str = "cpu", dtype: str | torch.dtype = "float32",
         compile: bool = False) -> DiffusionModel:
    """``model`` loaded (a reference) or as given (a ``DiffusionModel``); ``compile``: its units
    compiled, each once (``DiffusionModel.compile``)."""
    check_bool(compile, SettingsError, "compile")
    if isinstance(model, DiffusionModel):
        return model.compile() if compile else model
    dtype = check_dtype(dtype, SettingsError)
    if not isinstance(model, (str, Path)):
        raise SettingsError(f"model must be a name, a folder, FILE.py:FACTORY or a wrapped model; got {type(model).__name__}")
    try:
        return load_model(model, device=device, dtype=dtype, compile=compile)
    except (RuntimeError, AssertionError) as e:  # an unknown device, or a dtype the device lacks
        raise SettingsError(f"cannot load {model} on --device {device} as {dtype}: {str(e).splitlines()[0]}") from None


def setup(model: str | DiffusionModel = "default", *, samples: int | None = None, seeds: Sequence[int] | None = None,
          cond: Cond = None, steps: int = 100, method: str = "ddpm", eta: float = 0.0, guidance: float | None = None,
          variance: str | None = None, clip_x0: bool | None = None, batch_size: int | None = None,
          device: str = "cpu", dtype: str | torch.dtype = "float32", progress: bool = False,
          compile: bool = False, scheduler_options: dict | None = None) -> Setup:
    """Load ``model`` and build its sampler. Seeds default to ``0..samples-1`` (16); a class model's
    conditions default to cycling through its classes; guidance to 3 where the model has an
    unconditional branch, else 1. ``compile``: the U-Net's units compiled, each once."""
    if seeds is None:
        seeds = list(range(check_int(16 if samples is None else samples, SettingsError, "samples", 1)))
    else:
        seeds = check_seeds(seeds, SettingsError, whole=True)
        if samples is not None and samples != len(seeds):
            raise SettingsError(f"samples={samples} disagrees with {len(seeds)} seeds; give one of them")
    steps = check_steps(steps, None, SettingsError)  # its upper bound, the model's T, once the model is loaded
    m = load(model, device=device, dtype=dtype, compile=compile)
    if guidance is None:
        guidance = 3.0 if m.has_null_branch else 1.0
    sampler = Sampler(m, steps=steps, method=method, eta=eta, guidance=guidance, variance=variance, clip_x0=clip_x0,
                      batch_size=batch_size, progress=progress, compile=compile, options=scheduler_options)
    if cond is None and m.conditioning == "class":
        cond = [s % m.num_classes_real for s in seeds]  # default: cycle through the classes
    elif cond is None and m.conditioning == "text":
        raise ModelError(f"{m.name} is text-conditioned: give prompts (one, or one per sample)")
    elif isinstance(cond, (list, tuple)) and len(cond) == 1 and len(seeds) > 1:
        cond = list(cond) * len(seeds)
    if cond is not None:
        m.make_cond(cond, len(seeds))  # checks the labels or prompts before any work
    return Setup(m, sampler, seeds, cond)


def out_folder(path) -> Path:
    """The run folder ``path``, made if missing (one typed error if it cannot be)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise SettingsError(f"out {str(path)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SettingsError(f"cannot make the folder {str(path)!r}: {e.strerror or e}") from None
    return out


def _quiet(*a, **k) -> None:
    return None


def experiment(name: str, model: str | DiffusionModel = "default", out: str | Path = "runs/experiment", *,
               params: dict | None = None, t_step: int | None = None, chunk_size: int = 16, max_batch: int | None = None,
               images: int = 4, progress: bool = True, log: Callable[[str], Any] | None = None, executor=None,
               **sampling) -> dict:
    """``unetscope sweep NAME``: run (or resume) one of the paper's experiments into ``out`` (its
    rows in ``out/results.sqlite``, findings and figures); returns its summary with ``stats``.
    ``executor``: ``"local"`` (None), ``"ray"`` or a ``RayExecutor`` (``docs/scale-out.md``)."""
    from .experiments import check_experiment, run_experiment

    t_step, chunk_size, images, max_batch = check_grid(SettingsError, t_step=t_step, chunk_size=chunk_size, images=images,
                                                       max_batch=max_batch)
    ex = make_executor(executor, model)
    run = setup(model, **sampling)
    p = dict(params or {})
    if t_step is not None:
        p["t_step"] = t_step
    check_experiment(name, run.sampler.steps, run.model.num_blocks, p)  # before the folder is made
    ex.check(run.model)
    with ex:  # Ray: joined (or started) before the folder is made
        out = out_folder(out)
        with folder_lock(out):
            res = run_experiment(name, run.model, run.sampler, run.seeds, run.cond, out, p, chunk_size=chunk_size,
                                 max_batch=max_batch, image_seeds=images, progress=progress, log=log or _quiet, executor=ex)
    return {**res, "compile": run.model.compile_stats()}  # graphs compiled in this process (None: not compiled)


def reproduce(model: str | DiffusionModel = "default", out: str | Path = "runs/reproduce", *, quick: bool = False,
              t_step: int | None = None, chunk_size: int = 16, max_batch: int | None = None, images: int = 4,
              progress: bool = True, log: Callable[[str], Any] | None = None, executor=None, **sampling) -> dict:
    """``unetscope reproduce``: every experiment of the paper, then the report. ``quick``: 16
    samples, S = 50, every 5th start step, every 4th block count (minutes, not hours)."""
    from .experiments import ORDER, run_experiment
    from .report import write_report as _write

    t_step, chunk_size, images, max_batch = check_grid(SettingsError, t_step=t_step, chunk_size=chunk_size, images=images,
                                                       max_batch=max_batch)
    ex = make_executor(executor, model)
    if sampling.get("samples") is None and sampling.get("seeds") is None:
        sampling["samples"] = QUICK["samples"] if quick else 100
    if sampling.get("steps") is None:
        sampling["steps"] = QUICK["steps"] if quick else 100
    run = setup(model, **sampling)
    stride = t_step or (QUICK["t_step"] if quick else 1)
    K = run.model.num_blocks
    ex.check(run.model)
    results = []
    with ex, folder_lock(out_folder(out)):  # Ray: joined (or started) before the folder is made
        out = Path(out)
        for name in ORDER:
            p = {"t_step": stride} if name in ("trajectory", "phases", "skip-vs-block", "block-utility") else {}
            if quick and name == "block-utility":
                p["nbs"] = sorted(set(range(min(2, K), K + 1, QUICK["nb_stride"])) | {K})
            results.append(run_experiment(name, run.model, run.sampler, run.seeds, run.cond, out, p, chunk_size=chunk_size,
                                          max_batch=max_batch, image_seeds=images, progress=progress, log=log or _quiet,
                                          executor=ex))
        return dict(results=results, report=_write(out), seconds_total=sum(r["stats"]["seconds_total"] for r in results),
                    compile=run.model.compile_stats())


def measure_shortcut(model: str | DiffusionModel = "default", out: str | Path = "runs/shortcut", *,
                     schedule=None, preset: str | None = None, repeats: int = 3,
                     threshold: float | None = None, nb: int | None = None, rival: bool = True, **sampling) -> dict:
    """``unetscope shortcut``: a schedule (a file or a preset) against the baseline on the same
    seeds; writes ``out/summary.json``, the rows and the figures; returns the summary. The
    ``change`` preset (Block Caching's rule: ``threshold``, ``nb``) is read off the deep part's
    measured change on 8 seeds that follow the run's own (so none of them is measured). ``rival``:
    the run ends with the fewest DPM-Solver++ steps that keep the shortcut's mean SSIM against the
    same baseline, timed against it (``summary["rival"]``).

    A recipe (a file whose record holds one, or a ``Recipe``) runs on its own sampler (scheduler,
    options, eta, steps) against its reference sampler (none recorded: its own solver without the
    plan); ``steps``, ``method``, ``scheduler_options`` or ``eta`` given beside it must be the recipe's."""
    from .plan_file import Recipe, ScheduleFileError, read_schedule
    from .shortcut import PRESET_NAMES, PRESETS, ShortcutError, change_preset, run_shortcut
    from .shortcut.run import check_recipe_settings, describe_recipe, recipe_baseline

    threshold = check_shortcut_choice(schedule, preset, PRESET_NAMES, SettingsError, threshold=threshold, nb=nb)
    repeats = check_int(repeats, SettingsError, "repeats", 1)
    rival = check_bool(rival, SettingsError, "rival")
    recipe, plan = (schedule, schedule.plan) if isinstance(schedule, Recipe) else (None, None)
    if schedule is not None and recipe is None:  # a bad file fails before a model loads
        if not isinstance(schedule, (str, Path)):
            raise SettingsError(f"schedule must be a schedule file or a Recipe, got {type(schedule).__name__}")
        try:
            found = read_schedule(schedule)
        except ScheduleFileError as e:
            raise ShortcutError(str(e)) from None
        plan, recipe = found.plan, found.recipe
    if recipe is not None:
        source = "the recipe" if isinstance(schedule, Recipe) else f"the recipe {schedule}"
        check_recipe_settings(recipe, SettingsError, method=sampling.get("method"), steps=sampling.get("steps"),
                              options=sampling.get("scheduler_options"), eta=sampling.get("eta"), source=source)
        if not recipe.plan and recipe.reference is None:
            raise SettingsError(f"{source} holds no interventions and no reference sampler: there is nothing to compare "
                                "its solver with (record a reference, or add interventions)")
        sampling = {**sampling, **recipe.sampler_settings()}
    run = setup(model, **sampling)
    S, K = run.sampler.steps, run.model.num_blocks
    if preset == "change":
        cal = list(range(max(run.seeds) + 1, max(run.seeds) + 9))
        plan = change_preset(run.sampler, cal, _first_conds(run.cond, len(run.seeds), len(cal)), threshold=threshold, nb=nb)
    elif preset is not None:
        plan = PRESETS[preset](S, K)
    plan = run.sampler.check_plan(plan)  # a scheduler refuses SkipSteps/StopEarly here, before a folder is made
    baseline = recipe_baseline(run.sampler, recipe) if recipe is not None else run.sampler
    if not plan and baseline is run.sampler:
        raise SettingsError("the schedule holds no interventions: the shortcut would be the baseline itself")
    out = out_folder(out)
    with folder_lock(out):
        if recipe is not None:
            name = f"recipe {describe_recipe(recipe)}"
        else:
            name = f"change (threshold {threshold:g}, nb {nb or K - 1})" if preset == "change" else preset or str(schedule)
        return run_shortcut(run.sampler, plan, run.seeds, run.cond, out, repeats=repeats, name=name,
                            baseline=None if baseline is run.sampler else baseline, rival=rival)


def _first_conds(cond, n: int, k: int):
    """Conditions for ``k`` other samples: the same single condition, or the first k of n (cycled)."""
    if cond is None or isinstance(cond, (int, str)):
        return cond
    items = list(cond)
    return [items[i % len(items)] for i in range(k)]


def search_shortcut(model: str | DiffusionModel = "default", out: str | Path = "runs/search", *,
                    target_mean: float | None = None, target_min: float | None = None,
                    target_quantile: float | None = None, quantile: float = 0.1, budget: float | None = None,
                    calibration: int = 8, validation: int | None = None, rounds: int = 40,
                    write: str | Path | None = None, repeats: int = 3, log: Callable[[str], Any] | None = None,
                    executor=None, chunk_size: int | None = None, adaptive: bool = False, frontier: bool = False,
                    reference: str | None = None, solvers=None, rival: bool = True, **sampling) -> dict:
    """``unetscope shortcut search``: search a schedule on the first ``calibration`` seeds, keeping
    only moves whose target also holds (with a margin) on the next ``validation`` seeds, write it
    (``write``, default ``out/schedule.json``) and measure it on the rest, the held-out test seeds
    the search never saw, next to the best uniform schedule of no more compute. A quality target
    (``target_mean``, ``target_min``, ``target_quantile`` on the ``quantile``; a mean of 0.8 when none
    is given) or a compute ``budget`` (fraction of the baseline). 48 samples unless given: 8 to
    calibrate, 16 to validate (``validation`` None: at least 16 and as many as ``calibration``, at
    most half the rest), 24 held out. ``executor``: where candidates are scored (``"local"``,
    None, ``"ray"`` or a ``RayExecutor``), in chunks of ``chunk_size`` seeds (None: one per worker);
    the held-out timing always runs here. Returns ``{"search", "schedule", "held_out",
    "held_out_meets_target", "held_out_interval", "uniform_rival", ...}``; ``held_out_interval`` is
    a 90% bootstrap interval of the held-out mean SSIM. ``adaptive``: an ``AdaptiveCache`` schedule
    (its nb, threshold and max_reuse chosen on the same seeds by the same rules; in this process).

    ``frontier``: the fastest recipe instead (``unetscope.shortcut.frontier``): every solver of
    ``solvers`` (default ``ddim,dpm++,unipc,euler``, and ``dpm++-sde,euler-a`` for a stochastic
    reference) at the fewest steps that keep the target against ``reference`` (``"SCHEDULER:STEPS"``;
    default ``ddim:100``, or the model's T where it is below 100), then cuts stacked on the fastest
    few and the cuts alone on the reference, chosen by measured time on the validation seeds and
    reported on the held-out ones. Writes the recipe (``write``, default ``out/recipe.json``),
    ``out/frontier.json`` and ``out/figures/frontier.png``. ``rival`` (the plain search): the held-out
    run ends with the fewest DPM-Solver++ steps that keep the same SSIM, timed (``rival``)."""
    from .shortcut import SearchConfig, heldout_ssim, run_shortcut, save_schedule, search
    from .shortcut.adaptive import search_adaptive

    check_bool(frontier, SettingsError, "frontier")
    check_bool(rival, SettingsError, "rival")
    if frontier:
        return _frontier_search(model, out, target_mean=target_mean, target_min=target_min,
                                target_quantile=target_quantile, quantile=quantile, budget=budget,
                                calibration=calibration, validation=validation, rounds=rounds, write=write,
                                repeats=repeats, log=log, executor=executor, chunk_size=chunk_size, adaptive=adaptive,
                                reference=reference, solvers=solvers, **sampling)
    if reference is not None or solvers is not None:
        raise SettingsError("reference and solvers are the frontier search's: give frontier=True (--frontier)")
    rounds = check_int(rounds, SettingsError, "rounds", 1)
    chunk_size = check_int(chunk_size, SettingsError, "chunk_size", 1, none="one chunk per worker")
    check_bool(adaptive, SettingsError, "adaptive")
    repeats = check_int(repeats, SettingsError, "repeats", 1)
    if write and not Path(write).parent.is_dir():  # before any work
        raise SettingsError(f"cannot write the schedule to {str(write)!r}: its folder does not exist")
    if adaptive and executor not in (None, "local") and not getattr(executor, "in_process", False):
        raise SettingsError("the adaptive search runs in this process: leave the executor out (its candidates are "
                            "whole sampling runs, not chunks of a sweep)")
    ex = make_executor(executor, model)
    cfg = SearchConfig(target_mean=target_mean, target_min=target_min, target_quantile=target_quantile,
                       quantile=quantile, budget=budget, max_rounds=rounds)
    if sampling.get("samples") is None and sampling.get("seeds") is None:
        sampling["samples"] = 48
    run = setup(model, **sampling)
    n = len(run.seeds)
    calibration, validation = check_split(n, calibration, validation, SettingsError)
    split = calibration + validation
    cal, val, hold = _split(run.seeds, calibration, split)
    part = _parts(run.cond, n)

    ex.check(run.model)
    with ex:  # Ray: joined (or started) before the folder is made
        out = out_folder(out)
        target = Path(write) if write else out / "schedule.json"
        with folder_lock(out):
            if adaptive:
                res = search_adaptive(run.sampler, cal, part(0, calibration), cfg, validation_seeds=val or None,
                                      validation_cond=part(calibration, split), log=log)
            else:
                res = search(run.sampler, cal, part(0, calibration), cfg, validation_seeds=val or None,
                             validation_cond=part(calibration, split), log=log, executor=ex, chunk_size=chunk_size)
            save_schedule(res["plan"], target, meta=dict(
                target=res["target"], calibration_seeds=cal, validation_seeds=val,
                calibration_ssim_mean=res["calibration_ssim_mean"], validation_ssim_mean=res["validation_ssim_mean"],
                predicted_compute=res["predicted_compute"], model=run.model.describe(), sampler=run.sampler.describe()))
            if not res["plan"]:
                raise SettingsError(f"no schedule meets the target ({res['target']}) on the calibration and validation "
                                    f"seeds, not even the first move; wrote the empty schedule to {target}: lower the "
                                    "target, use more steps or more validation seeds")
            rival = None
            if res["uniform_rival"] is not None:
                from .plan import Plan

                ss = heldout_ssim(run.sampler, Plan.from_dict(res["uniform_rival"]["plan"]), hold, part(split, n),
                                  executor=ex, chunk_size=chunk_size)
                rival = dict(res["uniform_rival"], held_out_ssim_mean=float(ss.mean()), held_out_ssim_min=float(ss.min()))
            ex.close()  # the workers are gone before the held-out seeds are timed here
            held = run_shortcut(run.sampler, res["plan"], hold, part(split, n), out, repeats=repeats, name="search",
                                rival=rival)
    import numpy as np

    hs = np.array([r["ssim"] for r in held["per_sample"]])
    meets = None if budget is not None else bool(cfg.meets(hs))
    boot = hs[np.random.default_rng(0).integers(0, len(hs), size=(2000, len(hs)))].mean(axis=1)
    return dict(search=res, schedule=target, held_out=held, held_out_meets_target=meets, uniform_rival=rival,
                held_out_interval=(float(np.quantile(boot, 0.05)), float(np.quantile(boot, 0.95))),
                calibration_seeds=cal, validation_seeds=val, held_out_seeds=hold)


def _frontier_search(model, out, *, target_mean, target_min, target_quantile, quantile, budget, calibration, validation,
                     rounds, write, repeats, log, executor, chunk_size, adaptive, reference, solvers, **sampling) -> dict:
    """``shortcut search --frontier`` (``search_shortcut(frontier=True)``): see ``unetscope.shortcut.frontier``."""
    from .shortcut import SearchConfig, ShortcutError
    from .shortcut.frontier import FrontierConfig, frontier, parse_reference, parse_solvers

    if adaptive:
        raise SettingsError("the frontier search tries AdaptiveCache with the rest: leave adaptive (--adaptive) out")
    if budget is not None:
        raise SettingsError("the frontier search finds the fastest recipe for a quality target (target_mean, target_min, "
                            "target_quantile); a compute budget is the plain search's: leave budget (--budget) out")
    rounds = check_int(rounds, SettingsError, "rounds", 1)
    repeats = check_int(repeats, SettingsError, "repeats", 1)
    chunk_size = check_int(chunk_size, SettingsError, "chunk_size", 1, none="one chunk per worker")
    ref = parse_reference(reference, SettingsError) if reference is not None else None
    parsed = parse_solvers(solvers, SettingsError, ref[1] if ref else None) if solvers is not None else None
    if write and not Path(write).parent.is_dir():  # before any work
        raise SettingsError(f"cannot write the recipe to {str(write)!r}: its folder does not exist")
    cfg = SearchConfig(target_mean=target_mean, target_min=target_min, target_quantile=target_quantile,
                       quantile=quantile, max_rounds=rounds)
    ex = make_executor(executor, model)
    if sampling.get("samples") is None and sampling.get("seeds") is None:
        sampling["samples"] = 48
    run = setup(model, **sampling)
    T = run.model.schedule.num_train_timesteps
    if ref is None:
        ref = ("ddim", min(100, T))
    check_steps(ref[1], T, SettingsError, name="the reference's steps")
    if parsed is not None:
        parsed = parse_solvers(parsed, SettingsError, ref[1])
    n = len(run.seeds)
    calibration, validation = check_split(n, calibration, validation, SettingsError)
    split = calibration + validation
    cal, val, hold = _split(run.seeds, calibration, split)
    part = _parts(run.cond, n)

    fcfg = FrontierConfig(reference=ref, solvers=parsed, search=cfg, repeats=repeats)
    ex.check(run.model)
    with ex:
        out = out_folder(out)
        target = Path(write) if write else out / "recipe.json"
        with folder_lock(out):
            try:
                res = frontier(run.sampler, cal, part(0, calibration), fcfg, validation_seeds=val or None,
                               validation_cond=part(calibration, split), held_out_seeds=hold or None,
                               held_out_cond=part(split, n), log=log, executor=ex, chunk_size=chunk_size)
            except ShortcutError as e:
                raise SettingsError(str(e)) from None
            return _write_frontier(run, res, out, target, cal, val, hold, cfg.targets.get("mean"))


def _write_frontier(run: Setup, res: dict, out: Path, target: Path, cal, val, hold, target_mean: float | None) -> dict:
    """The recipe file, ``frontier.json`` and the frontier figure of a frontier search."""
    import json

    from .plan_file import write_recipe
    from .shortcut.frontier import draw_frontier
    from .store import strict_json, write_atomic

    held = res.get("held_out")
    meta = dict(target=res["target"], calibration_seeds=cal, validation_seeds=val, model=run.model.describe(),
                frontier=dict(chosen=res["chosen"]["label"], kind=res["chosen"]["kind"],
                              held_out=None if held is None else {k: held["chosen"][k] for k in
                                                                  ("ssim_mean", "ssim_p10", "ssim_min", "time_fraction")}))
    write_recipe(target, res["recipe"], meta)
    record = {k: v for k, v in res.items() if k != "recipe"}
    if held is not None:
        record["held_out"] = {k: v for k, v in held.items() if k != "images"}
    (out / "figures").mkdir(exist_ok=True)
    figure = draw_frontier(json.loads(strict_json(record)), out / "figures" / "frontier.png", target=target_mean)
    record.update(recipe_file=str(target), figure=None if figure is None else "figures/frontier.png",
                  seeds_used=dict(calibration=cal, validation=val, held_out=hold))
    write_atomic(out / "frontier.json", strict_json(record))
    return dict(search=res, recipe=res["recipe"], schedule=target, held_out=held, figure=figure,
                calibration_seeds=cal, validation_seeds=val, held_out_seeds=hold)


def _split(seeds: list[int], calibration: int, split: int) -> tuple[list[int], list[int], list[int]]:
    """The calibration, validation and held-out seeds of a search, in that order."""
    return seeds[:calibration], seeds[calibration:split], seeds[split:]


def _parts(cond: Cond, n: int):
    """``part(lo, hi)``: the conditions of samples lo..hi-1 of n (None for an unconditional model)."""
    def part(lo: int, hi: int):
        return None if cond is None else cond_slice(cond, list(range(lo, hi)), n)
    return part


def write_report(dir: str | Path, *, csv: bool = False, parquet: bool = False) -> dict:
    """``unetscope report DIR``: ``DIR/report.html`` (and the CSV / Parquet exports); returns the paths."""
    from .report import write_report as _write

    dir = Path(dir)
    if not (dir / "results.sqlite").exists():
        return dict(report=_write(dir))  # the report's own one-line error: nothing to report, nothing to lock
    with folder_lock(dir):
        return _report(dir, csv, parquet)


def _report(dir: Path, csv: bool, parquet: bool) -> dict:
    from .report import write_report as _write
    from .store import ResultStore

    paths = dict(report=_write(dir))
    if csv or parquet:
        with ResultStore(dir / "results.sqlite") as st:
            if csv:
                paths["csv"] = st.export_csv(dir / "results.csv")
            if parquet:
                paths["parquet"] = st.export_parquet(dir / "results.parquet")
    return paths
