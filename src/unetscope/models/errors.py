"""The models package's one error."""

from __future__ import annotations

__all__ = ["ModelError"]


class ModelError(ValueError):
    """A model that cannot be loaded or used as asked."""
