"""FLOPs a U-Net evaluation actually executes, counted by torch's ``FlopCounterMode``
(convolutions, matrix products and attention; element-wise work is not counted)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .adapters.base import UNetRunner

__all__ = ["count_flops", "flops_by_drop"]


@torch.no_grad()
def count_flops(runner: UNetRunner, x: torch.Tensor, timesteps: torch.Tensor, cond: dict | None = None, **step) -> int:
    """FLOPs of one evaluation of ``runner`` under one step's interventions (``drop_blocks=``, ...)."""
    runner.decoder_shapes(x, timesteps, cond)  # a probe must not be counted
    with FlopCounterMode(display=False) as fc:
        runner(x, timesteps, cond, **step)
    return int(fc.get_total_flops())


def flops_by_drop(runner: UNetRunner, x: torch.Tensor, timesteps: torch.Tensor, cond: dict | None = None) -> list[int]:
    """FLOPs of one evaluation for ``drop_blocks = 0..K`` (index nb)."""
    return [count_flops(runner, x, timesteps, cond, drop_blocks=nb) for nb in range(runner.num_blocks + 1)]
