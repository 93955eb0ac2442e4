"""The ``unetscope`` command line: sample, intervene, sweep, report, reproduce, shortcut, models, train, explore.

Bad input gets one line naming what is wrong and what is allowed, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checks import (METHODS, check_device, check_eta, check_grid, check_int, check_scheduler_options, check_seeds,
                     check_shortcut_choice, check_split, check_steps, check_threads, check_variance, parse_scheduler_option)
from .errors import UnetscopeError


class UsageError(UnetscopeError):
    """Bad input from the command line: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


# --- parsing helpers ---------------------------------------------------------------------------
MAX_SAMPLES = 1_000_000  # a sane bound, checked before anything is allocated


def parse_seeds(text: str | None, samples: int | None) -> list[int]:
    """``--seeds 0-15`` or ``--seeds 3,5,9``; else ``--samples N`` gives seeds 0..N-1."""
    if samples is not None:
        check_int(samples, UsageError, "--samples", 1, MAX_SAMPLES)
    if text is None:
        return list(range(16 if samples is None else samples))
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                if hi - lo + 1 + len(seeds) > MAX_SAMPLES:
                    raise UsageError(f"--seeds {text!r} holds more than {MAX_SAMPLES:,} seeds")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise UsageError(f"--seeds must be integers like 0-15 or 3,5,9; got {text!r}") from None
    seeds = check_seeds(seeds, UsageError, name="--seeds")
    if samples is not None and samples != len(seeds):
        raise UsageError(f"--samples {samples} disagrees with --seeds {text!r} ({len(seeds)} seeds); give one of them")
    return seeds


def _read_text(flag: str, path) -> str:
    """A text file named on the command line, as UTF-8 (one line, exit 2, for anything else)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{flag} file {str(path)!r} cannot be read as UTF-8 text ({type(e).__name__})") from None


def parse_prompts(prompts: list[str] | None, path: str | None) -> list[str]:
    out = list(prompts or [])
    if path:
        if not Path(path).is_file():
            raise UsageError(f"--prompts file {path!r} does not exist")
        out += [line.strip() for line in _read_text("--prompts", path).splitlines() if line.strip()]
        if not out:
            raise UsageError(f"--prompts file {path!r} holds no prompts (one per line)")
    return out


def parse_classes(text: str | None, n: int):
    if text is None:
        return None
    try:
        labels = [int(c) for c in text.split(",")]
    except ValueError:
        raise UsageError(f"--class must be an integer or a comma-separated list of them; got {text!r}") from None
    if len(labels) == 1:
        return labels * n
    if len(labels) != n:
        raise UsageError(f"--class gives {len(labels)} labels for {n} samples; give one label or one per sample")
    return labels


def _sampling(args) -> dict:
    """The sampling settings of the command line as ``api.setup``'s keywords (strings parsed)."""
    prompts = parse_prompts(args.prompt, args.prompts)  # cheap checks first, before a model loads
    if prompts and args.samples is None and args.seeds is None:
        args.samples = len(prompts)
    seeds = parse_seeds(args.seeds, args.samples)
    method, options = _scheduler(args)
    flag = "--scheduler" if args.scheduler else "--sampler"
    check_eta(args.eta, method, UsageError, name="--eta", method_name=flag)
    check_variance(args.variance, method, UsageError, name="--variance", method_name=flag, strict=True)
    # the upper bound of the steps (the model's T) is checked once the model is loaded
    steps = check_steps(100 if args.steps is None else args.steps, None, UsageError, name="--steps")
    if prompts and len(prompts) not in (1, len(seeds)):
        raise UsageError(f"{len(prompts)} prompts for {len(seeds)} samples: give one prompt, or one per sample")
    cond = (prompts * len(seeds) if len(prompts) == 1 else prompts) if prompts else parse_classes(args.class_, len(seeds))
    _check_device_and_compiler(args)
    return dict(seeds=seeds, cond=cond, steps=steps, method=method, scheduler_options=options, eta=args.eta, guidance=args.guidance,
                variance=args.variance, clip_x0=args.clip_x0, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                compile=args.compile)


def _scheduler(args) -> tuple[str, dict]:
    """(method, options) of ``--scheduler``/``--sampler`` and ``--scheduler-opt``, checked before a model loads."""
    if args.scheduler and args.sampler and args.scheduler != args.sampler:
        raise UsageError(f"--sampler {args.sampler} and --scheduler {args.scheduler} disagree: give one (--scheduler takes every name)")
    method = args.scheduler or args.sampler or "ddpm"
    options: dict = {}
    for text in args.scheduler_opt or ():
        k, v = parse_scheduler_option(text, UsageError)
        if k in options:
            raise UsageError(f"--scheduler-opt {k} is given twice")
        options[k] = v
    cls = None
    if method not in METHODS:  # a diffusers scheduler: its name and class (diffusers is imported only here)
        from .sampling import resolve_scheduler

        _, cls, _ = resolve_scheduler(method)
    flag = "--scheduler" if args.scheduler else "--sampler"
    return method, check_scheduler_options(options, cls, UsageError, method=method, name="--scheduler-opt", method_name=flag)


def _check_device_and_compiler(args) -> None:
    """``--device`` (one that is here) and ``--compile`` (a compiler that works on it), before a model loads."""
    device = check_device(args.device, UsageError, name="--device")
    if getattr(args, "compile", False):
        from .compiling import check_compiler

        check_compiler(device)


def _compile_line(model) -> str | None:
    """The printed count of compilations (None: not compiled)."""
    st = model.compile_stats()
    if st is None:
        return None
    n, u = st["compilations"], st["units"]
    why = ("one each" if n == u else "no unit ran in this process" if n == 0 else
           "recompiled for new batch shapes, or graph breaks" if n > u else "some units never ran in this process")
    return f"compiled ({st['backend']}): {n} compilations for {u} unit functions ({why})"


def _print_compile(model) -> None:
    line = _compile_line(model)
    if line:
        print(line)


