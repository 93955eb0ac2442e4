"""Figures written as PNG with matplotlib (headless): mean curves with bands, heatmaps, labelled
image grids and histograms, shared by the experiments, the shortcut runs and the report."""

from __future__ import annotations

import contextlib
import contextvars
import json
from pathlib import Path

import numpy as np

__all__ = ["titled", "pyplot", "band", "figure_data_path", "line_figure", "heatmap_figure", "image_grid_figure", "histogram_figure"]


_SUFFIX = contextvars.ContextVar("figure_title_suffix", default="")


@contextlib.contextmanager
def titled(suffix: str):
    """Within it, every figure's title ends with ``suffix`` (the sampler a run was made on)."""
    token = _SUFFIX.set(suffix)
    try:
        yield
    finally:
        _SUFFIX.reset(token)


def _titled(title: str) -> str:
    suffix = _SUFFIX.get()
    return f"{title}\n{suffix}" if suffix else title


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def band(mean, std, k: float, band_max: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The band mean ± k sd, its top capped at ``band_max`` when given."""
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    hi = mean + k * std
    return mean - k * std, hi if band_max is None else np.minimum(hi, band_max)


def _numbers(values) -> list:
    """A curve's values for JSON: floats, NaN as null."""
    return [None if v is None or not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=float).ravel()]


def figure_data_path(path: Path) -> Path:
    """The JSON beside a figure's PNG that holds the numbers it draws (``phases_ssim.png`` ->
    ``phases_ssim.json``): what a findings text is read from, and what an explorer can plot."""
    return Path(path).with_suffix(".json")


def _write_data(path: Path, obj: dict) -> None:
    figure_data_path(path).write_text(json.dumps(obj, allow_nan=False))


