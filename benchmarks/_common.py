"""Shared helpers for the benchmark scripts: a model's inputs and interleaved timing."""

from __future__ import annotations

import argparse
import torch


def setup(doc: str, repeats: int):
    """The arguments every timing benchmark takes (--model, --batch, --repeats, --threads), applied:
    returns (args, model, x, timesteps, cond) with the model loaded and a batch of inputs."""
    from unetscope import load_model

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(a.model)
    return (a, model, *model_inputs(model, a.batch))


def model_inputs(model, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *model.sample_shape, generator=g).to(model.device, model.dtype)
    t = torch.full((batch,), model.schedule.num_train_timesteps // 2, dtype=torch.long, device=model.device)
    cond = {}
    if model.conditioning == "class":
        cond = model.make_cond([i % model.num_classes_real for i in range(batch)], batch)
    return x, t, cond


def interleaved(fns: dict, repeats: int, warmup: int = 2, device=None) -> dict:
    """Median seconds of each function by unetscope's timing protocol (warm-up, then interleaved
    runs, so that drifts in machine load hit all alike; the ``device`` waited for around each run)."""
    from unetscope.timing import interleave

    timings, _ = interleave(fns, repeats, warmup, device=device)
    return {k: t.median for k, t in timings.items()}
