"""``accelerate`` inside a user's pipeline or loop: its overhead, and what one searched schedule saves.

1. Overhead: a U-Net hooked with an empty schedule against the same weights unhooked (a deep copy,
   hooked for the whole run), under DDIM, in (a) the tiny Stable-Diffusion pipeline the tests build
   (``tests/conftest.py``: ``save_tiny_sd``) and (b) the bundled model in a hand-written diffusers
   loop (``scheduler.timesteps``, ``unet(x, t, class_labels=...)``, ``scheduler.step``, guidance
   batched). Goal: hooked / unhooked <= 1.02.
2. One searched schedule under DDIM, DPM++ 2M, Euler a and UniPC: the time saving (hooked against
   unhooked, interleaved) and the SSIM of the hooked images against the unhooked ones from the same
   noise; in the tiny SD pipeline (a schedule searched on it here, unless --sd-schedule) and in the
   bundled model's loop (--schedule, found at S = 100 and rescaled to --steps with a note).

Interleaved repeats after a warm-up, the device synchronised; medians and spreads.

    python benchmarks/accelerate_overhead.py [--steps 100] [--samples 8] [--sd-steps 20] [--sd-prompts 4]
        [--repeats 10] [--threads N] [--device cpu] [--schedule FILE] [--sd-schedule FILE]
"""

from __future__ import annotations

import argparse
import copy
import inspect
import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny SD pipeline's recipe

SCHEDULERS = {"DDIM": "DDIMScheduler", "DPM++ 2M": "DPMSolverMultistepScheduler", "Euler a": "EulerAncestralDiscreteScheduler",
              "UniPC": "UniPCMultistepScheduler"}
PROMPTS = ["a cat", "a dog", "a fox", "an owl", "a hen", "a cow", "an ox", "a pig"]  # the tiny tokenizer: 6 characters


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100,
                   help="S of the bundled model's loop (the searched schedule was found at S = 100; rescaled below it, "
                        "its first cache read can land on the first step, which has no cache yet, and be refused)")
    p.add_argument("--samples", type=int, default=8, help="samples of the bundled model's loop (x2 rows with guidance)")
    p.add_argument("--sd-steps", type=int, default=20, help="S of the tiny SD pipeline")
    p.add_argument("--sd-prompts", type=int, default=4, help="prompts per tiny SD pipeline call")
    p.add_argument("--sd-size", type=int, default=32, help="height = width of the tiny SD pipeline's images")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="default", help="the class-conditional diffusers model of the loop")
    p.add_argument("--schedule", default=str(ROOT / "examples" / "schedules" / "default_searched.json"))
    p.add_argument("--sd-schedule", default=None, help="a schedule for the tiny SD pipeline (default: searched here)")
    p.add_argument("--schedulers", default=",".join(SCHEDULERS), help="comma-separated, of: " + ", ".join(SCHEDULERS))
    return p.parse_args(argv)


def main(argv=None):
    import unetscope as us

    a = _args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    names = [n.strip() for n in a.schedulers.split(",") if n.strip()]
    bad = [n for n in names if n not in SCHEDULERS]
    if bad:
        raise SystemExit(f"accelerate_overhead: --schedulers takes {', '.join(SCHEDULERS)}; got {bad[0]!r}")
    device = us.checks.check_device(a.device, us.ModelError)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {a.repeats} interleaved "
          f"repeats after a warm-up", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += sd_pipeline(a, names, device, Path(tmp))
    rows += bundled_loop(a, names, device)
    print(f"\n{'where':<24} {'scheduler':<9} {'schedule':<16} {'compute':>8} {'unhooked ms':>12} {'hooked ms':>10} "
          f"{'ratio':>6} {'time saving':>12} {'spread':>7} {'SSIM mean':>10} {'SSIM min':>9}")
    for r in rows:
        print(f"{r['where']:<24} {r['scheduler']:<9} {r['schedule']:<16} {r['compute']:>8.3f} {r['base'] * 1e3:>12.1f} "
              f"{r['hooked'] * 1e3:>10.1f} {r['hooked'] / r['base']:>6.3f} {1 - r['hooked'] / r['base']:>12.1%} "
              f"{r['spread']:>7.0%} {r['ssim_mean']:>10.4f} {r['ssim_min']:>9.4f}")
    over = [r for r in rows if r["schedule"] == "empty"]
    for r in over:
        print(f"overhead of the hooked {r['where']} with an empty schedule: {r['hooked'] / r['base']:.3f}x (goal <= 1.02); "
              f"images {'bitwise equal' if r['equal'] else 'DIFFER'}")
    spread = max(r["spread"] for r in rows)
    if spread > 0.10:
        print(f"warning: timed runs spread by up to {spread:.0%}: the machine is busy; rerun on a quiet one", file=sys.stderr)


