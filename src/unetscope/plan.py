"""Interventions on a sampling run, as data: ``SkipSteps``, ``ZeroSkips``, ``DropBlocks``,
``StopEarly``, ``ReuseEncoder`` and ``AdaptiveCache``.

Steps count down like the paper (``t = S..1``; the evaluation at ``t`` makes ``x_{t-1}``). Each
intervention folds its own effect into one step's ``StepAction`` (``apply``) and registers itself by
its class name, so plans, JSON/YAML files and the CLI's ``--plan`` know every intervention without
a list kept by hand. A ``Plan`` is an ordered list of interventions, validated on construction
(contradictions) and against a model and sampler (``check(steps, num_blocks)``: ranges and cached
activations), round-trips through JSON, and is walked step by step by ``Plan.walk`` only.

Cached activations are named by their site: ``"E[i]"`` (encoder unit i's output, skip i+1 from the
top), ``"M"`` (the middle's output) and ``"D[j]"`` (decoder unit j's output). ``AdaptiveCache``
also keeps per-row state between its steps under the names in ``ADAPTIVE_STATE``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, NamedTuple

from .checks import as_int
from .errors import UnetscopeError

__all__ = ["PlanError", "Intervention", "SkipSteps", "ZeroSkips", "DropBlocks", "StopEarly", "ReuseEncoder",
           "AdaptiveCache", "Plan", "StepAction", "PlanStep", "FILLS", "NO_ACTION", "INTERVENTIONS", "ADAPTIVE_STATE", "site",
           "intervention_from_dict"]

FILLS = ("zeros", "cache")
# AdaptiveCache's per-row state, kept with the cached activations: the indicator's source at the
# last step (E[K-nb-1]'s output, or the input for nb = K), the accumulated relative change since the
# deep part last ran, and how many steps in a row the deep part was read from the cache
ADAPTIVE_STATE = ("adaptive.prev", "adaptive.acc", "adaptive.reused")


class PlanError(UnetscopeError, ValueError):
    """An intervention or plan that is malformed, contradictory or out of range for the model."""


def site(kind: str, index: int | None = None) -> str:
    """The name of a cached activation: ``site("E", 0) == "E[0]"``, ``site("M") == "M"``."""
    return kind if index is None else f"{kind}[{index}]"


def _int_field(obj, name: str, low: int, high: int | None = None, what: str = "") -> None:
    raw = getattr(obj, name)
    cls = type(obj).__name__
    value = as_int(raw)
    if value is None:
        raise PlanError(f"{cls}.{name} must be an integer, got {raw!r}")
    if type(raw) is not int:  # np.int64(5), torch.tensor(5): stored as the int they hold
        object.__setattr__(obj, name, value)
    if value < low or (high is not None and value > high):
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise PlanError(f"{cls}.{name} must be in {rng}{what}, got {value}")


# --- what one step does ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepAction:
    """What the sampler does at one step: the U-Net's interventions, a jump, or a stop.

    The runner, ``Sampler.step`` and the sweep engine read only this; ``unet`` is the part that
    changes the U-Net evaluation (steps with equal ``unet`` are stacked into one batch)."""

    zero_skips: int = 0  # ZeroSkips.ns: skips 1..ns from the top zeroed where consumed
    drop_blocks: int = 0  # DropBlocks.nb: E[K-nb..], M and D[..nb-1] not computed
    fill: str = "zeros"  # what D[nb] receives in place of D[nb-1]'s output
    reuse_encoder: bool = False  # E[..] and M not computed: their cached outputs are read
    adaptive: int = 0  # AdaptiveCache.nb: per sample, the bottom nb blocks computed or read from the cache
    threshold: float = 0.0  # AdaptiveCache: the accumulated relative change under which the cache is read
    max_reuse: int = 0  # AdaptiveCache: at most this many cache reads in a row (0: no limit)
    adaptive_first: bool = False  # AdaptiveCache's first step: every sample computes, the state starts
    jump: int = 0  # evaluations removed after this one (SkipSteps.n)
    stop: bool = False  # StopEarly: return this step's x_est0

    @property
    def unet(self) -> "StepAction":
        """The U-Net's part of the action (no jump, no stop; the fill only where blocks drop)."""
        return StepAction(zero_skips=self.zero_skips, drop_blocks=self.drop_blocks,
                          fill=self.fill if self.drop_blocks else "zeros", reuse_encoder=self.reuse_encoder,
                          adaptive=self.adaptive, threshold=self.threshold, max_reuse=self.max_reuse,
                          adaptive_first=self.adaptive_first)

    @property
    def decides(self) -> bool:
        """An ``AdaptiveCache`` step past the first: each sample decides whether its deep part runs."""
        return bool(self.adaptive) and not self.adaptive_first

    @property
    def changes_unet(self) -> bool:
        return self.unet != NO_ACTION

    def needs(self, K: int) -> list[str]:
        """The cached activations this evaluation reads instead of computing (sites)."""
        if self.decides:
            return [site("D", self.adaptive - 1), *ADAPTIVE_STATE]
        nb = self.drop_blocks
        out = [site("D", nb - 1)] if nb and self.fill == "cache" else []
        if self.reuse_encoder:
            out += [site("E", i) for i in range(K - nb)] + ([] if nb else [site("M")])
        return out

    def computes(self, K: int) -> list[str]:
        """The units this evaluation runs for every sample (sites), top encoder to top decoder. An
        ``AdaptiveCache`` step runs its deep part, ``deep_units``, only for the samples that decide to."""
        nb = self.drop_blocks or (self.adaptive if self.decides else 0)
        enc = [] if self.reuse_encoder else [site("E", i) for i in range(K - nb)]
        mid = [] if nb or self.reuse_encoder else [site("M")]
        return enc + mid + [site("D", j) for j in range(nb, K)]

    def deep_units(self) -> int:
        """Units of the part an ``AdaptiveCache`` step computes or reads per sample (2 nb + 1)."""
        return 2 * self.adaptive + 1 if self.decides else 0

    def produces(self, K: int) -> list[str]:
        """What this evaluation leaves for later steps to read: the sites it computes, and under
        ``AdaptiveCache`` the deep output (computed or carried per sample) and the state."""
        out = self.computes(K)
        if self.adaptive:
            out = out + ([site("D", self.adaptive - 1)] if self.decides else []) + list(ADAPTIVE_STATE)
        return out

    def take(self, cache: Mapping[str, Any], K: int, t: int) -> dict[str, Any]:
        """The cached activations this evaluation needs, from ``cache`` (site -> tensor); the one
        place that says a fill is missing."""
        missing = [s for s in self.needs(K) if s not in cache]
        if missing:
            raise PlanError(f"{self.describe()} at step {t}: no earlier step computed {', '.join(missing)} to reuse "
                            "(the first step, or only cuts that skip it before); start it later")
        return {s: cache[s] for s in self.needs(K)}

    def describe(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if getattr(self, f.name) != f.default]
        return f"StepAction({', '.join(parts)})"


