"""diffusers ``UNet2DModel`` and ``UNet2DConditionModel`` seen as units.

A unit is one resnet with its attention, if any: ``conv_in`` and each downsampler are encoder
units; an up block's upsampler belongs to its last decoder unit. The middle block is ``M``.
Embeddings are computed by the model's own submodules, so outputs match its ``forward``.
"""

from __future__ import annotations

from functools import partial

import torch

from .base import AdapterError, Context

__all__ = ["DiffusersUNetUnits", "SUPPORTED_DOWN", "SUPPORTED_UP", "SUPPORTED_MID"]

SUPPORTED_DOWN = ("DownBlock2D", "AttnDownBlock2D", "CrossAttnDownBlock2D", "ResnetDownsampleBlock2D")
SUPPORTED_UP = ("UpBlock2D", "AttnUpBlock2D", "CrossAttnUpBlock2D", "ResnetUpsampleBlock2D")
SUPPORTED_MID = ("UNetMidBlock2D", "UNetMidBlock2DCrossAttn")


def _attn(attn, h, ctx: Context):
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    if isinstance(attn, Transformer2DModel):  # cross-attention blocks (Stable Diffusion)
        x = ctx.extra
        return attn(h, encoder_hidden_states=x.get("encoder_hidden_states"), attention_mask=x.get("attention_mask"),
                    encoder_attention_mask=x.get("encoder_attention_mask"), return_dict=False)[0]
    return attn(h)


def _resample(mod, h, ctx: Context, size=None):
    from diffusers.models.resnet import ResnetBlock2D

    if isinstance(mod, ResnetBlock2D):  # resnet-type down/upsamplers take the embedding
        return mod(h, ctx.emb)
    return mod(h) if size is None else mod(h, size)


