"""Schedule files: a ``Plan`` saved as JSON or YAML next to the record that made it (a search's
target, seeds and scores, the model and the sampler), and read back with that record kept.

A file is ``{...record, "interventions": [...]}`` or a bare list of interventions; the record's keys
are ``SCHEDULE_META`` (any other top-level key is refused, as ``Plan.from_dict`` refuses it).

A **recipe** is a schedule file whose record holds ``"recipe"``: the sampler the schedule runs on
(the scheduler, its options, eta and the step count) and the reference it was measured against.
``unetscope shortcut search --frontier`` writes one; ``--schedule`` and ``accelerate`` run it on its
own sampler. ``Recipe`` is the Python record: a plan and the sampler settings together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .plan import Plan, PlanError

__all__ = ["SCHEDULE_META", "ScheduleFile", "ScheduleFileError", "Recipe", "read_schedule", "write_schedule",
           "write_recipe", "read_recipe"]

# what write_schedule writes beside the interventions (a search's record): kept, never read by the plan
SCHEDULE_META = ("target", "calibration_seeds", "validation_seeds", "calibration_ssim_mean", "validation_ssim_mean",
                 "predicted_compute", "model", "sampler", "target_ssim", "target_min_ssim", "note", "recipe", "frontier")


class ScheduleFileError(PlanError):
    """A schedule file that cannot be read (missing, not text, not YAML) or a record that cannot be written."""


def _sampler_record(obj, what: str) -> tuple[str, int, dict]:
    """(scheduler, steps, options) of a recipe's sampler record, checked (one line when malformed)."""
    if not isinstance(obj, dict):
        raise ScheduleFileError(f"{what} must be a mapping with scheduler and steps, got {type(obj).__name__}")
    sched, steps, options = obj.get("scheduler"), obj.get("steps"), obj.get("options", {})
    if not isinstance(sched, str) or not sched:
        raise ScheduleFileError(f"{what} needs a scheduler name (ddim, dpm++, unipc, ... or a diffusers class), got {sched!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ScheduleFileError(f"{what} needs steps, an integer >= 1, got {steps!r}")
    if not isinstance(options, dict) or any(not isinstance(k, str) for k in options):
        raise ScheduleFileError(f"{what}'s options must be a mapping of names to values, got {options!r}")
    return sched, steps, dict(options)


@dataclass(frozen=True)
class Recipe:
    """A way to sample: a scheduler (``method`` as ``Sampler`` takes it), its ``options``, ``eta``,
    the step count and a schedule ``plan`` on it (empty: the solver alone); ``reference`` is the
    sampler it was measured against (``{"scheduler", "steps", "options"}``), None where unknown."""

    scheduler: str
    steps: int
    plan: Plan = field(default_factory=Plan)
    options: dict = field(default_factory=dict)
    eta: float = 0.0
    reference: dict | None = None

    def __post_init__(self):
        sched, steps, options = _sampler_record(dict(scheduler=self.scheduler, steps=self.steps, options=self.options),
                                                "a recipe")
        object.__setattr__(self, "options", options)
        if not isinstance(self.plan, Plan):
            raise ScheduleFileError(f"a recipe's plan must be a Plan, got {type(self.plan).__name__}")
        if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) or not 0 <= self.eta <= 1:
            raise ScheduleFileError(f"a recipe's eta must be a number in [0, 1], got {self.eta!r}")
        object.__setattr__(self, "eta", float(self.eta))
        if self.reference is not None:
            r, rs, ro = _sampler_record(self.reference, "a recipe's reference")
            object.__setattr__(self, "reference", dict(scheduler=r, steps=rs, options=ro))

    def __hash__(self):
        return hash((self.scheduler, self.steps, self.plan, json.dumps(self.options, sort_keys=True), self.eta))

    def sampler_settings(self) -> dict:
        """The recipe's sampler as ``Sampler``'s / ``unetscope.api.setup``'s keywords."""
        return dict(method=self.scheduler, steps=self.steps, scheduler_options=dict(self.options), eta=self.eta)

    def record(self) -> dict:
        """The ``"recipe"`` entry of its file: the sampler and the reference (the plan is the file's interventions)."""
        out = dict(scheduler=self.scheduler, steps=self.steps, options=dict(self.options), eta=self.eta)
        if self.reference is not None:
            out["reference"] = dict(self.reference)
        return out

    @classmethod
    def from_record(cls, rec, plan: Plan) -> "Recipe":
        if not isinstance(rec, dict):
            raise ScheduleFileError(f"a file's recipe must be a mapping (scheduler, steps, options, eta), got {type(rec).__name__}")
        unknown = sorted(set(rec) - {"scheduler", "steps", "options", "eta", "reference"})
        if unknown:
            raise ScheduleFileError(f"a recipe has no key {unknown[0]!r}; it takes scheduler, steps, options, eta, reference")
        return cls(rec.get("scheduler"), rec.get("steps"), plan, rec.get("options", {}), rec.get("eta", 0.0),
                   rec.get("reference"))

    def describe(self) -> str:
        cuts = f" with {self.plan!r}" if self.plan else " alone"
        return f"{self.scheduler} at {self.steps} steps{cuts}"


