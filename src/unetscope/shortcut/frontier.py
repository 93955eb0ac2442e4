"""The frontier search: the fastest way to sample a model at a quality kept against a reference.

Every candidate is a ``Recipe`` (a solver, its step count and a schedule on it) and is scored by
per-sample SSIM against the **reference** sampler's output from the same noise (``DDIM:100`` by
default: what the user would otherwise run). The search, in order:

1. **Solvers alone.** For every solver of ``solvers``, the fewest steps whose calibration seeds meet
   the target, by bisection over 1..ceiling (not a grid), then raised until the target also holds on
   the validation seeds with the static search's margin (``SearchConfig.holds``).
2. **Their time.** The solvers that reach the target are timed on the validation seeds by the timing
   protocol (``unetscope.timing.interleave``): the fastest is the best solver alone.
3. **Stacking.** On the ``stack_top`` fastest solvers, at their step count and a few more (where the
   cache has room to cut), the static search (``search``) and ``AdaptiveCache``'s calibration
   (``search_adaptive``) find schedules against the reference. A step count is skipped when even
   its cheapest evaluation at every step but the first could not beat the best solver alone
   (a bound from the seconds of single evaluations, ``action_seconds``).
4. **The cache alone.** The same two searches on the reference sampler itself (today's
   ``shortcut search``): the best single cut technique, for the comparison.
5. **The choice, by measured time.** The best solver alone, the two stacked candidates predicted
   fastest and the best cache alone are timed together on the validation seeds; the fastest whose
   target holds wins, and a stacked or cached candidate is kept over the best solver alone only where
   it is faster by more than the timing's own spread. The held-out seeds are never used to choose.
6. **Held out.** The chosen recipe, the best solver alone, the best cache alone and the reference are
   run and timed together on the held-out seeds: SSIM (mean, 10th percentile, minimum) and each
   one's time against the reference's.

``fewest_steps`` is the bisection alone; ``rival`` uses it to name, after any shortcut run, the
fewest solver steps that keep the same quality (``unetscope shortcut``'s last line).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..checks import check_int
from ..errors import UnetscopeError
from ..models import Cond
from ..plan import NO_ACTION, DropBlocks, Plan, ReuseEncoder
from ..plan_file import Recipe
from ..sampling import Sampler, SamplerError, cond_slice
from .schedules import ShortcutError
from .scoring import score_plans
from .search import SearchConfig

__all__ = ["FrontierConfig", "Candidate", "frontier", "draw_frontier", "fewest_steps", "rival", "rival_line", "parse_reference",
           "parse_solvers", "solver_label",
           "DEFAULT_SOLVERS", "STOCHASTIC_SOLVERS", "is_stochastic"]

DEFAULT_SOLVERS = ("ddim", "dpm++", "unipc", "euler")
STOCHASTIC_SOLVERS = ("dpm++-sde", "euler-a")  # added to the default when the reference is stochastic
LABELS = {"ddim": "DDIM", "ddpm": "DDPM", "dpm++": "DPM-Solver++", "dpm++-sde": "DPM-Solver++ SDE", "unipc": "UniPC",
          "euler": "Euler", "euler-a": "Euler ancestral", "heun": "Heun", "dpm2": "KDPM2", "pndm": "PNDM", "lms": "LMS",
          "deis": "DEIS"}


def solver_label(name: str) -> str:
    return LABELS.get(name, name)


def is_stochastic(method: str, eta: float = 0.0) -> bool:
    """Whether a sampler draws fresh noise at its steps (DDPM, DDIM with eta > 0, an ancestral or SDE scheduler)."""
    if method == "ddpm" or (method == "ddim" and eta > 0) or method in STOCHASTIC_SOLVERS:
        return True
    return "Ancestral" in method or "SDE" in method or method.endswith("-a") or method.endswith("-sde")


def parse_solvers(text, error: type[Exception] = ShortcutError, reference_steps: int | None = None) -> tuple:
    """``--solvers``: names (``dpm++``), or ``NAME:N`` for a step ceiling of the bisection; every name
    resolved (an unknown one refused in one line) and no ceiling above the reference's steps."""
    from ..checks import METHODS
    from ..sampling import resolve_scheduler

    items = [v.strip() for v in text.split(",")] if isinstance(text, str) else list(text)
    if not items or any(not isinstance(v, (str, tuple)) or not v for v in items):
        raise error(f"solvers must be comma-separated scheduler names (e.g. ddim,dpm++,unipc), got {text!r}")
    out = []
    for item in items:
        name, ceiling = (item if isinstance(item, tuple) else
                         (item.split(":")[0].strip(), item.split(":")[1].strip() if ":" in item else None))
        if isinstance(ceiling, str):
            if not ceiling.isdigit() or int(ceiling) < 1:
                raise error(f"a solver's step ceiling must be an integer >= 1 (NAME:N), got {item!r}")
            ceiling = int(ceiling)
        if name not in METHODS:
            try:
                resolve_scheduler(name)
            except SamplerError as e:
                raise error(f"unknown solver {name!r} in the solvers: {str(e).split(': ', 1)[-1]}") from None
        if ceiling is not None and reference_steps is not None and ceiling > reference_steps:
            raise error(f"the candidate {name}:{ceiling} takes more steps than the reference ({reference_steps}): a "
                        "candidate may take at most the reference's steps")
        out.append((name, ceiling))
    if len({n for n, _ in out}) != len(out):
        raise error(f"a solver is named twice in {text!r}")
    return tuple(out)


