"""Schedule files: a ``Plan`` saved as JSON or YAML next to the record that made it (a search's
target, seeds and scores, the model and the sampler), and read back with that record kept.

A file is ``{...record, "interventions": [...]}`` or a bare list of interventions; the record's keys
are ``SCHEDULE_META`` (any other top-level key is refused, as ``Plan.from_dict`` refuses it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .plan import Plan, PlanError

__all__ = ["SCHEDULE_META", "ScheduleFile", "ScheduleFileError", "read_schedule", "write_schedule"]

# what write_schedule writes beside the interventions (a search's record): kept, never read by the plan
SCHEDULE_META = ("target", "calibration_seeds", "validation_seeds", "calibration_ssim_mean", "validation_ssim_mean",
                 "predicted_compute", "model", "sampler", "target_ssim", "target_min_ssim", "note")


class ScheduleFileError(PlanError):
    """A schedule file that cannot be read (missing, not text, not YAML) or a record that cannot be written."""


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
        return steps if isinstance(steps, int) else None


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
    return ScheduleFile(plan, meta)


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
