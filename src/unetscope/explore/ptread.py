"""Kept images files (``images/RUN/SEED.pt``, written by ``torch.save``) read with numpy alone, so the
explorer starts and answers its first click without importing torch (seconds on a busy machine).

Only what unetscope writes is understood: a dict of name -> tensor in torch's zip format, little
endian. The pickle may name nothing but ``torch._utils._rebuild_tensor_v2``, torch's typed storages and
``collections.OrderedDict`` (the "restricting globals" recipe of the ``pickle`` docs: reading a
crafted file runs no code). Anything else raises ``PtFormatError``; the caller then asks torch's
weights-only loader, which also says why a damaged file cannot be read.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict

import numpy as np

__all__ = ["PtFormatError", "read_pt"]

_DTYPES = {"ByteStorage": np.uint8, "CharStorage": np.int8, "ShortStorage": np.int16, "IntStorage": np.int32,
           "LongStorage": np.int64, "HalfStorage": np.float16, "FloatStorage": np.float32,
           "DoubleStorage": np.float64, "BoolStorage": np.bool_}


class PtFormatError(ValueError):
    """A file this reader does not understand (not necessarily a damaged one)."""


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """torch's ``_rebuild_tensor_v2`` for a numpy storage: the view ``offset/size/stride``, copied;
    bounds checked first (a strided view out of bounds would read other memory)."""
    if not (isinstance(storage, np.ndarray) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) and all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride))):
        raise PtFormatError("not a plain strided tensor")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise PtFormatError("a tensor reaches past its storage")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride])
    return view.copy()


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix, self.storages = archive, prefix, {}

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return np.dtype(_DTYPES[name])
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise PtFormatError(f"{module}.{name} is not expected in an images file")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel): the bytes are the archive's PREFIX/data/KEY
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], np.dtype)
                and isinstance(pid[2], str) and pid[2].isdigit()):
            raise PtFormatError("an unknown storage reference")
        dtype, key = pid[1], pid[2]
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}data/{key}")
            if len(raw) % dtype.itemsize:
                raise PtFormatError(f"storage {key} is not a whole number of {dtype} items")
            self.storages[key] = np.frombuffer(raw, dtype=dtype)
        return self.storages[key]


def read_pt(path) -> dict:
    """An images file -> {variant id: ndarray} (PtFormatError for anything this reader does not understand)."""
    try:
        with zipfile.ZipFile(path) as z:
            pkls = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise PtFormatError("not torch's zip format")
            prefix = pkls[0][: -len("data.pkl")]
            if prefix + "byteorder" in z.namelist() and z.read(prefix + "byteorder").strip() != b"little":
                raise PtFormatError("not little endian")
            with z.open(pkls[0]) as f:
                obj = _Unpickler(f, z, prefix).load()
    except PtFormatError:
        raise
    except Exception as e:  # a damaged or foreign file: torch's loader says which
        raise PtFormatError(f"{type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()):
        raise PtFormatError("not a dict of variant id -> image")
    return dict(obj)
