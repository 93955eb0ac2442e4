"""Small checks of user values shared by every layer: an integer is an int, a NumPy integer or a
0-d integer tensor (research code passes all three), never a bool or a float."""

from __future__ import annotations

import numbers

__all__ = ["as_int"]


def as_int(value) -> int | None:
    """``value`` as a Python int when it is an integer (``5``, ``np.int64(5)``, ``torch.tensor(5)``),
    else None; bools (``True``, ``np.bool_``) and floats are not integers here."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):  # int and NumPy's integer types
        return int(value)
    if type(value).__name__ == "Tensor" and type(value).__module__.startswith("torch"):
        if value.dim() == 0 and not (value.is_floating_point() or value.is_complex()) and str(value.dtype) != "torch.bool":
            return int(value.item())
    return None
