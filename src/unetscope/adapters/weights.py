"""Loading weights saved by research code into your module, safely: a ``.safetensors`` file or a
torch checkpoint read weights-only (loading runs no code), mapped to the CPU whatever device saved
it, a state dict nested under a key (``"ema"``, ``"model"``, ``"state_dict"``), and the prefixes
that wrappers add (DataParallel's ``module.``, ``torch.compile``'s ``_orig_mod.``) removed."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import AdapterError

__all__ = ["load_weights", "PREFIXES"]

PREFIXES = ("module.", "_orig_mod.")


def load_weights(module: torch.nn.Module, path, *, key: str | None = None, prefixes=PREFIXES,
                 strict: bool = True) -> torch.nn.Module:
    """Load the weights in ``path`` into ``module`` (on the CPU; move the module afterwards)."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)  # a GPU checkpoint lands on the CPU
    except Exception as e:
        raise AdapterError(f"cannot read weights from {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, dict) else type(obj).__name__
            raise AdapterError(f"{path} has no {key!r} (it holds: {keys})")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise AdapterError(f"{path} does not hold a state dict of tensors{'' if key else ' (pass key= for a nested one)'}")
    sd = {}
    for k, v in obj.items():
        for p in prefixes:
            while k.startswith(p):
                k = k[len(p):]
        sd[k] = v
    missing, unexpected = [], []
    try:
        res = module.load_state_dict(sd, strict=False)
        missing, unexpected = list(res.missing_keys), list(res.unexpected_keys)
    except RuntimeError as e:  # shapes that do not match the module
        raise AdapterError(f"weights in {path} do not fit {type(module).__name__}: {str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}") from None
    if strict and (missing or unexpected):
        raise AdapterError(f"weights in {path} do not fit {type(module).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return module
