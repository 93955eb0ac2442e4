"""`block-utility`: drop the bottom nb blocks for n steps from every start t, nb = 2, 4, .. K
(Fig. 8, the heat map of Fig. 19), and the start from which each nb is redundant."""

from __future__ import annotations

import numpy as np

from ..plan import DropBlocks, Plan
from .common import Experiment, aggregate, heatmap_figure, image_grid_figure, line_figure, redundancy_start, scale_steps, t_grid


def block_counts(K: int) -> list[int]:
    """nb = 2, 4, .. up to K (the paper's 2, 4, .., 16 for K = 16), K itself always included; a
    small U-Net (K <= 8) gets every count 1..K, so that no depth goes unmeasured."""
    return list(range(1, K + 1)) if K <= 8 else sorted(set(range(2, K + 1, 2)) | {K})


def redundancy_starts(rows, threshold: float) -> dict[int, int | None]:
    agg = aggregate(rows, lambda v: (v["interventions"][0]["nb"], v["interventions"][0]["start"])
                    if v.get("interventions") else None)
    out = {}
    for nb in sorted({nb for nb, _ in agg}):
        ts = sorted(t for (b, t) in agg if b == nb)
        out[nb] = redundancy_start(ts, [agg[(nb, t)]["ssim"].mean() for t in ts], threshold)
    return out


class BlockUtility(Experiment):
    def __init__(self):
        super().__init__("block-utility", "Utility of the bottom blocks over time", "Figs. 8, 19")

    def defaults(self, S, K, deps=None, threshold=None):
        return dict(nbs=block_counts(K), n=scale_steps(5, S), t_step=1, threshold=threshold or 0.8, k=1.0)

    def plans(self, p, S, K):
        return [Plan([DropBlocks(nb, t, p["n"])]) for nb in p["nbs"] for t in t_grid(S, p["n"], p["t_step"])]

    def _table(self, rows, p):
        agg = aggregate(rows, lambda v: (v["interventions"][0]["nb"], v["interventions"][0]["start"])
                        if v.get("interventions") else None)
        ts = sorted({t for _, t in agg}, reverse=True)
        grid = np.array([[agg[(nb, t)]["ssim"].mean() if (nb, t) in agg else np.nan for t in ts] for nb in p["nbs"]])
        sd = np.array([[agg[(nb, t)]["ssim"].std() if (nb, t) in agg else np.nan for t in ts] for nb in p["nbs"]])
        return ts, grid, sd

    def analyze(self, rows, p, S, K):
        starts = redundancy_starts(rows, p["threshold"])
        parts = [f"nb={nb}: t <= {t0}" if t0 else f"nb={nb}: never" for nb, t0 in starts.items()]
        found = [starts[nb] or 0 for nb in sorted(starts)]
        if len(set(found)) == 1:
            trend = (f"Here every nb is redundant from the same start: the paper found deeper cuts redundant only "
                     f"later in sampling; this model does not show that at n={p['n']}.")
        elif all(a >= b for a, b in zip(found, found[1:])):
            trend = "Deeper cuts become redundant later in sampling, as the paper found: the bottom of the U-Net matters for composition."
        else:
            trend = "The redundancy starts do not fall monotonically with nb."
        return dict(redundant_from={str(k): v for k, v in starts.items()}, threshold=p["threshold"],
                    text=(f"Dropping the bottom nb blocks for {p['n']} steps keeps mean SSIM >= {p['threshold']} from these "
                          f"starts down: {'; '.join(parts)}. {trend}"))

    def figures(self, rows, p, S, K, out, images):
        ts, grid, sd = self._table(rows, p)
        starts = redundancy_starts(rows, p["threshold"])
        files = []
        path = line_figure(out / "block_utility_ssim.png",
                           [(f"nb = {nb}", ts, grid[i], sd[i]) for i, nb in enumerate(p["nbs"])],
                           xlabel="t_start", ylabel="SSIM", k=0.0,
                           title=f"DropBlocks(nb, t_start, n={p['n']}): mean SSIM (Fig. 8)",
                           hlines=[(p["threshold"], f"{p['threshold']}")])
        files.append((path.name, "Mean SSIM after dropping the bottom nb blocks for n steps from t_start (Fig. 8)"))
        marks = [(i, ts.index(starts[nb])) for i, nb in enumerate(p["nbs"]) if starts.get(nb) in ts]
        path = heatmap_figure(out / "block_utility_heatmap.png", grid, p["nbs"], ts, xlabel="t_start", ylabel="nb",
                              title=f"Mean SSIM over (nb, t_start); red: redundant from (SSIM >= {p['threshold']})", marks=marks)
        files.append((path.name, "Heat map of mean SSIM over blocks dropped and start step"))
        if images:
            from ..store import variant_id

            seed, imgs = sorted(images.items())[0]
            pick = [ts[round(i * (len(ts) - 1) / 6)] for i in range(7)] if len(ts) >= 7 else ts
            tiles = [[imgs.get(variant_id(Plan([DropBlocks(nb, t, p["n"])]).to_dict())) for t in pick] for nb in p["nbs"]]
            path = image_grid_figure(out / "block_utility_grid.png", tiles, [f"nb={nb}" for nb in p["nbs"]],
                                     [f"t={t}" for t in pick], f"b'_0 for nb blocks dropped over n={p['n']} steps (Fig. 19, seed {seed})")
            if path:
                files.append((path.name, "Outputs over (nb, t_start) for one sample (Fig. 19)"))
        return files
