"""The unit protocol every U-Net is seen through: what an adapter (or your own class) implements.

A U-Net is ``K`` encoder units ``E[0..K-1]`` (top to bottom), a middle unit ``M`` and ``K`` decoder
units ``D[0..K-1]`` (bottom to top). Each encoder unit pushes one skip; ``D[j]`` consumes the skip
pushed by ``E[K-1-j]`` (LIFO, like ``hs.pop()`` in guided-diffusion). ``unetscope.runner`` runs
one evaluation of these units under a step's action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from ..errors import UnetscopeError

__all__ = ["AdapterError", "UNetUnits", "Context"]


class AdapterError(UnetscopeError, ValueError):
    """A U-Net that cannot be seen as units, or units that do not fit together."""


@dataclass
class Context:
    """What ``prepare`` computes once per evaluation (embeddings, conditioning), shared by all
    units; ``skips`` is filled by the runner (``skips[i]`` is ``E[i]``'s output; once the encoder has
    run it is K long, ``None`` for the units ``DropBlocks`` did not compute)."""

    emb: Any = None
    extra: dict = field(default_factory=dict)
    skips: list = field(default_factory=list)


@runtime_checkable
class UNetUnits(Protocol):
    """Implement this for your own U-Net (see ``docs/adapters.md`` and ``examples/``)."""

    num_blocks: int  # K

    def prepare(self, x: torch.Tensor, timesteps: torch.Tensor, cond: dict) -> Context:
        """Time/class/text embeddings for this evaluation."""

    def encoder(self, i: int, h: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Run ``E[i]``; ``E[0]`` reads the model input ``x``. Its output is skip ``i + 1`` from the top."""

    def middle(self, h: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Run ``M`` on ``E[K-1]``'s output."""

    def decoder(self, j: int, h: torch.Tensor, skip: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Run ``D[j]`` on the previous output and the skip pushed by ``E[K-1-j]``."""

    def head(self, h: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Map ``D[K-1]``'s output to the model output (epsilon, v, or 2C channels)."""
