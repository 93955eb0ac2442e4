"""`relax`: cut n steps, let the model relax for r steps, cut n steps again (the paper's
cut-relax-cut, Fig. 10): the smallest r that holds the SSIM threshold."""

from __future__ import annotations

import numpy as np

from ..plan import DropBlocks, Plan
from .block_utility import redundancy_starts
from .common import Experiment, ExperimentError, aggregate, line_figure, scale_blocks, scale_steps
from .consecutive_limit import limits


class Relax(Experiment):
    requires = ("block-utility", "consecutive-limit")

    def __init__(self):
        super().__init__("relax", "Cut, relax, cut", "Fig. 10")

    def defaults(self, S, K, deps=None, threshold=None):
        p = dict(nb=scale_blocks(8, K), start=None, n=None, r_max=scale_steps(25, S), threshold=threshold or 0.8, k=1.0)
        deps = deps or {}
        if "block-utility" in deps:
            starts = redundancy_starts(deps["block-utility"], p["threshold"])
            ok = [nb for nb, t in starts.items() if t]
            if ok and p["nb"] not in ok:
                p["nb"] = min(ok, key=lambda nb: abs(nb - p["nb"]))  # the nearest nb that is redundant somewhere
            p["start"] = starts.get(p["nb"])
        if "consecutive-limit" in deps:
            p["n"] = limits(deps["consecutive-limit"], p["threshold"]).get(p["nb"]) or None
        p["start"] = p["start"] or round(0.65 * S)  # the paper's t = 65, scaled
        p["n"] = p["n"] or scale_steps(5, S)
        return p

    def nothing_to_do(self, p, S, K):
        if p["start"] < 2 * p["n"]:
            return (f"cut-relax-cut needs two cuts of n={p['n']} steps below the start t={p['start']}: with S = {S} "
                    "steps there is no room for them")
        return None

    def validate(self, p, S, K):
        super().validate(p, S, K)
        if not (isinstance(p["nb"], int) and 1 <= p["nb"] <= K):
            raise ExperimentError(f"relax: nb must be in 1..{K}, got {p['nb']!r}")
        if not (isinstance(p["start"], int) and 2 * p["n"] <= p["start"] <= S):
            raise ExperimentError(f"relax: start must be in {2 * p['n']}..{S} for n={p['n']}, got {p['start']!r}")

    def plans(self, p, S, K):
        t0, n, nb = p["start"], p["n"], p["nb"]
        return [Plan([DropBlocks(nb, t0, n), DropBlocks(nb, t0 - n - r, n)])
                for r in range(0, p["r_max"] + 1) if t0 - n - r - n + 1 >= 1]

    def _curve(self, rows):
        agg = aggregate(rows, lambda v: v["interventions"][0]["start"] - v["interventions"][0]["n"] - v["interventions"][1]["start"]
                        if len(v.get("interventions", ())) == 2 else None)
        rs = sorted(agg)
        return rs, np.array([agg[r]["ssim"].mean() for r in rs]), np.array([agg[r]["ssim"].std() for r in rs])

    def analyze(self, rows, p, S, K):
        rs, mean, _ = self._curve(rows)
        r_min = None  # the smallest r from which every longer relaxation holds the threshold
        for r, m in sorted(zip(rs, mean), reverse=True):
            if m < p["threshold"]:
                break
            r_min = r
        return dict(r_min=r_min, threshold=p["threshold"], nb=p["nb"], start=p["start"], n=p["n"], text=(
            f"Cutting nb={p['nb']} blocks for n={p['n']} steps from t={p['start']}, then again after r relaxed steps: "
            + (f"r >= {r_min} keeps mean SSIM >= {p['threshold']}." if r_min is not None
               else f"no r up to {p['r_max']} keeps mean SSIM >= {p['threshold']}.")))

    def figures(self, rows, p, S, K, out, images):
        rs, mean, sd = self._curve(rows)
        if not rs:
            return []
        path = line_figure(out / "relax.png", [(f"nb={p['nb']}, n={p['n']}, t_start={p['start']}", rs, mean, sd)],
                           xlabel="r (relaxation steps)", ylabel="SSIM", k=p["k"], invert_x=False, band_max=1.0,
                           title="Cut n steps, relax r steps, cut n steps again (Fig. 10)",
                           hlines=[(p["threshold"], f"{p['threshold']}")])
        return [(path.name, "Mean SSIM against the relaxation between two cuts (Fig. 10)")]