def _model_and_sampler(args, progress: bool):
    """(model, sampler, seeds, cond) from the command line, through ``api.setup``."""
    from .api import load, setup

    kw = _sampling(args)
    model = load(args.model, device=kw.pop("device"), dtype=kw.pop("dtype"), compile=kw.pop("compile"))
    prompts = bool(args.prompt or args.prompts)
    if prompts and model.conditioning != "text":
        raise UsageError(f"--prompt/--prompts need a text-conditioned model; {args.model} is {model.conditioning}-conditioned")
    if not prompts and model.conditioning == "text":
        raise UsageError(f"{args.model} is text-conditioned: give --prompt TEXT (repeatable) or --prompts FILE")
    run = setup(model, progress=progress, **kw)
    return run.model, run.sampler, run.seeds, run.cond


def _out_dir(path: str) -> Path:
    from .api import out_folder

    return out_folder(path)


def _scale(images) -> int:
    return max(1, 128 // images.shape[-1])  # small images (MNIST) are enlarged to be seen


def _write_json(path: Path, obj) -> None:
    from .store import strict_json, write_atomic

    write_atomic(path, strict_json(obj))


# --- commands ----------------------------------------------------------------------------------
def _cmd_sample(args) -> None:
    from .images import make_grid, save_png

    model, sampler, seeds, cond = _model_and_sampler(args, progress=not args.quiet)
    out = _out_dir(args.out)
    traj = sampler.sample(seeds, cond)
    images = traj.images
    sc = _scale(images)
    files = [save_png(img, out / f"sample_{s:05d}.png", sc).name for s, img in zip(seeds, images)]
    save_png(make_grid(images, nrow=min(8, len(seeds))), out / "grid.png", sc)
    _write_json(out / "samples.json", dict(model=model.describe(), sampler=sampler.describe(), seeds=seeds,
                                           classes=cond, files=files, nfe=traj.nfe, seconds=round(traj.seconds, 3),
                                           compile=model.compile_stats()))
    print(f"{len(seeds)} samples, {traj.nfe} U-Net evaluations, {traj.seconds:.1f} s -> {out}/grid.png")
    _print_compile(model)


def plan_from_args(args):
    """The plan of ``intervene``: ``--plan`` JSON (or a file), or one short flag with ``--start``
    (and ``--stop-early``). A PlanError is reported by ``main`` in one line."""
    from .plan import AdaptiveCache, DropBlocks, Plan, ReuseEncoder, SkipSteps, StopEarly, ZeroSkips

    short = {"--skip-steps": args.skip_steps, "--zero-skips": args.zero_skips, "--drop-blocks": args.drop_blocks,
             "--reuse-encoder": True if args.reuse_encoder else None, "--adaptive-cache": args.adaptive_cache}
    given = [k for k, v in short.items() if v is not None]
    for flag, v in (("--threshold", args.threshold), ("--max-reuse", args.max_reuse)):
        if v is not None and given != ["--adaptive-cache"]:
            raise UsageError(f"{flag} is AdaptiveCache's: give it with --adaptive-cache NB")
    if given == ["--adaptive-cache"] and args.threshold is None:
        raise UsageError("--adaptive-cache needs --threshold X (the accumulated relative change under which a sample "
                         "reads the cache; 0 computes every step)")
    if args.plan is not None:
        if given or args.stop_early is not None:
            raise UsageError(f"give either --plan or the short flags ({'/'.join(short)}/--stop-early), not both")
        text = args.plan
        if not text.lstrip().startswith(("{", "[")):
            if not Path(text).is_file():
                raise UsageError(f"--plan must be JSON or a JSON file; {text!r} is neither")
            text = _read_text("--plan", text)
        from .plan_file import SCHEDULE_META

        plan = Plan.from_json(text, SCHEDULE_META)  # a schedule file's own record is read past
        if not plan:
            raise UsageError("--plan holds no interventions: nothing to intervene on")
        return plan
    if len(given) > 1:
        raise UsageError(f"give one of {', '.join(short)} (use --plan to combine them); got {' and '.join(given)}")
    if args.fill != "zeros" and given != ["--drop-blocks"]:
        raise UsageError(f"--fill {args.fill} has no effect without --drop-blocks (it is what D[nb] receives)")
    if (args.start is not None or args.n is not None) and not given:
        raise UsageError("--start/--n have no effect with only --stop-early (they place --skip-steps, --zero-skips, "
                         "--drop-blocks, --reuse-encoder or --adaptive-cache)")
    items = []
    if given:
        if args.start is None and given[0] != "--adaptive-cache":
            raise UsageError(f"--start is needed with {given[0]}")
        n = 1 if args.n is None else args.n
        make = {"--skip-steps": lambda: SkipSteps(start=args.start, n=args.skip_steps),
                "--zero-skips": lambda: ZeroSkips(ns=args.zero_skips, start=args.start, n=n),
                "--drop-blocks": lambda: DropBlocks(nb=args.drop_blocks, start=args.start, n=n, fill=args.fill),
                "--reuse-encoder": lambda: ReuseEncoder(start=args.start, n=n),
                "--adaptive-cache": lambda: AdaptiveCache(nb=args.adaptive_cache, threshold=args.threshold,
                                                          start=args.start, n=args.n, max_reuse=args.max_reuse)}
        items.append(make[given[0]]())
    if args.stop_early is not None:
        items.append(StopEarly(at=args.stop_early))
    if not items:
        raise UsageError(f"nothing to intervene on: give --plan, or one of {', '.join(short)} with --start, or --stop-early")
    return Plan(tuple(items))


def _cmd_intervene(args) -> None:
    import torch

    from .images import make_grid, save_png
    from .metrics import psnr, ssim

    plan = plan_from_args(args)
    model, sampler, seeds, cond = _model_and_sampler(args, progress=not args.quiet)
    plan = plan.check(sampler.steps, model.num_blocks)
    out = _out_dir(args.out)
    base, inter = sampler.compare(seeds, cond, plan)
    a, b = base.images, inter.images
    s_ssim, s_psnr = ssim(a, b), psnr(a, b)
    sc = _scale(a)
    rows = []
    for i, s in enumerate(seeds):
        name = f"compare_{s:05d}.png"
        save_png(make_grid(torch.stack([a[i], b[i]]), nrow=2), out / name, sc)
        rows.append(dict(seed=s, cond=None if cond is None else cond[i], psnr=float(s_psnr[i]), ssim=float(s_ssim[i]), file=name))
    k = min(len(seeds), 16)  # the grid: baselines on top, intervened below, for the first 16 samples
    save_png(make_grid(torch.cat([a[:k], b[:k]]), nrow=k), out / "grid.png", sc)
    finite = s_psnr[torch.isfinite(s_psnr)]
    summary = dict(model=model.describe(), sampler=sampler.describe(), plan=plan.to_dict(), seeds=seeds,
                   samples=rows, ssim_mean=float(s_ssim.mean()), ssim_std=float(s_ssim.std()) if len(seeds) > 1 else 0.0,
                   psnr_mean=float(finite.mean()) if len(finite) else float("inf"),
                   nfe_baseline=base.nfe, nfe_intervened=inter.nfe, units_baseline=base.units_run, units_intervened=inter.units_run,
                   compile=model.compile_stats())
    for r, u in zip(rows, inter.units_per_sample):  # each sample's compute: units it ran over the baseline's
        r["compute"] = u / base.units_per_sample[0]
    _write_json(out / "metrics.json", summary)
    print(f"{plan!r}: SSIM {summary['ssim_mean']:.4f}, PSNR {summary['psnr_mean']:.2f} dB over {len(seeds)} samples "
          f"(U-Net units run {inter.units_run:g}/{base.units_run}) -> {out}/metrics.json, {out}/grid.png")
    _print_compile(model)


def _parse_params(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise UsageError(f"--param takes name=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def _print_experiment(res: dict, samples: int, out) -> None:
    st = res["stats"]
    print(f"{res['experiment']}: {res['findings'].get('text', '')}")
    took = f"{st['seconds']:.0f} s" + (f" ({st['seconds_total']:.0f} s over every call of this run)"
                                       if st["seconds_total"] > st["seconds"] + 0.5 else "")
    print(f"  {samples} samples; U-Net evaluations spent {st['spent']} (this call {st['spent_now']}), minimum "
          f"{st['minimum']}, naive {st['naive']}; {took}; figures in {out}/figures/{res['run']}/")


def _grid_kw(args) -> dict:
    """The sweep's sizes as the API's keywords, checked (by the API's own check) before a model loads."""
    check_grid(UsageError, t_step=args.t_step, chunk_size=args.chunk_size, images=args.images, max_batch=args.max_batch)
    return dict(chunk_size=args.chunk_size, max_batch=args.max_batch, images=args.images, progress=not args.quiet,
                log=lambda m: print(m, file=sys.stderr))


def _cmd_sweep(args) -> None:
    from .api import experiment

    grid, params = _grid_kw(args), _parse_params(args.param)  # cheap checks first, before a model loads
    executor = _executor(args)
    model, sampler, seeds, cond = _model_and_sampler(args, progress=False)
    res = experiment(args.experiment, model, args.out, params=params, t_step=args.t_step, executor=executor,
                     seeds=seeds, cond=cond, steps=sampler.steps, **_sampler_kw(sampler), **grid)
    _print_experiment(res, len(seeds), args.out)
    _print_compile(model)


def _sampler_kw(sampler) -> dict:
    """A built sampler's settings as ``api.setup`` keywords (so the API twin builds the same one)."""
    return dict(method=sampler.method, scheduler_options=dict(sampler.options), eta=sampler.eta, guidance=sampler.guidance,
                variance=sampler.variance,
                clip_x0=sampler.clip_x0, batch_size=sampler.batch_size, compile=sampler.compile)


def _cmd_report(args) -> None:
    from .api import write_report

    paths = write_report(args.dir, csv=args.csv, parquet=args.parquet)
    for k in ("csv", "parquet"):
        if k in paths:
            print(f"wrote {paths[k]}")
    print(f"wrote {paths['report']}")


def _cmd_reproduce(args) -> None:
    import time

    from .api import QUICK, reproduce

    if args.samples is None and args.seeds is None:
        args.samples = QUICK["samples"] if args.quick else 100
    if args.steps is None and args.quick:
        args.steps = QUICK["steps"]  # quick: half the paper's steps (every parameter scales with S)
    grid = _grid_kw(args)
    executor = _executor(args)
    model, sampler, seeds, cond = _model_and_sampler(args, progress=False)
    t0 = time.perf_counter()
    res = reproduce(model, args.out, quick=args.quick, t_step=args.t_step, seeds=seeds, cond=cond, executor=executor,
                    steps=sampler.steps, **_sampler_kw(sampler), **grid)
    for r in res["results"]:
        _print_experiment(r, len(seeds), args.out)
    print(f"reproduced {len(res['results'])} experiments in {(time.perf_counter() - t0) / 60:.1f} min "
          f"(sampling, summed over every call that worked on this folder: {res['seconds_total'] / 60:.1f} min); "
          f"report: {res['report']}")
    _print_compile(model)


def _cmd_shortcut_run(args) -> None:
    from .api import measure_shortcut
    from .plan_file import read_schedule
    from .shortcut import PRESET_NAMES

    check_int(args.repeats, UsageError, "--repeats", 1)
    check_shortcut_choice(args.schedule, args.preset, PRESET_NAMES, UsageError, threshold=args.threshold, nb=args.nb,
                          flags=True)
    recipe = read_schedule(args.schedule).recipe if args.schedule else None  # a bad file fails before a model loads
    if recipe is not None:  # the recipe's sampler: flags that say otherwise are refused before a model loads
        from .shortcut.run import check_recipe_settings

        given = {}
        for text in args.scheduler_opt or ():
            k, v = parse_scheduler_option(text, UsageError)
            given[k] = v
        check_recipe_settings(recipe, UsageError, method=args.scheduler or args.sampler, steps=args.steps, options=given,
                              eta=args.eta, flags="--scheduler" if args.scheduler else "--sampler",
                              source=f"the recipe {args.schedule}")
        if not recipe.plan and recipe.reference is None:
            raise UsageError(f"the recipe {args.schedule} holds no interventions and no reference sampler: there is "
                             "nothing to compare its solver with")
        args.scheduler, args.steps, args.eta = recipe.scheduler, recipe.steps, recipe.eta
        args.scheduler_opt = [f"{k}={json.dumps(v)}" for k, v in recipe.options.items()]
    elif args.eta is None:
        args.eta = 0.0  # --eta's default (None here: a recipe's run tells a given --eta from none)
    model, sampler, seeds, cond = _model_and_sampler(args, progress=not args.quiet)  # every run's bar, timed ones too
    summ = measure_shortcut(model, args.out, schedule=args.schedule, preset=args.preset, threshold=args.threshold,
                            nb=args.nb, seeds=seeds, cond=cond, steps=sampler.steps, repeats=args.repeats,
                            progress=not args.quiet, rival=args.rival, **_sampler_kw(sampler))
    from .plan import Plan

    print(summ["name"] if recipe is not None else f"{Plan.from_dict(summ['schedule'])!r}")
    print(f"{summ['samples']} samples: time saving {summ['time_saving']:.1%}, compute saving {summ['compute_saving']:.1%}, "
          f"mean SSIM {summ['ssim_mean']:.3f} (mad {summ['ssim_mad']:.3f}), mean PSNR {summ['psnr_mean']:.2f} dB "
          f"-> {args.out}/summary.json")
    if summ["time_saving_predicted"] is None:  # not predictable (a baseline timed at 0 s): printed as nan
        summ = {**summ, "time_saving_predicted": float("nan")}
    _print_timing(summ)
    _print_rival(summ)
    _print_compile(model)


def _print_rival(summ: dict) -> None:
    if summ.get("rival") is not None:
        from .shortcut.frontier import rival_line

        print(f"  {rival_line(summ['rival'])}")


def _cmd_shortcut_search(args) -> None:
    from .api import search_shortcut

    if args.frontier:
        return _cmd_shortcut_frontier(args)
    if args.reference is not None or args.solvers is not None:
        raise UsageError(f"{'--reference' if args.reference is not None else '--solvers'} is for shortcut search --frontier "
                         "(the fastest recipe over solvers, steps and cuts): add --frontier")
    executor = _executor(args)
    if args.adaptive and (executor != "local" or args.chunk_size is not None):
        raise UsageError("--adaptive runs in this process: --executor ray and --chunk-size are for the static search")
    for flag, v in (("--repeats", args.repeats), ("--rounds", args.rounds)):
        check_int(v, UsageError, flag, 1)
    check_int(args.chunk_size, UsageError, "--chunk-size", 1, none="one chunk per worker")
    if args.samples is None and args.seeds is None:
        args.samples = 48  # 8 to calibrate, 16 to validate, 24 held out
    model, sampler, seeds, cond = _model_and_sampler(args, progress=not args.quiet)  # every run's bar, timed ones too
    n, _ = check_split(len(seeds), args.calibration, args.validation, UsageError, names=("--calibration", "--validation"))
    res = search_shortcut(model, args.out, target_mean=args.target_mean, target_min=args.target_min,
                          target_quantile=args.target_quantile, quantile=args.quantile, budget=args.budget,
                          calibration=n, validation=args.validation, rounds=args.rounds, write=args.write,
                          executor=executor, chunk_size=args.chunk_size, adaptive=args.adaptive,
                          log=None if args.quiet else (lambda m: print(m, file=sys.stderr)), seeds=seeds, cond=cond,
                          steps=sampler.steps, repeats=args.repeats, progress=not args.quiet, rival=args.rival,
                          **_sampler_kw(sampler))
    found, summ = res["search"], res["held_out"]
    nv, nh = len(res["validation_seeds"]), len(res["held_out_seeds"])
    if executor != "local" and found["workers"] and not args.quiet:
        from .executor import describe_workers

        print(f"search: {describe_workers(found['workers'])}", file=sys.stderr)
    print(f"searched schedule for {found['target']} ({len(found['history'])} rounds, {found['evaluations']} "
          f"evaluations): {found['plan']!r}")
    val = "" if found["validation_ssim_mean"] is None else \
        f", validation ({nv} samples): mean SSIM {found['validation_ssim_mean']:.3f}"
    print(f"  calibration ({n} samples): mean SSIM {found['calibration_ssim_mean']:.3f}{val}; "
          f"predicted compute {found['predicted_compute']:.3f} of the baseline -> {res['schedule']}")
    verdict = "" if res["held_out_meets_target"] is None else \
        ("; meets the target" if res["held_out_meets_target"] else "; MISSES the target")
    lo, hi = res["held_out_interval"]
    print(f"  held out ({nh} samples): mean SSIM {summ['ssim_mean']:.3f} (90% interval {lo:.3f}-{hi:.3f}, min "
          f"{summ['ssim_min']:.3f}){verdict}, "
          f"time saving {summ['time_saving']:.1%}, compute saving {summ['compute_saving']:.1%} -> {args.out}/summary.json")
    r = res["uniform_rival"]
    if r is not None:
        print(f"  best uniform schedule at no more compute ({r['compute']:.3f}): held-out mean SSIM "
              f"{r['held_out_ssim_mean']:.3f}")
    _print_timing(summ)
    _print_rival(summ)
    _print_compile(model)


def _cmd_shortcut_frontier(args) -> None:
    """``shortcut search --frontier``: the checks that need no model first (one line, exit 2), then the search."""
    from .api import search_shortcut
    from .shortcut.frontier import parse_reference, parse_solvers

    if args.adaptive:
        raise UsageError("--frontier tries AdaptiveCache with the rest: leave --adaptive out")
    if args.budget is not None:
        raise UsageError("--frontier finds the fastest recipe for a quality target (--target-mean/--target-min/"
                         "--target-quantile); --budget is the plain search's: leave it out")
    if not args.rival:
        raise UsageError("--no-rival is for the plain search and shortcut run: the frontier search measures every solver")
    executor = _executor(args)
    for flag, v in (("--repeats", args.repeats), ("--rounds", args.rounds)):
        check_int(v, UsageError, flag, 1)
    check_int(args.chunk_size, UsageError, "--chunk-size", 1, none="one chunk per worker")
    given = args.scheduler or args.sampler
    if args.reference is not None:
        ref = parse_reference(args.reference, UsageError)
        if (given and given != ref[0]) or (args.steps is not None and args.steps != ref[1]):
            raise UsageError(f"--scheduler/--steps ({given or '-'}:{args.steps or '-'}) disagree with --reference "
                             f"{args.reference}: give the reference once")
    else:  # what the user would otherwise run: --scheduler/--steps when given, else DDIM at 100 steps
        ref = (given or "ddim", args.steps or 100) if (given or args.steps) else None
    if ref is not None:
        args.scheduler, args.sampler, args.steps = ref[0], None, ref[1]  # the base sampler is the reference's
    solvers = parse_solvers(args.solvers, UsageError, ref[1] if ref else 100) if args.solvers is not None else None
    if args.write and not Path(args.write).parent.is_dir():
        raise UsageError(f"--write {args.write}: its folder does not exist")
    if args.samples is None and args.seeds is None:
        args.samples = 48  # 8 to calibrate, 16 to validate, 24 held out
    model, sampler, seeds, cond = _model_and_sampler(args, progress=not args.quiet)
    n, _ = check_split(len(seeds), args.calibration, args.validation, UsageError, names=("--calibration", "--validation"))
    res = search_shortcut(model, args.out, target_mean=args.target_mean, target_min=args.target_min,
                          target_quantile=args.target_quantile, quantile=args.quantile, calibration=n,
                          validation=args.validation, rounds=args.rounds, write=args.write, executor=executor,
                          chunk_size=args.chunk_size, frontier=True,
                          reference=None if ref is None else f"{ref[0]}:{ref[1]}", solvers=solvers,
                          log=None if args.quiet else (lambda m: print(m, file=sys.stderr)), seeds=seeds, cond=cond,
                          steps=sampler.steps, repeats=args.repeats, progress=not args.quiet, **_sampler_kw(sampler))
    _print_frontier(res, args.out)
    _print_compile(model)


def _print_frontier(res: dict, out) -> None:
    from .shortcut.frontier import solver_label

    f, held = res["search"], res["held_out"]
    ref = f"{solver_label(f['reference']['scheduler'])} at {f['reference']['steps']} steps"
    seeds = f["seeds"]
    print(f"frontier search for {f['target']} against {ref}: chosen on {seeds['calibration']} calibration and "
          f"{seeds['validation']} validation seeds; {seeds['held_out']} held-out seeds only measured")
    alone = [c for c in f["candidates"] if c["kind"] == "solver"]
    if alone:
        print("  solvers alone (fewest steps that hold): " + ", ".join(
            f"{c['label']} ({c['timing']['median']:.2f} s)" for c in alone))
    missed = [solver_label(k) for k, v in f["curves"].items() if not any(c["recipe"]["scheduler"] == k for c in alone)]
    if missed:
        print(f"  no step count of {', '.join(missed)} holds the target (at most the reference's steps)")
    print(f"  chosen: {f['chosen']['label']} -> {res['schedule']}")
    if held is not None:
        c = held["chosen"]
        print(f"  held out: mean SSIM {c['ssim_mean']:.3f} (10th percentile {c['ssim_p10']:.3f}, min {c['ssim_min']:.3f}); "
              f"time {c['time_fraction']:.3f} of the reference's ({c['timing']['median']:.2f} s against "
              f"{held['reference_seconds']:.2f} s, {1 / c['time_fraction']:.2f}x faster)")
        for key, name in (("best solver alone", f["best_solver"]), ("best cache alone", f["best_cache"])):
            if key in held and name is not None and name["label"] != f["chosen"]["label"]:
                b = held[key]
                print(f"  {key} ({name['label']}): mean SSIM {b['ssim_mean']:.3f}, time {b['time_fraction']:.3f} of the "
                      f"reference's ({c['timing']['median'] / b['timing']['median']:.2f} of its time for the chosen)")
    print(f"  U-Net evaluations: {f['evaluations']} spent on candidates (minimum {f['evaluations_minimum']}), "
          f"{f['reference_evaluations']} on the reference; {f['seconds_search']:.0f} s"
          + (f"; figure: {res['figure']}" if res.get("figure") else ""))


def _print_timing(summ: dict) -> None:
    """The timing protocol's line: medians and spreads of both sides, then any warning (stderr)."""
    t = summ["timing"]
    b, s = t["baseline"], t["shortcut"]
    print(f"  time (median of {t['repeats']} interleaved runs after {t['warmup']} warm-up): baseline {b['median']:.2f} s "
          f"({b['min']:.2f}-{b['max']:.2f}), shortcut {s['median']:.2f} s ({s['min']:.2f}-{s['max']:.2f}); "
          f"predicted from single evaluations: time saving {summ['time_saving_predicted']:.1%}")
    for w in summ["warnings"]:
        print(f"warning: {w}", file=sys.stderr)


def _cmd_models(args) -> None:
    from .models import default_model_path, load_model

    _check_device_and_compiler(args)
    if args.model:
        m = load_model(args.model, device=args.device)
        print(json.dumps(m.describe(), indent=2))
        return
    print("Families unetscope runs on (the paper's method works the same on each):\n")
    p = default_model_path()
    print("default            the bundled class-conditional MNIST model, trained by `unetscope train`")
    if (p / "config.json").exists():
        m = load_model("default")
        d = m.describe()
        tr = m.meta.get("training", {})
        q = m.meta.get("quality", {})
        print(f"                   K={d['K']} blocks, {d['sample_shape']} pixels, {d['schedule']} T={d['T']}, {d['prediction_type']}, "
              f"{d['variance_type']} variance, {d['num_classes']} classes + a null class for guidance")
        if tr:
            print(f"                   trained {tr.get('steps')} steps in {tr.get('seconds', 0) / 60:.0f} min on the CPU; "
                  + (f"{q['agreement']:.1%} of {q['samples']} samples classified as the digit asked for; " if q else "")
                  + f"card: {p / 'README.md'}")
    else:
        print("                   (weights not installed)")
    print("UNet folder        a diffusers UNet2DModel / UNet2DConditionModel folder with scheduler_config.json")
    print("                   (--model PATH; the schedule, prediction and variance types come from the scheduler config)")
    print("pipeline folder    a diffusers pipeline folder: unet/ and scheduler/; with vae/ it is latent (images decoded")
    print("                   before any metric); with text_encoder/ and tokenizer/ it takes --prompt/--prompts (Stable")
    print("                   Diffusion 1.x/2.x style; needs transformers: pip install 'unetscope[sd]')")
    print("guided-diffusion   an openai/guided-diffusion UNetModel or GLIDE Text2ImUNet built in your code:")
    print("                   unetscope.wrap(model, beta_schedule=..., num_train_timesteps=...) (Python API)")
    print("your own U-Net     implement the UNetUnits protocol (docs/adapters.md), then unetscope.wrap(units, ...)")
    print("FILE.py:FACTORY    a function of your code returning a wrapped model, wherever --model is taken (also")
    print("                   package.module:FACTORY); in the repository: examples/mnist_unet.py:make_model, an")
    print("                   unconditional research-style MNIST U-Net (K=6, linear schedule) trained here")


def _cmd_train(args) -> None:
    from .bundled.train import TrainConfig, train

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out!r} exists and is not a folder")
    _check_device_and_compiler(args)
    made = not Path(args.out).exists()
    try:
        cfg = TrainConfig(arch=args.arch, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, checkpoint_every=args.checkpoint_every, limit_images=args.limit_images)
        res = train(cfg, args.out, resume=not args.restart, progress=not args.quiet, device=args.device)
    except (ValueError, OSError) as e:
        if made and Path(args.out).is_dir() and not any(Path(args.out).iterdir()):
            Path(args.out).rmdir()  # a refused run leaves no empty folder behind
        if isinstance(e, ValueError):
            raise UsageError(str(e)) from None
        raise UsageError(f"cannot write to --out {args.out!r}: {e.strerror or e}") from None
    print(f"trained to step {res['step']} in {res['seconds']:.0f} s; last loss {res['loss']:.4f}; output in {args.out}")


def _cmd_explore(args) -> None:
    from .explore import explore

    explore(args.dirs, port=args.port, host=args.host, browser=not args.no_browser, html=args.html,
            allow_hosts=args.allow_host or ())


# --- parser ------------------------------------------------------------------------------------
def _sampling_args(p) -> None:
    g = p.add_argument_group("model and sampler")
    g.add_argument("--model", default="default",
                   help="'default', a local diffusers folder, or a factory of your code: FILE.py:FACTORY or package.module:FACTORY")
    g.add_argument("--steps", type=int, default=None, help="sampling steps S (default 100, as in the paper)")
    g.add_argument("--scheduler", default=None, metavar="NAME",
                   help="ddpm (default), ddim, dpm++, dpm++-sde, euler, euler-a, heun, dpm2, unipc, pndm, lms, deis, or a "
                        "diffusers scheduler class name (docs/schedulers.md)")
    g.add_argument("--scheduler-opt", action="append", default=None, metavar="KEY=VALUE",
                   help="an option of the diffusers scheduler (repeat): solver_order=3, use_karras_sigmas=true")
    g.add_argument("--sampler", choices=("ddpm", "ddim"), default=None, help="unetscope's own samplers (as --scheduler)")
    g.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    g.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (1: none; default 3 for models with an unconditional branch)")
    g.add_argument("--variance", choices=("fixed_small", "fixed_large", "learned_range"), default=None)
    g.add_argument("--clip-x0", dest="clip_x0", action=argparse.BooleanOptionalAction, default=None,
                   help="clip x_est0 to [-1, 1] (default: on for pixel models, off for latent ones)")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (one that this machine has)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile each U-Net unit once (E[i], M, D[j], head: no step's action recompiles); the "
                        "first calls pay the compilation")
    g.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                   help="weights' dtype (float16/bfloat16 where the device supports them)")
    g.add_argument("--batch-size", type=int, default=None, help="samples per batch (memory bound)")
    g.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; two processes with default threads on two cores run ~10x slower)")
    s = p.add_argument_group("samples")
    s.add_argument("--samples", type=int, default=None, help="number of samples, seeds 0..N-1 (default 16; shortcut search 48)")
    s.add_argument("--seeds", default=None, help="seeds: 0-15 or 3,5,9")
    s.add_argument("--class", dest="class_", default=None, help="class label, or one per sample (comma-separated)")
    s.add_argument("--prompt", action="append", default=None, help="text prompt (repeat: one per sample)")
    s.add_argument("--prompts", default=None, help="a file with one prompt per line")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _sweep_args(p) -> None:
    g = p.add_argument_group("sweep")
    g.add_argument("--t-step", type=int, default=None, help="stride of the t_start grid (1: every step)")
    g.add_argument("--chunk-size", type=int, default=16, help="samples per chunk (one transaction each; at least 1)")
    g.add_argument("--max-batch", type=int, default=None, help="samples per U-Net call when plans are stacked (default: sized for the device; on the CPU about 128 images of 32x32)")
    g.add_argument("--images", type=int, default=4, help="samples whose images are kept for the figure grids")


