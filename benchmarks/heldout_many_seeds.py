"""Held-out SSIM of a searched schedule of the bundled model and of its uniform neighbours (DeepCache-
style, nb = 9, a full evaluation every 4th, 5th and 6th step) on 200 fresh seeds (labels seed % 10),
none of them seen by the search.

The search command measures its result on its own few held-out seeds; this says what they stand for.
Quality only (no timing), about 5 minutes on two CPU threads:

    python benchmarks/heldout_many_seeds.py --schedule results/search-default-mean90/schedule.json --first-seed 32 --out results/search-default-mean90/heldout-200.json
    python benchmarks/heldout_many_seeds.py --schedule results/search-default-mean90-val16/schedule.json --first-seed 48 --out results/search-default-mean90-val16/heldout-200.json

(The first search used seeds 0..31, the second 0..47: --first-seed is the first seed after them.)
"""

import argparse
import json
import time

import numpy as np
import torch

import unetscope as us
from unetscope import Plan, Sampler
from unetscope.shortcut import heldout_ssim, load_schedule, uniform_cache_cuts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedule", required=True, help="the searched schedule (JSON)")
    p.add_argument("--first-seed", type=int, required=True, help="the first seed after those the search used")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--out", required=True, help="where to write the per-sample SSIMs (JSON)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    if a.first_seed < 0 or a.count < 2 or a.threads < 1:
        p.error("--first-seed must be >= 0, --count >= 2 and --threads >= 1")
    try:
        searched = load_schedule(a.schedule)
    except ValueError as e:  # a missing or bad file (ShortcutError, PlanError)
        p.error(str(e))
    torch.set_num_threads(a.threads)
    m = us.load_model("default")
    sp = Sampler(m, steps=100, guidance=3.0)
    seeds = list(range(a.first_seed, a.first_seed + a.count))
    cond = [s % 10 for s in seeds]
    names = ["searched", "uniform every4 nb9", "uniform every5 nb9", "uniform every6 nb9"]
    plans = [searched] + [Plan(uniform_cache_cuts(100, e, 9)) for e in (4, 5, 6)]
    t = time.time()
    ss = heldout_ssim(sp, plans, seeds, cond)  # one baseline, shared prefixes
    for name, s in zip(names, ss):
        print(f"{name:<20} mean {s.mean():.4f}  min {s.min():.3f}  q10 {np.quantile(s, 0.1):.3f}  n {len(s)}")
    print(f"seconds {time.time() - t:.0f}")
    with open(a.out, "w") as f:
        json.dump({"schedule": a.schedule, "seeds": seeds, "labels": "seed % 10",
                   "plans": dict(zip(names, [q.to_dict() for q in plans])),
                   "ssim": dict(zip(names, [[float(v) for v in s] for s in ss]))}, f)


if __name__ == "__main__":
    main()
