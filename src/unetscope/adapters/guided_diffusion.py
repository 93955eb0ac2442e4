"""guided-diffusion / GLIDE-style U-Nets seen as units.

Written against openai/guided-diffusion ``guided_diffusion/unet.py`` (``UNetModel``) and
openai/glide-text2im ``glide_text2im/text2im_model.py`` (``Text2ImUNet``): ``input_blocks`` /
``middle_block`` / ``output_blocks`` made of ``TimestepEmbedSequential``, every input block's output
pushed on ``hs`` and popped by the output blocks with ``th.cat([h, hs.pop()], dim=1)``, and
``out``. Each input block is an encoder unit and each output block a decoder unit (GLIDE base:
K = 16). Class labels go through ``label_emb``; GLIDE text tokens through ``get_text_emb`` (its
``xf_proj`` is added to the embedding and ``xf_out`` passed to the attention blocks). A 2C-channel
output (``learn_sigma``) is returned as is: the sampler reads its learned variance.
"""

from __future__ import annotations

import math

import torch

from .base import AdapterError, Context

__all__ = ["GuidedDiffusionUnits", "timestep_embedding", "looks_like_guided_diffusion"]


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """The sinusoidal embedding of guided-diffusion's and GLIDE's ``nn.timestep_embedding`` (cos, then sin)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def looks_like_guided_diffusion(model) -> bool:
    return all(hasattr(model, a) for a in ("input_blocks", "middle_block", "output_blocks", "time_embed", "out"))


class GuidedDiffusionUnits:
    """Units of a guided-diffusion ``UNetModel`` or a GLIDE ``Text2ImUNet``; ``num_blocks`` is K."""

    def __init__(self, model, embed_timesteps=timestep_embedding):
        if not looks_like_guided_diffusion(model):
            missing = [a for a in ("input_blocks", "middle_block", "output_blocks", "time_embed", "out") if not hasattr(model, a)]
            raise AdapterError(f"{type(model).__name__} is not a guided-diffusion-style U-Net (missing {', '.join(missing)})")
        K, Kd = len(model.input_blocks), len(model.output_blocks)
        if K != Kd:
            raise AdapterError(f"{type(model).__name__} has {K} input blocks but {Kd} output blocks; every skip must be popped once")
        if not hasattr(model, "model_channels"):
            raise AdapterError(f"{type(model).__name__} has no model_channels (the width of its timestep embedding)")
        self.unet = model
        self.num_blocks = K
        self.embed_timesteps = embed_timesteps

    def prepare(self, x, timesteps, cond) -> Context:
        m, cond = self.unet, dict(cond)
        emb = m.time_embed(self.embed_timesteps(timesteps, m.model_channels))
        labels = cond.pop("class_labels", cond.pop("y", None))
        if labels is not None:
            if getattr(m, "num_classes", None) is None or not hasattr(m, "label_emb"):
                raise AdapterError(f"{type(m).__name__} is not class-conditional (no label_emb): class labels cannot be used")
            emb = emb + m.label_emb(labels)
        extra = {"in_dtype": x.dtype, "dtype": getattr(m, "dtype", x.dtype)}
        tokens = cond.pop("tokens", None)
        mask = cond.pop("mask", None)
        if tokens is not None:
            if not hasattr(m, "get_text_emb"):
                raise AdapterError(f"{type(m).__name__} takes no text tokens (no get_text_emb)")
            out = m.get_text_emb(tokens, mask)
            emb = emb + out["xf_proj"].to(emb)
            extra["encoder_out"] = out["xf_out"]
        if cond:
            raise AdapterError(f"unsupported conditioning for {type(m).__name__}: {', '.join(sorted(cond))}")
        return Context(emb=emb, extra=extra)

    def _run(self, block, h, ctx):
        eo = ctx.extra.get("encoder_out")
        return block(h, ctx.emb) if eo is None else block(h, ctx.emb, eo)

    def encoder(self, i, h, ctx):
        if i == 0:
            h = h.type(ctx.extra["dtype"])
        return self._run(self.unet.input_blocks[i], h, ctx)

    def middle(self, h, ctx):
        return self._run(self.unet.middle_block, h, ctx)

    def decoder(self, j, h, skip, ctx):
        return self._run(self.unet.output_blocks[j], torch.cat([h, skip], dim=1), ctx)

    def head(self, h, ctx):
        return self.unet.out(h.type(ctx.extra["in_dtype"]))

    def full_forward(self, x, timesteps, cond):
        cond = dict(cond)
        if "class_labels" in cond:
            cond["y"] = cond.pop("class_labels")
        return self.unet(x, timesteps, **cond)