@dataclass(frozen=True)
class ScheduleFile:
    """A schedule file's plan and its record (``meta``: the ``SCHEDULE_META`` keys it holds; empty
    for a bare list)."""

    plan: Plan
    meta: dict = field(default_factory=dict)

    @property
    def steps(self) -> int | None:
        """The S the schedule was made for (its sampler's steps), None where the record has none."""
        sampler = self.meta.get("sampler")
        steps = sampler.get("steps") if isinstance(sampler, dict) else None
        if isinstance(self.meta.get("recipe"), dict):
            steps = self.meta["recipe"].get("steps")
        return steps if isinstance(steps, int) else None

    @property
    def recipe(self) -> Recipe | None:
        """The recipe the file holds (its sampler and the plan), None for a plain schedule."""
        return Recipe.from_record(self.meta["recipe"], self.plan) if "recipe" in self.meta else None


def read_schedule(path) -> ScheduleFile:
    """A schedule from a JSON or YAML file (by its suffix), read once, with its record."""
    path = Path(path)
    if not path.is_file():
        raise ScheduleFileError(f"schedule file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ScheduleFileError(f"schedule file {str(path)!r} cannot be read as UTF-8 text ({type(e).__name__})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ScheduleFileError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        plan = Plan.from_dict(obj, SCHEDULE_META)
    else:
        plan = Plan.from_json(text, SCHEDULE_META)  # a PlanError worded by the plan where the text is not JSON
        obj = json.loads(text)
    meta = {k: v for k, v in obj.items() if k != "interventions"} if isinstance(obj, dict) else {}
    found = ScheduleFile(plan, meta)
    found.recipe  # a malformed recipe record fails here, in one line
    return found


def read_recipe(path) -> Recipe:
    """The recipe of a file; a plain schedule file is refused in one line."""
    found = read_schedule(path)
    if found.recipe is None:
        raise ScheduleFileError(f"{path} is a schedule without a recipe (no sampler recorded): run it with the sampler "
                                "it was searched on, or write a recipe (shortcut search --frontier)")
    return found.recipe


def write_recipe(path, recipe: Recipe, meta: dict | None = None) -> Path:
    """Write ``recipe`` (its plan as the interventions, its sampler as the ``"recipe"`` record) with ``meta``."""
    if not isinstance(recipe, Recipe):
        raise ScheduleFileError(f"write_recipe takes a Recipe, got {type(recipe).__name__}")
    return write_schedule(path, recipe.plan, {**(meta or {}), "recipe": recipe.record()})


def write_schedule(path, plan: Plan, meta: dict | None = None) -> Path:
    """Write ``plan`` and its record ``meta`` (keys from ``SCHEDULE_META``) as JSON, or YAML for a
    ``.yaml``/``.yml`` path; the record first, then the interventions."""
    path = Path(path)
    unknown = sorted(set(meta or {}) - set(SCHEDULE_META))
    if unknown:
        raise ScheduleFileError(f"a schedule's metadata has no key {unknown[0]!r}; it takes {', '.join(SCHEDULE_META)}")
    obj = {**(meta or {}), **plan.to_dict()}
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(obj, sort_keys=False))
    else:
        path.write_text(json.dumps(obj, indent=2) + "\n")
    return path
