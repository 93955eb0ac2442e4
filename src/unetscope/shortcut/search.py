"""The shortcut search: greedy cut-relax-cut moves scored by the sweep engine on calibration seeds,
kept only where a target holds on validation seeds with a margin.

The parts are named units, so that a new way to cut compute touches one place:
- a ``Mechanism`` makes a cut over a range of steps (``DropBlocks`` of nb blocks with a fill,
  ``ReuseEncoder``, ``SkipSteps``), says whether it reads an earlier step's activations, how a cut
  of its own grows, and which uniform schedules it offers as starts and rivals;
- a move (``MOVES``: a later ``StopEarly``, a new cut, a grown cut) proposes schedules from the
  current one;
- ``SearchConfig`` holds the targets and the move set; ``_Search`` runs the rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Union

import numpy as np
import torch

from ..checks import check_int, check_number
from ..models import Cond
from ..plan import FILLS, DropBlocks, Plan, PlanError, ReuseEncoder, SkipSteps, StepAction, StopEarly
from ..sampling import Sampler, cond_slice
from .schedules import ShortcutError, uniform_cache_cuts, uniform_reuse_cuts
from .scoring import score_plans, seed_chunks

__all__ = ["search", "SearchConfig", "student_t", "Mechanism", "BlockCut", "EncoderReuse", "StepSkip", "MOVES",
           "mechanisms"]

Cut = Union[DropBlocks, ReuseEncoder, SkipSteps]  # what cuts compute over a range of steps


def student_t(p: float, df: int) -> float:
    """Student's t quantile ``p`` (0.5 < p < 1) with ``df`` >= 1 degrees of freedom, by Hill's
    expansion around the normal quantile (Comm. ACM 13(10), 1970) for df >= 3: within 0.5% of the
    exact value at p <= 0.95, and for df >= 5 at p <= 0.99; exact for df 1 and 2."""
    z = NormalDist().inv_cdf(p)
    if df >= 3:
        g1 = (z ** 3 + z) / 4
        g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
        g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
        return z + g1 / df + g2 / df ** 2 + g3 / df ** 3
    # exact for one and two degrees of freedom
    return math.tan(math.pi * (p - 0.5)) if df == 1 else (2 * p - 1) / math.sqrt(2 * p * (1 - p))


@dataclass(frozen=True)
class _Sched:
    """A schedule in the search: its cuts (sorted by start, descending) and an optional stop."""

    cuts: tuple
    stop: int | None

    def plan(self) -> Plan:
        return Plan(tuple(self.cuts) + ((StopEarly(self.stop),) if self.stop else ()))

    def busy(self) -> set[int]:
        return {t for c in self.cuts for t in _span(c)}

    def with_cuts(self, cuts) -> "_Sched":
        return _Sched(tuple(sorted(cuts, key=lambda c: (-c.start, repr(c)))), self.stop)


EMPTY = _Sched((), None)


def _span(c: Cut) -> set[int]:
    """The steps a cut occupies: those it changes and those it removes (a jump passes over them)."""
    return set(c.evaluated_steps()) | set(c.removed_steps())


# --- mechanisms: the ways to cut compute over a range of steps -------------------------------------
class Mechanism:
    """One way to cut compute over a range of steps."""

    reads_cache: bool = False  # its cuts read an earlier step's activations (they start below step S)

    def make(self, start: int, n: int) -> Cut:
        """A cut of this mechanism over the ``n`` steps from ``start`` (``PlanError`` if none fits)."""
        raise NotImplementedError

    def uniform(self, S: int, every: int) -> tuple:
        """The cuts of a uniform schedule (a full step every ``every`` steps), or () if none."""
        return ()

    @staticmethod
    def grow(c: Cut, K: int, grid: int) -> list[Cut]:
        """Larger versions of a cut of this kind (those that fit): longer by half a grid stride."""
        return _fits(lambda: type(c)(c.start, c.n + max(1, grid // 2)))


def _fits(make) -> list:
    try:
        return [make()]
    except PlanError:
        return []


@dataclass(frozen=True)
class BlockCut(Mechanism):
    """``DropBlocks(nb, fill)``: zeros (the paper) or the cache of the last full step (DeepCache)."""

    nb: int
    fill: str

    @property
    def reads_cache(self) -> bool:
        return self.fill == "cache"

    def make(self, start, n):
        return DropBlocks(self.nb, start, n, self.fill)

    def uniform(self, S, every):
        return uniform_cache_cuts(S, every, self.nb) if self.fill == "cache" else ()

    @staticmethod
    def grow(c, K, grid):
        """Longer, or deeper by K/6 blocks."""
        out = _fits(lambda: DropBlocks(c.nb, c.start, c.n + max(1, grid // 2), c.fill))
        if c.nb < K:
            out += _fits(lambda: DropBlocks(min(K, c.nb + max(1, K // 6)), c.start, c.n, c.fill))
        return out


@dataclass(frozen=True)
class EncoderReuse(Mechanism):
    """``ReuseEncoder``: the encoder's outputs read from the last full step (Faster Diffusion)."""

    reads_cache = True

    def make(self, start, n):
        return ReuseEncoder(start, n)

    def uniform(self, S, every):
        return uniform_reuse_cuts(S, every)


