"""The noise bank: every random tensor of a sample is keyed by ``(seed, step)``.

``x_S`` and the per-step noise ``eps_t`` come from generators seeded by the sample's seed and the
step number, so removing or jumping over steps never shifts the noise later steps use, and a sample
and all of its intervened variants share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["NoiseBank"]

_INITIAL, _STEP = 0, 1  # streams: x_S, and eps_t of step t


def _generator(seed: int, stream: int, step: int) -> torch.Generator:
    # SeedSequence mixes (seed, stream, step) into a well-spread 64-bit state
    state = np.random.SeedSequence([int(seed), stream, int(step)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class NoiseBank:
    """Noise of shape ``(C, H, W)`` per sample, drawn on the CPU (reproducible on any device)."""

    def __init__(self, seeds: Sequence[int], shape: tuple[int, ...]):
        self.seeds = [int(s) for s in seeds]
        self.shape = tuple(shape)

    def _draw(self, stream: int, step: int) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=_generator(s, stream, step)) for s in self.seeds])

    def initial(self) -> torch.Tensor:
        """``x_S``: (N, C, H, W); the same whatever the number of steps S."""
        return self._draw(_INITIAL, 0)

    def step(self, t: int) -> torch.Tensor:
        """``eps_t``, the noise the evaluation at step ``t`` adds: (N, C, H, W)."""
        return self._draw(_STEP, t)

    def generators(self, t: int) -> list[torch.Generator]:
        """One CPU generator per sample for step ``t``'s noise, the first draw of each being that
        sample's ``eps_t``: what a diffusers scheduler that draws its own noise is handed."""
        return [_generator(s, _STEP, t) for s in self.seeds]
