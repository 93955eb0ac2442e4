"""`phases`: remove n whole steps at every start t (SkipSteps(t, n), n = 1 and 5; Figs. 3, 4, 18)
and read the generation phases off the SSIM curve (``segment_phases``).

On a scheduler whose walk takes no jump (DPM-Solver++, Euler, UniPC, ...: ``sampler.jumps`` is
False) a removed step keeps the scheduler's walk: the U-Net evaluations at steps t-1 .. t-n are not
computed and each hands the scheduler step t's output again (``DropBlocks(K, t-1, n, "cache")``, the
whole U-Net read from the cache; ``removal: reuse`` in the parameters)."""

from __future__ import annotations

import numpy as np

from ..plan import DropBlocks, Plan, SkipSteps
from .common import Experiment, curves, image_grid_figure, line_figure, scale_steps, t_grid, variant_grid


def smooth_in_steps(t: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Each point's mean over the grid points within ``window // 2`` steps of it (a window in steps,
    not grid points): on a grid coarser than the window nothing is averaged and the curve is as is."""
    t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    half = max(int(window), 1) // 2
    if half == 0 or len(t) < 2:
        return y.copy()
    near = np.abs(t[:, None] - t[None, :]) <= half  # (points, points)
    return (near * y[None, :]).sum(1) / near.sum(1)


def grid_runs(t: list[int], mask) -> list[tuple[int, int]]:
    """The runs of consecutive grid points (t descending) where ``mask`` holds, as (first t, last t)."""
    runs, cur = [], None
    for ti, m in zip(t, mask):
        if m:
            cur = [ti, ti] if cur is None else [cur[0], ti]
        elif cur is not None:
            runs.append(tuple(cur))
            cur = None
    if cur is not None:
        runs.append(tuple(cur))
    return runs


def format_runs(runs: list[tuple[int, int]]) -> str:
    """``[(35, 25), (10, 10)]`` -> ``"t = 35..25 and t = 10"``."""
    return " and ".join(f"t = {a}" if a == b else f"t = {a}..{b}" for a, b in runs)


def segment_phases(ts: list[int], ssim_mean, threshold: float = 0.8, smooth: int = 5, dip: float = 0.02) -> dict | None:
    """The generation phases read off the mean-SSIM curve of ``SkipSteps(t, n)`` against the start t.

    On the curve averaged over ``smooth`` steps (``smooth_in_steps``: a grid coarser than that is
    read as is), in sampling order (t descending):
    - composition: removing steps changes the output's semantics, i.e. the SSIM falls below
      ``threshold`` (the paper's 0.8). It runs from the first step to ``b1``, the last start of the
      first run of starts below the threshold (steps before that run, where removal costs nothing,
      are the phase's quiet beginning). No start below the threshold: no composition phase.
    - transition: after b1 the curve may fall again before it recovers (the paper: coarse noise);
      ``b2`` is the start where it falls deepest under the best value reached since b1, if that fall
      is at least ``dip``. No such fall: no transition phase.
    - denoising: the rest, down to t = 1.
    Returns b1 and b2 (None where a phase is absent), the phases, the lowest point, the starts
    below the threshold and their runs, and the curve read (``t``, ``y``; ``smoothed``: whether it
    differs from the raw means); None for an empty curve. Works whatever end the curve peaks at."""
    if len(ts) == 0:
        return None
    order = np.argsort(ts)[::-1]  # descending t, like sampling
    t = np.asarray(ts)[order]
    raw = np.asarray(ssim_mean, dtype=float)[order]
    y = smooth_in_steps(t, raw, smooth)
    low = int(np.argmin(y))
    below = np.flatnonzero(y < threshold)
    S = int(t[0])
    b1 = b2 = None
    if len(below):
        run_end = below[0]
        while run_end + 1 < len(t) and y[run_end + 1] < threshold:
            run_end += 1
        b1 = int(t[run_end])
        tail = y[run_end:]
        if len(tail) > 2:
            best = np.maximum.accumulate(tail)
            fall = best[1:] - tail[1:]
            k = int(np.argmax(fall))
            if fall[k] >= dip and run_end + 1 + k < len(t) - 1:  # a dip before the curve ends, not at its very end
                b2 = int(t[run_end + 1 + k])
    phases = []
    if b1 is not None:
        phases.append(dict(name="composition", steps=[S, b1]))
    top = (b1 - 1) if b1 is not None else S
    if b2 is not None and top >= b2:
        phases.append(dict(name="transition", steps=[top, b2]))
        top = b2 - 1
    if top >= 1:
        phases.append(dict(name="denoising", steps=[top, 1]))
    return dict(b1=b1, b2=b2, phases=phases, lowest=dict(t=int(t[low]), ssim=float(y[low])),
                below=[int(t[i]) for i in below], runs=grid_runs([int(v) for v in t], y < threshold),
                threshold=threshold, t=[int(v) for v in t], y=[float(v) for v in y],
                smoothed=bool(not np.array_equal(y, raw)), window=int(smooth))


class Phases(Experiment):
    def __init__(self):
        super().__init__("phases", "Generation phases: removing whole time steps", "Figs. 3, 4, 18")

    def defaults(self, S, K, deps=None, threshold=None):
        p = dict(n_values=sorted({1, scale_steps(5, S)}), t_step=1, k=1.0, smooth=5)
        if threshold is not None:  # 0.8 unless set: left out of the defaults, so stored runs keep their identity
            p["threshold"] = threshold
        return p

    @staticmethod
    def plan(p, t: int, n: int, K: int) -> Plan:
        """The removal of n steps after t: a jump, or (``removal: reuse``) step t's output handed on."""
        if p.get("removal") == "reuse":
            return Plan([DropBlocks(K, t - 1, n, "cache")])
        return Plan([SkipSteps(t, n)])

    def plans(self, p, S, K):
        return [self.plan(p, t, n, K) for n in p["n_values"] for t in t_grid(S, n + 1, p["t_step"])]

    @staticmethod
    def _label(p) -> str:
        return ("n steps' U-Net outputs reused from t_start (the scheduler's walk kept)" if p.get("removal") == "reuse"
                else "SkipSteps(t_start, n)")

    def _curves(self, rows, p):
        shift = 1 if p.get("removal") == "reuse" else 0  # DropBlocks(K, t - 1, n): its start is t - 1
        return curves(rows, lambda v: (v["interventions"][0]["n"], v["interventions"][0]["start"] + shift)
                      if v.get("interventions") else None, p["n_values"])

    def analyze(self, rows, p, S, K):
        curves = self._curves(rows, p)
        n_big, n1 = max(p["n_values"]), min(p["n_values"])
        ts, c = curves[n_big]
        thr = p.get("threshold", 0.8)  # runs stored before the threshold was a parameter
        seg = segment_phases(ts, c["ssim"][0], thr, p["smooth"])
        ts1, c1 = curves[n1]
        if seg is None or not len(ts1):
            return dict(boundaries=None, phases=[], text="No results yet.")
        lo, runs, phases = seg["lowest"], seg["runs"], seg["phases"]
        read = f" averaged over {seg['window']} steps, the dashed line" if seg["smoothed"] else ""
        what = (f"Removing n={n_big} steps hurts most at t = {lo['t']} (mean SSIM {lo['ssim']:.3f}{read}); "
                + (f"the {'averaged ' if seg['smoothed'] else ''}mean SSIM is below {thr:g} for the starts {format_runs(runs)}"
                   if runs else f"it never falls below {thr:g}, so no start changes the output's semantics by that measure")
                + f". Removing n={n1} changes little: mean SSIM {c1['ssim'][0].mean():.3f} (lowest {c1['ssim'][0].min():.3f}). ")
        names = [ph["name"] for ph in phases]
        seen = "; ".join(f"{ph['name']} t = {ph['steps'][0]}..{ph['steps'][1]}" for ph in phases)
        if len(phases) == 3:
            cmp = f"The data shows the paper's three phases: {seen}."
        else:
            missing = [x for x in ("composition", "transition", "denoising") if x not in names]
            cmp = (f"The data shows {len(phases)} phase{'s' if len(phases) != 1 else ''}, not the paper's three ({seen}; "
                   f"no {' or '.join(missing)} phase: "
                   + ("no start falls below the threshold" if "composition" in missing else
                      "the curve does not fall again after composition") + ").")
        return dict(
            boundaries=dict(b1=seg["b1"], b2=seg["b2"], threshold=thr),
            phases=phases, lowest=lo, below=seg["runs"], smoothed=seg["smoothed"],
            curve=dict(n=n_big, t=seg["t"], ssim=seg["y"]),
            min_ssim=dict({str(n): float(curves[n][1]["ssim"][0].min()) for n in p["n_values"]}),
            mean_ssim=dict({str(n): float(curves[n][1]["ssim"][0].mean()) for n in p["n_values"]}),
            text=what + cmp,
        )

    def figures(self, rows, p, S, K, out, images):
        curves = self._curves(rows, p)
        f = self.analyze(rows, p, S, K)
        if f["boundaries"] is None:
            return []
        b = f["boundaries"]
        files = []
        n_big = max(p["n_values"])
        smooth = [(f"n = {n_big}, averaged over {p['smooth']} steps (what the findings read)", f["curve"]["t"],
                   f["curve"]["ssim"])] if f["smoothed"] else []
        for m, label in (("ssim", "SSIM"), ("psnr", "PSNR (dB)")):
            path = line_figure(out / f"phases_{m}.png",
                               [(f"n = {n}", ts, c[m][0], c[m][1]) for n, (ts, c) in curves.items()],
                               xlabel="t_start", ylabel=label, k=p["k"], band_max=1.0 if m == "ssim" else None,
                               title=f"{self._label(p)}: {label} vs the unintervened output (mean ± {p['k']:g} sd)",
                               vlines=[(b[k], k) for k in ("b1", "b2") if b.get(k) is not None],
                               hlines=[(b["threshold"], f"SSIM {b['threshold']:g}")] if m == "ssim" else (),
                               dashed=smooth if m == "ssim" else ())
            files.append((path.name, f"{label} after removing n steps from t_start (Figs. 4, 18)"))
        ts = curves[n_big][0]
        pick = [ts[round(i * (len(ts) - 1) / 5)] for i in range(6)] if len(ts) >= 6 else ts
        g = variant_grid(images, lambda t: self.plan(p, t, n_big, K).to_dict(), pick)
        if g:
            path = image_grid_figure(out / "phases_grid.png", g[0], g[1], ["x0"] + [f"t={t}" for t in pick],
                                     f"w'_0 after removing n={n_big} steps from t_start (Fig. 3)")
            if path:
                files.append((path.name, f"Outputs after removing {n_big} steps at several t_start (Fig. 3)"))
        return files
