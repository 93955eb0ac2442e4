"""Shortcut samplers: schedules as data and the presets (``schedules``), measured savings and time
prediction (``measure``), scoring plans on seeds (``scoring``), the search (``search``) and a
shortcut run into a folder (``run``).

A shortcut schedule is a ``Plan`` (cuts = ``DropBlocks`` with their nb, fill and step range; the
relax periods are the gaps between cuts; an optional ``StopEarly``), saved as JSON or YAML
(``unetscope.plan_file``). Savings are measured, never assumed: wall time of the baseline and the
shortcut run side by side on the same seeds, and the FLOPs each actually executes (torch's
``FlopCounterMode``).
"""

from .measure import (action_seconds, change_preset, feature_changes, measure, plan_flops, predicted_time_fraction,
                      sample_flops, unit_flops)
from .run import run_shortcut
from .schedules import (PRESETS, ShortcutError, change_schedule, load_schedule, paper_preset, save_schedule,
                        uniform_cache_cuts, uniform_reuse_cuts)
from .scoring import ScoreJob, Scores, heldout_ssim, score_chunk, score_plans
from .search import SearchConfig, search, student_t

__all__ = ["load_schedule", "save_schedule", "paper_preset", "PRESETS", "measure", "plan_flops", "search",
           "SearchConfig", "uniform_cache_cuts", "uniform_reuse_cuts", "run_shortcut", "heldout_ssim", "score_plans",
           "score_chunk", "ScoreJob", "Scores", "ShortcutError", "unit_flops", "action_seconds", "predicted_time_fraction",
           "student_t", "change_schedule", "change_preset", "feature_changes", "sample_flops", "PRESET_NAMES"]

PRESET_NAMES = (*PRESETS, "change")  # "change" is measured on the model (change_preset), not scaled from K and S
