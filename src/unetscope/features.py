"""The U-Net's feature dynamics over sampling time: how much each unit's output changes from one
evaluated step to the next (Block Caching's per-block relative change, Wimbauer et al. 2024;
DeepCache's adjacent-step similarity).

Statistics are streamed: ``FeatureTracker.step`` receives one step's unit outputs, compares them
with the previous step's and then keeps only these, so the memory is two steps' activations
whatever the number of steps S.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .plan import site

__all__ = ["FeatureTracker", "unit_sites"]


def unit_sites(K: int) -> list[str]:
    """Every unit's output, in the U's order: ``E[0..K-1]``, ``M``, ``D[0..K-1]``."""
    return [site("E", i) for i in range(K)] + [site("M")] + [site("D", j) for j in range(K)]


class FeatureTracker:
    """Per sample, per unit and per step: the relative L1 change of the unit's output from the
    previous evaluated step, ``|h_t - h_prev|_1 / |h_prev|_1``, and the cosine similarity of the
    two. A sample's rows (guidance's two branches, sample-major) count together."""

    def __init__(self, K: int, sites: list[str] | None = None):
        self.sites = list(sites or unit_sites(K))
        self.prev: dict[str, torch.Tensor] | None = None
        self.prev_t: int | None = None
        self.stats: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (site, t) -> (rel_l1, cos), (N,)
        self.peak_tensors = 0  # the most unit outputs held at once (two steps' worth)

    @torch.no_grad()
    def step(self, t: int, outputs: dict, n: int) -> None:
        """Step ``t``'s unit outputs (site -> tensor of ``n`` samples' rows)."""
        cur = {s: outputs[s] for s in self.sites}
        if self.prev is not None:
            for s in self.sites:
                a, b = cur[s].float().reshape(n, -1), self.prev[s].float().reshape(n, -1)
                rel = (a - b).abs().sum(1) / b.abs().sum(1).clamp_min(torch.finfo(torch.float32).tiny)
                self.stats[(s, t)] = (rel.cpu(), F.cosine_similarity(a, b, dim=1, eps=1e-12).cpu())
        self.peak_tensors = max(self.peak_tensors, len(cur) + len(self.prev or {}))
        self.prev, self.prev_t = cur, t  # the step before is let go here

    def rows(self, seeds: list[int], conds: list) -> list[dict]:
        """Store rows: one per (seed, unit, step), the statistics in ``extra``."""
        out = []
        for (s, t), (rel, cos) in self.stats.items():
            for k, seed in enumerate(seeds):
                out.append(dict(seed=seed, variant={"type": "feature-change", "site": s, "t": int(t)}, cond=conds[k],
                                extra={"rel_l1": float(rel[k]), "cos": float(cos[k])}))
        return out