NO_ACTION = StepAction()


class PlanStep(NamedTuple):
    """One evaluation of a plan's walk: its step, what it does, and the step it lands on."""

    t: int
    action: StepAction
    land: int  # t - 1 - jump; 0 is the output; meaningless after a stop


# --- interventions -----------------------------------------------------------------------------------
INTERVENTIONS: dict[str, type] = {}  # class name -> class, filled as each intervention is defined


class Intervention:
    """Base of the interventions: each one folds its effect into a step's ``StepAction``.

    A subclass registers itself by its class name (JSON's ``"type"``); it implements
    ``evaluated_steps`` and ``apply``, and range checks that need S and K in ``check``."""

    kind: ClassVar[str]

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if not cls.__name__.startswith("_"):
            INTERVENTIONS[cls.__name__] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **asdict(self)}

    def evaluated_steps(self) -> range:
        """The steps whose evaluation this intervention changes (descending)."""
        raise NotImplementedError

    def removed_steps(self) -> range:
        """The steps whose evaluation this intervention removes (a jump passes over them)."""
        return range(0)

    def apply(self, action: StepAction, t: int) -> StepAction:
        """This intervention's effect on the evaluation at step ``t`` (one of ``evaluated_steps``)."""
        raise NotImplementedError

    def check(self, steps: int, num_blocks: int) -> None:
        """Range checks that need the sampler's ``S`` and the model's ``K``."""
        cls = type(self).__name__
        top = max(self.evaluated_steps(), default=0)
        if top > steps:
            raise PlanError(f"{cls}.start must be in 1..{steps} (the sampler's steps), got {top}")


