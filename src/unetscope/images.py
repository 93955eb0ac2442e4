"""Writing images in [0, 1] as PNG files and grids."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["to_uint8", "to_pil", "make_grid", "save_png"]


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> uint8 on the CPU (what the figure grids keep)."""
    return (img.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def to_pil(img: torch.Tensor, scale: int = 1):
    """(C, H, W) in [0, 1] -> a PIL image, optionally enlarged by an integer factor (nearest)."""
    from PIL import Image

    arr = to_uint8(img)
    arr = arr[0] if arr.shape[0] == 1 else arr.permute(1, 2, 0)
    im = Image.fromarray(arr.numpy())
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    return im


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2, value: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) -> one (C, H', W') image, ``nrow`` images per row, separated by ``pad`` pixels."""
    n, c, h, w = images.shape
    nrow = max(1, min(nrow, n))
    rows = (n + nrow - 1) // nrow
    grid = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), value, dtype=images.dtype)
    for i, im in enumerate(images):
        r, k = divmod(i, nrow)
        grid[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = im
    return grid


def save_png(img: torch.Tensor, path: str | Path, scale: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(img, scale).save(path)
    return path
