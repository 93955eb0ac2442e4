"""U-Nets shaped the way research code writes them, each with its ``UNetUnits`` adapter, and the
factories the CLI tests load with ``--model tests/research_shapes.py:FACTORY``.

- ``PadUNet``: odd sizes (28 -> 14 -> 7 -> 4): the decoder upsamples and ``F.pad``s (crops) to the
  skip's size before the concat, concat order ``(h, skip)``, the time embedding added after the
  concat, normalisation over ``(C, H, W)`` (``GroupNorm(1, C)``), a strided conv between levels.
- ``UnitTimeUNet``: timesteps as floats in [0, 1] of shape ``(B, 1)``; ``prepare`` receives the
  training timesteps as int64 of shape ``(B,)`` and converts them.
- ``IntColumnUNet``: timesteps as integers of shape ``(B, 1)``, with a ``conv_in`` that pushes no skip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unetscope.adapters.base import Context

T = 1000


def sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    t = t.reshape(-1).float()
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    return torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=-1)


class Block(nn.Module):
    """conv -> norm over (C, H, W) -> SiLU, the time embedding added after the first conv."""

    def __init__(self, cin, cout, temb):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        self.norm = nn.GroupNorm(1, cout)  # LayerNorm-like: over (C, H, W)
        self.emb = nn.Linear(temb, cout)

    def forward(self, x, emb):
        h = self.conv1(x) + self.emb(emb)[:, :, None, None]
        return self.conv2(F.silu(self.norm(h)))


# --- odd sizes, (h, skip), time embedding after the concat ---------------------------------------------
class PadUNet(nn.Module):
    def __init__(self, ch=8):
        super().__init__()
        self.ch, temb = ch, 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb), nn.SiLU())
        self.enc = nn.ModuleList([Block(1, ch, temb), Block(ch, ch, temb), Block(ch, ch, temb), Block(ch, ch, temb)])
        self.down = nn.Conv2d(ch, ch, 3, stride=2, padding=1)  # 28 -> 14 -> 7 -> 4: pushes no skip
        self.mid = Block(ch, ch, temb)
        self.cat_emb = nn.ModuleList([nn.Linear(temb, 2 * ch) for _ in range(4)])  # added after the concat
        self.dec = nn.ModuleList([Block(2 * ch, ch, temb) for _ in range(4)])
        self.out = nn.Conv2d(ch, 1, 1)

    def forward(self, x, t):
        emb = self.temb(sinusoid(t, self.ch))
        hs, h = [], x
        for i, blk in enumerate(self.enc):
            if i > 0:
                h = self.down(h)
            h = blk(h, emb)
            hs.append(h)
        h = self.mid(h, emb)
        for j, blk in enumerate(self.dec):
            skip = hs.pop()
            if h.shape[-1] != skip.shape[-1]:  # upsample, then pad (crop) odd sizes to the skip's
                h = F.interpolate(h, scale_factor=2, mode="nearest")
                dh, dw = skip.shape[-2] - h.shape[-2], skip.shape[-1] - h.shape[-1]
                h = F.pad(h, (0, dw, 0, dh))
            z = torch.cat([h, skip], dim=1) + self.cat_emb[j](emb)[:, :, None, None]
            h = blk(z, emb)
        return self.out(h)


class PadUNetUnits:
    """E[i] = (the strided conv, for i > 0) + enc[i]; M = mid; D[j] = concat (h, skip) + emb + dec[j],
    then the upsample-and-pad that the next unit's concat needs (sized by the skip it consumes)."""

    def __init__(self, net: PadUNet):
        self.net, self.num_blocks = net, 4

    def prepare(self, x, timesteps, cond):
        return Context(emb=self.net.temb(sinusoid(timesteps, self.net.ch)))

    def encoder(self, i, h, ctx):
        return self.net.enc[i](self.net.down(h) if i > 0 else h, ctx.emb)

    def middle(self, h, ctx):
        return self.net.mid(h, ctx.emb)

    def decoder(self, j, h, skip, ctx):
        n = self.net
        h = n.dec[j](torch.cat([h, skip], dim=1) + n.cat_emb[j](ctx.emb)[:, :, None, None], ctx.emb)
        nxt = self.num_blocks - 2 - j
        return self._fit(h, ctx.skips[nxt]) if nxt >= 0 else h

    def _fit(self, h, skip):
        if h.shape[-1] == skip.shape[-1]:
            return h
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        return F.pad(h, (0, skip.shape[-1] - h.shape[-1], 0, skip.shape[-2] - h.shape[-2]))

    def head(self, h, ctx):
        return self.net.out(h)