def _executor_args(p) -> None:
    g = p.add_argument_group("executor (docs/scale-out.md)")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where chunks are computed: in this process (default) or on Ray workers (pip install 'unetscope[ray]')")
    g.add_argument("--ray-address", default=None,
                   help="ray: 'auto' or HOST:PORT of a cluster's head (ray start --head); default: a local Ray instance")
    g.add_argument("--cpus-per-task", type=float, default=None, help="ray: CPUs per worker (default 1)")
    g.add_argument("--gpus-per-task", type=float, default=None,
                   help="ray: GPUs per worker (default 0; a fraction puts several workers on one GPU)")
    g.add_argument("--workers", type=int, default=None, help="ray: at most this many workers (default: every slot)")


def _executor(args):
    """``--executor`` and its flags as the API's ``executor`` ("local" or a RayExecutor); checked before
    a model loads. ``--threads`` is each Ray worker's (default: one per CPU of its slot)."""
    ray_flags = {"--ray-address": args.ray_address, "--cpus-per-task": args.cpus_per_task,
                 "--gpus-per-task": args.gpus_per_task, "--workers": args.workers}
    given = [k for k, v in ray_flags.items() if v is not None]
    if args.executor == "local":
        if given:
            raise UsageError(f"{', '.join(given)}: only with --executor ray")
        return "local"
    from .executor import RayExecutor

    kw = dict(cpus_per_task=1 if args.cpus_per_task is None else args.cpus_per_task,
              gpus_per_task=args.gpus_per_task or 0, threads=args.threads, workers=args.workers)
    return RayExecutor(args.ray_address, model=args.model, **kw)