def parse_reference(text, error: type[Exception] = ShortcutError) -> tuple[str, int]:
    """``SCHEDULER:STEPS`` (``ddim:100``, ``dpm++:50``, ``DDIMScheduler:50``) as (name, steps)."""
    if not isinstance(text, str) or text.count(":") != 1:
        raise error(f"the reference must be SCHEDULER:STEPS (e.g. ddim:100), got {text!r}")
    name, steps = (v.strip() for v in text.split(":"))
    if not name or not steps.isdigit() or int(steps) < 1:
        raise error(f"the reference must be SCHEDULER:STEPS with steps an integer >= 1 (e.g. ddim:100), got {text!r}")
    return name, int(steps)


@dataclass(frozen=True)
class FrontierConfig:
    """The settings of ``frontier``: the reference, the solvers (name, or (name, ceiling) for a step
    ceiling below the reference's), the quality target (``SearchConfig``'s targets and margin), and
    how much of the stacking to try."""

    reference: tuple = ("ddim", 100)  # (scheduler, steps)
    solvers: tuple | None = None  # None: DEFAULT_SOLVERS (+ STOCHASTIC_SOLVERS for a stochastic reference)
    search: SearchConfig = field(default_factory=SearchConfig)
    stack_top: int = 2  # solver settings the cuts are stacked on (the fastest)
    stack_steps: tuple = (1.0, 1.5)  # step counts of a stacked candidate, as multiples of the solver's
    stack_rounds: int = 10  # rounds of each static search on a stacked setting (at most the target's max_rounds)
    adaptive: bool = True  # AdaptiveCache stacked (and alone) besides the static search's schedules
    adaptive_nbs: tuple | None = None  # its block counts (None: K/2 and 3K/4), with no max_reuse
    cache_alone: bool = True  # the cut searches on the reference sampler itself (the best cache alone)
    repeats: int = 3  # timed runs of each side (the timing protocol)
    warmup: int = 1
    min_gain: float = 0.05  # a cut is kept over the best solver alone only where it saves more than this (and the spread)

    def solver_list(self) -> list[tuple[str, int | None]]:
        if self.solvers is not None:
            return [s if isinstance(s, tuple) else (s, None) for s in self.solvers]
        extra = STOCHASTIC_SOLVERS if is_stochastic(self.reference[0]) else ()
        return [(s, None) for s in (*DEFAULT_SOLVERS, *extra)]


@dataclass
class Candidate:
    """One recipe in the search and what was measured of it (SSIMs against the reference)."""

    recipe: Recipe
    kind: str  # "solver" (alone), "stacked" (cuts on a fewer-step solver), "cache" (cuts on the reference sampler)
    how: str = ""  # the search that made its plan: "static" or "adaptive"
    calibration: dict | None = None  # mean, p10, min of its per-sample SSIMs
    validation: dict | None = None
    holds: bool = False
    predicted_seconds: float | None = None
    timing: dict | None = None  # the validation timing (median, min, max, spread, runs)
    compute: float | None = None  # FLOPs over its own solver's unintervened run

    @property
    def seconds(self) -> float | None:
        return None if self.timing is None else self.timing["median"]

    def row(self) -> dict:
        return dict(recipe=self.recipe.record(), plan=self.recipe.plan.to_dict(), label=describe(self.recipe),
                    kind=self.kind, how=self.how, calibration=self.calibration, validation=self.validation,
                    holds=self.holds, predicted_seconds=self.predicted_seconds, timing=self.timing, compute=self.compute)


