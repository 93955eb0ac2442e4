"""Interventions on a sampling run, as data: ``SkipSteps``, ``ZeroSkips``, ``DropBlocks``, ``StopEarly``.

Steps count down like the paper (``t = S..1``; the evaluation at ``t`` makes ``x_{t-1}``). A ``Plan``
is an ordered list of interventions, validated on construction (contradictions) and against a
model and sampler (``check(steps, num_blocks)``: ranges), and round-trips through JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Union

__all__ = ["PlanError", "SkipSteps", "ZeroSkips", "DropBlocks", "StopEarly", "Plan", "StepAction", "FILLS"]

FILLS = ("zeros", "cache")


class PlanError(ValueError):
    """An intervention or plan that is malformed, contradictory or out of range for the model."""


def _int_field(obj, name: str, low: int, high: int | None = None, what: str = "") -> None:
    value = getattr(obj, name)
    cls = type(obj).__name__
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanError(f"{cls}.{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise PlanError(f"{cls}.{name} must be in {rng}{what}, got {value}")


class _Intervention:
    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **asdict(self)}

    def evaluated_steps(self) -> range:
        """The steps whose U-Net evaluation this intervention changes (descending)."""
        raise NotImplementedError

    def check(self, steps: int, num_blocks: int) -> None:
        """Range checks that need the sampler's ``S`` and the model's ``K``."""
        cls = type(self).__name__
        top = max(self.evaluated_steps(), default=0)
        if top > steps:
            raise PlanError(f"{cls}.start must be in 1..{steps} (the sampler's steps), got {top}")


@dataclass(frozen=True)
class SkipSteps(_Intervention):
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


@dataclass(frozen=True)
class ZeroSkips(_Intervention):
    """Zero the top ``ns`` skip connections where they are consumed, at the ``n`` evaluations
    ``start .. start-n+1`` (the paper's Eq. 5, Fig. 2c)."""

    ns: int
    start: int
    n: int = 1
    kind: ClassVar[str] = "zero_skips"

    def __post_init__(self):
        _int_field(self, "ns", 1)
        _int_field(self, "start", 1)
        _int_field(self, "n", 1, self.start, f" for start={self.start} (steps end at 1)")

    def evaluated_steps(self) -> range:
        return range(self.start, self.start - self.n, -1)

    def check(self, steps: int, num_blocks: int) -> None:
        super().check(steps, num_blocks)
        _int_field(self, "ns", 1, num_blocks, " (the model's skip connections K)")


@dataclass(frozen=True)
class DropBlocks(_Intervention):
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
        _int_field(self, "start", 1)
        _int_field(self, "n", 1, self.start, f" for start={self.start} (steps end at 1)")
        if self.fill not in FILLS:
            raise PlanError(f"DropBlocks.fill must be one of {', '.join(FILLS)}, got {self.fill!r}")

    def evaluated_steps(self) -> range:
        return range(self.start, self.start - self.n, -1)

    def check(self, steps: int, num_blocks: int) -> None:
        super().check(steps, num_blocks)
        _int_field(self, "nb", 1, num_blocks, " (the model's blocks K)")


@dataclass(frozen=True)
class StopEarly(_Intervention):
    """Stop after the evaluation at step ``at`` and return its ``x_est0`` (the paper skips the
    final 17 steps, Fig. 11)."""

    at: int
    kind: ClassVar[str] = "stop_early"

    def __post_init__(self):
        _int_field(self, "at", 1)

    def evaluated_steps(self) -> range:
        return range(self.at, self.at - 1, -1)

    def check(self, steps: int, num_blocks: int) -> None:
        if self.at > steps:
            raise PlanError(f"StopEarly.at must be in 1..{steps} (the sampler's steps), got {self.at}")


Intervention = Union[SkipSteps, ZeroSkips, DropBlocks, StopEarly]
_TYPES = {c.__name__: c for c in (SkipSteps, ZeroSkips, DropBlocks, StopEarly)}


@dataclass(frozen=True)
class StepAction:
    """What the sampler does at one step: the U-Net's interventions, a jump, or a stop."""

    zero_skips: int = 0
    drop_blocks: int = 0
    fill: str = "zeros"
    jump: int = 0  # evaluations removed after this one (SkipSteps.n)
    stop: bool = False

    @property
    def unet_key(self) -> tuple:
        """Steps with equal keys run the U-Net identically (batching across plans)."""
        return (self.zero_skips, self.drop_blocks, self.fill if self.drop_blocks else "zeros")


@dataclass(frozen=True)
class Plan:
    """An ordered list of interventions; empty means the unintervened baseline."""

    interventions: tuple = field(default_factory=tuple)

    def __post_init__(self):
        items = tuple(self.interventions)
        for it in items:
            if not isinstance(it, tuple(_TYPES.values())):
                raise PlanError(f"a Plan holds SkipSteps, ZeroSkips, DropBlocks or StopEarly; got {it!r}")
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
        removed: dict[int, SkipSteps] = {}
        for it in self.interventions:
            if isinstance(it, SkipSteps):
                for t in it.removed_steps():
                    removed[t] = it
        stops = [it for it in self.interventions if isinstance(it, StopEarly)]
        if len(stops) > 1:
            raise PlanError(f"a plan can stop early only once; got {', '.join(map(repr, stops))}")
        for it in self.interventions:
            for t in it.evaluated_steps():
                if t in removed:
                    raise PlanError(f"{it!r} intervenes at step {t}, which {removed[t]!r} removes")
                other = seen.get((it.kind, t))
                if other is not None:
                    raise PlanError(f"{it!r} and {other!r} both set {type(it).__name__} at step {t}")
                seen[(it.kind, t)] = it
        if stops:
            at = stops[0].at
            for it in self.interventions:
                if it is stops[0]:
                    continue
                low = min(it.evaluated_steps())
                if isinstance(it, SkipSteps):
                    low = it.start - it.n
                    if at in removed or at == it.start:
                        raise PlanError(f"StopEarly(at={at}) falls inside {it!r} (its jump starts at or passes step {at}); "
                                        "stop above the jump or after it lands")
                if low < at:
                    raise PlanError(f"{it!r} reaches step {low}, after StopEarly(at={at}) has stopped the run")

    def check(self, steps: int, num_blocks: int) -> "Plan":
        """Validate against a sampler's ``steps`` (S) and a model's ``num_blocks`` (K)."""
        for it in self.interventions:
            it.check(steps, num_blocks)
        self._check_cache_fills(steps)
        return self

    def _check_cache_fills(self, steps: int) -> None:
        """A ``fill="cache"`` needs ``D[nb-1]`` computed at an earlier evaluated step."""
        acts, t = self.actions(), steps
        low = None  # the lowest decoder index any earlier step has computed
        while t >= 1:
            a = acts.get(t, StepAction())
            if a.drop_blocks and a.fill == "cache" and (low is None or low > a.drop_blocks - 1):
                raise PlanError(f"DropBlocks(nb={a.drop_blocks}, fill='cache') at step {t}: no earlier step computes "
                                f"D[{a.drop_blocks - 1}] to reuse (the first step, or only deeper cuts before it); start the cut later")
            low = a.drop_blocks if low is None else min(low, a.drop_blocks)
            if a.stop:
                break
            t -= 1 + a.jump

    def actions(self) -> dict[int, StepAction]:
        """Per-step actions for the steps that differ from the baseline."""
        acts: dict[int, dict] = {}
        for it in self.interventions:
            for t in it.evaluated_steps():
                a = acts.setdefault(t, {})
                if isinstance(it, SkipSteps):
                    a["jump"] = it.n
                elif isinstance(it, ZeroSkips):
                    a["zero_skips"] = it.ns
                elif isinstance(it, DropBlocks):
                    a["drop_blocks"], a["fill"] = it.nb, it.fill
                else:
                    a["stop"] = True
        return {t: StepAction(**a) for t, a in acts.items()}

    def first_step(self) -> int | None:
        """The highest step whose evaluation differs from the baseline (None: empty plan)."""
        tops = [max(it.evaluated_steps()) for it in self.interventions]
        return max(tops) if tops else None

    @property
    def stop_at(self) -> int | None:
        return next((it.at for it in self.interventions if isinstance(it, StopEarly)), None)

    def uses_cache(self) -> set[int]:
        """The ``nb`` of every cache-filled DropBlocks: their ``D[nb-1]`` outputs must be kept."""
        return {it.nb for it in self.interventions if isinstance(it, DropBlocks) and it.fill == "cache"}

    # serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"interventions": [it.to_dict() for it in self.interventions]}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, obj: Any) -> "Plan":
        items = obj.get("interventions") if isinstance(obj, dict) else obj
        if not isinstance(items, list):
            raise PlanError('a plan is {"interventions": [...]} or a list of interventions')
        return cls(tuple(intervention_from_dict(d) for d in items))

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanError(f"plan is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        return cls.from_dict(obj)

    def __repr__(self) -> str:
        return f"Plan([{', '.join(map(repr, self.interventions))}])"


def intervention_from_dict(d: Any) -> Intervention:
    if not isinstance(d, dict) or "type" not in d:
        raise PlanError(f'each intervention is an object with a "type" ({", ".join(_TYPES)}); got {d!r}')
    cls = _TYPES.get(d["type"])
    if cls is None:
        raise PlanError(f"intervention type must be one of {', '.join(_TYPES)}; got {d['type']!r}")
    names = {f.name for f in fields(cls)}
    extra = sorted(set(d) - names - {"type"})
    if extra:
        raise PlanError(f"{cls.__name__} takes {', '.join(sorted(names))}; unknown field {extra[0]!r}")
    try:
        return cls(**{k: v for k, v in d.items() if k != "type"})
    except TypeError:
        missing = sorted(f.name for f in fields(cls) if f.name not in d and f.default is f.default_factory)
        raise PlanError(f"{cls.__name__} needs {', '.join(missing)}") from None
