"""FLOPs a U-Net evaluation actually executes, counted by torch's ``FlopCounterMode``
(convolutions, matrix products and attention; element-wise work is not counted)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from .runner import UNetRunner
from .plan import NO_ACTION, Plan, StepAction

__all__ = ["count_flops", "flops_by_drop", "FlopTable"]


@torch.no_grad()
def count_flops(runner: UNetRunner, x: torch.Tensor, timesteps: torch.Tensor, cond: dict | None = None,
                action: StepAction | None = None, **action_fields) -> int:
    """FLOPs of one evaluation of ``runner`` under one step's action (``drop_blocks=2``, a
    ``StepAction``, ...). The cached outputs the action reads come from a full evaluation first,
    which is not counted."""
    a = replace(action or NO_ACTION, **action_fields)
    full = runner(x, timesteps, cond, capture=a.needs(runner.num_blocks))  # also the shape probe
    with FlopCounterMode(display=False) as fc:
        runner(x, timesteps, cond, a, fill=full.captured)
    return int(fc.get_total_flops())


def flops_by_drop(runner: UNetRunner, x: torch.Tensor, timesteps: torch.Tensor, cond: dict | None = None) -> list[int]:
    """FLOPs of one evaluation for ``drop_blocks = 0..K`` (index nb)."""
    return [count_flops(runner, x, timesteps, cond, drop_blocks=nb) for nb in range(runner.num_blocks + 1)]


class FlopTable:
    """FLOPs per sample of one evaluation under each U-Net action (counted once per action on one
    input), and of whole plans: the sum over the evaluations ``Plan.walk`` makes."""

    def __init__(self, runner: UNetRunner, x: torch.Tensor, timesteps: torch.Tensor, cond: dict | None = None,
                 rows_per_sample: int = 1):
        self.runner, self.x, self.timesteps, self.cond, self.rows = runner, x, timesteps, cond, rows_per_sample
        self._known: dict[StepAction, int] = {}

    def __call__(self, action: StepAction) -> int:
        a = action.unet
        if a.adaptive:  # AdaptiveCache: its first step is a full evaluation; the others depend on the sample
            if a.decides:
                raise ValueError("an AdaptiveCache step's FLOPs depend on each sample's decision: use FlopTable.samples")
            a = NO_ACTION
        if a not in self._known:
            self._known[a] = self.rows * count_flops(self.runner, self.x, self.timesteps, self.cond, a)
        return self._known[a]

    def plan(self, plan: Plan, steps: int, calls=None) -> int:
        """FLOPs of one sample's run under ``plan`` (jumps and stops included); ``calls(t)``: the U-Net
        calls of step t (default one)."""
        return sum((calls(st.t) if calls else 1) * self(st.action) for st in plan.walk(steps))

    def samples(self, plan: Plan, steps: int, reused: dict, n: int, calls=None) -> list[int]:
        """FLOPs of each of ``n`` samples' runs under ``plan``; at an ``AdaptiveCache`` step,
        ``reused[t]`` (per sample, ``Trajectory.reused``) says whose deep part was read from the
        cache (the FLOPs of ``DropBlocks(nb, fill="cache")``) and whose ran (a full evaluation).
        The embedding that a sub-batch computes again is not counted (a few linear layers). ``calls(t)``:
        the U-Net calls of step t (a Heun step's two; default one; an adaptive step's decision is
        counted for each of its calls alike)."""
        out = [0] * n
        for st in plan.walk(steps):
            a, k = st.action, calls(st.t) if calls else 1
            if not a.decides:
                out = [o + k * self(a) for o in out]
                continue
            full, cut = self(NO_ACTION), self(StepAction(drop_blocks=a.adaptive, fill="cache"))
            out = [o + k * (cut if bool(r) else full) for o, r in zip(out, reused[st.t].tolist())]
        return out
