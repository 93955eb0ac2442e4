"""Wrapping a U-Net built in your own code (a diffusers UNet, a guided-diffusion or GLIDE
``UNetModel``-style U-Net, or your own ``UNetUnits``) with its diffusion settings."""

from __future__ import annotations

from ..adapters.base import AdapterError, UNetUnits
from ..schedule import NoiseSchedule
from .conditioning import CONDITIONINGS
from .errors import ModelError
from .model import DiffusionModel

__all__ = ["wrap"]


def wrap(unet, *, beta_schedule: str = "linear", num_train_timesteps: int = 1000, beta_start: float = 1e-4,
         beta_end: float = 0.02, prediction_type: str = "epsilon", variance_type: str | None = None,
         sample_shape: tuple[int, int, int] | None = None, conditioning: str = "none", num_classes: int | None = None,
         null_class: int | None = None, name: str | None = None) -> DiffusionModel:
    """A model built in your own code -> a ``DiffusionModel``: a diffusers UNet, a guided-diffusion
    or GLIDE ``UNetModel``-style U-Net, or any object that implements the ``UNetUnits`` protocol
    (see ``docs/adapters.md``), with its diffusion settings."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    from ..adapters.guided_diffusion import GuidedDiffusionUnits, looks_like_guided_diffusion

    units = unet
    if looks_like_guided_diffusion(unet):
        try:
            units = GuidedDiffusionUnits(unet)
        except AdapterError as e:
            raise ModelError(str(e)) from None
        c_in = unet.input_blocks[0][0].in_channels if hasattr(unet.input_blocks[0][0], "in_channels") else None
        if sample_shape is None and c_in is not None and getattr(unet, "image_size", None):
            sample_shape = (c_in, unet.image_size, unet.image_size)
        if conditioning == "none" and getattr(unet, "num_classes", None):
            conditioning, num_classes = "class", num_classes or unet.num_classes
        if variance_type is None and getattr(unet, "out_channels", None) and c_in and unet.out_channels == 2 * c_in:
            variance_type = "learned_range"  # learn_sigma: epsilon and the variance interpolation, as in iDDPM
    elif isinstance(unet, (UNet2DModel, UNet2DConditionModel)):
        from ..adapters.diffusers_unet import DiffusersUNetUnits

        units = DiffusersUNetUnits(unet)
        c = unet.config
        size = c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0]
        sample_shape = sample_shape or (c.in_channels, size, size)
        if conditioning == "none" and getattr(c, "num_class_embeds", None):
            conditioning, num_classes = "class", num_classes or c.num_class_embeds
        if variance_type is None and c.out_channels == 2 * c.in_channels:
            variance_type = "learned_range"
    elif not isinstance(unet, UNetUnits):
        missing = [m for m in ("num_blocks", "prepare", "encoder", "middle", "decoder", "head") if not hasattr(unet, m)]
        raise ModelError(f"{type(unet).__name__} is not a diffusers UNet and does not implement the UNetUnits "
                         f"protocol (missing: {', '.join(missing)}); see docs/adapters.md")
    if sample_shape is None:
        raise ModelError("give sample_shape=(C, H, W) for a model that is not a diffusers UNet")
    if not (isinstance(sample_shape, (tuple, list)) and len(sample_shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sample_shape)):
        raise ModelError(f"sample_shape must be three positive integers (C, H, W), got {sample_shape!r}")
    if not isinstance(conditioning, str) or conditioning not in CONDITIONINGS:
        raise ModelError(f"conditioning must be none, class or text, got {conditioning!r}")
    if null_class is not None and (not isinstance(null_class, int) or not num_classes or not 0 <= null_class < num_classes):
        raise ModelError(f"null_class must be a class index in 0..num_classes-1, got {null_class!r} (num_classes {num_classes})")
    try:
        schedule = NoiseSchedule(beta_schedule, num_train_timesteps, beta_start, beta_end)
    except ValueError as e:
        raise ModelError(str(e)) from None
    try:
        return DiffusionModel(units=units, schedule=schedule, sample_shape=tuple(sample_shape),
                              prediction_type=prediction_type, variance_type=variance_type or "fixed_small",
                              conditioning=conditioning,
                              num_classes=num_classes, null_class=null_class, name=name or type(unet).__name__)
    except AdapterError as e:
        raise ModelError(str(e)) from None
