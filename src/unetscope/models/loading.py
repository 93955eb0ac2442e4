"""Loading models: ``"default"`` (the bundled MNIST model), a local diffusers folder, or a factory in
your own code (``FILE.py:FACTORY`` or ``package.module:FACTORY``) that returns a wrapped model (its
device checked by ``unetscope.checks``). Nothing is ever downloaded: folders are read with ``local_files_only``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from ..adapters.base import AdapterError
from ..checks import check_bool, check_device, check_dtype
from ..schedule import NoiseSchedule
from .errors import ModelError
from .model import DiffusionModel
from .wrapping import wrap

__all__ = ["load_model", "load_factory", "is_factory_reference", "fingerprint", "default_model_path", "check_scheduler_config"]


def default_model_path() -> Path:
    return Path(__file__).parents[1] / "weights" / "default"


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
        from ..compiling import check_compiler

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
    from ..adapters.diffusers_unet import DiffusersUNetUnits

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
