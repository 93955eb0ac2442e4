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


def respaced_ddim(model, S: int):
    """A diffusers ``DDIMScheduler`` respaced as unetscope respaces S steps of the model's schedule
    (its step t is unetscope's step t), and the training timestep of each of its indices."""
    from diffusers import DDIMScheduler

    from unetscope.schedule import make_betas

    sp = model.schedule.respace(S)
    kept = [int(sp.timesteps[t]) for t in range(1, S + 1)]
    ac = torch.cumprod(1 - make_betas(model.schedule.beta_schedule, model.schedule.num_train_timesteps), 0)[kept]
    betas = 1 - ac / torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
    sch = DDIMScheduler(num_train_timesteps=S, trained_betas=betas.numpy(), clip_sample=True, set_alpha_to_one=True,
                        timestep_spacing="leading")
    sch.alphas_cumprod = ac.float()
    sch.set_timesteps(S)
    return sch, kept


@torch.no_grad()
def ddim_loop(model, S: int, seeds, labels, guidance: float = 3.0, unet=None):
    """The loop a user writes on a class-conditional diffusers U-Net (``scheduler.timesteps``,
    ``unet(x, t, class_labels=...)``, ``scheduler.step``, guidance batched), on unetscope's noise for
    ``seeds``: its x_0 equals unetscope's DDIM sampler's. ``x`` stays float32; the U-Net runs in its dtype."""
    from unetscope.noise import NoiseBank

    sch, kept = respaced_ddim(model, S)
    unet = unet if unet is not None else model.units.unet
    dev, dt = model.device, model.dtype
    x = NoiseBank(seeds, model.sample_shape).initial().to(dev)
    y = torch.tensor(labels, device=dev)
    null = torch.full_like(y, model.null_class)
    for i in sch.timesteps.tolist():
        tau = torch.full((2 * len(seeds),), kept[i], device=dev)
        out = unet(torch.cat([x, x]).to(dt), tau, class_labels=torch.cat([y, null])).sample.float()
        oc, ou = out.chunk(2)
        x = sch.step(ou + guidance * (oc - ou), i, x, eta=0.0, use_clipped_model_output=True).prev_sample
    return x
