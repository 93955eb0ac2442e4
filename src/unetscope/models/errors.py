"""The models package's one error."""

from __future__ import annotations

from ..errors import UnetscopeError

__all__ = ["ModelError"]


class ModelError(UnetscopeError, ValueError):
    """A model that cannot be loaded or used as asked."""
