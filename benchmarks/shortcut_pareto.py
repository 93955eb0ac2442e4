"""Shortcuts against the samplers a user would otherwise pick, under two reference settings.

References: DDPM with S steps (the paper's, S = 100) and DDIM with S steps (eta 0). Every point is a
method's samples from the same seeds (the same ``x_S`` from the noise bank; the same per-step noise for
DDPM) compared with the reference's samples:
  - fewer-step solvers: DDPM respaced to fewer steps, DDIM at 10/15/20/25/50 steps, DPM-Solver++(2M)
    at 10/15/20/25 steps and UniPC at 8/10/12/15 (``Sampler(method="dpm++"|"unipc")``), and the other
    reference at S steps;
  - schedules searched on a solver (``unetscope shortcut search --scheduler dpm++ --steps 20``), given
    with --solver-schedule and stacked on that solver at the steps they were searched at
    (``dpm+searched``, ``unipc+searched``);
  - shortcuts of the reference's own sampler: stopping early, DeepCache-style uniform caching
    (``uniform_cache_cuts``), encoder reuse (``uniform_reuse_cuts``), the paper's presets and the
    schedules given with --schedule;
  - a shortcut stacked on a fewer-step solver: DDIM at --stack-steps steps (``ddim+deepcache``) and
    DPM-Solver++ at --dpm-stack-steps steps (``dpm+deepcache``) with DeepCache-style caching every 2nd
    and 3rd step (the same samples under both references);
  - per-sample caching: ``AdaptiveCache`` over the reference's steps at two nb and a sweep of
    thresholds (``adaptive``) and stacked on DPM-Solver++ at --dpm-adaptive-steps steps
    (``dpm+adaptive``); and Block Caching's static rule (``change``: ``--preset change``, its change
    measured on seeds 0..7 under DDPM-S, apart from the measured ones). Their compute is each sample's executed
    FLOPs (its own decisions), averaged.
  - the frontier search's candidates (``--frontier DIR``: a ``shortcut search --frontier`` folder): every
    recipe it measured (each solver at its fewest steps, the cuts stacked on the fastest, the cuts on the
    reference) drawn on these seeds, under the reference it was searched against (``frontier``).
Quality (the quality pass, the default): per-sample SSIM with the reference sample of the same seed,
and, for 1x32x32 digit models, the bundled classifier's class agreement (with the reference sample's
predicted class and with the conditioning label) and the Fréchet distance between its penultimate
features of the method's and of the reference's samples. Images are compared as stored: uint8.
Time (--timing-only, a separate pass for a quiet machine): each point interleaved with its reference
by ``unetscope.timing.interleave`` (a warm-up, then --repeats rounds; medians and spreads).

Both passes are resumable: every point is one JSON file under --out, written atomically; a rerun skips
the stored points and refuses a folder made with other settings. --report-only redraws the table
(``table.md``), the data (``pareto.json``) and the figure from what is stored.

    python benchmarks/shortcut_pareto.py --model default --samples 200 --threads 1 --out results/pareto
    python benchmarks/shortcut_pareto.py --model default --timing-only --samples 16 --repeats 3 --threads 1 --out results/pareto

The table gives each point's mean SSIM, its 10th percentile (the bad tail) and its minimum.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

METHOD_ORDER = ("ddpm", "ddim", "dpm-solver++", "unipc", "stop-early", "deepcache", "reuse-encoder", "paper-preset",
                "searched", "ddim+deepcache", "dpm+deepcache", "change", "adaptive", "dpm+adaptive", "dpm+searched",
                "unipc+searched", "frontier")
SOLVERS = ("ddpm", "ddim", "dpm-solver++", "unipc")
# a shortcut on a fewer-step solver: method -> the solver it runs on
STACKED = {"ddim+deepcache": "ddim", "dpm+deepcache": "dpm-solver++", "dpm+adaptive": "dpm-solver++",
           "dpm+searched": "dpm-solver++", "unipc+searched": "unipc"}
SCHEDULER = {"ddpm": "ddpm", "ddim": "ddim", "dpm-solver++": "dpm++", "unipc": "unipc"}  # a solver's --scheduler name
SEARCHED_ON = {"dpm++": "dpm+searched", "unipc": "unipc+searched"}  # a schedule searched on a solver: its method


class Refused(Exception):
    """Bad input or a folder made with other settings: one line, exit code 2."""


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of integers, got {text!r}") from None
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"step counts must be >= 1, got {text!r}")
    return vals


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--samples", type=int, default=200, help="seeds per point (quality: >= 200 for the docs; timing: 16)")
    p.add_argument("--first-seed", type=int, default=1000, help="seeds first..first+samples-1 (not a search's seeds)")
    p.add_argument("--steps", type=int, default=100, help="S of both references")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--refs", default="ddpm,ddim", help="reference settings: ddpm, ddim or both")
    p.add_argument("--ddpm-steps", type=_ints, default=None, help="respaced DDPM step counts (default: 30..80%% of S)")
    p.add_argument("--ddim-steps", type=_ints, default=[10, 15, 20, 25, 50])
    p.add_argument("--dpm-steps", type=_ints, default=[10, 12, 13, 15, 20, 25])
    p.add_argument("--unipc-steps", type=_ints, default=[8, 10, 12, 15], help="UniPC step counts (alone)")
    p.add_argument("--stack-steps", type=_ints, default=[20, 25, 50], help="DDIM step counts of ddim+deepcache")
    p.add_argument("--dpm-stack-steps", type=_ints, default=[15, 20, 25, 30, 50],
                   help="DPM-Solver++ step counts of dpm+deepcache")
    p.add_argument("--dpm-adaptive-steps", type=_ints, default=[20, 25], help="DPM-Solver++ step counts of dpm+adaptive")
    p.add_argument("--thresholds", default="0.2,0.4,0.6,0.9", help="AdaptiveCache thresholds of adaptive and dpm+adaptive")
    p.add_argument("--change-thresholds", default="0.5,1,2", help="thresholds of the change preset")
    p.add_argument("--max-reuse", default="none", help="AdaptiveCache max_reuse values (comma-separated; none: no limit)")
    p.add_argument("--adaptive-nbs", type=_ints, default=None, help="AdaptiveCache nb values (default: 3K/4 and K/2)")
    p.add_argument("--methods", default=",".join(METHOD_ORDER), help="the methods to run (comma-separated; default: all)")
    p.add_argument("--schedule", action="append", default=[], help="searched schedule file(s) to include")
    p.add_argument("--solver-schedule", action="append", default=[],
                   help="a schedule searched on a solver (shortcut search --scheduler dpm++|unipc --steps N): stacked on "
                        "that solver at its steps (dpm+searched, unipc+searched)")
    p.add_argument("--frontier", action="append", default=[], metavar="DIR",
                   help="a frontier search's folder (shortcut search --frontier): every candidate it measured (each "
                        "solver at its fewest steps, the stacked and the cached recipes) becomes a point (frontier)")
    p.add_argument("--out", default="results/pareto")
    p.add_argument("--figure", default=None, help="where to draw the figure (default: OUT/pareto.png)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of each point and its reference (timing pass)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--timing-only", action="store_true", help="time the points (interleaved with the reference)")
    mode.add_argument("--report-only", action="store_true", help="only redraw the table, data and figure from --out")
    a = p.parse_args(argv)
    refs = [r for r in a.refs.split(",") if r]
    if not refs or any(r not in ("ddpm", "ddim") for r in refs) or len(set(refs)) != len(refs):
        p.error(f"--refs takes ddpm, ddim or ddpm,ddim; got {a.refs!r}")
    a.refs = refs
    a.methods = [m for m in a.methods.split(",") if m]
    bad = [m for m in a.methods if m not in METHOD_ORDER]
    if bad or not a.methods:
        p.error(f"--methods takes {', '.join(METHOD_ORDER)}; got {a.methods!r}")
    if a.samples < 2:
        p.error(f"--samples must be >= 2, got {a.samples}")
    if a.batch_size < 1 or a.repeats < 1 or a.threads < 0 or a.steps < 2 or a.first_seed < 0:
        p.error("--batch-size, --repeats and --steps must be >= 1 (--steps >= 2), --threads and --first-seed >= 0")
    try:
        a.thresholds = [float(v) for v in a.thresholds.split(",") if v.strip()]
        a.change_thresholds = [float(v) for v in a.change_thresholds.split(",") if v.strip()]
    except ValueError:
        p.error("--thresholds and --change-thresholds take comma-separated numbers")
    if any(not (v >= 0 and v != float("inf")) for v in a.thresholds + a.change_thresholds):
        p.error("thresholds must be finite numbers >= 0")
    try:
        a.max_reuse = [None if v.strip() == "none" else int(v) for v in a.max_reuse.split(",") if v.strip()]
    except ValueError:
        p.error(f"--max-reuse takes integers >= 1 or none, got {a.max_reuse!r}")
    if not a.max_reuse or any(v is not None and v < 1 for v in a.max_reuse):
        p.error(f"--max-reuse takes integers >= 1 or none, got {a.max_reuse!r}")
    if a.ddpm_steps is None:
        a.ddpm_steps = sorted({max(1, round(f * a.steps / 100)) for f in (30, 40, 50, 60, 70, 80)})
    return a


# --- the points --------------------------------------------------------------------------------
def points(a, model) -> list[dict]:
    """Every (reference, method, label) point, in the order they are computed: the references and the
    cheap solvers first, then the shortcuts (most useful first). ``run`` names the samples: a solver's
    samples are the same under both references and are computed once."""
    from unetscope import Plan, StopEarly
    from unetscope.plan import AdaptiveCache
    from unetscope.shortcut import PRESETS, load_schedule, uniform_cache_cuts, uniform_reuse_cuts

    S, K = a.steps, model.num_blocks
    T = model.schedule.num_train_timesteps

    def solvers(runs):
        for method, n in runs:
            if n > S and method not in ("dpm-solver++", "unipc") or n > T:
                raise Refused(f"{method} at {n} steps: more than the reference's S = {S}")
        return [(method, f"S={n}", n, None) for method, n in runs]

    def shortcuts(method, made):
        return [(method, label, S, make) for label, make in dict(made).items()]  # labels deduplicated

    nbs = sorted({(3 * K) // 4, K // 2}, reverse=True)
    stops = [(f"StopEarly({max(1, round(f * S / 100))})", lambda f=f: Plan([StopEarly(max(1, round(f * S / 100)))]))
             for f in (35, 25, 18, 10, 5)]
    cache = [[(f"every {e}, nb={nb}", lambda e=e, nb=nb: Plan(uniform_cache_cuts(S, e, nb))) for e in (2, 3, 5)] for nb in nbs]
    groups = [  # the order they are computed in: the most asked-for first
        solvers([("ddpm", S), ("ddim", S)] + [("ddim", n) for n in a.ddim_steps] + [("dpm-solver++", n) for n in a.dpm_steps]
                + [("unipc", n) for n in a.unipc_steps]),
        shortcuts("stop-early", stops),
        shortcuts("deepcache", cache[0]),
        shortcuts("paper-preset", [(name, lambda name=name: PRESETS[name](S, K)) for name in PRESETS]),
        shortcuts("searched", [(Path(f).name, lambda f=f: load_schedule(f)) for f in a.schedule]),
        *[shortcuts("deepcache", c) for c in cache[1:]],
        solvers([("ddpm", n) for n in a.ddpm_steps if n != S]),
        shortcuts("reuse-encoder", [(f"every {e}", lambda e=e: Plan(uniform_reuse_cuts(S, e))) for e in (2, 3, 4, 5)]),
        [("ddim+deepcache", f"S={n}, every {e}, nb={nbs[0]}", n, lambda n=n, e=e: Plan(uniform_cache_cuts(n, e, nbs[0])))
         for n in a.stack_steps if 2 < n <= S for e in (2, 3)],
        [("dpm+deepcache", f"S={n}, every {e}, nb={nbs[0]}", n, lambda n=n, e=e: Plan(uniform_cache_cuts(n, e, nbs[0])))
         for n in a.dpm_stack_steps if 2 < n <= T for e in (2, 3)],
        shortcuts("adaptive", [(f"th={th:g}{_mr(mr)}, nb={nb}", lambda nb=nb, th=th, mr=mr: Plan([AdaptiveCache(nb, th, max_reuse=mr)]))
                               for nb in (a.adaptive_nbs or nbs) for mr in a.max_reuse for th in a.thresholds]),
        [("dpm+adaptive", f"S={n}, th={th:g}{_mr(mr)}, nb={nb}", n,
          lambda th=th, nb=nb, mr=mr: Plan([AdaptiveCache(nb, th, max_reuse=mr)]))
         for n in a.dpm_adaptive_steps if 2 < n <= T for nb in (a.adaptive_nbs or nbs[:1]) for mr in a.max_reuse
         for th in a.thresholds],
        [solver_schedule(f) for f in a.solver_schedule],
        [c for d in a.frontier for c in frontier_candidates(d, a)],
        shortcuts("change", [(f"th={th:g}, nb={K - 1}", lambda th=th: _change(model, a, th)) for th in a.change_thresholds]
                  if "change" in a.methods else []),
    ]
    out = []
    for group in groups:
        for method, label, steps, make in group:
            if method not in a.methods and not (method in a.refs and steps == S and make is None):  # references always
                continue
            try:
                plan = make().check(steps, K) if make else None
            except (ValueError, OSError) as e:
                raise Refused(f"{method} {label}: {e}") from None
            for ref in a.refs:  # a solver's samples (stacked shortcuts' too) are the same under both references
                run = f"{method}:{steps}" if plan is None else \
                    f"{method}:{label}" if method in STACKED else f"{ref}:{method}:{label}"
                solver = FRONTIER_SOLVER.get(label) if method == "frontier" else STACKED.get(method)
                if method == "frontier":
                    run = f"frontier:{label}"
                    if ref != FRONTIER_REF.get(label, ref):
                        continue  # a frontier's candidates are drawn against the reference they were searched on
                out.append(dict(ref=ref, method=method, label=label, steps=steps, run=run, plan=plan or None,
                                solver=solver))
    return out


FRONTIER_SOLVER: dict = {}  # a frontier candidate's label -> its scheduler
FRONTIER_REF: dict = {}  # -> the reference it was searched against


def frontier_candidates(folder, a) -> list[tuple]:
    """(method, label, steps, make) of every candidate a frontier search measured (its frontier.json):
    the same recipes the search compared, drawn on the benchmark's own seeds."""
    from unetscope import Plan

    path = Path(folder) / "frontier.json"
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise Refused(f"--frontier {folder}: cannot read {path.name} ({type(e).__name__})") from None
    ref = rec.get("reference") or {}
    if ref.get("scheduler") not in ("ddpm", "ddim") or ref.get("steps") != a.steps:
        raise Refused(f"--frontier {folder}: searched against {ref.get('scheduler')}:{ref.get('steps')}; the benchmark's "
                      f"references are ddpm/ddim at --steps {a.steps}")
    out = []
    for c in rec.get("candidates", []):
        r = c["recipe"]
        if r.get("options"):
            raise Refused(f"--frontier {folder}: {c['label']} takes scheduler options, which the benchmark does not pass")
        label = f"{c['label']} [{c['kind']}{'/' + c['how'] if c['how'] else ''}]"
        FRONTIER_SOLVER[label], FRONTIER_REF[label] = r["scheduler"], ref["scheduler"]
        out.append(("frontier", label, r["steps"], lambda plan=c["plan"]: Plan.from_dict(plan)))
    return out


