"""A U-Net written the way research repositories write them: a plain nn.Module, a skip list, torch.cat.
(This stands for *your* model; examples/own_unet.py adapts it to unetscope.)"""

import math

import torch
from torch import nn


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1, self.norm2 = nn.GroupNorm(4, cin), nn.GroupNorm(4, cout)
        self.emb = nn.Linear(temb, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(torch.relu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(torch.relu(self.norm2(h)))


class Down(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb):
        return self.conv(x)


class UpRes(nn.Module):
    """A decoder block: a resnet on [h, skip], then an optional 2x upsampling."""

    def __init__(self, cin, cout, temb, up):
        super().__init__()
        self.res = ResBlock(cin, cout, temb)
        self.up = nn.Upsample(scale_factor=2) if up else nn.Identity()

    def forward(self, x, emb):
        return self.up(self.res(x, emb))


class ResearchUNet(nn.Module):
    def __init__(self, ch=8, in_ch=1):
        super().__init__()
        self.ch, temb = ch, 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.inp = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.downs = nn.ModuleList([ResBlock(ch, ch, temb), Down(ch), ResBlock(ch, 2 * ch, temb)])
        self.mid = ResBlock(2 * ch, 2 * ch, temb)
        self.ups = nn.ModuleList([UpRes(4 * ch, 2 * ch, temb, False), UpRes(3 * ch, ch, temb, True),
                                  UpRes(2 * ch, ch, temb, False), UpRes(2 * ch, ch, temb, False)])
        self.out = nn.Sequential(nn.GroupNorm(4, ch), nn.SiLU(), nn.Conv2d(ch, in_ch, 3, padding=1))

    def forward(self, x, t):
        emb = self.time_mlp(timestep_embedding(t, self.ch))
        h = self.inp(x)
        hs = [h]
        for m in self.downs:
            h = m(h, emb)
            hs.append(h)
        h = self.mid(h, emb)
        for m in self.ups:
            h = m(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
