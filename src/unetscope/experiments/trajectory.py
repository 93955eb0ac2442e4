"""`trajectory`: how close x_t and x_est0 are to the final x_0 at every step (Figs. 16, 17), and
the step from which x_est0 is a good enough estimate (the paper: t = 18)."""

from __future__ import annotations

from .common import Experiment, curves, image_grid_figure, line_figure, redundancy_start, t_grid


class TrajectoryExperiment(Experiment):
    def __init__(self):
        super().__init__("trajectory", "The trajectory: x_t and x_est0 against x_0", "Figs. 16, 17")

    def defaults(self, S, K, deps=None, threshold=None):
        return dict(threshold=threshold or 0.9, t_step=1, k=1.0)  # stopping early wants a closer estimate

    def trajectory_steps(self, p, S):
        return t_grid(S, 1, p["t_step"]) + ([1] if (S - 1) % p["t_step"] else [])

    def _curves(self, rows):
        return curves(rows, lambda v: (v["type"], v["t"]) if v.get("type") in ("x_t", "x_est0") else None, ("x_t", "x_est0"))

    def analyze(self, rows, p, S, K):
        c = self._curves(rows)
        ts, est = c["x_est0"]
        good = redundancy_start(ts, list(est["ssim"][0]), p["threshold"])
        return dict(good_from=good, threshold=p["threshold"],
                    text=(f"x_est0 reaches mean SSIM >= {p['threshold']} with x_0 from t = {good} on: the steps after it "
                          f"(t < {good}) refine little, so stopping early at t = {good} saves {good - 1} of {S} evaluations."
                          if good else f"x_est0 never keeps mean SSIM >= {p['threshold']} with x_0 before the last step."))

    def figures(self, rows, p, S, K, out, images):
        c = self._curves(rows)
        f = self.analyze(rows, p, S, K)
        files = []
        ts, xt = c["x_t"]
        path = line_figure(out / "trajectory_psnr_xt.png", [("PSNR(x_t, x_0)", ts, xt["psnr"][0], xt["psnr"][1])],
                           xlabel="t", ylabel="PSNR (dB)", k=p["k"], title="PSNR of x_t against x_0 (Fig. 16)")
        files.append((path.name, "PSNR between x_t and the final x_0 at every step (Fig. 16)"))
        ts, est = c["x_est0"]
        path = line_figure(out / "trajectory_ssim_est0.png", [("SSIM(x_est0, x_0)", ts, est["ssim"][0], est["ssim"][1])],
                           xlabel="t", ylabel="SSIM", k=p["k"], band_max=1.0, title="SSIM of x_est0 against x_0 (Fig. 17)",
                           hlines=[(p["threshold"], f"threshold {p['threshold']}")],
                           vlines=[(f["good_from"], f"t={f['good_from']}")] if f["good_from"] else [])
        files.append((path.name, "SSIM between each step's x_est0 and the final x_0 (Fig. 17)"))
        from ..store import variant_id

        pick = [t for t in (S, round(0.75 * S), S // 2, round(0.25 * S), f["good_from"] or 1, 1) if t in ts]
        if images:
            seed, imgs = sorted(images.items())[0]
            tiles = [[imgs.get(variant_id({"type": k, "t": t})) for t in pick] for k in ("x_t", "x_est0")]
            path = image_grid_figure(out / "trajectory_grid.png", tiles, ["x_t", "x_est0"], [f"t={t}" for t in pick],
                                     f"x_t and x_est0 along the trajectory (seed {seed})")
            if path:
                files.append((path.name, "x_t and x_est0 at a few steps"))
        return files
