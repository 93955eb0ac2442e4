"""Throughput of the `phases` grid (image-evaluations per second: U-Net evaluations times the samples
each holds, a guided evaluation counted once) on the in-process engine, on Ray with 1 worker and on Ray with 2 workers, one torch
thread each, measured side by side by unetscope's timing protocol (a warm-up of each side, then
interleaved runs; medians and spreads) on the grid alone (its analysis and figures are the same
on every side). Goals (issue 16): Ray with 1 worker >= 0.9x the local
engine (Ray's overhead per chunk is small next to a chunk); 2 workers >= 1.7x 1 worker.

Ray's workers are started once, in the warm-up (their start and model load is printed apart: it is
paid once per run of a sweep, not per chunk); each timed run writes a fresh results folder, so no
chunk is ever resumed. Run it on a quiet machine with at least 2 free cores:

    python benchmarks/scaling.py [--model default] [--samples 16] [--chunk-size 4] [--steps 100] [--t-step 10] [--repeats 3]
"""

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from unetscope import Sampler, load_model
from unetscope.executor import RayExecutor
from unetscope.experiments import EXPERIMENTS
from unetscope.store import ResultStore
from unetscope.sweep import GridConfig, run_grid
from unetscope.timing import interleave


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--chunk-size", type=int, default=4, help="samples per chunk (the work unit sent to a worker)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--t-step", type=int, default=10)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    import ray

    torch.set_num_threads(1)  # the local engine: one thread, like each Ray worker
    model = load_model(a.model)
    sampler = Sampler(model, steps=a.steps, guidance=a.guidance if model.has_null_branch else 1.0)
    seeds = list(range(a.samples))
    cond = [s % model.num_classes_real for s in seeds] if model.conditioning == "class" else None
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    ex = RayExecutor(threads=1, workers=2, model=a.model)  # one pool of 2 slots; "1 worker" uses one of them
    ex.start()
    exp = EXPERIMENTS["phases"]
    params = exp.resolve(a.steps, model.num_blocks, {"t_step": a.t_step}, {})
    plans = exp.plans(params, a.steps, model.num_blocks)
    work = {}

    def side(name, executor, workers=None):
        def run():  # the grid alone, into a fresh database (the analysis and figures are the same on every side)
            if workers is not None:
                executor.workers = workers
            with tempfile.TemporaryDirectory() as out, ResultStore(Path(out) / "results.sqlite") as store:
                grid = GridConfig(out_dir=out, chunk_size=a.chunk_size, image_seeds=seeds[:4], progress=False)
                st = run_grid(store, "phases", sampler, seeds, cond, plans, grid, executor=executor)
            work[name] = (sum(w["image_evaluations"] for w in st["workers"].values()), st["spent_now"], len(st["workers"]))
        return run

    fns = {"local": side("local", None), "ray-1": side("ray-1", ex, 1), "ray-2": side("ray-2", ex, 2)}
    t0 = time.perf_counter()
    fns["ray-2"]()  # starts both workers (imports, model load): paid once per sweep, reported apart
    startup = time.perf_counter() - t0
    timings, _ = interleave(fns, a.repeats, warmup=1)
    ex.close()
    ray.shutdown()

    img_evals = work["local"][0]
    assert all(w[0] == img_evals for w in work.values()), work  # the same grid on every side
    rate = {k: img_evals / t.median for k, t in timings.items()}
    print(f"model {a.model} (K={model.num_blocks}), phases grid: S={a.steps}, t_step {a.t_step}, {a.samples} samples in chunks "
          f"of {a.chunk_size}; {work['local'][1]} U-Net evaluations = {img_evals} image-evaluations per run; one thread per "
          f"process; {a.repeats} interleaved runs after a warm-up")
    print(f"first Ray run, both workers started (imports and model load included): {startup:.1f} s")
    print(f"{'side':<7} {'median s':>9} {'spread':>7} {'img-evals/s':>12}")
    for k, t in timings.items():
        print(f"{k:<7} {t.median:>9.2f} {t.spread:>7.0%} {rate[k]:>12.1f}")
    print(f"ray-1 / local: {rate['ray-1'] / rate['local']:.2f}x (goal >= 0.9)   "
          f"ray-2 / ray-1: {rate['ray-2'] / rate['ray-1']:.2f}x (goal >= 1.7)")
    spread = max(t.spread for t in timings.values())
    if spread > 0.10:
        print(f"warning: timed runs spread by {spread:.0%}: the machine is busy; rerun on a quiet machine", file=sys.stderr)


if __name__ == "__main__":
    main()
