"""Per-sample compute under AdaptiveCache: how much it varies across samples, and whether the
samples that get more compute are those a static cut hurts most.

On held-out seeds (first-seed .. first-seed + samples - 1; none used by a search): the reference
sampler, an AdaptiveCache schedule and a static schedule, each sample compared with its reference
sample (SSIM). Prints the spread of the adaptive per-sample compute (executed FLOPs / the
reference's), and Spearman's rank correlation of each sample's adaptive compute with its SSIM under
the static schedule (positive: the samples the static cut hurts get more compute) and with its SSIM
under the adaptive schedule. Quality only: no timing, so it may run beside other work.

    python benchmarks/adaptive_samples.py --model default --sampler ddim --steps 100 --samples 64 \\
        --adaptive '{"type": "AdaptiveCache", "nb": 9, "threshold": 0.03}' \\
        --static examples/schedules/default_searched.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--sampler", default="ddim", choices=("ddpm", "ddim"))
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--first-seed", type=int, default=5000)
    p.add_argument("--adaptive", required=True, help="an AdaptiveCache intervention as JSON, or a schedule file")
    p.add_argument("--static", required=True, help="a static schedule file to compare with")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None, help="write the per-sample numbers here (JSON)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    import unetscope as us
    from unetscope.plan import Plan, intervention_from_dict
    from unetscope.shortcut import load_schedule, sample_flops

    m = us.load_model(a.model)
    s = us.Sampler(m, steps=a.steps, method=a.sampler, guidance=a.guidance)
    seeds = list(range(a.first_seed, a.first_seed + a.samples))
    cond = [x % m.num_classes_real for x in seeds] if m.conditioning == "class" else None
    ada = Plan([intervention_from_dict(json.loads(a.adaptive))]) if a.adaptive.lstrip().startswith("{") else \
        load_schedule(a.adaptive)
    static = load_schedule(a.static)
    ref = m.decode(s.sample(seeds, cond).x0)
    tr = s.sample(seeds, cond, ada)
    ss_ada = us.ssim(m.decode(tr.x0), ref).numpy()
    c1 = None if cond is None else cond[:1]
    base = sample_flops(s, Plan(), {}, 1, c1)[0]
    comp = np.asarray(sample_flops(s, ada, tr.reused, len(seeds), c1), dtype=float) / base
    ss_st = us.ssim(m.decode(s.sample(seeds, cond, static).x0), ref).numpy()
    st_comp = sample_flops(s, static, {}, 1, c1)[0] / base
    q = np.quantile(comp, [0.0, 0.1, 0.5, 0.9, 1.0])
    print(f"{a.samples} held-out samples, {a.sampler.upper()}-{a.steps}; adaptive {ada!r}")
    print(f"adaptive per-sample compute: mean {comp.mean():.3f}, sd {comp.std():.3f}, min {q[0]:.3f}, 10% {q[1]:.3f}, "
          f"median {q[2]:.3f}, 90% {q[3]:.3f}, max {q[4]:.3f}")
    print(f"adaptive SSIM: mean {ss_ada.mean():.3f}, 10% quantile {np.quantile(ss_ada, 0.1):.3f}, min {ss_ada.min():.3f}")
    print(f"static ({st_comp:.3f} compute for every sample) SSIM: mean {ss_st.mean():.3f}, 10% quantile "
          f"{np.quantile(ss_st, 0.1):.3f}, min {ss_st.min():.3f}")
    print(f"Spearman(adaptive compute, static SSIM) = {spearman(comp, ss_st):+.3f}  (negative: the samples the static cut "
          "hurts most get more compute)")
    print(f"Spearman(adaptive compute, adaptive SSIM) = {spearman(comp, ss_ada):+.3f}")
    worst = np.argsort(ss_st)[:max(1, len(seeds) // 10)]
    print(f"the static schedule's worst 10% of samples get {comp[worst].mean():.3f} compute under the adaptive one, "
          f"the rest {np.delete(comp, worst).mean():.3f}")
    if a.out:
        from unetscope.store import strict_json, write_atomic
        from pathlib import Path

        write_atomic(Path(a.out), strict_json(dict(seeds=seeds, adaptive=ada.to_dict(), static=static.to_dict(),
                                                   compute=comp.tolist(), ssim_adaptive=ss_ada.tolist(),
                                                   ssim_static=ss_st.tolist(), static_compute=st_comp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
