"""What every experiment shares: parameters scaled from the paper's (K = 16, S = 100), result
aggregation over samples, and the figure helpers (matplotlib, written as PNG)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..checks import as_int
from ..errors import UnetscopeError
from ..figures import band, heatmap_figure, image_grid_figure, line_figure
from ..plan import Plan

__all__ = ["Experiment", "ExperimentError", "scale_steps", "scale_blocks", "aggregate", "curves", "t_grid",
           "redundancy_start", "variant_grid", "band", "line_figure", "heatmap_figure", "image_grid_figure"]


class ExperimentError(UnetscopeError, ValueError):
    """Experiment parameters that do not fit the model or sampler."""


def scale_steps(v: float, S: int) -> int:
    """A step count of the paper (S = 100) for a sampler of S steps."""
    return max(1, round(v * S / 100))


def scale_blocks(v: float, K: int) -> int:
    """A block count of the paper (GLIDE: K = 16) for a model with K blocks."""
    return max(1, min(K, round(v * K / 16)))


def t_grid(S: int, low: int, stride: int, high: int | None = None) -> list[int]:
    """Start steps from ``high`` (default S) down to ``low`` every ``stride`` steps (S always included)."""
    high = S if high is None else high
    return [t for t in range(high, low - 1, -stride)] if high >= low else []


@dataclass
class Experiment:
    """A named grid over samples with its analysis and figures (subclasses fill these in)."""

    name: str = ""
    title: str = ""
    figure_refs: str = ""  # the paper's figures it reproduces
    requires: ClassVar[tuple] = ()  # experiments whose results set this one's defaults (run first if missing)
    features: ClassVar[bool] = False  # the baseline's unit outputs measured step to step (feature-change)

    def defaults(self, S: int, K: int, deps: dict | None = None, threshold: float | None = None) -> dict:
        """Parameters scaled to S and K; ``deps`` (rows of required experiments) and the SSIM
        ``threshold`` set those derived from earlier results."""
        raise NotImplementedError

    def resolve(self, S: int, K: int, overrides: dict, deps: dict | None = None) -> dict:
        thr = overrides.get("threshold")
        p = self.defaults(S, K, deps or {}, **({} if thr is None else {"threshold": _coerce("threshold", thr, 0.8)}))
        unknown = sorted(set(overrides) - set(p))
        if unknown:
            raise ExperimentError(f"{self.name} has no parameter {unknown[0]!r}; it takes {', '.join(sorted(p))}")
        for k, v in overrides.items():
            p[k] = _coerce(k, v, p[k])
        reason = self.nothing_to_do(p, S, K) if not overrides else None
        if reason:  # what earlier runs found leaves nothing to measure: said, not an error
            return {**p, "skipped": reason}
        self.validate(p, S, K)
        return p

    def nothing_to_do(self, p: dict, S: int, K: int) -> str | None:
        """Why the grid is empty when its defaults come from earlier results (None: it is not)."""
        return None

    def validate(self, p: dict, S: int, K: int) -> None:
        """Range checks of the parameters (the plans' own checks name the intervention fields)."""
        for k in ("t_step", "n", "n_max", "r_max", "ns", "nb", "smooth"):
            low = 0 if k == "r_max" else 1
            if k in p and p[k] is not None:
                if as_int(p[k]) is None or as_int(p[k]) < low:
                    raise ExperimentError(f"{self.name}: {k} must be an integer >= {low}, got {p[k]!r}")
                p[k] = as_int(p[k])
        if "k" in p and not (isinstance(p["k"], (int, float)) and not isinstance(p["k"], bool) and math.isfinite(p["k"])
                             and p["k"] > 0):
            raise ExperimentError(f"{self.name}: k (the band's width in standard deviations) must be a finite number > 0, "
                                  f"got {p['k']!r}")
        if "threshold" in p and not (isinstance(p["threshold"], (int, float)) and 0 < p["threshold"] <= 1):
            raise ExperimentError(f"{self.name}: threshold must be in (0, 1], got {p['threshold']}")
        for k, high in (("nbs", K), ("n_values", S - 1)):
            v = p.get(k)
            if k in p and (not isinstance(v, list) or not v or not all(as_int(x) is not None and 1 <= as_int(x) <= high for x in v)):
                raise ExperimentError(f"{self.name}: {k} must be a non-empty list of integers in 1..{high}, got {v!r}")
            if k in p:
                p[k] = [as_int(x) for x in v]

    def plans(self, p: dict, S: int, K: int) -> list:
        return []

    def trajectory_steps(self, p: dict, S: int) -> list[int]:
        return []

    def analyze(self, rows: list[dict], p: dict, S: int, K: int) -> dict:
        raise NotImplementedError

    def figures(self, rows: list[dict], p: dict, S: int, K: int, out: Path, images: dict) -> list[tuple[str, str]]:
        return []


def _coerce(name: str, value, default):
    """A parameter from the command line (a string) to the type of its default."""
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, list) or isinstance(default, dict) or default is None:
            return json.loads(value)
        if isinstance(default, bool):
            return value.lower() in ("1", "true", "yes")
        return type(default)(value)
    except (ValueError, json.JSONDecodeError):
        kind = "a JSON list" if isinstance(default, list) else type(default).__name__
        raise ExperimentError(f"parameter {name} must be {kind}, got {value!r}") from None


