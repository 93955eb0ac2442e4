"""`consecutive-limit`: for each nb, drop the bottom nb blocks for n = 1..15 consecutive steps from
its redundancy start (Fig. 9): the largest n that keeps the SSIM threshold."""

from __future__ import annotations

import numpy as np

from ..plan import DropBlocks, Plan
from .block_utility import block_counts, redundancy_starts
from .common import Experiment, ExperimentError, aggregate, line_figure, scale_steps


def limits(rows, threshold: float) -> dict[int, int]:
    """nb -> the largest n such that every n' <= n keeps the mean SSIM >= threshold (0: none)."""
    agg = aggregate(rows, lambda v: (v["interventions"][0]["nb"], v["interventions"][0]["n"]) if v.get("interventions") else None)
    out = {}
    for nb in sorted({nb for nb, _ in agg}):
        lim = 0
        for n in sorted(n for b, n in agg if b == nb):
            if agg[(nb, n)]["ssim"].mean() < threshold:
                break
            lim = n
        out[nb] = lim
    return out


class ConsecutiveLimit(Experiment):
    requires = ("block-utility",)

    def __init__(self):
        super().__init__("consecutive-limit", "How many consecutive steps can be cut", "Fig. 9")

    def defaults(self, S, K, deps=None, threshold=None):
        p = dict(nbs=block_counts(K), n_max=scale_steps(15, S), threshold=threshold or 0.8, k=1.0, starts=None)
        bu = (deps or {}).get("block-utility")
        if bu is not None:
            starts = redundancy_starts(bu, p["threshold"])
            p["starts"] = {str(nb): t for nb, t in starts.items() if t}
            p["nbs"] = [nb for nb, t in sorted(starts.items()) if t]  # the nbs block-utility ran and found redundant
        return p

    def nothing_to_do(self, p, S, K):
        if isinstance(p["starts"], dict) and not p["nbs"]:
            return (f"block-utility found no nb that keeps mean SSIM >= {p['threshold']} from any start: there is no "
                    "redundant cut to repeat over consecutive steps")
        return None

    def validate(self, p, S, K):
        super().validate(p, S, K)
        st = p["starts"]
        if not isinstance(st, dict) or not all(isinstance(t, int) and 1 <= t <= S for t in st.values()):
            raise ExperimentError(f"consecutive-limit: starts must be JSON {{\"nb\": t_start}} with t_start in 1..{S}, "
                                  f"or come from a block-utility run; got {st!r}")

    def plans(self, p, S, K):
        out = []
        for nb in p["nbs"]:
            t0 = p["starts"].get(str(nb))
            if t0:
                out += [Plan([DropBlocks(nb, t0, n)]) for n in range(1, min(p["n_max"], t0) + 1)]
        return out

    def analyze(self, rows, p, S, K):
        lim = limits(rows, p["threshold"])
        parts = [f"nb={nb} from t={p['starts'].get(str(nb))}: n <= {n}" for nb, n in lim.items()]
        return dict(limits={str(k): v for k, v in lim.items()}, starts=p["starts"], threshold=p["threshold"],
                    text=f"Consecutive steps that can be cut while mean SSIM stays >= {p['threshold']}: {'; '.join(parts)}.")

    def figures(self, rows, p, S, K, out, images):
        agg = aggregate(rows, lambda v: (v["interventions"][0]["nb"], v["interventions"][0]["n"]) if v.get("interventions") else None)
        curves = []
        for nb in p["nbs"]:
            ns = sorted(n for b, n in agg if b == nb)
            if ns:
                curves.append((f"nb = {nb} (t_start={p['starts'].get(str(nb))})", ns,
                               np.array([agg[(nb, n)]["ssim"].mean() for n in ns]), np.array([agg[(nb, n)]["ssim"].std() for n in ns])))
        if not curves:
            return []
        path = line_figure(out / "consecutive_limit.png", curves, xlabel="n (consecutive steps cut)", ylabel="SSIM", k=0.0,
                           title="DropBlocks(nb, t_start, n) at each nb's redundancy start (Fig. 9)",
                           hlines=[(p["threshold"], f"{p['threshold']}")], invert_x=False)
        return [(path.name, "Mean SSIM against the number of consecutive steps cut (Fig. 9)")]
