"""A schedule found by unetscope, run inside a hand-written diffusers loop (scheduler.timesteps,
unet(x, t, class_labels=...), scheduler.step) on the bundled model: find it, hook it, compare.

    python examples/deploy.py [--out runs/deploy]
"""

import argparse
import tempfile

import torch
from diffusers import DDIMScheduler

import unetscope as us


def generate(model, scheduler, seeds, labels, guidance=3.0):
    """The loop a user writes: classifier-free guidance batched, one U-Net call a step."""
    unet = model.units.unet
    g = torch.Generator().manual_seed(seeds[0])
    x = torch.randn(len(seeds), *model.sample_shape, generator=g)
    y = torch.tensor(labels)
    null = torch.full_like(y, model.null_class)
    for t in scheduler.timesteps:
        with torch.no_grad():
            out = unet(torch.cat([x, x]), t, class_labels=torch.cat([y, null])).sample
        cond, uncond = out.chunk(2)
        x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    return (x.clamp(-1, 1) + 1) / 2


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="where the search writes its schedule (default: a temporary folder)")
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args(argv)
    out = a.out or tempfile.mkdtemp()
    model = us.load_model("default")
    # 1. find a schedule on unetscope's own DDIM sampler (a small search: 2 + 1 seeds, one round)
    found = us.search_shortcut(model, out, method="ddim", steps=a.steps, budget=0.7, samples=5, calibration=2,
                               validation=1, rounds=1, repeats=1)
    print("schedule:", found["search"]["plan"])
    # 2. the user's loop, with the diffusers scheduler it already uses
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                              timestep_spacing="trailing")
    scheduler.set_timesteps(a.steps)
    seeds, labels = [0, 1, 2, 3], [3, 1, 4, 1]
    plain = generate(model, scheduler, seeds, labels)
    # 3. the same loop under the schedule: three lines
    with us.accelerate(model.units.unet, f"{out}/schedule.json", steps=a.steps) as handle:
        fast = generate(model, scheduler, seeds, labels)
    print(f"U-Net compute run: {handle.stats.compute_fraction:.3f} of the unhooked loop's "
          f"({handle.stats.cut_calls} of {handle.stats.calls} calls cut)")
    print("SSIM against the unhooked loop:", [round(v, 3) for v in us.ssim(fast, plain).tolist()])


if __name__ == "__main__":
    main()
