"""Loading models: ``"default"`` (the bundled MNIST model), a local diffusers folder, or a factory in
your own code (``FILE.py:FACTORY`` or ``package.module:FACTORY``) that returns a wrapped model.

A ``DiffusionModel`` bundles what the sampler needs: the U-Net seen as units (a ``UNetRunner``),
the training noise schedule, the prediction and variance types, the sample shape and the
conditioning. Nothing is ever downloaded: folders are read with ``local_files_only``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import torch

from .adapters.base import AdapterError, UNetRunner, UNetUnits
from .checks import check_bool, check_device, check_dtype
from .errors import UnetscopeError
from .schedule import NoiseSchedule

__all__ = ["Cond", "ModelError", "DiffusionModel", "load_model", "load_factory", "is_factory_reference", "fingerprint",
           "wrap", "default_model_path", "PREDICTION_TYPES", "VARIANCE_TYPES"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
_VARIANCE_ALIASES = {"fixed_small_log": "fixed_small", "fixed_large_log": "fixed_large"}

# The conditions a user gives for N samples: none (unconditional), one class label or prompt for all,
# one per sample (a sequence), or the U-Net's own keyword tensors, batch-first (GLIDE tokens, your own)
Cond = Union[None, int, str, Sequence[Any], Mapping[str, torch.Tensor]]


class ModelError(UnetscopeError, ValueError):
    """A model that cannot be loaded or used as asked."""


def default_model_path() -> Path:
    return Path(__file__).parent / "weights" / "default"


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
        return next((v for v in vars(u).values() if isinstance(v, torch.nn.Module)), None) if hasattr(u, "__dict__") else None

    @property
    def device(self) -> torch.device:
        m = self.module
        return next(m.parameters()).device if m is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        m = self.module
        return next(m.parameters()).dtype if m is not None else torch.float32

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

    # conditioning --------------------------------------------------------------------------
    def make_cond(self, cond: Cond, n: int) -> dict:
        """User conditioning (class labels for class models) -> the U-Net's keyword tensors."""
        if self.conditioning == "none":
            if cond is not None:
                raise ModelError(f"{self.name} is unconditional: it takes no class labels or prompts")
            return {}
        if self.conditioning == "class":
            if cond is None:
                raise ModelError(f"{self.name} is class-conditional: give class labels (0..{self.num_classes_real - 1})")
            try:
                raw = torch.as_tensor(cond)
            except (TypeError, ValueError, RuntimeError):  # a string, a ragged list, objects
                raise ModelError(f"class labels must be integers in 0..{self.num_classes_real - 1}, got {cond!r}"[:200]) from None
            if raw.is_floating_point() or raw.dtype == torch.bool or raw.is_complex():
                raise ModelError(f"class labels must be integers, got {cond!r}"[:200])
            labels = raw.to(torch.long).reshape(-1)
            if labels.numel() == 1 and n > 1:
                labels = labels.expand(n)
            if labels.numel() != n:
                raise ModelError(f"give one class label per sample ({n}), got {labels.numel()}")
            bad = labels[(labels < 0) | (labels >= self.num_classes_real)]
            if bad.numel():
                raise ModelError(f"class labels must be in 0..{self.num_classes_real - 1}, got {int(bad[0])}")
            return {"class_labels": labels.to(self.device)}
        if self.conditioning == "text":
            if isinstance(cond, dict):  # raw keyword tensors, batch-first (GLIDE tokens, your own)
                return {k: v.to(self.device) for k, v in cond.items()}
            if self.text_encoder is None:
                raise ModelError(f"{self.name} needs a text encoder and tokenizer to take prompts")
            prompts = [cond] * n if isinstance(cond, str) else list(cond or [])
            if len(prompts) == 1 and n > 1:
                prompts = prompts * n
            if len(prompts) != n or not all(isinstance(p, str) for p in prompts):
                raise ModelError(f"give one prompt (a string) per sample ({n}), got {len(prompts)}")
            return {"encoder_hidden_states": self.encode_prompts(prompts)}
        raise ModelError(f"conditioning {self.conditioning!r} is not supported")

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> the text encoder's last hidden states (N, L, D), as Stable Diffusion's pipeline does."""
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        te = self.text_encoder
        return te(tok.input_ids.to(te.device))[0].to(self.dtype)

    @property
    def num_classes_real(self) -> int:
        """Classes a user may ask for (the null class of guidance excluded)."""
        n = self.num_classes or 0
        return n - 1 if self.null_class is not None and self.null_class == n - 1 else n

    @property
    def has_null_branch(self) -> bool:
        """Whether classifier-free guidance can run (a null class, or a text encoder's empty prompt)."""
        return (self.conditioning == "class" and self.null_class is not None) or \
            (self.conditioning == "text" and self.text_encoder is not None)

    def null_cond(self, n: int) -> dict:
        """The unconditional branch of classifier-free guidance."""
        if self.conditioning == "class":
            if self.null_class is None:
                raise ModelError(f"{self.name} has no null class: classifier-free guidance needs one (set null_class)")
            return {"class_labels": torch.full((n,), self.null_class, dtype=torch.long, device=self.device)}
        if self.conditioning == "text" and self.text_encoder is not None:
            if getattr(self, "_null_text", None) is None or self._null_text.device != self.device:
                self._null_text = self.encode_prompts([""])  # the unconditional branch: the empty prompt
            return {"encoder_hidden_states": self._null_text.expand(n, -1, -1)}
        raise ModelError(f"{self.name} has no unconditional branch: guidance needs a conditional model with one")

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


def _read_json(p: Path) -> dict:
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {p}: {e}") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{p} must hold a JSON object, not a {type(obj).__name__}")
    return obj