def solver_schedule(path) -> tuple:
    """(method, label, steps, make) of a schedule searched on a solver: its file's metadata names the
    scheduler and S it was searched on."""
    from unetscope.shortcut import load_schedule

    try:
        meta = json.loads(Path(path).read_text()).get("sampler") or {}
    except (OSError, ValueError) as e:
        raise Refused(f"--solver-schedule {path}: {e}") from None
    method = SEARCHED_ON.get(meta.get("method"))
    if method is None or not isinstance(meta.get("steps"), int):
        raise Refused(f"--solver-schedule {path}: its metadata must name a sampler searched on "
                      f"{' or '.join(SEARCHED_ON)} with its steps (got {meta or 'none'})")
    return method, f"S={meta['steps']}, {Path(path).stem}", meta["steps"], lambda: load_schedule(path)


def _mr(mr) -> str:
    return "" if mr is None else f" mr={mr}"


_CHANGES: dict = {}


def _change(model, a, th: float):
    """The change preset at ``th``: the deep part's change measured once on seeds 0..7 (the points'
    seeds start at --first-seed)."""
    from unetscope.plan import site
    from unetscope.shortcut import change_schedule, feature_changes

    K = model.num_blocks
    if "ch" not in _CHANGES:
        seeds = list(range(8))
        cond = [s % model.num_classes_real for s in seeds] if model.conditioning == "class" else None
        _CHANGES["ch"] = feature_changes(sampler_for(model, a, "ddpm", a.steps), seeds, cond, [site("D", K - 2)])[site("D", K - 2)]
    return change_schedule(_CHANGES["ch"], a.steps, K - 1, th)