@dataclass(frozen=True)
class StepSkip(Mechanism):
    """``SkipSteps``: a jump over steps (the paper's Eq. 4)."""

    def make(self, start, n):
        return SkipSteps(start, n)


GROWS: dict[type, Callable] = {DropBlocks: BlockCut.grow, ReuseEncoder: EncoderReuse.grow, SkipSteps: StepSkip.grow}


def mechanisms(cfg: "SearchConfig", K: int) -> list[Mechanism]:
    """The mechanisms ``cfg`` allows, for a U-Net of K blocks."""
    out: list[Mechanism] = [BlockCut(nb, fill) for nb in cfg.block_counts(K) for fill in cfg.fills]
    if cfg.reuse_encoder:
        out.append(EncoderReuse())
    if cfg.skip_steps:
        out.append(StepSkip())
    return out


# --- moves: the schedules one round proposes from the current one --------------------------------
@dataclass(frozen=True)
class _Space:
    """What moves may propose: the sampler's S, the model's K, the grids and the mechanisms."""

    S: int
    K: int
    grid: int
    lengths: tuple
    min_relax: int
    stop_early: bool
    mechanisms: tuple


def later_stop(cur: _Sched, sp: _Space) -> Iterator[_Sched]:
    """A ``StopEarly`` one, two or four grid strides later (never above a cut)."""
    if not sp.stop_early:
        return
    busy = cur.busy()
    for step in (1, 2, 4):
        at = cur.stop + step * sp.grid if cur.stop else step * sp.grid
        if at < min(busy, default=sp.S + 1) and at <= sp.S:
            yield _Sched(cur.cuts, at)


def new_cut(cur: _Sched, sp: _Space) -> Iterator[_Sched]:
    """A new cut of each mechanism, length and start on the grid, where no cut (or its relax
    margin) is; a cut that reads a cache starts below the first step."""
    busy = cur.busy()
    for mech in sp.mechanisms:
        for n in sp.lengths:
            for st in range(sp.S - mech.reads_cache, 0, -sp.grid):
                try:
                    cut = mech.make(st, n)
                except PlanError:
                    continue
                span = _span(cut)
                if cur.stop and min(span) <= cur.stop:
                    continue
                near = {t for t in busy for d in range(-sp.min_relax, sp.min_relax + 1) if t + d in span}
                if span & busy or near:
                    continue
                yield cur.with_cuts(cur.cuts + (cut,))


def grown_cut(cur: _Sched, sp: _Space) -> Iterator[_Sched]:
    """One cut made larger, as its mechanism grows it, where it stays clear of the others."""
    busy = cur.busy()
    for i, c in enumerate(cur.cuts):
        for g in GROWS[type(c)](c, sp.K, sp.grid):
            if (cur.stop and min(_span(g)) <= cur.stop) or _span(g) & (busy - _span(c)):
                continue
            yield cur.with_cuts(cur.cuts[:i] + (g,) + cur.cuts[i + 1:])