class _Range(Intervention):
    """An intervention on the ``n`` evaluations at steps ``start .. start-n+1`` (Eq. 5)."""

    def _check_range(self) -> None:
        _int_field(self, "start", 1)
        _int_field(self, "n", 1, self.start, f" for start={self.start} (steps end at 1)")

    def evaluated_steps(self) -> range:
        return range(self.start, self.start - self.n, -1)


@dataclass(frozen=True)
class SkipSteps(Intervention):
    """Remove the ``n`` evaluations at steps ``start-1 .. start-n``: the one at ``start`` jumps to
    ``x_{start-n-1}`` by the paper's Eq. 4. (Our reading of the paper's ``n``; see docs.)"""

    start: int
    n: int = 1
    kind: ClassVar[str] = "skip_steps"

    def __post_init__(self):
        _int_field(self, "start", 2, what=" (a jump needs a step to land on)")
        _int_field(self, "n", 1, self.start - 1, f" for start={self.start} (the jump lands on step start-n-1 >= 0)")

    def evaluated_steps(self) -> range:
        return range(self.start, self.start - 1, -1)

    def removed_steps(self) -> range:
        return range(self.start - 1, self.start - self.n - 1, -1)

    def apply(self, action: StepAction, t: int) -> StepAction:
        return replace(action, jump=self.n)


@dataclass(frozen=True)
class ZeroSkips(_Range):
    """Zero the top ``ns`` skip connections where they are consumed, at the ``n`` evaluations
    ``start .. start-n+1`` (the paper's Eq. 5, Fig. 2c)."""

    ns: int
    start: int
    n: int = 1
    kind: ClassVar[str] = "zero_skips"

    def __post_init__(self):
        _int_field(self, "ns", 1)
        self._check_range()

    def apply(self, action: StepAction, t: int) -> StepAction:
        return replace(action, zero_skips=self.ns)

    def check(self, steps: int, num_blocks: int) -> None:
        super().check(steps, num_blocks)
        _int_field(self, "ns", 1, num_blocks, " (the model's skip connections K)")


@dataclass(frozen=True)
class DropBlocks(_Range):
    """Skip the bottom ``nb`` blocks (encoder and decoder units and the middle) at the ``n``
    evaluations ``start .. start-n+1``; ``D[nb]`` gets zeros (the paper, Fig. 2b) or, with
    ``fill="cache"``, the activation cached at the last step that computed it (DeepCache)."""

    nb: int
    start: int
    n: int = 1
    fill: str = "zeros"
    kind: ClassVar[str] = "drop_blocks"

    def __post_init__(self):
        _int_field(self, "nb", 1)
        self._check_range()
        if self.fill not in FILLS:
            raise PlanError(f"DropBlocks.fill must be one of {', '.join(FILLS)}, got {self.fill!r}")

    def apply(self, action: StepAction, t: int) -> StepAction:
        return replace(action, drop_blocks=self.nb, fill=self.fill)

    def check(self, steps: int, num_blocks: int) -> None:
        super().check(steps, num_blocks)
        _int_field(self, "nb", 1, num_blocks, " (the model's blocks K)")


@dataclass(frozen=True)
class ReuseEncoder(_Range):
    """Encoder propagation (Faster Diffusion, Li et al. 2023): at the ``n`` evaluations ``start ..
    start-n+1`` the encoder units and the middle are not run; the decoder reads their outputs (the
    skips, and ``M``'s output for ``D[0]``) cached at the last step that computed them, and runs
    with the current step's time embedding. Needs an earlier full evaluation."""

    start: int
    n: int = 1
    kind: ClassVar[str] = "reuse_encoder"

    def __post_init__(self):
        self._check_range()

    def apply(self, action: StepAction, t: int) -> StepAction:
        return replace(action, reuse_encoder=True)


