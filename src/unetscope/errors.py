"""The one base class of unetscope's typed errors (imports nothing: every layer, and ``unetscope
explore`` without torch, can raise and catch it)."""

from __future__ import annotations

__all__ = ["UnetscopeError"]


class UnetscopeError(Exception):
    """A user's input or setting that does not fit, reported in one line (the CLI: exit code 2).

    Every typed error subclasses it and keeps its builtin base too (``class PlanError(UnetscopeError,
    ValueError)``), so ``except ValueError`` in user code still catches what it caught."""