def compute_of(model, sp, plan, traj, n: int, c1) -> int | None:
    """Mean executed FLOPs per sample of an AdaptiveCache run (each sample's own decisions,
    ``traj.reused``); None for any other plan (its first sample's FLOPs are every sample's)."""
    from unetscope.flops import FlopTable

    if plan is None or not traj.reused:
        return None
    x1 = torch.zeros(1, *model.sample_shape, dtype=model.dtype)
    t1 = torch.full((1,), model.schedule.num_train_timesteps // 2, dtype=torch.long)
    rows = 2 if sp.guidance != 1 and model.conditioning != "none" else 1
    table = FlopTable(model.runner, x1, t1, model.make_cond(c1, 1), rows)
    return round(sum(table.samples(plan, sp.steps, traj.reused, n)) / n)


def slug(p: dict) -> str:
    """The point's file name; a searched schedule's carries a hash of its plan (the file may change)."""
    tag = ""
    if p["method"] in ("searched", "dpm+searched", "unipc+searched", "frontier") and p["plan"] is not None:
        tag = "-" + hashlib.sha1(p["plan"].to_json(sort_keys=True).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9.]+", "-", f"{p['method']}--{p['label']}").strip("-") + tag


def sampler_for(model, a, method: str, steps: int):
    from unetscope import Sampler

    return Sampler(model, steps=steps, method=SCHEDULER.get(method, method), guidance=a.guidance, batch_size=a.batch_size)


def flops_of(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


# --- settings and files ------------------------------------------------------------------------
def settings(a, model) -> dict:
    from unetscope.bundled.classifier import CLASSIFIER_DIR
    from unetscope.models import fingerprint

    clf = CLASSIFIER_DIR / "model.safetensors"
    return dict(model=model.describe(), fingerprint=fingerprint(model), steps=a.steps, guidance=a.guidance,
                first_seed=a.first_seed, labels="seed % classes" if model.conditioning == "class" else None,
                classifier=hashlib.sha256(clf.read_bytes()).hexdigest()[:16], images="uint8")


def check_settings(path: Path, want: dict, what: str) -> None:
    from unetscope.store import strict_json, write_atomic

    if path.exists():
        have = json.loads(path.read_text())
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != json.loads(strict_json(want)).get(k))
        if diff:
            raise Refused(f"{path.parent} holds a {what} made with other settings ({', '.join(diff)} differ): "
                          "use another --out or remove it")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, strict_json(want))


