"""Which variant each point of an experiment's figure stands for.

A figure's JSON (``figures.py``) holds the numbers it draws: curves of (x, mean, sd) or a heatmap's
rows x columns. The explorer makes every point clickable, so it needs the variant (the plan or the
per-step measurement of ``results.sqlite``) behind each point: that is read here from the
experiment's parameters and the curve's label, the same way each experiment built its figure.
"""

from __future__ import annotations

import re

from ..plan import Plan, PlanError
from ..store import variant_id

__all__ = ["figure_variants", "figure_stat", "plan_id", "EXTRA_STATS"]

# experiments whose rows hold no SSIM/PSNR but per-sample statistics in ``extra``: the statistic, and
# whether a larger value is a larger change (worst first: the largest change)
EXTRA_STATS = {"feature-change": {"rel_l1": True, "cos": False}}


def plan_id(interventions: list[dict]) -> str | None:
    """The stored id of a plan given as short intervention dicts (defaults filled in as a Plan writes them)."""
    try:
        return variant_id(Plan.from_dict({"interventions": interventions}).to_dict())
    except (PlanError, TypeError, ValueError):
        return None


def _num(label: str, name: str) -> int | None:
    m = re.search(rf"\b{name}\s*=\s*(\d+)", label)
    return int(m.group(1)) if m else None


def figure_stat(experiment: str, stem: str) -> str | None:
    """The ``extra`` statistic a figure draws (``feature_change_cosine``: "cos"), None for SSIM/PSNR."""
    if experiment not in EXTRA_STATS:
        return None
    return "cos" if stem.endswith("_cosine") else "rel_l1"


def _feature(site, t) -> str:
    return variant_id({"type": "feature-change", "site": str(site), "t": int(t)})


def _line_point(experiment: str, stem: str, label: str, p: dict):
    """A function x -> variant id for one curve of a line figure, or None (the curve has no variants)."""
    if experiment == "feature-change":  # a curve per unit, over t
        return lambda x: _feature(label, x)
    if experiment == "trajectory":
        kind = "x_t" if stem.endswith("_xt") else "x_est0" if stem.endswith("_est0") else None
        return None if kind is None else (lambda x: variant_id({"type": kind, "t": int(x)}))
    if experiment == "phases":
        n = _num(label, "n")
        if n is None or "averaged" in label:
            return None
        return lambda x: plan_id([{"type": "SkipSteps", "start": int(x), "n": n}])
    if experiment == "skip-vs-block":
        for kind, field in (("ZeroSkips", "ns"), ("DropBlocks", "nb")):
            if label.startswith(kind):
                v = _num(label, field)
                return lambda x, kind=kind, field=field, v=v: plan_id([{"type": kind, field: v, "start": int(x), "n": p["n"]}])
        return None
    if experiment == "block-utility":
        nb = _num(label, "nb")
        return None if nb is None else (lambda x: plan_id([{"type": "DropBlocks", "nb": nb, "start": int(x), "n": p["n"]}]))
    if experiment == "consecutive-limit":
        nb, t0 = _num(label, "nb"), _num(label, "t_start")
        if nb is None or t0 is None:
            return None
        return lambda x: plan_id([{"type": "DropBlocks", "nb": nb, "start": t0, "n": int(x)}])
    if experiment == "relax":
        t0, n, nb = p.get("start"), p.get("n"), p.get("nb")
        if None in (t0, n, nb):
            return None
        return lambda r: plan_id([{"type": "DropBlocks", "nb": nb, "start": t0, "n": n},
                                  {"type": "DropBlocks", "nb": nb, "start": t0 - n - int(r), "n": n}])
    return None


def figure_variants(experiment: str, stem: str, params: dict, fig: dict) -> list | None:
    """The variant id of each point of a figure's JSON: for a line figure one list per curve
    (parallel to its ``x``), for a heatmap one list per row (parallel to ``cols``); None where a
    point stands for no single variant. None for a figure the explorer cannot map."""
    try:
        if fig.get("kind") == "lines":
            out = []
            for c in fig.get("curves", []):
                f = _line_point(experiment, stem, str(c.get("label", "")), params)
                out.append([None if f is None else f(x) for x in c.get("x", [])])
            return out
        if fig.get("kind") == "heatmap" and experiment == "feature-change":  # units x t
            return [[_feature(r, t) for t in fig["cols"]] for r in fig["rows"]]
        if fig.get("kind") == "heatmap" and experiment == "block-utility":
            return [[plan_id([{"type": "DropBlocks", "nb": int(r), "start": int(t), "n": params["n"]}]) for t in fig["cols"]]
                    for r in fig["rows"]]
    except (KeyError, TypeError, ValueError):
        return None
    return None