MOVES = (later_stop, new_cut, grown_cut)


@dataclass(frozen=True)
class SearchConfig:
    """The settings of ``search``: what to aim for (a quality target or a compute budget), how sure
    to be, and the move set.

    Targets are on the per-sample SSIM against the baseline: ``target_mean`` (the mean),
    ``target_min`` (every sample) and ``target_quantile`` (the ``quantile``-th quantile, e.g. the
    worst 10%); any of them together. With none and no ``budget``, the target is a mean of 0.8.
    ``budget`` (a compute fraction of the baseline) asks instead for the best mean SSIM at that
    compute or less."""

    target_mean: float | None = None
    target_min: float | None = None
    target_quantile: float | None = None
    quantile: float = 0.1  # the quantile target_quantile is on
    budget: float | None = None  # compute fraction to stay within (instead of a quality target)
    confidence: float = 0.9  # a move is kept when the validation seeds' bootstrap lower bound (at this level) meets the target
    nbs: tuple | None = None  # block counts a DropBlocks move may cut (None: 1..K for K <= 8, else K/4, K/2, 3K/4, K)
    fills: tuple = ("zeros", "cache")  # DropBlocks fills
    reuse_encoder: bool = True  # ReuseEncoder moves and uniform starts
    skip_steps: bool = True  # SkipSteps moves (jump over steps, the paper's Eq. 4)
    stop_early: bool = True  # StopEarly moves
    lengths: tuple | None = None  # step counts of a new cut (None: 2, 4, 7, 10 % of S)
    grid: int | None = None  # stride of the start steps tried (None: S/25)
    min_relax: int = 0  # steps left uncut between two cuts (the relax periods)
    every: tuple = (2, 3, 4, 5, 6, 8)  # the uniform schedules' periods
    per_round: int = 12  # candidates evaluated together (one sweep)
    validate_top: int = 3  # calibration winners checked on the validation seeds per round
    max_rounds: int = 40
    seed: int = 0  # of the bootstrap: the search is deterministic

    def __post_init__(self):
        def keep(name, v):  # the checked value, normalised (a Python float or int: the config is written as JSON)
            object.__setattr__(self, name, v)

        for name in ("target_mean", "target_min", "target_quantile", "budget"):
            if getattr(self, name) is not None:
                keep(name, check_number(getattr(self, name), ShortcutError, f"search {name}", 0, 1, open_low=True))
        for name in ("quantile", "confidence"):
            keep(name, check_number(getattr(self, name), ShortcutError, f"search {name}", 0, 1, open_low=True, open_high=True))
        if self.budget is not None and self.has_target:
            raise ShortcutError("give a quality target (target_mean / target_min / target_quantile) or a compute budget, "
                                "not both")
        for name in ("per_round", "max_rounds", "validate_top"):
            keep(name, check_int(getattr(self, name), ShortcutError, f"search {name}", 1))
        if not self.every or any(isinstance(e, bool) or not isinstance(e, int) or e < 2 for e in self.every):
            raise ShortcutError(f"search every must be periods >= 2, got {self.every!r}")
        bad = [f for f in self.fills if f not in FILLS]
        if bad:
            raise ShortcutError(f"search fills must be among {', '.join(FILLS)}, got {bad[0]!r}")

    def block_counts(self, K: int) -> list[int]:
        """The nb a ``DropBlocks`` move may cut (default: 1..K for K <= 8, else K/4, K/2, 3K/4, K)."""
        return list(self.nbs or (range(1, K + 1) if K <= 8 else sorted({max(1, K // 4), K // 2, (3 * K) // 4, K})))

    @property
    def has_target(self) -> bool:
        return any(v is not None for v in (self.target_mean, self.target_min, self.target_quantile))

    @property
    def targets(self) -> dict:
        """The quality targets in force (a mean of 0.8 when neither a target nor a budget is given)."""
        if self.budget is not None:
            return {}
        t = {k: v for k, v in (("mean", self.target_mean), ("min", self.target_min),
                               ("quantile", self.target_quantile)) if v is not None}
        return t or {"mean": 0.8}

    def meets(self, ss: np.ndarray) -> bool:
        """The targets hold on these per-sample SSIMs (point estimates)."""
        t = self.targets
        return (("mean" not in t or ss.mean() >= t["mean"]) and ("min" not in t or ss.min() >= t["min"])
                and ("quantile" not in t or np.quantile(ss, self.quantile) >= t["quantile"]))

    def holds(self, ss: np.ndarray, spread: np.ndarray | None = None) -> bool:
        """The targets hold with a margin: the bootstrap lower bounds (at ``confidence``) of the
        mean and of the quantile, and the minimum itself.

        A mean target must also hold at Student's lower bound ``mean - t * s / sqrt(n)``, with the
        standard deviation ``s`` of ``ss`` and ``spread`` together (the calibration seeds' SSIMs of
        the same schedule, in the search). Per-sample SSIM has a long low tail: a few validation
        seeds, all easy, give a tight bootstrap bound on a schedule whose population mean is at the
        target; the seeds next to them may have seen the tail (docs/shortcuts.md, measured)."""
        t = self.targets
        ss = np.asarray(ss, dtype=float)
        if "min" in t and ss.min() < t["min"]:
            return False
        if "mean" in t or "quantile" in t:
            rng = np.random.default_rng(self.seed)
            boot = ss[rng.integers(0, len(ss), size=(1000, len(ss)))]
            lo = 1 - self.confidence
            if "mean" in t and np.quantile(boot.mean(axis=1), lo) < t["mean"]:
                return False
            if "mean" in t and len(ss) > 1:
                pooled = ss if spread is None else np.concatenate([ss, np.asarray(spread, dtype=float)])
                s = float(pooled.std(ddof=1))
                if ss.mean() - student_t(self.confidence, len(ss) - 1) * s / math.sqrt(len(ss)) < t["mean"]:
                    return False
            if "quantile" in t and np.quantile(np.quantile(boot, self.quantile, axis=1), lo) < t["quantile"]:
                return False
        return True

    def describe_target(self) -> str:
        if self.budget is not None:
            return f"the best mean SSIM at compute <= {self.budget:.3f} of the baseline"
        t = self.targets
        parts = [f"mean SSIM >= {t['mean']}" if "mean" in t else "", f"every sample's SSIM >= {t['min']}" if "min" in t else "",
                 f"the {self.quantile:.0%} quantile of SSIM >= {t['quantile']}" if "quantile" in t else ""]
        return " and ".join(p for p in parts if p)


class _Evaluator:
    """Per-sample SSIM of schedules on one set of seeds (``score_plans``), each schedule evaluated
    once; against the sampler's own baseline, or against ``reference`` images (then the empty
    schedule, the solver alone, is scored too)."""

    def __init__(self, sampler: Sampler, seeds, cond, progress, executor=None, chunk_size=None, workers=None,
                 reference=None):
        self.sampler, self.seeds, self.cond = sampler, list(seeds), cond
        self.progress, self.executor, self.chunk_size, self.workers = progress, executor, chunk_size, workers
        self.reference = reference
        self.known: dict[_Sched, np.ndarray] = {}
        self.evaluations = 0
        self.plans: set = set()  # every plan scored (for the minimum of evaluations)

    def scored(self, c: _Sched) -> bool:
        return self.reference is not None or bool(c.cuts or c.stop)

    def __call__(self, cands) -> list[np.ndarray]:
        todo = list(dict.fromkeys(c for c in cands if c not in self.known and self.scored(c)))
        if todo:
            plans = [c.plan() for c in todo]
            ss, spent = score_plans(self.sampler, plans, self.seeds, self.cond, executor=self.executor,
                                    chunk_size=self.chunk_size, on_evaluation=self.progress, workers=self.workers,
                                    reference=self.reference)
            self.evaluations += spent
            self.plans.update(p for p in plans if p)
            for c, row in zip(todo, ss):
                self.known[c] = row
        return [self.known[c] if self.scored(c) else np.ones(len(self.seeds)) for c in cands]



class _Search:
    """One search: the evaluators of the calibration and validation seeds, the compute of a
    schedule (FLOPs executed per U-Net action, counted once), and the rounds."""

    def __init__(self, sampler: Sampler, cfg: SearchConfig, cal: _Evaluator, val: _Evaluator | None, flops, log):
        self.cfg, self.cal, self.val, self.flops, self.say = cfg, cal, val, flops, log
        S, K = sampler.steps, sampler.model.num_blocks
        self.S, self.K = S, K
        self.space = _Space(S, K, cfg.grid or max(1, round(S / 25)),
                            tuple(cfg.lengths or sorted({max(1, round(v * S / 100)) for v in (2, 4, 7, 10)})),
                            cfg.min_relax, cfg.stop_early, tuple(mechanisms(cfg, K)))
        self.calls = sampler.calls  # U-Net calls per step (a Heun step: two)
        self.base_cost = flops.plan(Plan(), S, self.calls)
        self.history: list[dict] = []
        # the uniform schedules: where the search starts, and what its result must not fall below
        self.uniform = sorted({u for u in (_Sched(m.uniform(S, e), None) for m in self.space.mechanisms for e in cfg.every)
                               if u.cuts}, key=self.key)

    def cost(self, c: _Sched) -> float:
        return self.flops.plan(c.plan(), self.S, self.calls) / self.base_cost

    def key(self, c: _Sched):  # cheapest first; ties broken by the schedule itself (deterministic)
        return (self.cost(c), repr(c.plan()))

    def holds(self, cands) -> list[bool]:
        """The target with a margin on the validation seeds (the calibration seeds' point estimate if none)."""
        if self.val is None:
            return [self.cfg.meets(ss) for ss in self.cal(cands)]
        return [self.cfg.holds(v, spread=c) for v, c in zip(self.val(cands), self.cal(cands))]

    def quality(self, c: _Sched) -> float:
        """The estimate a result is judged by: the validation seeds' mean SSIM, else the calibration's."""
        return float((self.val or self.cal)([c])[0].mean())

    def proposals(self, cur: _Sched) -> list[_Sched]:
        return [p for move in MOVES for p in move(cur, self.space)]

    def greedy(self, cur: _Sched, accept_ok, done, label: str) -> _Sched:
        """Apply the best move (compute saved per calibration SSIM lost) that ``accept_ok`` allows,
        round after round, until ``done`` or no move is kept."""
        cfg, cal = self.cfg, self.cal
        for _ in range(cfg.max_rounds):
            if done(cur):
                break
            c_now, q_now = self.cost(cur), float(cal([cur])[0].mean())
            props = sorted({p for p in self.proposals(cur) if self.cost(p) < c_now}, key=self.key)
            kept = None
            for b in range(0, min(len(props), 3 * cfg.per_round), cfg.per_round):
                batch = props[b:b + cfg.per_round]
                try:
                    scores = cal(batch)
                except PlanError:
                    continue
                ranked = sorted(((c_now - self.cost(p)) / (max(q_now - float(ss.mean()), 0.0) + 0.005), i)
                                for i, (p, ss) in enumerate(zip(batch, scores)) if accept_ok(p, ss))
                winners = [batch[i] for _, i in reversed(ranked)][:cfg.validate_top]
                if winners:
                    ok = self.holds(winners) if cfg.budget is None else [True] * len(winners)
                    kept = next((w for w, good in zip(winners, ok) if good), None)
                if kept:
                    break
            if kept is None:
                break
            cur = kept
            ss = cal([cur])[0]
            self.history.append(dict(round=len(self.history), start=label, plan=cur.plan().to_dict(), compute=self.cost(cur),
                                     ssim_mean=float(ss.mean()), ssim_min=float(ss.min())))
            self.say(f"round {len(self.history) - 1}: compute {self.cost(cur):.3f} of the baseline, calibration mean SSIM "
                     f"{ss.mean():.3f} (min {ss.min():.3f}): {cur.plan()!r}")
        return cur

    def for_target(self) -> _Sched:
        """The cheapest uniform schedule whose target holds (calibration, then validation with a
        margin), then greedy moves that keep the target."""
        cfg, cur = self.cfg, EMPTY
        fits = [u for u, ss in zip(self.uniform, self.cal(self.uniform)) if cfg.meets(ss)]
        for b in range(0, len(fits), 4):
            got = next((u for u, good in zip(fits[b:b + 4], self.holds(fits[b:b + 4])) if good), None)
            if got:
                cur = got
                break
        if cur.cuts:
            self.say(f"start: uniform {cur.plan()!r}, compute {self.cost(cur):.3f}")
        return self.greedy(cur, lambda p, ss: cfg.meets(ss), lambda c: False, "uniform" if cur.cuts else "empty")

    def for_budget(self) -> _Sched:
        """From the uniform schedules just above the budget that beat the best uniform schedule
        within it, moves that keep above that, until within the budget; the best on validation."""
        cfg, cal, cost = self.cfg, self.cal, self.cost
        B = cfg.budget + 1e-9
        cal(self.uniform)  # every uniform schedule scored in one call: one baseline, shared prefixes
        within = [u for u in self.uniform if cost(u) <= B]
        best_in = max(within, key=lambda u: (float(cal([u])[0].mean()), -cost(u)), default=None) if within else None
        floor = float(cal([best_in])[0].mean()) if best_in else -1.0
        above = sorted((u for u in self.uniform if cost(u) > B), key=lambda u: -cost(u))
        above = [u for u in reversed(above) if float(cal([u])[0].mean()) > floor][:2] or ([EMPTY] if not best_in else [])
        finals = [best_in] if best_in else []
        for u in above:
            self.say(f"start: {u.plan()!r}, compute {cost(u):.3f}")
            got = self.greedy(u, lambda p, ss: float(ss.mean()) > floor, lambda c: cost(c) <= B, "uniform")
            if cost(got) <= B:
                finals.append(got)
        if not finals:
            raise ShortcutError(f"no schedule within the budget ({cfg.budget:.3f} of the baseline's compute) was found: "
                                f"the cheapest uniform schedule needs {min(cost(u) for u in self.uniform):.3f}")
        return max(finals, key=lambda c: (self.quality(c), -cost(c)))

    def uniform_rival(self, cur: _Sched) -> _Sched | None:
        """The best uniform schedule of equal or lower compute (on the validation seeds)."""
        rivals = [u for u in self.uniform if self.cost(u) <= self.cost(cur) + 1e-9 and u != cur]
        (self.val or self.cal)(rivals)  # scored in one call (one baseline, shared prefixes), then read back
        return max(rivals, key=lambda u: (self.quality(u), -self.cost(u)), default=None)


def _minimum(sampler: Sampler, ev: _Evaluator) -> int:
    """The fewest U-Net evaluations that score every plan ``ev`` scored (each distinct (history, step,
    action) once, on one chunk of its seeds per executor worker): what the search would spend with
    one tree over all its rounds."""
    from ..sweep import count_evaluations

    if not ev.evaluations:
        return 0
    minimum, _ = count_evaluations(sorted(ev.plans, key=repr), sampler.steps, sampler.calls)
    return minimum * len(seed_chunks(len(ev.seeds), ev.executor, ev.chunk_size))


def search(sampler: Sampler, seeds: list[int], cond: Cond = None, config: SearchConfig | None = None, *,
           validation_seeds: list[int] | None = None, validation_cond: Cond = None, progress=None, log=None,
           executor=None, chunk_size: int | None = None, reference=None, validation_reference=None,
           **settings) -> dict:
    """Greedy cut-relax-cut search for little compute at a quality target (or for the best
    quality within a compute budget), calibrated on ``seeds`` and checked on ``validation_seeds``.

    Target mode: it starts from the cheapest uniform schedule (DeepCache-style cache cuts every few
    steps, or reusing the encoder every few steps) that meets the target, or from nothing. Each round
    proposes moves on the current schedule (a new ``DropBlocks`` of nb blocks over n steps with zeros
    or the cache, a new ``ReuseEncoder`` or ``SkipSteps`` range, a longer or deeper cut, a later
    ``StopEarly``), ranks them by FLOPs saved (executed FLOPs per U-Net action, counted once),
    evaluates the cheapest ``per_round`` together with the sweep engine (shared prefixes) on the
    calibration seeds, and keeps, among those that meet the target there, the one that saves the
    most compute per SSIM lost whose target also holds on the validation seeds with a margin
    (``SearchConfig.holds``). Stops when no move is kept.

    Budget mode: it starts from the uniform schedules just above the budget that beat the best
    uniform schedule within it, and removes compute by the same moves, the best compute saved per
    SSIM lost first, until within the budget; then keeps the best on the validation seeds.

    Either way the result is never below the best uniform schedule of equal or lower compute on the
    validation seeds: that schedule is returned instead when it is better (``uniform_rival``).

    ``reference`` / ``validation_reference`` (images, one per calibration / validation seed): score
    against these instead of the sampler's own output (the frontier search's stacked candidates,
    against its reference sampler); the empty schedule is then the solver alone, scored like the rest.

    ``executor`` (``unetscope.executor``; None: this process): where each batch of candidates is
    scored, in chunks of ``chunk_size`` seeds (None: one chunk per worker); the search itself and
    its choices stay here, so the result does not depend on where the scores were computed.
    ``settings`` are ``SearchConfig``'s fields, as keywords."""
    from ..flops import FlopTable

    cfg = replace(config or SearchConfig(), **settings) if settings else (config or SearchConfig())
    if not getattr(sampler, "jumps", True):  # a scheduler's walk is its own: no SkipSteps or StopEarly moves
        cfg = replace(cfg, skip_steps=False, stop_early=False)
    m, K = sampler.model, sampler.model.num_blocks
    x1 = torch.zeros(1, *m.sample_shape, device=m.device, dtype=m.dtype)
    t1 = torch.full((1,), m.schedule.num_train_timesteps // 2, dtype=torch.long, device=m.device)
    c1 = m.make_cond(cond_slice(cond, [0], len(seeds)), 1)
    flops = FlopTable(m.runner, x1, t1, c1, sampler.denoiser.rows_per_sample)
    workers: dict = {}  # host/pid -> the work each worker did
    cal = _Evaluator(sampler, seeds, cond, progress, executor, chunk_size, workers, reference)
    val = _Evaluator(sampler, validation_seeds, validation_cond, progress, executor, chunk_size, workers,
                     validation_reference) if validation_seeds else None
    run = _Search(sampler, cfg, cal, val, flops, log or (lambda _m: None))
    cur = run.for_target() if cfg.budget is None else run.for_budget()
    # never below the best uniform schedule of equal or lower compute (on the validation seeds)
    rival = run.uniform_rival(cur)
    if rival is not None and run.quality(rival) > run.quality(cur) and (cfg.budget is not None or cfg.meets((val or cal)([rival])[0])):
        run.say(f"the uniform schedule {rival.plan()!r} is better on the validation seeds at no more compute: it is the result")
        cur = rival
    ss_cal = cal([cur])[0]
    ss_val = val([cur])[0] if val is not None else None
    return dict(plan=cur.plan(), predicted_compute=run.cost(cur), history=run.history, target=cfg.describe_target(),
                calibration_ssim_mean=float(ss_cal.mean()), calibration_ssim_min=float(ss_cal.min()),
                validation_ssim_mean=None if ss_val is None else float(ss_val.mean()),
                validation_ssim_min=None if ss_val is None else float(ss_val.min()),
                validation_holds=None if ss_val is None else bool(cfg.budget is not None or cfg.holds(ss_val, spread=ss_cal)),
                uniform_rival=None if rival is None else dict(plan=rival.plan().to_dict(), compute=run.cost(rival),
                                                             ssim_mean=run.quality(rival)),
                evaluations=cal.evaluations + (val.evaluations if val else 0), workers=workers,
                evaluations_minimum=_minimum(sampler, cal) + (_minimum(sampler, val) if val else 0),
                flops_per_nb=[flops(StepAction(drop_blocks=nb)) for nb in range(K + 1)])