@dataclass(frozen=True)
class AdaptiveCache(_Range):
    """Per-sample caching of the bottom ``nb`` blocks (beyond the paper; the U-Net counterpart of
    First-Block-Cache and TeaCache), on the ``n`` evaluations ``start .. start-n+1`` (default: from
    the first step to the last).

    At each step of the range the shallow encoder ``E[0..K-nb-1]`` runs for every sample. A sample's
    indicator is the relative L1 change of ``E[K-nb-1]``'s output from the step before (for nb = K,
    where no encoder unit runs: of the U-Net's input ``x_t``), accumulated since its deep part last
    ran. Under ``threshold`` (and fewer than ``max_reuse`` reads in a row, None: no limit) the
    sample reads the deep part's cached output (``D[nb-1]``'s, as ``DropBlocks(fill="cache")``);
    the others run it, and only their rows go through it. The range's first step computes for
    every sample. Guidance's two rows of a sample decide together; ``threshold=0`` is the
    unintervened sampler."""

    nb: int
    threshold: float
    start: int | None = None
    n: int | None = None
    max_reuse: int | None = None
    kind: ClassVar[str] = "adaptive_cache"

    def __post_init__(self):
        _int_field(self, "nb", 1)
        th = self.threshold
        if isinstance(th, bool) or not _is_real(th):
            raise PlanError(f"AdaptiveCache.threshold must be a number >= 0, got {th!r}")
        th = float(th)
        if not th >= 0 or th == float("inf"):
            raise PlanError(f"AdaptiveCache.threshold must be a finite number >= 0, got {self.threshold!r}")
        object.__setattr__(self, "threshold", th)
        if self.max_reuse is not None:
            _int_field(self, "max_reuse", 1)
        if self.start is not None:
            _int_field(self, "start", 1)
            if self.n is not None:
                _int_field(self, "n", 1, self.start, f" for start={self.start} (steps end at 1)")
        elif self.n is not None:
            _int_field(self, "n", 1)

    def bound(self, steps: int) -> "AdaptiveCache":
        """With ``start`` and ``n`` filled in for a sampler of ``steps`` (S): from S, to step 1."""
        st = steps if self.start is None else self.start
        return replace(self, start=st, n=st if self.n is None else self.n)

    def evaluated_steps(self) -> range:
        if self.start is None or self.n is None:
            raise PlanError("AdaptiveCache without start or n has no steps until the plan is checked against a sampler "
                            "(Plan.check(steps, K))")
        return range(self.start, self.start - self.n, -1)

    def apply(self, action: StepAction, t: int) -> StepAction:
        return replace(action, adaptive=self.nb, threshold=self.threshold, max_reuse=self.max_reuse or 0,
                       adaptive_first=t == self.start)

    def check(self, steps: int, num_blocks: int) -> None:
        super().check(steps, num_blocks)
        _int_field(self, "nb", 1, num_blocks, " (the model's blocks K)")