def aggregate(rows: list[dict], key) -> dict:
    """Group rows by ``key(variant)`` (None: skip) -> {key: {"ssim": array, "psnr": array}} over seeds."""
    groups: dict = {}
    for r in rows:
        k = key(r["variant"])
        if k is None:
            continue
        g = groups.setdefault(k, {"ssim": [], "psnr": [], "seed": []})
        g["ssim"].append(r["ssim"])
        g["psnr"].append(min(r["psnr"], 100.0) if r["psnr"] is not None else np.nan)  # identical images: cap inf
        g["seed"].append(r["seed"])
    return {k: {m: np.asarray(v[m], dtype=float) for m in ("ssim", "psnr")} | {"n": len(v["seed"])} for k, v in groups.items()}


def curves(rows: list[dict], key, groups) -> dict:
    """Mean and standard deviation curves over samples: ``key(variant) -> (group, x)``; returns
    {group: (xs ascending, {"ssim": (mean, std), "psnr": (mean, std)})} for each of ``groups``."""
    agg = aggregate(rows, key)
    out = {}
    for g in groups:
        xs = sorted(x for (gg, x) in agg if gg == g)
        out[g] = (xs, {m: (np.array([agg[(g, x)][m].mean() for x in xs]), np.array([agg[(g, x)][m].std() for x in xs]))
                       for m in ("ssim", "psnr")})
    return out


def redundancy_start(ts: list[int], means: list[float], threshold: float) -> int | None:
    """The largest start step t0 such that every start t <= t0 of the grid keeps the mean >= threshold."""
    pairs = sorted(zip(ts, means))  # ascending t
    best = None
    for t, m in pairs:
        if m >= threshold:
            best = t
        else:
            break
    return best


def variant_grid(images: dict, variant_of, columns):
    """Image tiles of kept seeds: rows = seeds, columns = the baseline then ``variant_of(c)`` for
    each of ``columns`` (a short variant is completed with the defaults a Plan writes, so its id
    matches the stored one). None when no images were kept."""
    from ..store import variant_id

    if not images:
        return None
    base = variant_id({"type": "baseline"})

    def vid(v: dict) -> str:
        return variant_id(Plan.from_dict(v).to_dict() if "interventions" in v else v)

    tiles, labels = [], []
    for seed, imgs in sorted(images.items()):
        tiles.append([imgs.get(base)] + [imgs.get(vid(variant_of(c))) for c in columns])
        labels.append(f"seed {seed}")
    return tiles, labels