class DiffusersUNetUnits:
    """Units of a diffusers 2D U-Net; ``num_blocks`` is K."""

    def __init__(self, unet):
        from diffusers import UNet2DConditionModel, UNet2DModel

        if not isinstance(unet, (UNet2DModel, UNet2DConditionModel)):
            raise AdapterError(f"expected a diffusers UNet2DModel or UNet2DConditionModel, got {type(unet).__name__}")
        self.unet = unet
        self.conditional = isinstance(unet, UNet2DConditionModel)
        for b in unet.down_blocks:
            if type(b).__name__ not in SUPPORTED_DOWN:
                raise AdapterError(f"down block {type(b).__name__} is not supported (supported: {', '.join(SUPPORTED_DOWN)}); "
                                   "skip-connection variants such as SkipDownBlock2D keep a second skip path that has no unit form")
        for b in unet.up_blocks:
            if type(b).__name__ not in SUPPORTED_UP:
                raise AdapterError(f"up block {type(b).__name__} is not supported (supported: {', '.join(SUPPORTED_UP)})")
        if unet.mid_block is not None and type(unet.mid_block).__name__ not in SUPPORTED_MID:
            raise AdapterError(f"mid block {type(unet.mid_block).__name__} is not supported (supported: {', '.join(SUPPORTED_MID)})")
        enc = [self._conv_in]
        for b in unet.down_blocks:
            attns = getattr(b, "attentions", None) or [None] * len(b.resnets)
            for r, a in zip(b.resnets, attns):
                enc.append(partial(self._enc_unit, r, a))
            for ds in b.downsamplers or []:
                enc.append(partial(self._down_unit, ds))
        dec = []
        for b in unet.up_blocks:
            attns = getattr(b, "attentions", None) or [None] * len(b.resnets)
            for k, (r, a) in enumerate(zip(b.resnets, attns)):
                ups = (b.upsamplers or []) if k == len(b.resnets) - 1 else []
                dec.append(partial(self._dec_unit, r, a, list(ups), len(dec)))
        if len(enc) != len(dec):
            raise AdapterError(f"{type(unet).__name__} has {len(enc)} encoder units but {len(dec)} decoder units; "
                               "every skip must be consumed exactly once")
        self._enc, self._dec = enc, dec
        self.num_blocks = len(enc)

    # -- the protocol -----------------------------------------------------------------------
    def prepare(self, x, timesteps, cond) -> Context:
        u = self.unet
        cond = dict(cond)
        if self.conditional:
            t_emb = u.get_time_embed(sample=x, timestep=timesteps)
            emb = u.time_embedding(t_emb, cond.pop("timestep_cond", None))
            class_emb = u.get_class_embed(sample=x, class_labels=cond.pop("class_labels", None))
            if class_emb is not None:
                emb = torch.cat([emb, class_emb], dim=-1) if u.config.class_embeddings_concat else emb + class_emb
            ehs = cond.pop("encoder_hidden_states", None)
            added = cond.pop("added_cond_kwargs", None) or {}
            aug = u.get_aug_embed(emb=emb, encoder_hidden_states=ehs, added_cond_kwargs=added)
            if isinstance(aug, tuple):
                raise AdapterError("image-hint conditioning (addition_embed_type='image_hint') is not supported")
            emb = emb + aug if aug is not None else emb
            if u.time_embed_act is not None:
                emb = u.time_embed_act(emb)
            ehs = u.process_encoder_hidden_states(encoder_hidden_states=ehs, added_cond_kwargs=added)
            extra = {"encoder_hidden_states": ehs}
            for name in ("attention_mask", "encoder_attention_mask"):
                m = cond.pop(name, None)
                if m is not None:  # as in the model's forward: a bias with a singleton query dimension
                    extra[name] = ((1 - m.to(x.dtype)) * -10000.0).unsqueeze(1)
        else:
            t_emb = u.time_proj(timesteps).to(dtype=u.dtype)
            emb = u.time_embedding(t_emb)
            labels = cond.pop("class_labels", None)
            if u.class_embedding is not None:
                if labels is None:
                    raise AdapterError("this UNet is class-conditional: give class labels")
                if u.config.class_embed_type == "timestep":
                    labels = u.time_proj(labels)
                emb = emb + u.class_embedding(labels).to(dtype=u.dtype)
            elif labels is not None:
                raise AdapterError("this UNet has no class embedding: class labels cannot be used")
            extra = {"timesteps": timesteps}
        if cond:
            raise AdapterError(f"unsupported conditioning for {type(u).__name__}: {', '.join(sorted(cond))}")
        return Context(emb=emb, extra=extra)

    def encoder(self, i, h, ctx):
        return self._enc[i](h, ctx)

    def middle(self, h, ctx):
        m = self.unet.mid_block
        if m is None:
            return h
        if self.conditional and type(m).__name__ == "UNetMidBlock2DCrossAttn":
            x = ctx.extra
            return m(h, ctx.emb, encoder_hidden_states=x.get("encoder_hidden_states"),
                     attention_mask=x.get("attention_mask"), encoder_attention_mask=x.get("encoder_attention_mask"))
        return m(h, ctx.emb)

    def decoder(self, j, h, skip, ctx):
        return self._dec[j](h, skip, ctx)

    def head(self, h, ctx):
        u = self.unet
        if u.conv_norm_out is not None:
            h = u.conv_norm_out(h)
            h = u.conv_act(h)
        h = u.conv_out(h)
        if not self.conditional and u.config.time_embedding_type == "fourier":
            t = ctx.extra["timesteps"]
            h = h / t.reshape((h.shape[0], *([1] * (h.dim() - 1))))
        return h

    def full_forward(self, x, timesteps, cond):
        """The model's own forward (for parity checks and overhead benchmarks)."""
        return self.unet(x, timesteps, **cond, return_dict=False)[0]

    # -- units ------------------------------------------------------------------------------
    def _conv_in(self, h, ctx):
        u = self.unet
        if getattr(u.config, "center_input_sample", False):
            h = 2 * h - 1.0
        return u.conv_in(h)

    def _enc_unit(self, resnet, attn, h, ctx):
        h = resnet(h, ctx.emb)
        return h if attn is None else _attn(attn, h, ctx)

    def _down_unit(self, ds, h, ctx):
        return _resample(ds, h, ctx)

    def _dec_unit(self, resnet, attn, upsamplers, j, h, skip, ctx):
        h = resnet(torch.cat([h, skip], dim=1), ctx.emb)
        if attn is not None:
            h = _attn(attn, h, ctx)
        if upsamplers:
            K = self.num_blocks
            nxt = K - 2 - j  # the skip D[j+1] will consume fixes the size to upsample to
            # (pushed whenever D[j] runs: j >= nb, so nxt < K - nb; no len(ctx.skips), which a compiled
            # unit would guard on and recompile for every nb)
            size = ctx.skips[nxt].shape[2:] if self.conditional and nxt >= 0 else None
            for up in upsamplers:
                h = _resample(up, h, ctx, size)
        return h