def _measure(where, scheduler, schedule, handle, fns, repeats, device, images):
    import unetscope as us
    from unetscope.timing import interleave

    timings, first = interleave(fns, repeats, warmup=1, device=device)
    a, b = images(first["unhooked"]), images(first["hooked"])
    ss = us.ssim(a, b)
    tb, th = timings["unhooked"], timings["hooked"]
    return dict(where=where, scheduler=scheduler, schedule=schedule, compute=handle.stats.compute_fraction,
                base=tb.median, hooked=th.median, spread=max(tb.spread, th.spread), ssim_mean=float(ss.mean()),
                ssim_min=float(ss.min()), equal=bool(torch.equal(a, b)))


# --- (a) the tiny Stable-Diffusion pipeline ------------------------------------------------------------
def sd_pipeline(a, names, device, tmp: Path) -> list[dict]:
    import diffusers
    from diffusers import StableDiffusionPipeline

    import unetscope as us
    from conftest import save_tiny_sd

    folder = save_tiny_sd(tmp / "sd")
    prompts = (PROMPTS * (a.sd_prompts // len(PROMPTS) + 1))[:a.sd_prompts]
    schedule = a.sd_schedule
    if schedule is None:  # a schedule searched on the tiny pipeline itself (unetscope's DDIM, the pipeline's guidance)
        found = us.search_shortcut(str(folder), tmp / "search", method="ddim", steps=a.sd_steps, budget=0.7,
                                   cond=PROMPTS[:6], samples=6, calibration=3, validation=0, rounds=4, repeats=1,
                                   device=str(device))
        schedule = str(found["schedule"])
        print(f"tiny SD pipeline: searched {found['search']['plan']!r} (predicted compute "
              f"{found['search']['predicted_compute']:.3f})", flush=True)
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False).to(device)
    pipe.set_progress_bar_config(disable=True)
    twin = StableDiffusionPipeline(**{**pipe.components, "unet": copy.deepcopy(pipe.unet)})
    twin.set_progress_bar_config(disable=True)

    def gen(p):
        g = torch.Generator().manual_seed(0)
        return lambda: p(prompts, num_inference_steps=a.sd_steps, guidance_scale=3.0, generator=g.manual_seed(0),
                         output_type="pt", height=a.sd_size, width=a.sd_size).images

    rows = []
    for name in ["DDIM"] + names:
        cls = getattr(diffusers, SCHEDULERS[name])
        pipe.scheduler, twin.scheduler = cls.from_config(pipe.scheduler.config), cls.from_config(pipe.scheduler.config)
        sched = us.Plan() if len(rows) == 0 else schedule
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with us.accelerate(twin, sched) as h:
                rows.append(_measure("tiny SD pipeline", name, "empty" if len(rows) == 0 else "searched", h,
                                     {"unhooked": gen(pipe), "hooked": gen(twin)}, a.repeats, device,
                                     lambda im: im.float().cpu()))
        print(f"  tiny SD pipeline, {name}, {rows[-1]['schedule']}: done", flush=True)
    return rows


# --- (b) the bundled model in a hand-written loop -------------------------------------------------------
def bundled_loop(a, names, device) -> list[dict]:
    import diffusers

    import unetscope as us

    model = us.load_model(a.model, device=device)
    if model.conditioning != "class" or not hasattr(model.units, "unet"):
        raise SystemExit("accelerate_overhead: --model must be a class-conditional diffusers U-Net (as 'default' is)")
    folder = us.models.default_model_path() if a.model == "default" else Path(a.model)
    config = diffusers.DDPMScheduler.load_config(folder if (folder / "scheduler_config.json").exists() else folder / "scheduler")
    unet = model.units.unet
    twin = copy.deepcopy(unet)
    seeds = list(range(a.samples))
    y = torch.tensor([s % model.num_classes_real for s in seeds], device=device)
    null = torch.full_like(y, model.null_class)

    def loop(u, sch):
        step_takes_generator = "generator" in inspect.signature(sch.step).parameters

        @torch.no_grad()
        def run():
            sch.set_timesteps(a.steps)
            g = torch.Generator().manual_seed(0)
            x = (torch.randn(len(seeds), *model.sample_shape, generator=g) * sch.init_noise_sigma).to(device)
            for t in sch.timesteps:
                xin = sch.scale_model_input(x, t)
                out = u(torch.cat([xin, xin]), t, class_labels=torch.cat([y, null])).sample
                oc, ou = out.chunk(2)
                eps = ou + 3.0 * (oc - ou)
                x = (sch.step(eps, t, x, generator=g) if step_takes_generator else sch.step(eps, t, x)).prev_sample
            return ((x.float().cpu().clamp(-1, 1) + 1) / 2)
        return run

    rows = []
    for name in ["DDIM"] + names:
        cls = getattr(diffusers, SCHEDULERS[name])
        empty = len(rows) == 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the schedule's rescaling note (S = 100 -> --steps)
            with us.accelerate(twin, us.Plan() if empty else a.schedule, steps=a.steps) as h:
                rows.append(_measure(f"bundled model loop", name, "empty" if empty else "searched", h,
                                     {"unhooked": loop(unet, cls.from_config(config)), "hooked": loop(twin, cls.from_config(config))},
                                     a.repeats, device, lambda im: im))
        print(f"  bundled model loop, {name}, {rows[-1]['schedule']}: done", flush=True)
    return rows


if __name__ == "__main__":
    main()