def _rival_arg(g) -> None:
    g.add_argument("--no-rival", dest="rival", action="store_false",
                   help="skip the last line: the fewest DPM-Solver++ steps that keep the same SSIM against the same "
                        "baseline, and their time (a bisection of a few runs, then timed runs)")


def _repeats_arg(g) -> None:
    g.add_argument("--repeats", type=int, default=3,
                   help="timed runs of each side, interleaved after a warm-up (median and spread; default 3)")


# the flags of one shortcut subcommand that the other refuses, and why (one line, argparse's exit 2)
_TIMED_HERE = "--executor ray and --chunk-size are for shortcut search; a shortcut run is timed in this process"
SEARCH_ONLY = {
    "--adaptive": "--adaptive is for shortcut search (an AdaptiveCache schedule calibrated to the target)",
    "--executor": _TIMED_HERE, "--chunk-size": _TIMED_HERE,
    **{f: f"{f} is for shortcut search --executor ray; a shortcut run is timed in this process"
       for f in ("--ray-address", "--cpus-per-task", "--gpus-per-task", "--workers")},
    **{f: f"{f} is for shortcut search (a shortcut run measures the schedule of --schedule or --preset)"
       for f in ("--target-mean", "--target-ssim", "--target-min", "--target-min-ssim", "--target-quantile", "--quantile",
                 "--budget", "--calibration", "--validation", "--write", "--rounds")},
    **{f: f"{f} is for shortcut search --frontier (the fastest recipe over solvers, steps and cuts)"
       for f in ("--frontier", "--reference", "--solvers")},
}
RUN_ONLY = {
    **{f: f"{f} is for shortcut run: shortcut search writes a schedule; give --write FILE, not --schedule/--preset"
       for f in ("--schedule", "--preset")},
    **{f: f"{f} is for shortcut run: --threshold and --nb are the change preset's (shortcut run --preset change), not "
          "the search's" for f in ("--threshold", "--nb")},
}