def write_json(path: Path, obj) -> None:
    from unetscope.store import strict_json, write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, strict_json(obj))


def save_images(path: Path, imgs: torch.Tensor) -> None:
    """uint8 images (N, C, H, W) as a compressed .npz, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, images=imgs.numpy())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


# --- the quality pass --------------------------------------------------------------------------
class Digits:
    """The bundled classifier's verdicts on 1x32x32 samples: predicted classes and penultimate features."""

    def __init__(self, model):
        from unetscope.bundled.classifier import load_classifier

        self.on = tuple(model.sample_shape) == (1, 32, 32) and (model.conditioning != "class" or model.num_classes_real == 10)
        self.clf = load_classifier() if self.on else None

    def __call__(self, imgs: torch.Tensor):
        from unetscope.bundled.classifier import classify, penultimate_features

        if not self.on:
            return None, None
        return classify(self.clf, imgs), penultimate_features(self.clf, imgs)


def quality(a, model) -> None:
    from unetscope import ssim
    from unetscope.frechet import frechet_distance
    from unetscope.images import to_uint8

    out = Path(a.out)
    n = a.samples
    seeds = list(range(a.first_seed, a.first_seed + n))
    cond = [s % model.num_classes_real for s in seeds] if model.conditioning == "class" else None
    labels = torch.tensor(cond) if cond is not None else None
    pts = points(a, model)  # bad input is refused before anything is written
    check_settings(out / "settings.json", {**settings(a, model), "samples": n}, "quality pass")
    digits = Digits(model)
    refs, runs, flops = {}, {}, {}  # ref -> dict(images, traj, pred, feats, flops); run -> images; run -> FLOPs
    c1 = None if cond is None else cond[:1]
    t_start = time.perf_counter()

    def reference(ref):
        if ref in refs:
            return refs[ref]
        sp = sampler_for(model, a, ref, a.steps)
        f = out / "quality" / ref / "reference.npz"
        traj = None
        if f.exists():
            imgs = torch.from_numpy(np.load(f)["images"])
            if imgs.shape[0] != n:
                raise Refused(f"{f} holds {imgs.shape[0]} samples, not {n}")
        else:
            traj = sp.sample(seeds, cond, keep=("x_t",))
            imgs = to_uint8(traj.images)
            f.parent.mkdir(parents=True, exist_ok=True)
            save_images(f, imgs)
        x = imgs.float() / 255
        pred, feats = digits(x)
        refs[ref] = dict(sampler=sp, images=x, traj=traj, pred=pred, feats=feats,
                         flops=flops_of(lambda: sp.sample(seeds[:1], c1)))
        runs[f"{ref}:{a.steps}"] = x
        return refs[ref]

    todo = [p for p in pts if not (out / "quality" / p["ref"] / f"{slug(p)}.json").exists()]
    print(f"quality pass: {len(pts) - len(todo)} of {len(pts)} points stored in {out}; {len(todo)} to run on {n} samples",
          flush=True)
    for p in todo:
        r = reference(p["ref"])
        t0 = time.perf_counter()
        if p["plan"] is None or p["solver"]:  # a solver's samples (with a stacked shortcut): the same under both references
            sp = sampler_for(model, a, p["solver"] or p["method"], p["steps"])
            plan = None if p["plan"] is None else sp.check_plan(p["plan"])
            if p["run"] not in runs:
                tr = sp.sample(seeds, cond, plan)
                runs[p["run"]] = to_uint8(tr.images).float() / 255
                flops[p["run"]] = compute_of(model, sp, plan, tr, n, c1)
            x = runs[p["run"]]
            if flops.get(p["run"]) is None:
                flops[p["run"]] = flops_of(lambda: sp.sample(seeds[:1], c1, plan))
            f = flops[p["run"]]
        else:
            sp = r["sampler"]
            plan = sp.check_plan(p["plan"])
            first = plan.first_step()
            if r["traj"] is not None and first is not None and first < a.steps and not plan.reads_cache():
                # prefix sharing: the plan's run equals the reference's down to its first intervened step
                tr = sp.sample(seeds, cond, plan, start=(first, r["traj"].x_t[first]))
            else:
                tr = sp.sample(seeds, cond, plan)
            x = to_uint8(tr.images).float() / 255
            f = compute_of(model, sp, plan, tr, n, c1) or flops_of(lambda: sp.sample(seeds[:1], c1, plan))
        ss = ssim(x, r["images"]).numpy()
        pred, feats = digits(x)
        rec = dict(ref=p["ref"], method=p["method"], label=p["label"], steps=p["steps"],
                   plan=None if p["plan"] is None else p["plan"].to_dict(), sampler=sp.describe(), samples=n,
                   flops=f, flops_reference=r["flops"], compute_fraction=f / r["flops"],
                   ssim_mean=float(ss.mean()), ssim_min=float(ss.min()), ssim=[round(float(v), 5) for v in ss])
        if pred is not None:
            rec.update(agree_reference=float((pred == r["pred"]).float().mean()), predicted=pred.tolist(),
                       frechet=frechet_distance(feats, r["feats"]))
            if labels is not None:
                rec["agree_label"] = float((pred == labels).float().mean())
        rec["seconds_quality_pass"] = round(time.perf_counter() - t0, 2)  # a busy machine's wall time: not a timing
        write_json(out / "quality" / p["ref"] / f"{slug(p)}.json", rec)
        fd = f"  FD {rec['frechet']:8.3f}  agree {rec['agree_reference']:.3f}" if pred is not None else ""
        print(f"[{time.perf_counter() - t_start:7.0f} s] {p['ref']} ref  {p['method']:<13} {p['label']:<16} "
              f"SSIM {rec['ssim_mean']:.3f} (min {rec['ssim_min']:.3f}){fd}  compute {rec['compute_fraction']:.3f}",
              flush=True)


