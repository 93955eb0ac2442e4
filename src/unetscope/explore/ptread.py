"""Kept images files (``images/RUN/SEED.pt``, written by ``torch.save``) read with numpy alone, so the
explorer starts and answers its first click without importing torch (seconds on a busy machine).

Only what unetscope writes is understood: a dict of name -> tensor in torch's zip format, little
endian. The pickle may name nothing but ``torch._utils._rebuild_tensor_v2``, torch's typed storages and
``collections.OrderedDict`` (the "restricting globals" recipe of the ``pickle`` docs: reading a
crafted file runs no code). Anything else raises ``PtFormatError``; the caller then asks torch's
weights-only loader, which also says why a damaged file cannot be read. A member found damaged only
when its image is asked for raises ``PtFormatError`` then (that image says so in its place).
"""

from __future__ import annotations

import io
import pickle
import threading
import zipfile
from collections import OrderedDict

import numpy as np

from ..errors import UnetscopeError

__all__ = ["PtFormatError", "LazyImage", "read_pt"]

_DTYPES = {"ByteStorage": np.uint8, "CharStorage": np.int8, "ShortStorage": np.int16, "IntStorage": np.int32,
           "LongStorage": np.int64, "HalfStorage": np.float16, "FloatStorage": np.float32,
           "DoubleStorage": np.float64, "BoolStorage": np.bool_}


class PtFormatError(UnetscopeError, ValueError):
    """A file this reader does not understand (not necessarily a damaged one)."""


class _Storage:
    """A storage of the archive (``PREFIX/data/KEY``), read once, on first use."""

    def __init__(self, archive: zipfile.ZipFile, name: str, dtype: np.dtype, numel: int, lock: threading.Lock):
        self.archive, self.name, self.dtype, self.numel, self.lock, self.data = archive, name, dtype, numel, lock, None

    def array(self) -> np.ndarray:
        with self.lock:
            if self.data is None:
                try:
                    raw = self.archive.read(self.name)
                except Exception as e:  # a damaged member (CRC, truncated)
                    raise PtFormatError(f"{self.name}: {type(e).__name__}: {e}") from None
                if len(raw) != self.numel * self.dtype.itemsize:
                    raise PtFormatError(f"{self.name} holds {len(raw)} bytes, not {self.numel} {self.dtype} items")
                self.data = np.frombuffer(raw, dtype=self.dtype)
            return self.data


class LazyImage:
    """One tensor of an images file: its bytes are read on first use (``np.asarray(img)``), so a
    request for one image of a file of hundreds reads two of them, not all."""

    __slots__ = ("storage", "offset", "size", "stride", "_array")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride, self._array = storage, offset, size, stride, None

    def __array__(self, dtype=None, copy=None):
        if self._array is None:
            st = self.storage.array()
            if 0 in self.size:
                arr = np.zeros(self.size, st.dtype)
            else:  # bounds checked when the file was parsed
                arr = np.lib.stride_tricks.as_strided(st[self.offset:], shape=self.size,
                                                      strides=[s * st.itemsize for s in self.stride]).copy()
            self._array = arr
        return self._array if dtype is None else self._array.astype(dtype)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """torch's ``_rebuild_tensor_v2`` for a storage of the archive: the view ``offset/size/stride``,
    bounds checked here (a strided view out of bounds would read other memory), read on first use."""
    if not (isinstance(storage, _Storage) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) and all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride))):
        raise PtFormatError("not a plain strided tensor")
    if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel:
        raise PtFormatError("a tensor reaches past its storage")
    return LazyImage(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix, self.storages, self.lock = archive, prefix, {}, threading.Lock()

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
                and isinstance(pid[2], str) and pid[2].isdigit() and isinstance(pid[4], int) and pid[4] >= 0):
            raise PtFormatError("an unknown storage reference")
        key = pid[2]
        if key not in self.storages:
            self.storages[key] = _Storage(self.archive, f"{self.prefix}data/{key}", pid[1], pid[4], self.lock)
        return self.storages[key]


def read_pt(path, lazy: bool = False) -> dict:
    """An images file -> {variant id: ndarray} (``lazy``: {variant id: LazyImage}, each read on first
    use; the file is read into memory once). PtFormatError for anything this reader does not understand."""
    try:
        with open(path, "rb") as fh:
            z = zipfile.ZipFile(io.BytesIO(fh.read()))
        pkls = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise PtFormatError("not torch's zip format")
        prefix = pkls[0][: -len("data.pkl")]
        if prefix + "byteorder" in z.namelist() and z.read(prefix + "byteorder").strip() != b"little":
            raise PtFormatError("not little endian")
        obj = _Unpickler(io.BytesIO(z.read(pkls[0])), z, prefix).load()
    except PtFormatError:
        raise
    except Exception as e:  # a damaged or foreign file: torch's loader says which
        raise PtFormatError(f"{type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, LazyImage) for k, v in obj.items()):
        raise PtFormatError("not a dict of variant id -> image")
    return dict(obj) if lazy else {k: np.asarray(v) for k, v in obj.items()}
