"""What every experiment shares: parameters scaled from the paper's (K = 16, S = 100), result
aggregation over samples, and the figure helpers (matplotlib, written as PNG)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import numpy as np

__all__ = ["Experiment", "ExperimentError", "scale_steps", "scale_blocks", "aggregate", "curves", "t_grid",
           "redundancy_start", "line_figure", "heatmap_figure", "image_grid_figure"]


class ExperimentError(ValueError):
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
        self.validate(p, S, K)
        return p

    def validate(self, p: dict, S: int, K: int) -> None:
        """Range checks of the parameters (the plans' own checks name the intervention fields)."""
        for k in ("t_step", "n", "n_max", "r_max", "ns", "nb"):
            low = 0 if k == "r_max" else 1
            if k in p and p[k] is not None and (isinstance(p[k], bool) or not isinstance(p[k], int) or p[k] < low):
                raise ExperimentError(f"{self.name}: {k} must be an integer >= {low}, got {p[k]!r}")
        if "threshold" in p and not (isinstance(p["threshold"], (int, float)) and 0 < p["threshold"] <= 1):
            raise ExperimentError(f"{self.name}: threshold must be in (0, 1], got {p['threshold']}")
        for k, high in (("nbs", K), ("n_values", S - 1)):
            v = p.get(k)
            if k in p and (not isinstance(v, list) or not v or not all(isinstance(x, int) and 1 <= x <= high for x in v)):
                raise ExperimentError(f"{self.name}: {k} must be a non-empty list of integers in 1..{high}, got {v!r}")

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


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def band(mean, std, k: float, band_max: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The band mean ± k sd, its top capped at ``band_max`` when given."""
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    hi = mean + k * std
    return mean - k * std, hi if band_max is None else np.minimum(hi, band_max)


def line_figure(path: Path, curves: list[tuple[str, list, np.ndarray, np.ndarray]], *, xlabel: str, ylabel: str,
                title: str, k: float = 1.0, hlines=(), vlines=(), invert_x: bool = True,
                band_max: float | None = None) -> Path:
    """Mean curves with a band of k standard deviations; x is the step (descending, like the paper).
    ``band_max`` caps the band at a metric's largest possible value (1 for SSIM), so that a band of
    mean + k sd does not draw values the metric cannot take."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for label, xs, mean, std in curves:
        line, = ax.plot(xs, mean, label=label, lw=1.6)
        if std is not None:
            ax.fill_between(xs, *band(mean, std, k, band_max), color=line.get_color(), alpha=0.18, lw=0)
    for y, lab in hlines:
        ax.axhline(y, color="gray", ls="--", lw=1)
        ax.text(ax.get_xlim()[0], y, f" {lab}", va="bottom", fontsize=8, color="gray")
    for x, lab in vlines:
        ax.axvline(x, color="k", ls=":", lw=1)
        ax.text(x, ax.get_ylim()[1], f" {lab}", va="top", fontsize=8)
    if invert_x:
        ax.invert_xaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def heatmap_figure(path: Path, grid: np.ndarray, rows: list, cols: list, *, xlabel: str, ylabel: str, title: str,
                   marks=()) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.6), dpi=110)
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    step = max(1, len(cols) // 12)
    ax.set_xticks(range(0, len(cols), step), [str(c) for c in cols[::step]])
    for r, c in marks:
        ax.scatter([c], [r], marker="|", color="red", s=200)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="mean SSIM")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def image_grid_figure(path: Path, tiles: list[list], row_labels: list[str], col_labels: list[str], title: str) -> Path | None:
    """Rows x columns of (C, H, W) uint8 images (None: blank), labelled."""
    if not tiles or not any(t is not None for row in tiles for t in row):
        return None
    plt = _plt()
    R, C = len(tiles), len(tiles[0])
    fig, axes = plt.subplots(R, C, figsize=(1.1 * C + 0.9, 1.1 * R + 0.6), dpi=110, squeeze=False)
    for r in range(R):
        for c in range(C):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = tiles[r][c]
            if img is not None:
                arr = img.numpy()
                ax.imshow(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=255)
            if r == 0:
                ax.set_title(col_labels[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, default=float)