def _is_real(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return not isinstance(v, (str, bytes))


@dataclass(frozen=True)
class StopEarly(Intervention):
    """Stop after the evaluation at step ``at`` and return its ``x_est0`` (the paper skips the
    final 17 steps, Fig. 11)."""

    at: int
    kind: ClassVar[str] = "stop_early"

    def __post_init__(self):
        _int_field(self, "at", 1)

    def evaluated_steps(self) -> range:
        return range(self.at, self.at - 1, -1)

    def apply(self, action: StepAction, t: int) -> StepAction:
        return replace(action, stop=True)

    def check(self, steps: int, num_blocks: int) -> None:
        if self.at > steps:
            raise PlanError(f"StopEarly.at must be in 1..{steps} (the sampler's steps), got {self.at}")


# --- plans -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """An ordered list of interventions; empty means the unintervened baseline."""

    interventions: tuple = field(default_factory=tuple)

    def __post_init__(self):
        items = self.interventions
        if isinstance(items, Intervention):  # Plan(DropBlocks(...)): a plan of one
            items = (items,)
        elif isinstance(items, (str, bytes, Mapping)) or not hasattr(items, "__iter__"):
            raise PlanError(f"a Plan takes an intervention or a list of them ({', '.join(INTERVENTIONS)}); "
                            f"got {items!r}")
        items = tuple(items)
        for it in items:
            if not isinstance(it, Intervention):
                raise PlanError(f"a Plan holds interventions ({', '.join(INTERVENTIONS)}); got {it!r}")
        object.__setattr__(self, "interventions", items)
        self._contradictions()

    def __iter__(self):
        return iter(self.interventions)

    def __len__(self) -> int:
        return len(self.interventions)

    def __bool__(self) -> bool:
        return bool(self.interventions)

    def _contradictions(self) -> None:
        seen: dict[tuple[str, int], Intervention] = {}
        items = [it for it in self.interventions if not _unbound(it)]  # an open AdaptiveCache: checked once bound
        removed = {t: it for it in items for t in it.removed_steps()}
        stops = [it for it in self.interventions if isinstance(it, StopEarly)]
        if len(stops) > 1:
            raise PlanError(f"a plan can stop early only once; got {', '.join(map(repr, stops))}")
        for it in items:
            for t in it.evaluated_steps():
                if t in removed:
                    raise PlanError(f"{it!r} intervenes at step {t}, which {removed[t]!r} removes")
                other = seen.get((it.kind, t))
                if other is not None:
                    raise PlanError(f"{it!r} and {other!r} both set {type(it).__name__} at step {t}")
                seen[(it.kind, t)] = it
        for (kind, t), it in seen.items():  # AdaptiveCache decides the U-Net's evaluation alone
            if kind == "adaptive_cache":
                other = next((o for (k2, t2), o in seen.items() if t2 == t and k2 in _UNET_KINDS and o is not it), None)
                if other is not None:
                    raise PlanError(f"{it!r} and {other!r} both change the U-Net at step {t}; AdaptiveCache's steps take "
                                    "no other U-Net intervention")
        if stops:
            at = stops[0].at
            for it in items:
                if it is stops[0]:
                    continue
                low = min(min(it.evaluated_steps()), min(it.removed_steps(), default=at))
                if it.removed_steps() and (at in removed or at == max(it.evaluated_steps())):
                    raise PlanError(f"StopEarly(at={at}) falls inside {it!r} (its jump starts at or passes step {at}); "
                                    "stop above the jump or after it lands")
                if low < at:
                    raise PlanError(f"{it!r} reaches step {low}, after StopEarly(at={at}) has stopped the run")

    def actions(self) -> dict[int, StepAction]:
        """Per-step actions for the steps that differ from the baseline (each intervention folds
        its effect in, in the plan's order)."""
        acts: dict[int, StepAction] = {}
        for it in self.interventions:
            for t in it.evaluated_steps():
                acts[t] = it.apply(acts.get(t, NO_ACTION), t)
        return acts

    def bound(self, steps: int) -> "Plan":
        """This plan for a sampler of ``steps`` (S): an ``AdaptiveCache`` without ``start`` or ``n``
        gets its range (from step S, to step 1)."""
        if not any(_unbound(it) for it in self.interventions):
            return self
        return Plan(tuple(it.bound(steps) if _unbound(it) else it for it in self.interventions))

    def walk(self, steps: int, start: int | None = None) -> Iterator[PlanStep]:
        """Every evaluation the plan makes, from ``x_S`` (or from step ``start``) down to the output:
        the one walker over a plan's steps (jumps land past removed steps; a stop ends the walk)."""
        acts, t = self.bound(steps).actions(), steps if start is None else int(start)
        while t >= 1:
            a = acts.get(t, NO_ACTION)
            land = t - 1 - a.jump
            yield PlanStep(t, a, land)
            if a.stop:
                return
            t = land

    def check(self, steps: int, num_blocks: int) -> "Plan":
        """Validate against a sampler's ``steps`` (S) and a model's ``num_blocks`` (K): ranges, and
        that every cached activation a step reads was computed at an earlier step. Returns the plan
        bound to ``steps`` (``bound``)."""
        self = self.bound(steps)
        for it in self.interventions:
            it.check(steps, num_blocks)
        computed: set[str] = set()
        for st in self.walk(steps):
            missing = [s for s in st.action.needs(num_blocks) if s not in computed]
            if missing:
                its = [it for it in self.interventions if st.t in it.evaluated_steps()]
                what = " and ".join(map(repr, its)) or st.action.describe()
                raise PlanError(f"{what} at step {st.t}: no earlier step computes {', '.join(missing)} to reuse "
                                "(the first step, or only cuts that skip it before); start it later")
            computed.update(st.action.produces(num_blocks))
        return self

    def first_step(self) -> int | None:
        """The highest step whose evaluation differs from the baseline (None: empty plan)."""
        tops = [max(it.evaluated_steps()) for it in self.interventions]
        return max(tops) if tops else None

    @property
    def stop_at(self) -> int | None:
        return next((it.at for it in self.interventions if isinstance(it, StopEarly)), None)

    def cache_sites(self, num_blocks: int) -> set[str]:
        """Every cached activation a step of this plan reads: earlier steps must keep them."""
        return {s for a in self.actions().values() for s in a.needs(num_blocks)}

    def reads_cache(self) -> bool:
        return any(a.needs(1) or a.reuse_encoder or a.adaptive for a in self.actions().values())

    # serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"interventions": [it.to_dict() for it in self.interventions]}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, obj: Any, meta: Collection[str] = ()) -> "Plan":
        """A plan from ``{"interventions": [...]}`` or a bare list. Other top-level keys are refused
        (a misspelled ``"intervention"`` would otherwise be ignored), except the names in ``meta``
        (a schedule file's own metadata, which the plan does not read)."""
        if isinstance(obj, dict):
            extra = sorted((k for k in obj if k != "interventions" and k not in meta), key=str)
            if extra:
                allowed = ", ".join(["interventions", *sorted(meta)])
                raise PlanError(f"a plan has no key {extra[0]!r}; it takes {allowed}")
            items = obj.get("interventions")
        else:
            items = obj
        if not isinstance(items, list):
            raise PlanError('a plan is {"interventions": [...]} or a list of interventions')
        return cls(tuple(intervention_from_dict(d) for d in items))

    @classmethod
    def from_json(cls, text: str, meta: Collection[str] = ()) -> "Plan":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanError(f"plan is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        return cls.from_dict(obj, meta)

    def __repr__(self) -> str:
        return f"Plan([{', '.join(map(repr, self.interventions))}])"


_UNET_KINDS = ("zero_skips", "drop_blocks", "reuse_encoder", "adaptive_cache")


def _unbound(it) -> bool:
    return isinstance(it, AdaptiveCache) and (it.start is None or it.n is None)


def intervention_from_dict(d: Any) -> Intervention:
    """One intervention from its JSON object (``{"type": "DropBlocks", "nb": 2, ...}``)."""
    if not isinstance(d, dict) or "type" not in d:
        raise PlanError(f'each intervention is an object with a "type" ({", ".join(INTERVENTIONS)}); got {d!r}')
    cls = INTERVENTIONS.get(d["type"]) if isinstance(d["type"], str) else None
    if cls is None:
        raise PlanError(f"intervention type must be one of {', '.join(INTERVENTIONS)}; got {d['type']!r}")
    names = {f.name for f in fields(cls)}
    extra = sorted(set(d) - names - {"type"})
    if extra:
        raise PlanError(f"{cls.__name__} takes {', '.join(sorted(names))}; unknown field {extra[0]!r}")
    try:
        return cls(**{k: v for k, v in d.items() if k != "type"})
    except TypeError:
        missing = sorted(f.name for f in fields(cls) if f.name not in d and f.default is f.default_factory)
        raise PlanError(f"{cls.__name__} needs {', '.join(missing)}") from None