class _Elsewhere(argparse.Action):
    """A flag of the other subcommand: argparse's own one-line error (exit 2) that says which one takes it."""

    def __init__(self, *args, why: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.why = why

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(self.why)


def _elsewhere(p, flags: dict) -> None:
    """``flags`` (flag -> why) refused by ``p`` with argparse's error; hidden from its help."""
    for flag, why in flags.items():
        p.add_argument(flag, action=_Elsewhere, why=why, nargs=0 if flag in ("--adaptive", "--frontier") else None,
                       default=argparse.SUPPRESS, help=argparse.SUPPRESS, dest=f"_elsewhere{flag.replace('-', '_')}")


def _default_action(argv: list) -> list:
    """``unetscope shortcut ...`` without a subcommand is ``unetscope shortcut run ...`` (as before the
    subcommands had flags of their own)."""
    argv = [str(a) for a in argv]
    if argv[:1] == ["shortcut"] and (len(argv) == 1 or argv[1] not in ("run", "search", "-h", "--help")):
        argv.insert(1, "run")
    return argv


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="unetscope", description="Understand and accelerate diffusion U-Nets over sampling time.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("sample", help="sample images (PNGs and a grid)")
    _sampling_args(s)
    s.set_defaults(func=_cmd_sample)

    i = sub.add_parser("intervene", help="baseline vs intervened from the same noise, with PSNR/SSIM")
    _sampling_args(i)
    g = i.add_argument_group("the plan (JSON, or short flags)")
    g.add_argument("--plan", default=None, help='JSON or a JSON file: {"interventions": [{"type": "DropBlocks", "nb": 2, "start": 70, "n": 5}]}')
    g.add_argument("--skip-steps", type=int, default=None, metavar="N", help="SkipSteps(start, N)")
    g.add_argument("--zero-skips", type=int, default=None, metavar="NS", help="ZeroSkips(NS, start, n)")
    g.add_argument("--drop-blocks", type=int, default=None, metavar="NB", help="DropBlocks(NB, start, n, fill)")
    g.add_argument("--reuse-encoder", action="store_true",
                   help="ReuseEncoder(start, n): the encoder's outputs cached from the last full step (Faster Diffusion)")
    g.add_argument("--adaptive-cache", type=int, default=None, metavar="NB",
                   help="AdaptiveCache(NB, threshold, start, n): per sample, the bottom NB blocks read from the cache "
                        "while the shallow encoder's output changes less than --threshold (docs/shortcuts.md)")
    g.add_argument("--threshold", type=float, default=None, metavar="X", help="AdaptiveCache's threshold (>= 0)")
    g.add_argument("--max-reuse", type=int, default=None, metavar="M", help="AdaptiveCache: at most M cache reads in a row")
    g.add_argument("--start", type=int, default=None,
                   help="first intervened step (counts down from S; --adaptive-cache: default S)")
    g.add_argument("--n", type=int, default=None,
                   help="evaluations intervened on (default 1; --adaptive-cache: down to step 1)")
    g.add_argument("--fill", choices=("zeros", "cache"), default="zeros", help="DropBlocks fill")
    g.add_argument("--stop-early", type=int, default=None, metavar="AT", help="StopEarly(at)")
    i.set_defaults(func=_cmd_intervene)

    from .experiments import ORDER

    w = sub.add_parser("sweep", help="run one of the paper's experiments into a results folder (resumable)",
                       description="Experiments: " + ", ".join(ORDER) + ". Parameters default to the paper's, scaled to "
                       "the model's K and the sampler's S; set any with --param name=value.")
    w.add_argument("experiment", choices=ORDER)
    _sampling_args(w)
    _sweep_args(w)
    _executor_args(w)
    w.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="an experiment parameter (e.g. threshold=0.75, n=5, nbs=[2,4])")
    w.set_defaults(func=_cmd_sweep)

    r = sub.add_parser("report", help="write DIR/report.html with every experiment's figures and findings")
    r.add_argument("dir", help="a folder written by sweep or reproduce")
    r.add_argument("--csv", action="store_true", help="also export DIR/results.csv")
    r.add_argument("--parquet", action="store_true", help="also export DIR/results.parquet (needs pandas, pyarrow)")
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    r.set_defaults(func=_cmd_report)

    q = sub.add_parser("reproduce", help="every experiment of the paper, then the report")
    _sampling_args(q)
    _sweep_args(q)
    _executor_args(q)
    q.add_argument("--quick", action="store_true",
                   help="16 samples, S = 50 steps, every 5th start step, every 4th block count (minutes, not hours)")
    q.set_defaults(func=_cmd_reproduce)

    c = sub.add_parser("shortcut", help="run a shortcut schedule against the baseline (shortcut run, the default), or "
                       "search one (shortcut search)",
                       description="shortcut run (the default: 'unetscope shortcut --preset paper' is 'unetscope shortcut "
                       "run --preset paper') measures a schedule against the baseline; shortcut search finds one for a "
                       "quality target or a compute budget. Each has its own flags: unetscope shortcut run --help, "
                       "unetscope shortcut search --help.")
    cs = c.add_subparsers(dest="action", required=True, parser_class=_Parser, metavar="{run,search}")
    cr = cs.add_parser("run", help="a schedule (a file or a preset) against the baseline on the same seeds, timed "
                       "(the default)", description="A schedule against the baseline on the same seeds: savings, SSIM, "
                       "the timing protocol's medians and spreads (docs/shortcuts.md).")
    _sampling_args(cr)
    g = cr.add_argument_group("schedule")
    g.add_argument("--schedule", default=None, help="a schedule file (JSON or YAML plan)")
    g.add_argument("--preset", default=None,
                   help="a named schedule: paper (Fig. 11, scaled to K and S), paper-cache, or change (Block Caching's "
                        "rule on the deep part's measured change: --threshold, --nb)")
    g.add_argument("--threshold", type=float, default=None,
                   help="--preset change: compute the deep part again when its accumulated relative change exceeds this")
    g.add_argument("--nb", type=int, default=None, help="--preset change: the bottom blocks cached (default K - 1)")
    _repeats_arg(g)
    _rival_arg(g)
    _elsewhere(cr, SEARCH_ONLY)
    cr.set_defaults(func=_cmd_shortcut_run, eta=None)  # eta None: not given (a recipe's run refuses a disagreeing one)

    cq = cs.add_parser("search", help="search a schedule for a quality target or a compute budget, checked on held-out seeds",
                       description="Search a schedule on calibration seeds, keep only moves that also hold on validation "
                       "seeds, write it and measure it on held-out seeds the search never saw (docs/shortcuts.md).")
    _sampling_args(cq)
    g = cq.add_argument_group("search")
    g.add_argument("--target-mean", "--target-ssim", dest="target_mean", type=float, default=None,
                   help="mean SSIM to keep (default 0.8 when no target or budget is given)")
    g.add_argument("--target-min", "--target-min-ssim", dest="target_min", type=float, default=None,
                   help="minimum per-sample SSIM to keep")
    g.add_argument("--target-quantile", type=float, default=None,
                   help="the --quantile (default 10%%) of per-sample SSIM to keep")
    g.add_argument("--quantile", type=float, default=0.1, help="the quantile of --target-quantile (default 0.1)")
    g.add_argument("--budget", type=float, default=None,
                   help="instead of a target, the best mean SSIM at this compute fraction or less")
    g.add_argument("--calibration", type=int, default=8, help="samples to search on (default 8)")
    g.add_argument("--validation", type=int, default=None,
                   help="samples that check each move (default: at least 16 and as many as --calibration, at most half "
                        "the rest); the rest are held out")
    g.add_argument("--write", default=None, help="where to write the schedule (default OUT/schedule.json)")
    g.add_argument("--rounds", type=int, default=40, help="at most this many greedy rounds")
    g.add_argument("--adaptive", action="store_true",
                   help="an AdaptiveCache schedule (per-sample caching; nb, threshold and max_reuse calibrated to the "
                        "target or budget) instead of static cuts")
    _repeats_arg(g)
    _rival_arg(g)
    f = cq.add_argument_group("frontier (the fastest recipe: docs/shortcuts.md)")
    f.add_argument("--frontier", action="store_true",
                   help="search solvers, their step counts and cuts stacked on them together for the fastest recipe that "
                        "keeps the target against --reference; writes OUT/recipe.json, OUT/frontier.json and the figure")
    f.add_argument("--reference", default=None, metavar="SCHEDULER:STEPS",
                   help="what every candidate is scored against (default: --scheduler/--steps when given, else ddim:100)")
    f.add_argument("--solvers", default=None, metavar="NAMES",
                   help="the solvers tried, comma-separated, NAME or NAME:MAX_STEPS (default ddim,dpm++,unipc,euler, and "
                        "dpm++-sde,euler-a for a stochastic reference)")
    _executor_args(cq)
    cq.add_argument("--chunk-size", type=int, default=None,
                    help="seeds per chunk a worker scores (default: the seeds shared out, one chunk per worker)")
    _elsewhere(cq, RUN_ONLY)
    cq.set_defaults(func=_cmd_shortcut_search)

    m = sub.add_parser("models", help="list the models and the folders that can be loaded")
    m.add_argument("model", nargs="?", default=None, help="describe one model")
    m.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    m.add_argument("--device", default="cpu", help="where a described model is loaded: cpu, cuda, cuda:N or mps")
    m.set_defaults(func=_cmd_models)

    e = sub.add_parser("explore", help="explore run folders in the browser: figures, the images behind each point, compare folders",
                       description="Serves an interactive page over the run folders (read-only; binds to 127.0.0.1 unless "
                       "--host says otherwise), or writes it as one self-contained file with --html.")
    e.add_argument("dirs", nargs="+", metavar="DIR", help="run folders written by sweep, reproduce or shortcut (two or more: compare mode)")
    e.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    e.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    e.add_argument("--allow-host", action="append", default=None, metavar="NAME[:PORT]",
                   help="also answer requests whose Host header names NAME (a name or address this machine is reached "
                   "at; the port served unless given; repeat for more). Any other Host gets a 403 (DNS rebinding)")
    e.add_argument("--no-browser", action="store_true", help="print the address, open no browser")
    e.add_argument("--html", default=None, metavar="FILE", help="write the explorer as one self-contained file instead of serving")
    e.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    e.set_defaults(func=_cmd_explore)

    t = sub.add_parser("train", help="train the bundled MNIST model (resumable; its data comes with "
                       "the bundled extra: pip install \"unetscope[bundled]\")")
    t.add_argument("--out", required=True, help="run folder: checkpoint.pt, and model/ when finished")
    t.add_argument("--arch", default="default", help="default or tiny")
    t.add_argument("--steps", type=int, default=7000)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=250)
    t.add_argument("--limit-images", type=int, default=None)
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (one that this machine has)")
    t.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(_default_action(sys.argv[1:] if argv is None else argv))
    try:
        threads = check_threads(getattr(args, "threads", 0), UsageError, name="--threads")
        if threads:
            import torch

            torch.set_num_threads(threads)
        args.func(args)
    except UnetscopeError as e:  # every typed error of the library, and the command line's own
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"unetscope {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unetscope {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