def line_figure(path: Path, curves: list[tuple[str, list, np.ndarray, np.ndarray]], *, xlabel: str, ylabel: str,
                title: str, k: float = 1.0, hlines=(), vlines=(), invert_x: bool = True,
                band_max: float | None = None, dashed=()) -> Path:
    """Mean curves with a band of k standard deviations; x is the step (descending, like the paper).
    ``band_max`` caps the band at a metric's largest possible value (1 for SSIM), so that a band of
    mean + k sd does not draw values the metric cannot take. ``dashed`` holds (label, xs, ys) lines
    drawn without a band (a smoothed curve). The numbers drawn are written beside the PNG as JSON."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for label, xs, mean, std in curves:
        line, = ax.plot(xs, mean, label=label, lw=1.6)
        if std is not None:
            ax.fill_between(xs, *band(mean, std, k, band_max), color=line.get_color(), alpha=0.18, lw=0)
    for label, xs, ys in dashed:
        ax.plot(xs, ys, label=label, lw=1.2, ls="--", color="k")
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
    ax.set_title(_titled(title), fontsize=10)
    ax.grid(alpha=0.3)
    if len(curves) + len(dashed) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    _write_data(path, dict(
        kind="lines", title=_titled(title), xlabel=xlabel, ylabel=ylabel, k=k,
        curves=[dict(label=label, x=[int(x) if float(x).is_integer() else float(x) for x in xs], mean=_numbers(mean),
                     std=None if std is None else _numbers(std)) for label, xs, mean, std in curves],
        dashed=[dict(label=label, x=[int(x) for x in xs], y=_numbers(ys)) for label, xs, ys in dashed],
        hlines=[dict(y=float(y), label=str(lab)) for y, lab in hlines],
        vlines=[dict(x=int(x) if float(x).is_integer() else float(x), label=str(lab)) for x, lab in vlines]))
    return path


def heatmap_figure(path: Path, grid: np.ndarray, rows: list, cols: list, *, xlabel: str, ylabel: str, title: str,
                   marks=(), vmin: float = 0.0, vmax: float = 1.0, label: str = "mean SSIM", cmap: str = "viridis") -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, min(0.45 * len(rows), 0.22 * len(rows) + 3) + 1.6), dpi=110)
    im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    step = max(1, len(cols) // 12)
    ax.set_xticks(range(0, len(cols), step), [str(c) for c in cols[::step]])
    for r, c in marks:
        ax.scatter([c], [r], marker="|", color="red", s=200)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_titled(title), fontsize=10)
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    _write_data(path, dict(kind="heatmap", title=_titled(title), xlabel=xlabel, ylabel=ylabel, label=label, rows=list(rows), cols=list(cols),
                           values=[_numbers(r) for r in np.asarray(grid, dtype=float)],
                           marks=[dict(row=int(r), col=int(c)) for r, c in marks]))
    return path


def image_grid_figure(path: Path, tiles: list[list], row_labels: list[str], col_labels: list[str], title: str) -> Path | None:
    """Rows x columns of (C, H, W) uint8 images (None: blank), labelled."""
    if not tiles or not any(t is not None for row in tiles for t in row):
        return None
    plt = pyplot()
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
    fig.suptitle(_titled(title), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def histogram_figure(path: Path, values: np.ndarray, *, xlabel: str, ylabel: str, title: str, mark: float | None = None,
                     low: float | None = None, high: float = 1.0) -> Path:
    """A histogram of per-sample values (``mark``: a dashed line, e.g. the mean)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.2), dpi=110)
    low = float(np.min(values)) if low is None else low
    ax.hist(values, bins=min(20, max(5, len(values) // 3)), range=(low, high), color="#4a78b5", edgecolor="white")
    if mark is not None:
        ax.axvline(mark, color="k", ls="--", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_titled(title), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    _write_data(path, dict(kind="histogram", title=_titled(title), xlabel=xlabel, ylabel=ylabel, values=_numbers(values),
                           mark=None if mark is None else float(mark), range=[float(low), float(high)]))
    return path


def frontier_figure(path: Path, lines: dict, points: list[dict], chosen: dict, *, target: float | None, title: str) -> Path:
    """Time against quality: one line per solver (``lines``: label -> (time fractions, SSIMs)), the
    cut candidates as points (``points``: label, x, y, kind: "stacked"/"cache", measured: bool), and
    the chosen recipe ringed (``chosen``: label, x, y). ``target``: a dashed line at the SSIM kept."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 4.0), dpi=110)
    for label, (xs, ys) in lines.items():
        ax.plot(xs, ys, marker="o", ms=3, lw=1.4, label=f"{label} alone")
    style = {"stacked": ("^", "#c0392b", "cuts stacked on a solver"), "cache": ("s", "#7f8c8d", "cuts on the reference")}
    shown = set()
    for p in points:
        marker, color, name = style.get(p["kind"], ("x", "k", p["kind"]))
        ax.scatter([p["x"]], [p["y"]], marker=marker, s=36 if p.get("measured") else 18, color=color,
                   facecolors=color if p.get("measured") else "none", label=None if p["kind"] in shown else name, zorder=3)
        shown.add(p["kind"])
    ax.scatter([chosen["x"]], [chosen["y"]], s=180, facecolors="none", edgecolors="k", lw=1.6, zorder=4,
               label=f"chosen: {chosen['label']}")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if target is not None:
        ax.axhline(target, color="gray", ls="--", lw=1)
        ax.text(ax.get_xlim()[0], target, " target", va="bottom", ha="left", fontsize=8, color="gray")
    ax.set_xlabel("time, as a fraction of the reference's (log)")
    ax.set_ylabel("mean SSIM with the reference (held out)")
    ax.set_title(_titled(title), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    _write_data(path, dict(kind="frontier", title=_titled(title),
                           lines={k: dict(x=_numbers(xs), y=_numbers(ys)) for k, (xs, ys) in lines.items()},
                           points=[dict(p, x=float(p["x"]), y=float(p["y"])) for p in points],
                           chosen=dict(chosen, x=float(chosen["x"]), y=float(chosen["y"])),
                           target=None if target is None else float(target)))
    return path
