"""A small U-Net written the way openai/guided-diffusion's ``unet.py`` writes ``UNetModel`` (input,
middle and output blocks of ``TimestepEmbedSequential``, ``hs`` pushed and popped, ``learn_sigma``'s
2C output, ``label_emb``), plus GLIDE's text hook (``get_text_emb`` and ``encoder_out`` passed to the
attention blocks). Written here for the tests; it follows the upstream structure, not its code."""

import math

import torch
from torch import nn


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepBlock(nn.Module):
    pass


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x, emb, encoder_out=None):
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, encoder_out)
            else:
                x = layer(x)
        return x


class ResBlock(TimestepBlock):
    def __init__(self, ch, emb_ch, out_ch=None, scale_shift=True):
        super().__init__()
        out_ch = out_ch or ch
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(nn.GroupNorm(4, ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch))
        self.out_norm = nn.GroupNorm(4, out_ch)
        self.out_rest = nn.Sequential(nn.SiLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        e = self.emb_layers(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + e)
        return self.skip_connection(x) + self.out_rest(h)


class AttentionBlock(nn.Module):
    def __init__(self, ch, heads=2, encoder_channels=None):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(4, ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.encoder_kv = nn.Conv1d(encoder_channels, 2 * ch, 1) if encoder_channels else None
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x, encoder_out=None):
        b, c, hgt, wid = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))
        q, k, v = qkv.reshape(b * self.heads, 3 * c // self.heads, -1).chunk(3, dim=1)
        if encoder_out is not None and self.encoder_kv is not None:
            ek, ev = self.encoder_kv(encoder_out).reshape(b * self.heads, 2 * c // self.heads, -1).chunk(2, dim=1)
            k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)
        w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(c // self.heads), dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
        return x + self.proj_out(a).reshape(b, c, hgt, wid)


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


class UNetModel(nn.Module):
    def __init__(self, image_size=32, in_channels=3, model_channels=16, out_channels=6, num_res_blocks=1,
                 attention_resolutions=(2,), channel_mult=(1, 2), num_classes=None, xf_width=None):
        super().__init__()
        self.image_size, self.in_channels, self.model_channels = image_size, in_channels, model_channels
        self.out_channels, self.num_classes, self.dtype = out_channels, num_classes, torch.float32
        ted = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, ted), nn.SiLU(), nn.Linear(ted, ted))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, ted)
        self.xf_width = xf_width
        if xf_width:
            self.token_embedding = nn.Embedding(50, xf_width)
            self.xf_proj = nn.Linear(xf_width, ted)
        enc = xf_width
        ch = model_channels * channel_mult[0]
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, ted, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, encoder_channels=enc))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, ted), AttentionBlock(ch, encoder_channels=enc), ResBlock(ch, ted))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), ted, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, encoder_channels=enc))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(nn.GroupNorm(4, ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def get_text_emb(self, tokens, mask):
        xf = self.token_embedding(tokens)  # (N, L, W)
        if mask is not None:
            xf = xf * mask[..., None]
        return dict(xf_proj=self.xf_proj(xf[:, -1]), xf_out=xf.permute(0, 2, 1))

    def forward(self, x, timesteps, y=None, tokens=None, mask=None):
        hs = []
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        xf_out = None
        if tokens is not None:
            t = self.get_text_emb(tokens, mask)
            emb, xf_out = emb + t["xf_proj"].to(emb), t["xf_out"]
        h = x.type(self.dtype)
        for module in self.input_blocks:
            h = module(h, emb, xf_out)
            hs.append(h)
        h = self.middle_block(h, emb, xf_out)
        for module in self.output_blocks:
            h = torch.cat([h, hs.pop()], dim=1)
            h = module(h, emb, xf_out)
        return self.out(h.type(x.dtype))