# --- the timing pass ---------------------------------------------------------------------------
def timing(a, model) -> None:
    from unetscope.timing import interleave, timing_warnings

    out = Path(a.out)
    base = settings(a, model)
    if (out / "settings.json").exists():  # the quality pass's settings, its sample count aside
        have = json.loads((out / "settings.json").read_text())
        check_settings(out / "settings.json", {**base, "samples": have.get("samples")}, "quality pass")
    tset = dict(model=base["model"], fingerprint=base["fingerprint"], steps=a.steps, guidance=a.guidance,
                samples=a.samples, first_seed=a.first_seed, repeats=a.repeats, warmup=1, threads=torch.get_num_threads(),
                batch_size=a.batch_size, machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
                cpus=os.cpu_count(), torch=torch.__version__, device=str(model.device))
    pts = [p for p in points(a, model) if not (p["plan"] is None and p["method"] == p["ref"] and p["steps"] == a.steps)]
    check_settings(out / "timing" / "settings.json", tset, "timing pass")
    seeds = list(range(a.first_seed, a.first_seed + a.samples))
    cond = [s % model.num_classes_real for s in seeds] if model.conditioning == "class" else None
    c1 = None if cond is None else cond[:1]
    todo = [p for p in pts if not (out / "timing" / p["ref"] / f"{slug(p)}.json").exists()]
    print(f"timing pass: {len(pts) - len(todo)} of {len(pts)} points stored; {len(todo)} to time on {a.samples} samples, "
          f"{a.repeats} interleaved rounds, {torch.get_num_threads()} thread(s)", flush=True)
    refs, ref_flops = {}, {}

    def stored_flops(p) -> dict | None:
        """The quality pass's FLOP counts of the point (the same model and sampler settings: checked
        above), so a sample is not run again under the FLOP counter."""
        q = out / "quality" / p["ref"] / f"{slug(p)}.json"
        rec = json.loads(q.read_text()) if q.exists() else None
        same = rec and rec.get("plan") == (None if p["plan"] is None else p["plan"].to_dict()) and rec.get("steps") == p["steps"]
        return rec if same and rec.get("flops") and rec.get("flops_reference") else None

    for p in todo:
        if p["ref"] not in refs:
            refs[p["ref"]] = sampler_for(model, a, p["ref"], a.steps)
        rs = refs[p["ref"]]
        sp = sampler_for(model, a, p["solver"] or p["method"], p["steps"]) if p["plan"] is None or p["solver"] else rs
        plan = None if p["plan"] is None else sp.check_plan(p["plan"])
        t, first = interleave({"entry": lambda: sp.sample(seeds, cond, plan), "reference": lambda: rs.sample(seeds, cond)},
                              a.repeats, warmup=1)
        stored = stored_flops(p)
        if stored:
            ref_flops.setdefault(p["ref"], stored["flops_reference"])
        if p["ref"] not in ref_flops:
            ref_flops[p["ref"]] = flops_of(lambda: rs.sample(seeds[:1], c1))
        rf = ref_flops[p["ref"]]
        # AdaptiveCache: the timed samples' own decisions; any other plan: every sample's FLOPs are the first's
        f = compute_of(model, sp, plan, first["entry"], len(seeds), c1) or (stored["flops"] if stored else None) \
            or flops_of(lambda: sp.sample(seeds[:1], c1, plan))
        te, tr = t["entry"], t["reference"]
        rec = dict(ref=p["ref"], method=p["method"], label=p["label"], time_fraction=te.median / tr.median,
                   spread=max(te.spread, tr.spread), compute_fraction=f / rf, entry=te.to_dict(), reference=tr.to_dict(),
                   warnings=timing_warnings(tr, te, 1 - f / rf))
        write_json(out / "timing" / p["ref"] / f"{slug(p)}.json", rec)
        print(f"{p['ref']} ref  {p['method']:<13} {p['label']:<16} time {rec['time_fraction']:.3f} of the reference "
              f"(spread {rec['spread']:.0%})  compute {rec['compute_fraction']:.3f}", flush=True)
        for w in rec["warnings"]:
            print(f"  warning: {w}", flush=True)


