"""`phases`: remove n whole steps at every start t (SkipSteps(t, n), n = 1 and 5; Figs. 3, 4, 18)
and find the generation phases from the SSIM curve."""

from __future__ import annotations

import numpy as np

from ..plan import Plan, SkipSteps
from .common import Experiment, curves, image_grid_figure, line_figure, scale_steps, t_grid, variant_grid


def _smooth(y: np.ndarray, w: int) -> np.ndarray:
    if w <= 1 or len(y) < w:
        return y
    pad = np.pad(y, (w // 2, w - 1 - w // 2), mode="edge")
    return np.convolve(pad, np.ones(w) / w, mode="valid")


def phase_boundaries(ts: list[int], ssim_mean: np.ndarray, S: int, smooth: int = 5,
                     level: float = 0.9) -> tuple[int, int, str] | None:
    """(b1, b2, how): the composition phase ends at b1, its last step, and the transition at b2;
    denoising follows (the paper's Fig. 4). b1 is the SSIM peak in the upper half of the steps
    (how = "peak"); when the curve has no peak there, only rising to the edge of that half, b1 is
    where it levels off: the first step at which it has made ``level`` of its rise over the upper half
    (how = "knee"). b2 is the dip below b1: the step where the curve falls deepest under the best
    value it has reached since b1. None for an empty curve."""
    if len(ts) == 0:
        return None
    order = np.argsort(ts)[::-1]  # descending t, like sampling
    t = np.asarray(ts)[order]
    y = _smooth(np.asarray(ssim_mean, dtype=float)[order], smooth)
    upper = np.flatnonzero(t >= S / 2)
    if not len(upper):
        b1, how = int(t[0]), "peak"
    else:
        i = upper[np.argmax(y[upper])]
        if i < upper[-1] or len(upper) == len(t):
            b1, how = int(t[i]), "peak"
        else:  # rising to the edge of the upper half: no peak, take the knee
            lo, hi = y[upper[0]], y[i]
            b1, how = int(t[upper[np.argmax(y[upper] >= lo + level * (hi - lo))]]), "knee"
    below = np.flatnonzero(t < b1)
    if not len(below):
        return b1, 1, how
    # the transition's dip: the deepest fall under the best SSIM reached since b1
    start = np.flatnonzero(t == b1)[0]
    depth = np.maximum.accumulate(y[start:])[1:] - y[start:][1:]
    return b1, int(t[below][np.argmax(depth)]), how


class Phases(Experiment):
    def __init__(self):
        super().__init__("phases", "Generation phases: removing whole time steps", "Figs. 3, 4, 18")

    def defaults(self, S, K, deps=None, threshold=None):
        return dict(n_values=sorted({1, scale_steps(5, S)}), t_step=1, k=1.0, smooth=5)

    def plans(self, p, S, K):
        return [Plan([SkipSteps(t, n)]) for n in p["n_values"] for t in t_grid(S, n + 1, p["t_step"])]

    def _curves(self, rows, p):
        return curves(rows, lambda v: (v["interventions"][0]["n"], v["interventions"][0]["start"])
                      if v.get("interventions") else None, p["n_values"])

    def analyze(self, rows, p, S, K):
        curves = self._curves(rows, p)
        n_big = max(p["n_values"])
        ts, c = curves[n_big]
        bounds = phase_boundaries(ts, c["ssim"][0], S, p["smooth"])
        n1 = min(p["n_values"])
        ts1, c1 = curves[n1]
        if bounds is None or not len(ts1):
            return dict(boundaries=None, phases=[], text="No results yet.")
        b1, b2, how = bounds
        phases = [dict(name=nm, steps=[hi, lo]) for nm, hi, lo in
                  (("composition", S, b1), ("transition", b1 - 1, b2), ("denoising", b2 - 1, 1)) if hi >= lo]
        return dict(
            boundaries=dict(b1=b1, b2=b2, b1_from=how),
            phases=phases,
            min_ssim=dict({str(n): float(curves[n][1]["ssim"][0].min()) for n in p["n_values"]}),
            mean_ssim=dict({str(n): float(curves[n][1]["ssim"][0].mean()) for n in p["n_values"]}),
            text=(f"Removing one step (n={n1}) changes little: mean SSIM {c1['ssim'][0].mean():.3f} over all starts "
                  f"(lowest {c1['ssim'][0].min():.3f}). Removing n={n_big} steps, the SSIM curve "
                  + (f"peaks at t = {b1}" if how == "peak" else
                     f"has no peak in the first half of sampling; it levels off at t = {b1}")
                  + f" and dips at t = {b2}: " + "; ".join(f"{ph['name']} t = {ph['steps'][0]}..{ph['steps'][1]}" for ph in phases)
                  + " (the paper's phases: composition with semantic changes, a transition with coarse noise, denoising)."),
        )

    def figures(self, rows, p, S, K, out, images):
        curves = self._curves(rows, p)
        f = self.analyze(rows, p, S, K)
        if f["boundaries"] is None:
            return []
        b = f["boundaries"]
        files = []
        for m, label in (("ssim", "SSIM"), ("psnr", "PSNR (dB)")):
            path = line_figure(out / f"phases_{m}.png",
                               [(f"n = {n}", ts, c[m][0], c[m][1]) for n, (ts, c) in curves.items()],
                               xlabel="t_start", ylabel=label, k=p["k"], band_max=1.0 if m == "ssim" else None,
                               title=f"SkipSteps(t_start, n): {label} vs the unintervened output (mean ± {p['k']:g} sd)",
                               vlines=[(b["b1"], "b1"), (b["b2"], "b2")])
            files.append((path.name, f"{label} after removing n steps from t_start (Figs. 4, 18)"))
        n_big = max(p["n_values"])
        ts = curves[n_big][0]
        pick = [ts[round(i * (len(ts) - 1) / 5)] for i in range(6)] if len(ts) >= 6 else ts
        g = variant_grid(images, lambda t: {"interventions": [{"type": "SkipSteps", "start": t, "n": n_big}]}, pick)
        if g:
            path = image_grid_figure(out / "phases_grid.png", g[0], g[1], ["x0"] + [f"t={t}" for t in pick],
                                     f"w'_0 after removing n={n_big} steps from t_start (Fig. 3)")
            if path:
                files.append((path.name, f"Outputs after removing {n_big} steps at several t_start (Fig. 3)"))
        return files