def describe(r: Recipe) -> str:
    """``DPM-Solver++ at 12 steps`` (+ ``, cut by 3 interventions``)."""
    cut = f" + {len(r.plan)} cut{'s' * (len(r.plan) != 1)} ({_kinds(r.plan)})" if r.plan else ""
    return f"{solver_label(r.scheduler)} at {r.steps} steps{cut}"


def _kinds(plan: Plan) -> str:
    return ", ".join(dict.fromkeys(type(it).__name__ for it in plan))


class _Samplers:
    """The samplers of one model, built alike (guidance, clipping, batch size, progress) and kept."""

    def __init__(self, base: Sampler):
        self.base = base
        self.made: dict = {}

    def __call__(self, method: str, steps: int, options: dict | None = None, eta: float = 0.0) -> Sampler:
        key = (method, steps, repr(sorted((options or {}).items())), eta)
        if key not in self.made:
            b = self.base
            self.made[key] = Sampler(b.model, steps=steps, method=method, eta=eta, guidance=b.guidance,
                                     variance=b.variance if method == "ddpm" else None, clip_x0=b.clip_x0,
                                     batch_size=b.batch_size, progress=b.progress, compile=b.compile, options=options)
        return self.made[key]


def _images(sampler: Sampler, seeds, cond) -> torch.Tensor:
    return sampler.model.decode(sampler.sample(seeds, cond).x0).float().cpu()


def _meets(cfg: SearchConfig, ss: np.ndarray) -> bool:
    return bool(cfg.meets(ss))