# --- table, data and figure --------------------------------------------------------------------
def collect(out: Path) -> list[dict]:
    rows = []
    for f in sorted((out / "quality").glob("*/*.json")):
        q = json.loads(f.read_text())
        tf = out / "timing" / q["ref"] / f.name
        if tf.exists():
            tm = json.loads(tf.read_text())
            q.update(time_fraction=tm["time_fraction"], time_spread=tm["spread"], time_warnings=tm["warnings"])
        elif q["method"] == q["ref"] and q["plan"] is None and q["sampler"]["steps"] == q["steps"] and \
                json.loads((out / "settings.json").read_text())["steps"] == q["steps"]:
            q.update(time_fraction=1.0, time_spread=0.0, time_warnings=[])  # the reference itself
        rows.append(q)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    rows.sort(key=lambda r: (r["ref"] != "ddpm", order.get(r["method"], 99), r["compute_fraction"], r["label"]))
    return rows


def report(a) -> None:
    out = Path(a.out)
    if not (out / "settings.json").exists():
        raise Refused(f"{out} holds no quality pass (settings.json): run the quality pass first")
    st = json.loads((out / "settings.json").read_text())
    rows = collect(out)
    if not rows:
        raise Refused(f"{out} holds no stored points yet")
    from unetscope.store import strict_json, write_atomic

    drop = ("ssim", "predicted")
    for r in rows:  # the 10th percentile of the per-sample SSIM: a shortcut's bad tail
        r["ssim_p10"] = float(np.quantile(np.asarray(r["ssim"], dtype=float), 0.1))
    write_atomic(out / "pareto.json", strict_json(dict(settings=st, points=[{k: v for k, v in r.items() if k not in drop}
                                                                            for r in rows])))
    # a reference's panel is drawn against measured time once every point under it is timed
    timed = {ref: all("time_fraction" in r for r in rows if r["ref"] == ref) for ref in {r["ref"] for r in rows}}
    lines = [f"Model {st['model']['name']}, S = {st['steps']}, guidance {st['guidance']}, {st['samples']} samples per point "
             f"(seeds {st['first_seed']}..{st['first_seed'] + st['samples'] - 1}).", "",
             "| reference | method | label | steps | compute | time | mean SSIM | SSIM p10 | min SSIM | agree (ref) | agree (label) | Fréchet | n |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def fmt(v, p=3):
        return "–" if v is None else f"{v:.{p}f}"

    for r in rows:
        tm = fmt(r.get("time_fraction")) + (f" (±{r['time_spread'] / 2:.0%})" if r.get("time_spread") else "")
        lines.append(f"| {r['ref'].upper()}-{st['steps']} | {r['method']} | {r['label']} | {r['sampler']['steps']} | "
                     f"{r['compute_fraction']:.3f} | {tm} | {r['ssim_mean']:.3f} | {r['ssim_p10']:.3f} | {r['ssim_min']:.3f} | "
                     f"{fmt(r.get('agree_reference'))} | {fmt(r.get('agree_label'))} | {fmt(r.get('frechet'), 2)} | "
                     f"{r['samples']} |")
    write_atomic(out / "table.md", "\n".join(lines) + "\n")
    figure(Path(a.figure) if a.figure else out / "pareto.png", rows, st, timed)
    print(f"wrote {out / 'pareto.json'}, {out / 'table.md'} and {a.figure or out / 'pareto.png'} "
          f"({len(rows)} points; x axis: " + ", ".join(
              f"{ref.upper()} reference {'measured time' if t else 'compute (not all points timed)'}"
              for ref, t in sorted(timed.items())) + ")")
    for ref in sorted({r["ref"] for r in rows}):
        verdicts(ref, [r for r in rows if r["ref"] == ref], timed[ref])


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper-left envelope of (cost, quality) points: each point no other beats at no more cost."""
    out = []
    for c, q in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or q > out[-1][1]:
            out.append((c, q))
    return out


def on_frontier(front: list[tuple[float, float]], cost: float) -> float | None:
    """The baselines' quality at ``cost``, linear between their frontier's points (None: cheaper than
    all of them; the best of them above its most expensive point)."""
    if not front or cost < front[0][0] - 1e-12:
        return None
    for (c0, q0), (c1, q1) in zip(front, front[1:]):
        if c0 <= cost <= c1:
            return q0 + (q1 - q0) * (cost - c0) / (c1 - c0) if c1 > c0 else max(q0, q1)
    return front[-1][1]


def verdicts(ref, rows, timed) -> None:
    """Where each shortcut stands against the baselines' curve: the frontier of the solvers', stopping
    early's and DeepCache-style points (quality against cost), linear between its points."""
    key = "time_fraction" if timed else "compute_fraction"
    base = [r for r in rows if r["method"] in (*SOLVERS, "stop-early", "deepcache") and r[key] < 1 - 1e-9]
    front = frontier([(r[key], r["ssim_mean"]) for r in base])
    for e in rows:
        if e["method"] not in ("paper-preset", "searched", "reuse-encoder", "change", "adaptive", *STACKED):
            continue
        q = on_frontier(front, e[key])
        where = f"{e['method']} {e['label']}: SSIM {e['ssim_mean']:.3f} at {key.split('_')[0]} {e[key]:.3f}"
        if q is None:
            print(f"{ref} ref, {where}; cheaper than every baseline")
        else:
            verdict = "on or above" if e["ssim_mean"] >= q - 1e-9 else "below"
            print(f"{ref} ref, {where}; {verdict} the baselines' curve ({q:.3f} there, {e['ssim_mean'] - q:+.3f})")


def figure(path: Path, rows, st, timed) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = [r for r in ("ddpm", "ddim") if any(x["ref"] == r for x in rows)]
    has_fd = any(r.get("frechet") is not None for r in rows)
    nrow = 2 if has_fd else 1
    fig, axes = plt.subplots(nrow, len(refs), figsize=(5.6 * len(refs), 3.9 * nrow), dpi=100, squeeze=False)
    style = {"ddpm": ("o-", "C0"), "ddim": ("s-", "C1"), "dpm-solver++": ("P-", "C2"), "stop-early": ("x-", "C7"),
             "deepcache": ("^-", "C3"), "reuse-encoder": ("v-", "C4"), "paper-preset": ("D", "C5"), "searched": ("*", "C6"),
             "ddim+deepcache": ("<--", "C8"), "dpm+deepcache": (">--", "C9"), "change": ("d:", "olive"),
             "adaptive": ("h-", "black"), "dpm+adaptive": ("h--", "magenta"), "unipc": ("X-", "teal"),
             "dpm+searched": ("*--", "C2"), "unipc+searched": ("*--", "teal")}
    for j, ref in enumerate(refs):
        rr = [r for r in rows if r["ref"] == ref]
        key = "time_fraction" if timed[ref] else "compute_fraction"
        for i, (metric, ylabel) in enumerate([("ssim_mean", "mean SSIM vs the reference"),
                                              ("frechet", "Fréchet distance (classifier features)")][:nrow]):
            ax = axes[i][j]
            for method, (mk, col) in style.items():
                groups = {}
                for r in rr:
                    if r["method"] == method and r.get(metric) is not None:
                        # DeepCache-style points: one curve per nb; on DDIM, one per period
                        g = r["label"].split(", ")[-1] if method in ("deepcache", "adaptive", *STACKED) else ""
                        groups.setdefault(g, []).append(r)
                for g, es in sorted(groups.items()):
                    es.sort(key=lambda r: r[key])
                    name = f"{method} {g}".strip() + (" (stochastic)" if method == "ddpm" else "")
                    ax.plot([e[key] for e in es], [e[metric] for e in es], mk, color=col, label=name,
                            ms=10 if method == "searched" else 5,
                            alpha=0.55 if len(set(_nbs(rr))) > 1 and g == f"nb={min(_nbs(rr))}" else 1.0)
            if metric == "frechet":
                ax.set_yscale("symlog", linthresh=1.0)
                other = [r for r in rr if r["method"] in ("ddpm", "ddim") and r["method"] != ref and r["steps"] == st["steps"]
                         and r.get("frechet") is not None]
                if other:  # the scale of "another set of samples of the same model" at this sample size
                    ax.axhline(other[0]["frechet"], color="gray", ls="--", lw=1)
                    ax.text(ax.get_xlim()[0], other[0]["frechet"], f" {other[0]['method'].upper()}-{st['steps']}",
                            color="gray", fontsize=7, va="bottom")
            ax.set_xlabel(("measured time" if timed[ref] else "compute (FLOPs)") + f" / {ref.upper()}-{st['steps']}")
            ax.set_ylabel(ylabel)
            ax.set_title(f"reference: {ref.upper()} {st['steps']} steps ({st['samples']} samples)", fontsize=10)
            ax.grid(alpha=0.3)
            if i == 0 and j == len(refs) - 1:
                ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _nbs(rows) -> list[int]:
    return [int(r["label"].split("nb=")[1]) for r in rows if r["method"] == "deepcache"] or [0]


def main(argv=None) -> int:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        if not a.report_only:
            from unetscope import load_model
            from unetscope.models import ModelError

            try:
                model = load_model(a.model)
            except ModelError as e:
                raise Refused(str(e)) from None
            (timing if a.timing_only else quality)(a, model)
        report(a)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
