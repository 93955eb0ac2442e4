"""The model as the sampler sees it: a ``DiffusionModel`` bundles the U-Net seen as units (a
``UNetRunner``), the training noise schedule, the prediction and variance types, the sample shape and
the conditioning (``models.conditioning``); ``models.loading`` and ``models.wrapping`` make one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..adapters.base import UNetUnits
from ..runner import UNetRunner
from ..schedule import NoiseSchedule
from .conditioning import Cond, conditioning_of
from .errors import ModelError

__all__ = ["DiffusionModel", "PREDICTION_TYPES", "VARIANCE_TYPES"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
_VARIANCE_ALIASES = {"fixed_small_log": "fixed_small", "fixed_large_log": "fixed_large"}


@dataclass
class DiffusionModel:
    """A U-Net with its diffusion settings, as the sampler sees it."""

    units: UNetUnits
    schedule: NoiseSchedule
    sample_shape: tuple[int, int, int]  # (C, H, W) of x_t
    prediction_type: str = "epsilon"
    variance_type: str = "fixed_small"
    conditioning: str = "none"  # "none" | "class" | "text"
    num_classes: int | None = None
    null_class: int | None = None
    class_names: list[str] | None = None
    latent: bool = False
    vae: Any = None
    text_encoder: Any = None  # with ``tokenizer``: prompts -> encoder_hidden_states (Stable Diffusion)
    tokenizer: Any = None
    name: str = "model"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise ModelError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {self.prediction_type!r}")
        self.variance_type = _VARIANCE_ALIASES.get(self.variance_type, self.variance_type)
        if self.variance_type not in VARIANCE_TYPES:
            raise ModelError(f"variance_type must be one of {', '.join(VARIANCE_TYPES)}, got {self.variance_type!r}")
        self.runner = UNetRunner(self.units)

    @property
    def num_blocks(self) -> int:
        """K: encoder units = decoder units = skip connections = droppable blocks."""
        return self.runner.num_blocks

    @property
    def module(self) -> torch.nn.Module | None:
        """The network behind the units: ``units.unet``, the units themselves, or the first module
        an own ``UNetUnits`` class holds (``self.net = net``)."""
        u = self.units
        if isinstance(getattr(u, "unet", None), torch.nn.Module):
            return u.unet
        if isinstance(u, torch.nn.Module):
            return u
        mods = [v for v in vars(u).values() if isinstance(v, torch.nn.Module)] if hasattr(u, "__dict__") else []
        # the first that holds weights (a parameterless helper module held first is not the network)
        return next((v for v in mods if next(v.parameters(), None) is not None), mods[0] if mods else None)

    def _first_parameter(self) -> torch.Tensor | None:
        m = self.module
        return None if m is None else next(m.parameters(), None)

    @property
    def device(self) -> torch.device:
        p = self._first_parameter()
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = self._first_parameter()
        return p.dtype if p is not None else torch.float32

    def compile(self, backend: str | None = None) -> "DiffusionModel":
        """Compile the U-Net unit by unit (each of ``E[i]``, ``M``, ``D[j]``, ``head`` once, so no step's
        action recompiles); a ``CompileError`` of one line where torch.compile cannot run on this
        model's device. ``compile_stats()`` then counts the graphs compiled."""
        self.runner.compile(backend, self.device)
        return self

    @property
    def compiled(self) -> bool:
        return self.runner.compiled is not None

    def compile_stats(self) -> dict | None:
        """``{"backend", "units", "compilations", "per_unit"}`` (None: not compiled)."""
        return self.runner.compile_stats()

    def to(self, device=None, dtype=None) -> "DiffusionModel":
        for m in (self.module, self.vae, self.text_encoder):
            if m is not None:
                m.to(device=device, dtype=dtype)
        return self

    # conditioning (one strategy per kind: models.conditioning) ---------------------------------
    def make_cond(self, cond: Cond, n: int) -> dict:
        """User conditioning (class labels for class models) -> the U-Net's keyword tensors."""
        return conditioning_of(self.conditioning).make(self, cond, n)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> the text encoder's last hidden states (N, L, D), as Stable Diffusion's pipeline does."""
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        te = self.text_encoder
        return te(tok.input_ids.to(te.device))[0].to(self.dtype)

    def null_text(self) -> torch.Tensor:
        """The empty prompt's hidden states (1, L, D): the unconditional branch of a text model,
        encoded once per device."""
        if getattr(self, "_null_text", None) is None or self._null_text.device != self.device:
            self._null_text = self.encode_prompts([""])
        return self._null_text

    @property
    def num_classes_real(self) -> int:
        """Classes a user may ask for (the null class of guidance excluded)."""
        n = self.num_classes or 0
        return n - 1 if self.null_class is not None and self.null_class == n - 1 else n

    @property
    def has_null_branch(self) -> bool:
        """Whether classifier-free guidance can run (a null class, or a text encoder's empty prompt)."""
        return conditioning_of(self.conditioning).has_null(self)

    def null_cond(self, n: int) -> dict:
        """The unconditional branch of classifier-free guidance."""
        return conditioning_of(self.conditioning).null(self, n)

    # images --------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, x0: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """Model-space samples -> images in [0, 1] (VAE-decoded for latent models)."""
        if not self.latent:
            return ((x0.float() + 1) / 2).clamp(0, 1)
        vae, sf = self.vae, self.vae.config.scaling_factor
        out = [vae.decode(c.to(self.device, vae.dtype) / sf).sample.float().cpu() for c in x0.split(chunk)]
        return ((torch.cat(out) + 1) / 2).clamp(0, 1)

    def describe(self) -> dict:
        d = dict(name=self.name, K=self.num_blocks, sample_shape=list(self.sample_shape),
                 schedule=self.schedule.beta_schedule, T=self.schedule.num_train_timesteps,
                 prediction_type=self.prediction_type, variance_type=self.variance_type,
                 conditioning=self.conditioning, num_classes=self.num_classes_real or None, latent=self.latent)
        if "factory" in self.meta:  # a model built by the user's code: the reference and its weights' hash
            d.update(factory=self.meta["factory"], fingerprint=self.meta["fingerprint"])
        return d