def fewest_steps(score, meets, ceiling: int, floor: int = 1, say=None) -> tuple[int | None, dict]:
    """The fewest steps n in ``floor..ceiling`` with ``meets(score(n))``, by bisection (quality is
    taken to rise with the steps: the first n found is where it crosses). ``score(n)``: per-sample
    SSIMs (None where the solver cannot take n steps). Returns (n or None, {n: scores} probed)."""
    probed: dict[int, np.ndarray | None] = {}

    def ok(n: int) -> bool:
        if n not in probed:
            probed[n] = score(n)
            if say and probed[n] is not None:
                say(f"  {n} steps: mean SSIM {probed[n].mean():.3f} (min {probed[n].min():.3f})")
        return probed[n] is not None and meets(probed[n])

    if not ok(ceiling):
        return None, probed
    lo, hi = floor - 1, ceiling  # lo fails (or is below the range), hi meets
    # a first guess near the low end: solvers that reach the target do it in few steps
    guess = min(ceiling - 1, max(floor, ceiling // 8))
    if guess > lo and guess < hi:
        if ok(guess):
            hi = guess
        else:
            lo = guess
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, probed


class _Run:
    """One frontier search: the seeds, the reference's images, the samplers and the scores."""

    def __init__(self, base: Sampler, cfg: FrontierConfig, seeds, cond, val_seeds, val_cond, say, executor, chunk_size,
                 progress):
        self.cfg, self.say, self.ex, self.chunk_size, self.progress = cfg, say, executor, chunk_size, progress
        self.samplers = _Samplers(base)
        self.model = base.model
        self.seeds, self.cond, self.val_seeds, self.val_cond = list(seeds), cond, list(val_seeds or []), val_cond
        ref_name, ref_steps = cfg.reference
        self.ref = self.samplers(ref_name, ref_steps, None, base.eta if ref_name == base.method else 0.0)
        with self.ref.stage("reference: calibration seeds"):
            self.ref_cal = _images(self.ref, self.seeds, cond)
        with self.ref.stage("reference: validation seeds"):
            self.ref_val = _images(self.ref, self.val_seeds, val_cond) if self.val_seeds else None
        self.spent = 0  # U-Net evaluations of the candidates (each on a chunk of seeds)
        self.minimum = 0
        self.scores: dict = {}  # (method, steps, plan, which) -> ssims
        self.ref_seconds: float | None = None  # the reference's median seconds on the timing seeds

    def score(self, sampler: Sampler, plans: list[Plan], which: str) -> list[np.ndarray]:
        """Per-sample SSIM against the reference of ``plans`` on ``sampler`` (shared prefixes)."""
        seeds, cond, ref = (self.seeds, self.cond, self.ref_cal) if which == "cal" else \
            (self.val_seeds, self.val_cond, self.ref_val)
        keys = [(sampler.method, sampler.steps, p, which) for p in plans]
        todo = [p for p, k in zip(plans, keys) if k not in self.scores]
        if todo:
            ss, spent = score_plans(sampler, todo, seeds, cond, executor=self.ex, chunk_size=self.chunk_size,
                                    reference=ref, on_evaluation=self.progress)
            self.spent += spent
            for p, row in zip(todo, ss):
                self.scores[(sampler.method, sampler.steps, p, which)] = row
        return [self.scores[k] for k in keys]

    def solver_score(self, method: str):
        def score(n: int):
            try:
                s = self.samplers(method, n)
                with s.stage(f"{solver_label(method)} at {n} steps"):
                    return self.score(s, [Plan()], "cal")[0]
            except SamplerError:  # a solver that cannot take n steps (a second-order start at 1 step)
                return None
        return score

    def holds(self, sampler: Sampler, plan: Plan) -> tuple[bool, np.ndarray, np.ndarray | None]:
        cal = self.score(sampler, [plan], "cal")[0]
        if not self.val_seeds:
            return _meets(self.cfg.search, cal), cal, None
        val = self.score(sampler, [plan], "val")[0]
        return bool(self.cfg.search.holds(val, spread=cal)), cal, val


def _timing(fns: dict, repeats: int, warmup: int, device, clock=time.perf_counter) -> dict:
    from ..timing import interleave

    timings, _ = interleave(fns, repeats, warmup, clock, device=device)
    return {k: t.to_dict() for k, t in timings.items()}


def _cheapest_fraction(sampler: Sampler, seeds, cond, clock=time.perf_counter) -> float:
    """The seconds of the cheapest cut evaluation over a full one (DropBlocks of every block reading
    the cache, or the encoder reused), by ``action_seconds``: a lower bound of what cutting can save."""
    from .measure import action_seconds

    K, S = sampler.model.num_blocks, sampler.steps
    if S < 2:
        return 1.0
    plan = Plan([DropBlocks(K, S - 1, 1, "cache")] + ([ReuseEncoder(S - 2, 1)] if S >= 3 else []))
    secs = action_seconds(sampler, plan, seeds[:4], cond_slice(cond, range(min(4, len(seeds))), len(seeds)),
                          repeats=3, clock=clock)
    full = secs[NO_ACTION]
    return min(v for a, v in secs.items() if a != NO_ACTION) / full if full > 0 else 1.0


def frontier(base: Sampler, seeds: list[int], cond: Cond = None, config: FrontierConfig | None = None, *,
             validation_seeds: list[int] | None = None, validation_cond: Cond = None,
             held_out_seeds: list[int] | None = None, held_out_cond: Cond = None, log=None, executor=None,
             chunk_size: int | None = None, progress=None, clock=time.perf_counter) -> dict:
    """The fastest recipe (solver, steps, schedule) whose target holds against the reference, with
    every candidate measured; see the module's docstring for the order. ``base``: a sampler of the
    model with the user's settings (guidance, clipping, batch size); its own solver and steps are not
    used (the reference and the solvers are ``config``'s). ``held_out_seeds``: the seeds the result
    is reported on (never used to choose). ``clock``: what the timing reads (``time.perf_counter``;
    a test may count work instead, for a result that does not depend on the machine's load)."""
    from .adaptive import search_adaptive
    from .measure import action_seconds, predicted_time_fraction
    from .search import search

    cfg = config or FrontierConfig()
    say = log or (lambda _m: None)
    tgt = cfg.search
    if tgt.budget is not None:
        raise ShortcutError("the frontier search is for a quality target (target_mean / target_min / target_quantile); "
                            "a compute budget is the plain search's")
    T = base.model.schedule.num_train_timesteps
    ref_name, ref_steps = cfg.reference
    check_int(ref_steps, ShortcutError, "the reference's steps", 1, T, note="the model's T")
    solvers = cfg.solver_list()
    for name, ceiling in solvers:
        if ceiling is not None and ceiling > ref_steps:
            raise ShortcutError(f"the candidate {name}:{ceiling} takes more steps than the reference "
                                f"{ref_name}:{ref_steps}: a candidate may take at most the reference's steps")
    t0 = time.perf_counter()
    run = _Run(base, cfg, seeds, cond, validation_seeds, validation_cond, say, executor, chunk_size, progress)
    ref_evals = sum(run.ref.calls(t) for t in range(1, ref_steps + 1)) * (1 + bool(validation_seeds))
    say(f"reference: {solver_label(ref_name)} at {ref_steps} steps; target: {tgt.describe_target()} against it")

    # 1. solvers alone: the fewest steps, by bisection on the calibration seeds, then the validation margin
    curves: dict[str, dict[int, np.ndarray | None]] = {}
    cands: list[Candidate] = []
    for name, ceiling in solvers:
        say(f"{solver_label(name)}: the fewest steps to the target (bisection over 1..{ceiling or ref_steps})")
        n, probed = fewest_steps(run.solver_score(name), lambda ss: _meets(tgt, ss), ceiling or ref_steps, say=say)
        curves[name] = probed
        while n is not None:
            ok, cal, val = run.holds(run.samplers(name, n), Plan())
            probed.setdefault(n, cal)  # a step count the validation margin raised to: a point of its line too
            if ok:
                cands.append(Candidate(Recipe(name, n, Plan(), reference=_ref_record(cfg)), "solver", "", _stats(cal),
                                       _stats(val), True))
                say(f"  {solver_label(name)} at {n} steps holds on the validation seeds"
                    + ("" if val is None else f" (mean SSIM {val.mean():.3f})"))
                break
            nxt = n + max(1, n // 8)
            say(f"  {n} steps misses the target on the validation seeds: {nxt}")
            n = nxt if nxt <= (ceiling or ref_steps) else None
        if n is None:
            say(f"  {solver_label(name)} does not reach the target within {ceiling or ref_steps} steps")
    device = base.model.device
    tseeds = run.val_seeds or run.seeds
    tcond = run.val_cond if run.val_seeds else run.cond

    def runner(c: Candidate):
        r = c.recipe
        s = run.samplers(r.scheduler, r.steps, r.options, r.eta)
        return lambda: s.sample(tseeds, tcond, r.plan or None)

    # 2. their time, measured together
    if cands:
        say(f"timing {len(cands)} solver settings on the {len(tseeds)} {'validation' if run.val_seeds else 'calibration'} "
            "seeds")
        fns = {describe(c.recipe): runner(c) for c in cands}
        fns["reference"] = lambda: run.ref.sample(tseeds, tcond)
        tm = _timing(fns, cfg.repeats, cfg.warmup, device, clock)
        for c in cands:
            c.timing = tm[describe(c.recipe)]
        run.ref_seconds = tm["reference"]["median"]
        cands.sort(key=lambda c: c.seconds)
    best_solver = cands[0] if cands else None

    # 3. stacking on the fastest solver settings; 4. the cache alone on the reference sampler
    settings = []
    for c in cands[:cfg.stack_top]:
        per_step = c.seconds / c.recipe.steps
        steps = sorted({min(ref_steps, max(c.recipe.steps, round(c.recipe.steps * f))) for f in cfg.stack_steps})
        settings += [(c.recipe.scheduler, n, per_step, "stacked") for n in steps]
    if cfg.cache_alone:
        settings.append((ref_name, ref_steps, None, "cache"))
    stacked: list[Candidate] = []
    for name, n, per_step, kind in settings:
        s = run.samplers(name, n) if kind == "stacked" else run.ref
        if n < 2:
            continue
        if kind == "stacked" and best_solver is not None:
            frac = _cheapest_fraction(s, tseeds, tcond, clock)
            bound = per_step * (1 + (n - 1) * frac)
            if bound >= best_solver.seconds:
                say(f"{solver_label(name)} at {n} steps: skipped; cutting every step but the first would take at least "
                    f"{bound:.2f} s, the best solver alone {best_solver.seconds:.2f} s")
                continue
        label = f"{solver_label(name)} at {n} steps" + (" (the reference: the cache alone)" if kind == "cache" else "")
        say(f"{label}: the static search against the reference")
        ref_kw = {} if kind == "cache" else dict(reference=run.ref_cal, validation_reference=run.ref_val)
        t_set = time.perf_counter()
        rounds = tgt.max_rounds if kind == "cache" else min(tgt.max_rounds, cfg.stack_rounds)
        found = [("static", search(s, run.seeds, run.cond, replace(tgt, max_rounds=rounds),
                                   validation_seeds=run.val_seeds or None,
                                   validation_cond=run.val_cond, log=lambda m: say("    " + m), executor=executor,
                                   chunk_size=chunk_size, progress=progress, **ref_kw))]
        if cfg.adaptive:
            say(f"{label}: AdaptiveCache against the reference")
            K = s.model.num_blocks
            nbs = cfg.adaptive_nbs or tuple(sorted({max(1, K // 2), max(1, (3 * K) // 4)}))
            found.append(("adaptive", search_adaptive(s, run.seeds, run.cond, replace(tgt, nbs=nbs),
                                                      validation_seeds=run.val_seeds or None,
                                                      validation_cond=run.val_cond, log=lambda m: say("    " + m),
                                                      max_reuses=(None,), **ref_kw)))
        say(f"  {time.perf_counter() - t_set:.0f} s: " + "; ".join(
            f"{how} {res['plan']!r}" if res["plan"] else f"{how}: none holds" for how, res in found))
        for how, res in found:
            run.spent += res["evaluations"]
            run.minimum += res.get("evaluations_minimum", res["evaluations"])
            if not res["plan"] or not (res["validation_holds"] if run.val_seeds else True):
                continue
            if res["predicted_compute"] >= 0.999:  # cuts that never fire (an AdaptiveCache that always computes)
                continue
            stacked.append(Candidate(
                Recipe(name, n, res["plan"], reference=_ref_record(cfg)), kind, how,
                dict(mean=res["calibration_ssim_mean"], min=res["calibration_ssim_min"]),
                None if res["validation_ssim_mean"] is None else dict(mean=res["validation_ssim_mean"],
                                                                     min=res["validation_ssim_min"]),
                True, compute=res["predicted_compute"]))
    # predicted seconds of each cut candidate: the seconds of its actions over its solver's measured run
    for c in stacked:
        r = c.recipe
        s = run.samplers(r.scheduler, r.steps) if c.kind == "stacked" else run.ref
        try:
            secs = action_seconds(s, r.plan, tseeds[:4], cond_slice(tcond, range(min(4, len(tseeds))), len(tseeds)),
                                  repeats=3, clock=clock)
            reused = None
            if any(st.action.unet.decides for st in s.check_plan(r.plan).walk(s.steps)):
                reused = s.sample(tseeds[:4], cond_slice(tcond, range(min(4, len(tseeds))), len(tseeds)), r.plan).reused
            frac = predicted_time_fraction(s, r.plan, secs, None, 1, reused)
        except (ShortcutError, UnetscopeError):
            frac = c.compute or 1.0
        own = next((x.seconds / x.recipe.steps * r.steps for x in cands if x.recipe.scheduler == r.scheduler), None)
        c.predicted_seconds = None if own is None else own * frac

    # 5. the choice by measured time: the best solver alone, the fastest predicted stacked ones, the cache alone
    finals = ([best_solver] if best_solver else [])
    finals += sorted((c for c in stacked if c.kind == "stacked"), key=lambda c: c.predicted_seconds or math.inf)[:2]
    cache = [c for c in stacked if c.kind == "cache"]
    best_cache = None
    if cache:
        # the cache alone: the static and adaptive results on the reference, the cheaper predicted (or by FLOPs)
        best_cache = min(cache, key=lambda c: (c.predicted_seconds or math.inf, c.compute or 1.0))
        finals.append(best_cache)
    if not finals:
        raise ShortcutError(f"no candidate reaches the target ({tgt.describe_target()}) against "
                            f"{solver_label(ref_name)}:{ref_steps} on the calibration and validation seeds: lower the "
                            "target or give more solvers")
    say(f"timing the finalists on the {len(tseeds)} seeds: " + "; ".join(describe(c.recipe) for c in finals))
    tm = _timing({describe(c.recipe) + f" [{c.kind}/{c.how}]": runner(c) for c in finals}, cfg.repeats, cfg.warmup,
                 device, clock)
    for c in finals:
        c.timing = tm[describe(c.recipe) + f" [{c.kind}/{c.how}]"]
    # a cut is kept over the best solver alone only where it is faster by more than the runs' own
    # spread and than min_gain: a smaller gain is within what a busy machine moves a median by
    noise = max(c.timing["spread"] for c in finals) / 2
    fastest = min(finals, key=lambda c: (c.seconds, c.kind != "solver"))
    chosen = best_solver or fastest
    if fastest is not chosen and fastest.seconds < chosen.seconds * (1 - max(noise, cfg.min_gain)):
        chosen = fastest
    say(f"chosen: {describe(chosen.recipe)} ({chosen.seconds:.2f} s on the validation seeds"
        + (f"; the best solver alone {best_solver.seconds:.2f} s" if best_solver and chosen is not best_solver else "")
        + f"; timing spread {2 * noise:.0%})")

    out = dict(recipe=chosen.recipe, chosen=chosen.row(), best_solver=best_solver.row() if best_solver else None,
               best_cache=best_cache.row() if best_cache else None, target=tgt.describe_target(),
               reference=_ref_record(cfg), candidates=[c.row() for c in cands + stacked],
               curves={k: {int(n): None if v is None else float(v.mean()) for n, v in sorted(p.items())}
                       for k, p in curves.items()},
               evaluations=run.spent, evaluations_minimum=run.minimum + _solver_minimum(run),
               reference_evaluations=ref_evals, timing_noise=2 * noise, reference_seconds=run.ref_seconds,
               seeds=dict(calibration=len(run.seeds), validation=len(run.val_seeds),
                          held_out=len(held_out_seeds or [])), seconds_search=time.perf_counter() - t0)
    if held_out_seeds:
        out["held_out"] = _held_out(run, cfg, chosen, best_solver, best_cache, curves, cands, stacked, held_out_seeds,
                                    held_out_cond, say, clock)
    return out


def _ref_record(cfg: FrontierConfig) -> dict:
    return dict(scheduler=cfg.reference[0], steps=cfg.reference[1], options={})


def _solver_minimum(run: _Run) -> int:
    """The solver probes' evaluations: each (solver, steps) on each seed set once (no prefix to share)."""
    from ..sweep import count_evaluations

    total = 0
    for (method, steps, plan, which) in run.scores:
        if plan:
            continue
        s = run.samplers(method, steps)
        chunks = math.ceil(len(run.seeds if which == "cal" else run.val_seeds) /
                           max(1, run.chunk_size or len(run.seeds if which == "cal" else run.val_seeds)))
        total += count_evaluations([], s.steps, s.calls)[0] * chunks
    return total


def _stats(ss: np.ndarray | None) -> dict | None:
    return None if ss is None else dict(mean=float(ss.mean()), p10=float(np.quantile(ss, 0.1)), min=float(ss.min()))


def _held_out(run: _Run, cfg: FrontierConfig, chosen: Candidate, best_solver, best_cache, curves, timed, cuts, seeds,
              cond, say, clock=time.perf_counter) -> dict:
    """The chosen recipe and the best single techniques against the reference on the held-out seeds:
    SSIM (every sample) and time, measured together (the timing protocol)."""
    from ..metrics import ssim

    sides = {"reference": (run.ref, None), "chosen": (_sampler_of(run, chosen.recipe), chosen.recipe.plan)}
    if best_solver is not None:
        sides["best solver alone"] = (_sampler_of(run, best_solver.recipe), best_solver.recipe.plan)
    if best_cache is not None:
        sides["best cache alone"] = (_sampler_of(run, best_cache.recipe), best_cache.recipe.plan)
    say(f"held out: {len(seeds)} seeds, " + ", ".join(sides) + " timed together")
    from ..timing import interleave

    fns = {k: (lambda s=s, p=p: s.sample(seeds, cond, p or None)) for k, (s, p) in sides.items()}
    timings, first = interleave(fns, cfg.repeats, cfg.warmup, clock, device=run.model.device)
    ref_img = run.model.decode(first["reference"].x0).float().cpu()
    out: dict = dict(seeds=list(seeds), reference_seconds=timings["reference"].median)
    for k in sides:
        img = run.model.decode(first[k].x0).float().cpu()
        ss = ssim(img, ref_img).numpy()
        out[k] = dict(ssim_mean=float(ss.mean()), ssim_p10=float(np.quantile(ss, 0.1)), ssim_min=float(ss.min()),
                      ssim=ss.tolist(), timing=timings[k].to_dict(),
                      time_fraction=timings[k].median / timings["reference"].median)
        if k == "chosen":
            out["images"] = img
    # the frontier figure: each solver's probed step counts near its answer, and every cut candidate,
    # on the held-out seeds; time as a fraction of the reference's (measured, or per step for a line)
    ref_s = run.ref_seconds
    lines = {}
    for name, probed in curves.items():
        n_best = min((n for n, v in probed.items() if v is not None and _meets(cfg.search, v)), default=None)
        own = next((c for c in timed if c.recipe.scheduler == name and c.timing), None)
        if own is None or not ref_s:
            continue
        per_step = own.timing["median"] / own.recipe.steps
        pts = []
        for n in sorted(n for n, v in probed.items() if v is not None and n <= 3 * max(1, n_best or 1)):
            img = run.model.decode(run.samplers(name, n).sample(seeds, cond).x0).float().cpu()
            pts.append((per_step * n / ref_s, float(ssim(img, ref_img).numpy().mean()), n))
        lines[solver_label(name)] = pts
    points = []
    for c in cuts:
        x = c.seconds if c.timing else c.predicted_seconds
        if x is None or not ref_s:
            continue
        img = run.model.decode(_sampler_of(run, c.recipe).sample(seeds, cond, c.recipe.plan).x0).float().cpu()
        points.append(dict(label=describe(c.recipe), kind=c.kind, how=c.how, x=x / ref_s, measured=c.timing is not None,
                           y=float(ssim(img, ref_img).numpy().mean())))
    out["figure"] = dict(lines=lines, points=points)
    return out


def draw_frontier(record: dict, path, target: float | None = None):
    """The frontier figure of a search's record (``frontier.json``, or ``frontier()``'s result):
    time against held-out SSIM. Times are fractions of the reference's on the validation seeds,
    where the solvers and the finalists were timed together (a fraction depends on the batch, so
    the held-out timing, of another batch, is the summary's, not the figure's); the chosen recipe is
    ringed at its own validation time."""
    from ..figures import frontier_figure

    held = record.get("held_out") or {}
    f = held.get("figure")
    if not f or not record.get("reference_seconds"):
        return None
    chosen = record["chosen"]
    x = (chosen["timing"]["median"] if chosen.get("timing") else held["chosen"]["timing"]["median"]) / \
        record["reference_seconds"]
    ref = record["reference"]
    return frontier_figure(path, {k: ([a for a, _, _ in v], [b for _, b, _ in v]) for k, v in f["lines"].items()},
                           f["points"], dict(label=chosen["label"], x=x, y=held["chosen"]["ssim_mean"]), target=target,
                           title=f"The fastest recipe for {record['target']} against {ref['scheduler']}:{ref['steps']}")


def _sampler_of(run: _Run, r: Recipe) -> Sampler:
    return run.samplers(r.scheduler, r.steps, r.options, r.eta)


def rival(base: Sampler, seeds: list[int], cond: Cond, reference_images: torch.Tensor, quality: float,
          solvers=("dpm++",), log=None, repeats: int = 3, warmup: int = 1, clock=time.perf_counter) -> dict:
    """The fewest steps of a solver (the first of ``solvers`` that reaches it) whose mean SSIM against
    ``reference_images`` on ``seeds`` is at least ``quality``, at most ``base``'s steps, timed against
    ``base`` on those seeds (interleaved: the timing protocol). ``base``: the run's sampler (its
    output is the reference). ``found`` is False where no solver reaches the quality."""
    samplers = _Samplers(base)
    say = log or (lambda _m: None)
    for name in solvers:
        def score(n, name=name):
            try:
                s = samplers(name, n)
                with s.stage(f"rival: {solver_label(name)} at {n} steps"):
                    ss, _ = score_plans(s, [Plan()], seeds, cond, reference=reference_images)
                return ss[0]
            except SamplerError:
                return None
        n, probed = fewest_steps(score, lambda ss: float(ss.mean()) >= quality, base.steps, say=say)
        if n is None:
            continue
        s = samplers(name, n)
        with base.stage(f"rival timing: {solver_label(base.method)} at {base.steps} steps against "
                        f"{solver_label(name)} at {n}"):
            tm = _timing({"base": lambda: base.sample(seeds, cond), "rival": lambda: s.sample(seeds, cond)}, repeats,
                         warmup, base.model.device, clock)
        return dict(found=True, solver=name, label=solver_label(name), steps=n, quality=quality,
                    base=dict(label=solver_label(base.method), steps=base.steps),
                    ssim_mean=float(probed[n].mean()), seconds=tm["rival"]["median"], seconds_base=tm["base"]["median"],
                    time_fraction=tm["rival"]["median"] / tm["base"]["median"], timing=tm,
                    probed={int(k): None if v is None else float(v.mean()) for k, v in probed.items()})
    return dict(found=False, solvers=list(solvers), label=", ".join(solver_label(x) for x in solvers), quality=quality,
                base=dict(label=solver_label(base.method), steps=base.steps),
                steps_max=base.steps, stochastic=is_stochastic(base.method, base.eta))


def rival_line(r: dict) -> str:
    """The one line a shortcut run ends with: the rival solver, or that none reaches the quality."""
    base = f"{r['base']['label']} at {r['base']['steps']} steps"
    if r["found"]:
        return (f"rival: {r['label']} at {r['steps']} steps keeps {r['ssim_mean']:.2f} in {r['time_fraction']:.2f} of the "
                f"time ({r['seconds']:.2f} s against {r['seconds_base']:.2f} s for {base}, same seeds)")
    why = (f": {r['base']['label']}'s per-step noise is its own, which these solvers do not follow (compare against a "
           "deterministic reference, e.g. --scheduler ddim)") if r["stochastic"] else ""
    return f"rival: no {r['label']} run of at most {r['steps_max']} steps keeps a mean SSIM of {r['quality']:.2f} against {base}{why}"