def _pretrained(cls, folder: Path, what: str, **kw):
    """``cls.from_pretrained`` on a local folder, safetensors only (a pickled ``.bin`` could run code
    when read), every weight present; a broken folder is one ModelError."""
    from diffusers.utils import logging as d_logging

    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        raise ModelError(f"{folder} holds no .safetensors weights" + (f" (only pickled {pickled[0]}, which unetscope does not "
                         "read: a pickle can run code; convert it with safetensors)" if pickled else ""))
    level = d_logging.get_verbosity()
    d_logging.set_verbosity(d_logging.CRITICAL)  # its errors become our one line below; its logs would add more
    try:
        model, info = cls.from_pretrained(folder, local_files_only=True, use_safetensors=True, output_loading_info=True,
                                          low_cpu_mem_usage=False, **kw)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"cannot load the {what} in {folder}: {msg[:300]}") from None
    finally:
        d_logging.set_verbosity(level)
    missing = list(info.get("missing_keys", []))
    if missing:
        raise ModelError(f"the {what} weights in {folder} lack {len(missing)} tensors (such as {missing[0]}): they would be random")
    return model


# the scheduler-config fields unetscope reads, and what each must hold (JSON types: no "1000" for 1000)
_SCHEDULER_FIELDS = {
    "num_train_timesteps": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "beta_start": ("a number in (0, 1)", lambda v: _is_real(v) and 0 < v < 1),
    "beta_end": ("a number in (0, 1)", lambda v: _is_real(v) and 0 < v < 1),
    "beta_schedule": ("a string", lambda v: isinstance(v, str)),
    "variance_type": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "prediction_type": ("a string", lambda v: isinstance(v, str)),
    "clip_sample": ("true or false", lambda v: isinstance(v, bool)),
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_scheduler_config(cfg: dict, where: str = "scheduler config") -> dict:
    """A scheduler config is valid or refused whole: each field unetscope reads has its JSON type,
    even where the schedule does not use it (``beta_start`` of a cosine schedule included)."""
    for key, (what, ok) in _SCHEDULER_FIELDS.items():
        if key in cfg and not ok(cfg[key]):
            raise ModelError(f"{where}: {key} must be {what}, got {cfg[key]!r}")
    return cfg


def _schedule_from(cfg: dict) -> NoiseSchedule:
    if cfg.get("trained_betas") is not None:
        raise ModelError("schedulers with trained_betas are not supported")
    check_scheduler_config(cfg)
    try:
        return NoiseSchedule(cfg.get("beta_schedule", "linear"), cfg.get("num_train_timesteps", 1000),
                             cfg.get("beta_start", 1e-4), cfg.get("beta_end", 0.02))
    except ValueError as e:
        raise ModelError(f"scheduler config: {e}") from None


def is_factory_reference(name: str) -> bool:
    """``FILE.py:FACTORY`` or ``package.module:FACTORY`` (and not an existing folder)."""
    target, sep, attr = str(name).rpartition(":")
    return bool(sep and target and attr) and not Path(str(name)).expanduser().is_dir() and \
        (target.endswith(".py") or all(p.isidentifier() for p in target.split(".")))


def fingerprint(model: "DiffusionModel") -> str:
    """A hash of the model's parameters and buffers (names, shapes, dtypes and values)."""
    import hashlib

    h = hashlib.sha256()
    m = model.module
    for k, v in sorted((m.state_dict() if m is not None else {}).items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def load_factory(ref: str) -> DiffusionModel:
    """Call the factory ``FILE.py:FACTORY`` or ``package.module:FACTORY`` (no arguments); it returns
    a wrapped model (``unetscope.wrap(...)``) or ``(module_or_units, settings for wrap)``. The file's
    folder is importable while it loads and runs, so it may import its neighbours."""
    import importlib
    import importlib.util
    import sys

    target, _, attr = str(ref).rpartition(":")
    if not attr.isidentifier():
        raise ModelError(f"model {ref!r}: {attr!r} is not a Python name (FILE.py:FACTORY or package.module:FACTORY)")
    added = None
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            if not path.is_file():
                raise ModelError(f"model {ref!r}: the file {target!r} does not exist")
            added = str(path.parent)
            sys.path.insert(0, added)
            import hashlib

            name = "unetscope_factory_" + path.stem + "_" + hashlib.sha1(str(path).encode()).hexdigest()[:8]
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod  # as importlib's recipe: dataclasses and pickling look the module up
            try:
                spec.loader.exec_module(mod)
            except Exception as e:
                sys.modules.pop(name, None)
                raise ModelError(f"model {ref!r}: importing {target} failed: {type(e).__name__}: {e}") from None
        else:
            try:
                mod = importlib.import_module(target)
            except Exception as e:
                raise ModelError(f"model {ref!r}: cannot import {target}: {type(e).__name__}: {e}") from None
        fn = getattr(mod, attr, None)
        if fn is None or not callable(fn):
            raise ModelError(f"model {ref!r}: {target} has no callable {attr!r}")
        try:
            obj = fn()
        except ModelError as e:
            raise ModelError(f"model {ref!r}: {e}") from None
        except Exception as e:
            raise ModelError(f"model {ref!r}: the factory raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        if added is not None and added in sys.path:
            sys.path.remove(added)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], dict):
        obj = wrap(obj[0], **obj[1])
    if not isinstance(obj, DiffusionModel):
        raise ModelError(f"model {ref!r}: the factory returned {type(obj).__name__}; it must return a wrapped model "
                         "(unetscope.wrap(...)) or (module_or_units, settings for wrap)")
    obj.name = str(ref)
    obj.meta = {**obj.meta, "factory": str(ref), "fingerprint": fingerprint(obj)}
    return obj


def load_model(name_or_path: str | os.PathLike = "default", device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None, compile: bool = False) -> DiffusionModel:
    """Load ``"default"``, a local diffusers folder (a U-Net folder with ``scheduler_config.json``,
    or a pipeline folder with ``unet/`` and ``scheduler/``), or a factory of your own code,
    ``FILE.py:FACTORY`` / ``package.module:FACTORY``. Never touches the network. ``compile``: each
    U-Net unit compiled once (``DiffusionModel.compile``), checked before anything loads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = check_device(device, ModelError)
    check_bool(compile, ModelError, "compile")
    if compile:
        from .compiling import check_compiler

        check_compiler(device)
        return load_model(name_or_path, device, dtype).compile()
    dtype = check_dtype(dtype, ModelError)
    name = str(name_or_path)
    if name != "default" and is_factory_reference(name):
        m = load_factory(name)
        if device is not None or dtype is not None:
            m.to(device, dtype)
        return m
    path = default_model_path() if name == "default" else Path(name).expanduser()
    if not path.is_dir():
        hint = " (the bundled weights are missing from this install)" if name == "default" else ""
        raise ModelError(f"model {name!r} is not 'default', a local folder or FILE.py:FACTORY / package.module:FACTORY{hint}; "
                         "models are loaded from disk only")
    if (path / "model_index.json").exists() or (path / "unet").is_dir():
        unet_dir, sched_dir = path / "unet", path / "scheduler"
        if not (unet_dir / "config.json").exists():
            raise ModelError(f"{path} looks like a pipeline but has no unet/config.json")
    else:
        unet_dir, sched_dir = path, path
    if not (unet_dir / "config.json").exists():
        raise ModelError(f"{path} is not a diffusers model folder: no config.json (expected a UNet or a pipeline folder)")
    sched_file = sched_dir / "scheduler_config.json"
    if not sched_file.exists():
        raise ModelError(f"{path}: no scheduler_config.json next to the UNet (needed for the noise schedule)")
    ucfg, scfg = _read_json(unet_dir / "config.json"), check_scheduler_config(_read_json(sched_file), str(sched_file))
    meta = _read_json(unet_dir / "unetscope.json") if (unet_dir / "unetscope.json").exists() else {}

    from diffusers import UNet2DConditionModel, UNet2DModel

    cls_name = ucfg.get("_class_name")
    classes = {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}
    if cls_name not in classes:
        raise ModelError(f"{unet_dir}/config.json holds a {cls_name!r}; supported: {', '.join(classes)}")
    # low_cpu_mem_usage=False: the same weights, and no warning when accelerate is not installed
    unet = _pretrained(classes[cls_name], unet_dir, "U-Net", torch_dtype=dtype).eval().requires_grad_(False)
    unet.to(device)
    from .adapters.diffusers_unet import DiffusersUNetUnits

    try:
        units = DiffusersUNetUnits(unet)
    except AdapterError as e:
        raise ModelError(str(e)) from None
    text_encoder = tokenizer = None
    if (path / "text_encoder_2").is_dir():
        raise ModelError(f"{path} has two text encoders (SDXL-style added conditioning), which is not supported")
    if (path / "text_encoder" / "config.json").exists():
        if not (path / "tokenizer").is_dir():
            raise ModelError(f"{path} has text_encoder/ but no tokenizer/")
        try:
            from transformers import AutoTokenizer, CLIPTextModel
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise ModelError("text pipelines need transformers: pip install 'unetscope[sd]'") from None
        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True, torch_dtype=dtype)
        text_encoder = text_encoder.eval().requires_grad_(False).to(device)
    vae = None
    if (path / "vae" / "config.json").exists():
        from diffusers import AutoencoderKL

        vae = _pretrained(AutoencoderKL, path / "vae", "VAE", torch_dtype=dtype).eval().to(device)
        vae.requires_grad_(False)
    c = unet.config
    size = c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0]
    variance = scfg.get("variance_type") or "fixed_small"
    if variance in ("learned", "learned_range"):
        variance = "learned_range"
        if c.out_channels != 2 * c.in_channels:
            raise ModelError(f"learned variance needs a U-Net with 2x{c.in_channels} output channels, this one has {c.out_channels}")
    conditioning = "none"
    num_classes = getattr(c, "num_class_embeds", None)
    if cls_name == "UNet2DConditionModel" and getattr(c, "cross_attention_dim", None):
        conditioning = "text"
    elif num_classes:
        conditioning = "class"
    null_class = meta.get("null_class")
    if null_class is not None and (not isinstance(null_class, int) or isinstance(null_class, bool) or not num_classes
                                   or not 0 <= null_class < num_classes):
        raise ModelError(f"{unet_dir}/unetscope.json: null_class must be a class index in 0..{(num_classes or 1) - 1} "
                         f"(the U-Net's num_class_embeds), got {null_class!r}")
    return DiffusionModel(
        units=units, schedule=_schedule_from(scfg), sample_shape=(c.in_channels, size, size),
        prediction_type=scfg.get("prediction_type", "epsilon"), variance_type=variance, conditioning=conditioning,
        num_classes=num_classes, null_class=null_class, class_names=meta.get("class_names"),
        latent=vae is not None, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, name=name, meta=meta,
    )


def wrap(unet, *, beta_schedule: str = "linear", num_train_timesteps: int = 1000, beta_start: float = 1e-4,
         beta_end: float = 0.02, prediction_type: str = "epsilon", variance_type: str | None = None,
         sample_shape: tuple[int, int, int] | None = None, conditioning: str = "none", num_classes: int | None = None,
         null_class: int | None = None, name: str | None = None) -> DiffusionModel:
    """A model built in your own code -> a ``DiffusionModel``: a diffusers UNet, a guided-diffusion
    or GLIDE ``UNetModel``-style U-Net, or any object that implements the ``UNetUnits`` protocol
    (see ``docs/adapters.md``), with its diffusion settings."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    from .adapters.guided_diffusion import GuidedDiffusionUnits, looks_like_guided_diffusion

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
        from .adapters.diffusers_unet import DiffusersUNetUnits

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
    if conditioning not in ("none", "class", "text"):
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
