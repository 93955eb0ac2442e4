"""`feature-change` (beyond the paper; Block Caching's Fig. 2, DeepCache's adjacent-step
similarity): how much every unit's output changes from one step to the next, over sampling time.
Units that change little over a range of steps are those a cache can reuse there."""

from __future__ import annotations

import numpy as np

from ..features import unit_sites
from .common import Experiment, heatmap_figure, line_figure


def _table(rows, K):
    """(sites, ts descending, mean rel L1, std rel L1, mean cos), each (units, steps)."""
    sites = unit_sites(K)
    acc: dict = {}
    for r in rows:
        v = r["variant"]
        if v.get("type") != "feature-change":
            continue
        e = r["extra"]
        acc.setdefault((v["site"], v["t"]), []).append((e["rel_l1"], e["cos"]))
    ts = sorted({t for _, t in acc}, reverse=True)
    mean = np.full((len(sites), len(ts)), np.nan)
    std, cos = mean.copy(), mean.copy()
    for i, s in enumerate(sites):
        for j, t in enumerate(ts):
            if (s, t) in acc:
                a = np.asarray(acc[(s, t)], dtype=float)
                mean[i, j], std[i, j], cos[i, j] = a[:, 0].mean(), a[:, 0].std(), a[:, 1].mean()
    return sites, ts, mean, std, cos


def _names(sites, values, k=3):
    order = np.argsort(values)
    return [sites[i] for i in order[:k]], [sites[i] for i in order[::-1][:k]]


class FeatureChange(Experiment):
    features = True

    def __init__(self):
        super().__init__("feature-change", "Feature dynamics: each unit's change from step to step",
                         "beyond the paper (Block Caching's Fig. 2)")

    def defaults(self, S, K, deps=None, threshold=None):
        return dict(k=1.0)

    def validate(self, p, S, K):
        super().validate(p, S, K)
        if S < 2:
            from .common import ExperimentError

            raise ExperimentError("feature-change compares adjacent steps: it needs S >= 2")

    def analyze(self, rows, p, S, K):
        sites, ts, mean, std, cos = _table(rows, K)
        if not ts:
            return dict(text="No step-to-step measurements were stored.", units={})
        thirds = [ts[i * len(ts) // 3:(i + 1) * len(ts) // 3] for i in range(3)] if len(ts) >= 3 else [ts]
        parts = []
        for name, part in zip(("early", "middle", "late") if len(thirds) == 3 else ("all",), thirds):
            cols = [ts.index(t) for t in part]
            m = np.nanmean(mean[:, cols], axis=1)
            least, most = _names(sites, m)
            parts.append(f"{name} steps (t = {part[0]}..{part[-1]}): least {', '.join(f'{s} ({m[sites.index(s)]:.3f})' for s in least)}; "
                         f"most {', '.join(most[:2])}")
        overall = np.nanmean(mean, axis=1)
        bottom = [sites.index(s) for s in (f"E[{K - 1}]", "M", "D[0]")]
        top = [sites.index(s) for s in ("E[0]", f"D[{K - 1}]")]
        b, t = float(overall[bottom].mean()), float(overall[top].mean())
        verdict = ("the bottom units change less than the top ones, as DeepCache and Block Caching found: caching the "
                   "bottom blocks reuses what changes least" if b < t else
                   "the bottom units change more than the top ones: caching the bottom blocks reuses what changes most here")
        n = len({r["seed"] for r in rows if r["variant"].get("type") == "feature-change"})
        text = (f"Relative L1 change of each unit's output from the previous step, mean over {n} samples. Which units change least: {'; '.join(parts)}. Over all steps the bottom units (E[{K - 1}], M, D[0]) "
                f"change by {b:.3f} per step on average and the top units (E[0], D[{K - 1}]) by {t:.3f}: {verdict}. "
                f"Adjacent steps' outputs keep a cosine similarity of at least {np.nanmin(cos):.3f}.")
        return dict(text=text, bottom_mean_rel_l1=b, top_mean_rel_l1=t,
                    units={s: dict(mean_rel_l1=float(overall[i]), min_cos=float(np.nanmin(cos[i])))
                           for i, s in enumerate(sites)})

    def figures(self, rows, p, S, K, out, images):
        sites, ts, mean, std, cos = _table(rows, K)
        if not ts:
            return []
        files = []
        top = float(np.nanpercentile(mean, 99)) or 1.0
        path = heatmap_figure(out / "feature_change_heatmap.png", mean, sites, ts, xlabel="t", ylabel="unit",
                              title="Relative L1 change of each unit's output from the previous step (mean over samples)",
                              vmin=0.0, vmax=top, label="relative L1 change", cmap="magma")
        files.append((path.name, "Each unit's relative change from the step before, over t (Block Caching's Fig. 2)"))
        path = heatmap_figure(out / "feature_change_cosine.png", cos, sites, ts, xlabel="t", ylabel="unit",
                              title="Cosine similarity of each unit's output with the previous step's (mean over samples)",
                              vmin=float(np.nanmin(cos)), vmax=1.0, label="cosine similarity")
        files.append((path.name, "Adjacent steps' cosine similarity per unit (DeepCache's Fig. 3)"))
        pick = ["E[0]", f"E[{K - 1}]", "M", "D[0]", f"D[{K - 1}]"]
        pick = list(dict.fromkeys(pick))
        path = line_figure(out / "feature_change_units.png",
                           [(s, ts, mean[sites.index(s)], std[sites.index(s)]) for s in pick],
                           xlabel="t", ylabel="relative L1 change", k=p["k"],
                           title="Step-to-step change of the top and bottom units (mean, band: k std over samples)")
        files.append((path.name, "The top and bottom units' change over t, with its spread over samples"))
        return files
