"""Classifier-free guidance as a wrapper around a model's runner (Ho & Salimans 2022; k-diffusion's
``CFGDenoiser``): the sampler and the sweep engine call it like the runner and never see the
unconditional branch.

Both branches run in one batch, in sample-major rows: sample i owns rows ``2i`` (its condition) and
``2i+1`` (the null condition), so every tensor the wrapper returns or reads (the output, captured and
filled activations) splits and stacks by samples along the first dimension, guided or not.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .runner import RunOutput
from .plan import StepAction

__all__ = ["Denoiser"]


class Denoiser:
    """The model's runner with classifier-free guidance of ``scale`` on its prediction (1: off).

    ``eps = eps_uncond + scale * (eps_cond - eps_uncond)`` on the first C channels; a learned
    variance (2C outputs) is taken from the conditional branch, as GLIDE does."""

    def __init__(self, model, scale: float = 1.0):
        self.model, self.scale = model, float(scale)

    @property
    def rows_per_sample(self) -> int:
        """U-Net batch rows per sample: 2 under guidance (both branches), else 1."""
        return 2 if self.scale != 1 and self.model.conditioning != "none" else 1

    def __call__(self, x: torch.Tensor, tau: torch.Tensor, cond: dict, action: StepAction | None = None, *,
                 fill: Mapping[str, torch.Tensor] | None = None, capture=(), check_finite: bool = False) -> RunOutput:
        """One evaluation of ``x`` (N, C, H, W) at training timesteps ``tau`` (N,) with the prepared
        conditions ``cond`` (batch-first tensors of N rows) under ``action``."""
        m = self.model
        guided = self.rows_per_sample == 2 and bool(cond)
        if not guided:
            res = m.runner(x.to(m.dtype), tau, cond, action, fill=fill, capture=capture, check_finite=check_finite)
            res.out = res.out.to(x.dtype)
            return res
        n = x.shape[0]
        null = m.null_cond(n)
        pairs = {k: torch.stack([v, null[k].to(v.dtype)], dim=1).flatten(0, 1) for k, v in cond.items()}  # (2N, ...)
        res = m.runner(x.to(m.dtype).repeat_interleave(2, dim=0), tau.repeat_interleave(2, dim=0), pairs, action,
                       fill=fill, capture=capture, check_finite=check_finite, group=2)  # a sample's rows decide together
        if res.deep is not None:
            res.deep = res.deep[::2]  # per sample
        out = res.out.to(x.dtype).unflatten(0, (n, 2))  # (N, 2, C', H, W): [cond, uncond] per sample
        oc, ou = out[:, 0], out[:, 1]
        C = x.shape[1]
        eps = ou[:, :C] + self.scale * (oc[:, :C] - ou[:, :C])  # guidance on the prediction
        res.out = torch.cat([eps, oc[:, C:]], dim=1)  # learned variance from the conditional branch
        return res
