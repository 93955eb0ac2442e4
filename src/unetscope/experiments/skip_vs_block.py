"""`skip-vs-block`: zero the top ns skips vs drop the bottom nb blocks for n steps from every
start t (ZeroSkips(2, t, 5) vs DropBlocks(2, t, 5); Figs. 5-7)."""

from __future__ import annotations

from ..plan import DropBlocks, Plan, ZeroSkips
from .common import Experiment, ExperimentError, curves, image_grid_figure, line_figure, redundancy_start, scale_blocks, scale_steps, t_grid, variant_grid


class SkipVsBlock(Experiment):
    def __init__(self):
        super().__init__("skip-vs-block", "Skip connections vs bottom blocks", "Figs. 5, 6, 7")

    def defaults(self, S, K, deps=None, threshold=None):
        if K < 2:
            raise ExperimentError(f"skip-vs-block compares the top skips with the bottom blocks: it needs K >= 2, the model has K = {K}")
        return dict(ns=scale_blocks(2, K), nb=scale_blocks(2, K), n=scale_steps(5, S), t_step=1, threshold=threshold or 0.8, k=1.0)

    def plans(self, p, S, K):
        out = []
        for t in t_grid(S, p["n"], p["t_step"]):
            out += [Plan([ZeroSkips(p["ns"], t, p["n"])]), Plan([DropBlocks(p["nb"], t, p["n"])])]
        return out

    def _curves(self, rows):
        return curves(rows, lambda v: (v["interventions"][0]["type"], v["interventions"][0]["start"])
                      if v.get("interventions") else None, ("ZeroSkips", "DropBlocks"))

    def analyze(self, rows, p, S, K):
        c = self._curves(rows)
        res = {}
        for kind, (ts, m) in c.items():
            res[kind] = dict(mean_ssim=float(m["ssim"][0].mean()), redundant_from=redundancy_start(ts, list(m["ssim"][0]), p["threshold"]))
        z, d = res["ZeroSkips"], res["DropBlocks"]
        better = "dropping the bottom blocks" if d["mean_ssim"] > z["mean_ssim"] else "zeroing the top skips"
        return dict(**res, text=(
            f"Over all starts, zeroing the top {p['ns']} skips for {p['n']} steps keeps mean SSIM {z['mean_ssim']:.3f}; "
            f"dropping the bottom {p['nb']} blocks keeps {d['mean_ssim']:.3f}: {better} changes the output less. "
            f"Dropping stays at SSIM >= {p['threshold']} from t = {d['redundant_from']} down; zeroing skips from "
            f"t = {z['redundant_from']} down."))

    def figures(self, rows, p, S, K, out, images):
        c = self._curves(rows)
        files = []
        labels = {"ZeroSkips": f"ZeroSkips(ns={p['ns']})", "DropBlocks": f"DropBlocks(nb={p['nb']})"}
        for m, label in (("ssim", "SSIM"), ("psnr", "PSNR (dB)")):
            path = line_figure(out / f"skip_vs_block_{m}.png",
                               [(labels[k], ts, v[m][0], v[m][1]) for k, (ts, v) in c.items()],
                               xlabel="t_start", ylabel=label, k=p["k"], band_max=1.0 if m == "ssim" else None,
                               title=f"Top skips vs bottom blocks over n={p['n']} steps: {label} (Fig. 7)",
                               hlines=[(p["threshold"], f"{p['threshold']}")] if m == "ssim" else [])
            files.append((path.name, f"{label}: zeroing the top {p['ns']} skips vs dropping the bottom {p['nb']} blocks (Fig. 7)"))
        ts = c["DropBlocks"][0]
        pick = [ts[round(i * (len(ts) - 1) / 5)] for i in range(6)] if len(ts) >= 6 else ts
        for kind, fig, field, name in (("ZeroSkips", "Fig. 5", "ns", "skips"), ("DropBlocks", "Fig. 6", "nb", "blocks")):
            g = variant_grid(images, lambda t, kind=kind, field=field: {"interventions": [{"type": kind, field: p[field], "start": t, "n": p["n"]}]}, pick)
            if g:
                path = image_grid_figure(out / f"skip_vs_block_{name}_grid.png", g[0], g[1], ["x0"] + [f"t={t}" for t in pick],
                                         f"{labels[kind]} for n={p['n']} steps from t_start ({fig})")
                if path:
                    files.append((path.name, f"Outputs with {labels[kind]} at several t_start ({fig})"))
        return files
