"""Held-out SSIM of the bundled model's searched schedule (target mean 0.9) and its uniform neighbours
on 200 fresh seeds (32..231, labels seed % 10: none of them seen by the search, which used 0..31).

The search command measures its result on its own 16 held-out seeds; this says what those 16 stand
for. Quality only (no timing), about 4 minutes on two CPU threads:

    python benchmarks/heldout_many_seeds.py      # writes results/search-default-mean90/heldout-200.json
"""

import json
import time

import numpy as np
import torch

import unetscope as us
from unetscope import Plan, Sampler
from unetscope.shortcut import heldout_ssim, load_schedule, uniform_cache_cuts


def main() -> None:
    torch.set_num_threads(2)
    m = us.load_model("default")
    sp = Sampler(m, steps=100, guidance=3.0)
    seeds = list(range(32, 232))
    cond = [s % 10 for s in seeds]
    names = ["searched-mean90", "uniform every5 nb9", "uniform every6 nb9"]
    plans = [load_schedule("results/search-default-mean90/schedule.json"), Plan(uniform_cache_cuts(100, 5, 9)),
             Plan(uniform_cache_cuts(100, 6, 9))]
    t = time.time()
    ss = heldout_ssim(sp, plans, seeds, cond)  # one baseline, shared prefixes
    for name, s in zip(names, ss):
        print(name, "mean %.4f  min %.3f  q10 %.3f  n %d" % (s.mean(), s.min(), np.quantile(s, 0.1), len(s)))
    print("seconds", time.time() - t)
    json.dump({"seeds": seeds, "labels": "seed % 10", "plans": dict(zip(names, [p.to_dict() for p in plans])),
               "ssim": dict(zip(names, [[float(v) for v in s] for s in ss]))},
              open("results/search-default-mean90/heldout-200.json", "w"))


if __name__ == "__main__":
    main()