# --- timesteps as floats in [0, 1] of shape (B, 1) -----------------------------------------------------
class UnitTimeUNet(nn.Module):
    def __init__(self, ch=8):
        super().__init__()
        self.ch, temb = ch, 2 * ch
        self.temb = nn.Linear(1, temb)  # reads t in [0, 1], shape (B, 1)
        self.enc = nn.ModuleList([Block(1, ch, temb), Block(ch, 2 * ch, temb)])
        self.pool = nn.AvgPool2d(2)
        self.mid = Block(2 * ch, 2 * ch, temb)
        self.dec = nn.ModuleList([Block(4 * ch, ch, temb), Block(2 * ch, ch, temb)])
        self.out = nn.Conv2d(ch, 1, 1)

    def forward(self, x, t01):
        emb = F.silu(self.temb(t01))
        h0 = self.enc[0](x, emb)
        h1 = self.enc[1](self.pool(h0), emb)
        h = self.mid(h1, emb)
        h = F.interpolate(self.dec[0](torch.cat([h, h1], 1), emb), scale_factor=2)
        return self.out(self.dec[1](torch.cat([h, h0], 1), emb))


class UnitTimeUNetUnits:
    """``prepare`` receives int64 timesteps of shape (B,) in 0..T-1: this model reads t / (T - 1) as (B, 1)."""

    def __init__(self, net):
        self.net, self.num_blocks = net, 2

    def prepare(self, x, timesteps, cond):
        t01 = timesteps.float().view(-1, 1) / (T - 1)
        return Context(emb=F.silu(self.net.temb(t01)))

    def encoder(self, i, h, ctx):
        return self.net.enc[i](h if i == 0 else self.net.pool(h), ctx.emb)

    def middle(self, h, ctx):
        return self.net.mid(h, ctx.emb)

    def decoder(self, j, h, skip, ctx):
        h = self.net.dec[j](torch.cat([h, skip], 1), ctx.emb)
        return F.interpolate(h, scale_factor=2) if j == 0 else h

    def head(self, h, ctx):
        return self.net.out(h)


# --- timesteps as integers of shape (B, 1); a conv_in without a skip -----------------------------------
class IntColumnUNet(nn.Module):
    def __init__(self, ch=8):
        super().__init__()
        self.ch = ch
        self.conv_in = nn.Conv2d(1, ch, 3, padding=1)  # pushes no skip: folded into E[0]
        self.enc = nn.ModuleList([Block(ch, ch, ch), Block(ch, ch, ch)])
        self.mid = Block(ch, ch, ch)
        self.dec = nn.ModuleList([Block(2 * ch, ch, ch), Block(2 * ch, ch, ch)])
        self.out = nn.Conv2d(ch, 1, 1)

    def forward(self, x, t_col):  # t_col: int64, (B, 1)
        assert t_col.dim() == 2 and t_col.shape[1] == 1 and not t_col.is_floating_point()
        emb = sinusoid(t_col[:, 0], self.ch)
        hs, h = [], self.conv_in(x)
        for blk in self.enc:
            h = blk(h, emb)
            hs.append(h)
        h = self.mid(h, emb)
        for blk in self.dec:
            h = blk(torch.cat([hs.pop(), h], 1), emb)
        return self.out(h)


class IntColumnUNetUnits:
    def __init__(self, net):
        self.net, self.num_blocks = net, 2

    def prepare(self, x, timesteps, cond):
        return Context(emb=sinusoid(timesteps.view(-1, 1)[:, 0], self.net.ch))  # (B,) -> the model's (B, 1)

    def encoder(self, i, h, ctx):
        return self.net.enc[i](self.net.conv_in(h) if i == 0 else h, ctx.emb)

    def middle(self, h, ctx):
        return self.net.mid(h, ctx.emb)

    def decoder(self, j, h, skip, ctx):
        return self.net.dec[j](torch.cat([skip, h], 1), ctx.emb)

    def head(self, h, ctx):
        return self.net.out(h)


# --- factories for --model tests/research_shapes.py:NAME -----------------------------------------------
def make_pad_model():
    import os

    import unetscope as us

    torch.manual_seed(int(os.environ.get("PAD_SEED", "0")))  # other weights: another fingerprint
    return us.wrap(PadUNetUnits(PadUNet().eval()), sample_shape=(1, 28, 28), name="pad-unet")


def make_unit_time_model():
    torch.manual_seed(0)
    return UnitTimeUNetUnits(UnitTimeUNet().eval()), dict(sample_shape=(1, 16, 16))  # (units, settings for wrap)


def make_nothing():
    return 42  # not a model: the CLI must say so in one line


def make_broken():
    raise RuntimeError("the checkpoint is missing")
