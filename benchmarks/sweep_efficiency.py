"""Sweep efficiency on the default model: for the `phases` and `block-utility` grids, the U-Net
evaluations spent next to the minimum and the naive cost (every plan from x_S), and the wall time
per image-evaluation against the model's own batched forward per image (goal: within 15%).

    python benchmarks/sweep_efficiency.py [--model default] [--samples 16] [--t-step 5] [--steps 100] [--threads N]
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import model_inputs  # noqa: E402

from unetscope import Sampler, load_model  # noqa: E402
from unetscope.experiments import run_experiment  # noqa: E402
from unetscope.timing import timed  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="default")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--t-step", type=int, default=5)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(a.model)
    sampler = Sampler(model, steps=a.steps, guidance=a.guidance)
    seeds = list(range(a.samples))
    cond = [s % model.num_classes_real for s in seeds] if model.conditioning == "class" else None
    rows_per_eval = a.samples * (2 if a.guidance != 1 and cond else 1)  # guidance runs both halves in one batch
    # the model's own forward on the same batch: seconds per image
    x, t, c = model_inputs(model, rows_per_eval)
    units = model.units
    with torch.no_grad():
        for _ in range(3):
            units.full_forward(x, t, c)
        times = [timed(lambda: units.full_forward(x, t, c), model.device)[0] for _ in range(15)]
    fwd = statistics.median(times) / rows_per_eval
    print(f"model {a.model} (K={model.num_blocks}), S={a.steps}, {a.samples} samples (batch {rows_per_eval} with guidance), "
          f"{torch.get_num_threads()} threads; plain forward {fwd * 1e3:.3f} ms per image")
    print(f"{'grid':<14} {'plans':>6} {'spent':>7} {'minimum':>8} {'naive':>7} {'naive/spent':>11} {'ms/image-eval':>14} {'vs forward':>10}")
    with tempfile.TemporaryDirectory() as out:
        for name in ("phases", "block-utility"):
            res = run_experiment(name, model, sampler, seeds, cond, out, {"t_step": a.t_step}, chunk_size=a.samples,
                                 progress=False, log=lambda m: None)
            st = res["stats"]
            per = st["seconds"] / (st["spent_now"] * rows_per_eval)
            print(f"{name:<14} {st['plans']:>6} {st['spent']:>7} {st['minimum']:>8} {st['naive']:>7} {st['naive'] / st['spent']:>11.2f} "
                  f"{per * 1e3:>14.3f} {per / fwd:>10.3f}")
    print("ms/image-eval: sweep wall time (sampling, metrics and storage included) per image per U-Net evaluation")


if __name__ == "__main__":
    main()
