"""PSNR and SSIM between images in [0, 1], one value per sample.

SSIM is the standard Gaussian-window SSIM (11x11, sigma 1.5, K1 0.01, K2 0.03, mean over channels)
computed by ``pytorch_msssim`` and checked against scikit-image in the tests.
"""

from __future__ import annotations

import torch

from .errors import UnetscopeError

__all__ = ["psnr", "ssim", "MetricError"]

WIN_SIZE = 11


class MetricError(UnetscopeError, ValueError):
    """Images that cannot be compared."""


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise MetricError(f"images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() == 3:
        a, b = a[None], b[None]
    if a.dim() != 4:
        raise MetricError(f"images must be (N, C, H, W) or (C, H, W), got {tuple(a.shape)}")
    return a.detach().double().clamp(0, 1), b.detach().double().clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (data range 1), per sample: (N,). Identical images give inf."""
    a, b = _pair(a, b)
    mse = (a - b).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse)).float()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004), per sample: (N,)."""
    from pytorch_msssim import ssim as _ssim

    a, b = _pair(a, b)
    if min(a.shape[-2:]) < WIN_SIZE:
        raise MetricError(f"SSIM needs images of at least {WIN_SIZE}x{WIN_SIZE} pixels, got {tuple(a.shape[-2:])}")
    return _ssim(a, b, data_range=1.0, size_average=False, win_size=WIN_SIZE, win_sigma=1.5, K=(0.01, 0.03)).float()
