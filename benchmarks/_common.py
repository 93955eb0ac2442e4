"""Shared helpers for the benchmark scripts: a model's inputs and interleaved timing."""

from __future__ import annotations

import statistics
import time

import torch


def model_inputs(model, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *model.sample_shape, generator=g).to(model.device, model.dtype)
    t = torch.full((batch,), model.schedule.num_train_timesteps // 2, dtype=torch.long, device=model.device)
    cond = {}
    if model.conditioning == "class":
        cond = model.make_cond([i % model.num_classes_real for i in range(batch)], batch)
    return x, t, cond


def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median seconds of each function, run in turn so that drifts in machine load hit all alike."""
    times = {k: [] for k in fns}
    for _ in range(warmup):
        for f in fns.values():
            f()
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}
