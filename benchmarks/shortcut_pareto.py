"""Shortcuts against the alternatives a user would otherwise pick, at matched cost, on one model:
fewer respaced steps, stopping early alone, DeepCache-style uniform caching (full evaluation every N
steps, the deep part reused in between), Faster-Diffusion-style encoder propagation (full evaluation
every N steps, the encoder's outputs reused in between: ``ReuseEncoder``), the paper's preset (zeros
and cache fill) and, given with --schedule, a searched schedule. Prints mean SSIM, measured time and compute fractions, and writes
the Pareto data (JSON) and figure (PNG).

    python benchmarks/shortcut_pareto.py [--model default] [--samples 16] [--steps 100] [--schedule FILE] [--out DIR]
"""

import argparse
import json
from pathlib import Path

import torch

from unetscope import Plan, Sampler, StopEarly, load_model, ssim
from unetscope.shortcut import PRESETS, load_schedule, plan_flops, uniform_cache_cuts, uniform_reuse_cuts


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="default")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--schedule", action="append", default=[], help="searched schedule file(s) to include")
    p.add_argument("--out", default="runs/pareto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each entry and the baseline, interleaved")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(a.model)
    S, K = a.steps, model.num_blocks
    seeds = list(range(1000, 1000 + a.samples))  # not the seeds a search calibrates on
    cond = [s % model.num_classes_real for s in seeds] if model.conditioning == "class" else None
    base_sampler = Sampler(model, steps=S, guidance=a.guidance)
    f_base = plan_flops(base_sampler, Plan(), seeds[0], None if cond is None else cond[:1])

    from unetscope.timing import interleave

    def add(method, label, sampler, plan=None):
        # the timing protocol: a warm-up of each, then the entry and the baseline interleaved
        t, first = interleave({"entry": lambda: sampler.sample(seeds, cond, plan),
                               "baseline": lambda: base_sampler.sample(seeds, cond)}, a.repeats, warmup=1)
        tr, sec, tb = first["entry"], t["entry"].median, t["baseline"].median
        f = plan_flops(sampler, plan or Plan(), seeds[0], None if cond is None else cond[:1])
        ss = ssim(tr.images, ref).numpy()
        entries.append(dict(method=method, label=label, seconds=sec, seconds_baseline=tb, time_fraction=sec / tb,
                            spread=max(t["entry"].spread, t["baseline"].spread), flops=f, ssim_mean=float(ss.mean()),
                            ssim_min=float(ss.min()), plan=(plan or Plan()).to_dict(), steps=sampler.steps))
        print(f"{method:<13} {label:<26} SSIM {ss.mean():.3f} (min {ss.min():.3f})  time {sec / tb:.3f} of the baseline "
              f"(spread {entries[-1]['spread']:.0%})  compute {f / f_base:.3f}", flush=True)

    ref = base_sampler.sample(seeds, cond).images
    entries = []

    for s2 in (30, 40, 50, 60, 70, 80):
        add("fewer-steps", f"S={round(s2 * S / 100)}", Sampler(model, steps=max(1, round(s2 * S / 100)), guidance=a.guidance))
    for at in (5, 10, 18, 25, 35):
        add("stop-early", f"StopEarly({round(at * S / 100)})", base_sampler, Plan([StopEarly(max(1, round(at * S / 100)))]))
    for every in (2, 3, 5):
        for nb in sorted({K // 2, (3 * K) // 4}):
            add("deepcache", f"every {every}, nb={nb}", base_sampler, Plan(uniform_cache_cuts(S, every, nb)))
    for every in (2, 3, 4, 5):
        add("reuse-encoder", f"every {every}", base_sampler, Plan(uniform_reuse_cuts(S, every)))
    for name in PRESETS:
        add("paper-preset", name, base_sampler, PRESETS[name](S, K))
    for f in a.schedule:
        add("searched", Path(f).name, base_sampler, load_schedule(f))
    for e in entries:
        e["compute_fraction"] = e["flops"] / f_base
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = dict(model=model.describe(), steps=S, guidance=a.guidance, samples=a.samples, seeds=seeds, repeats=a.repeats,
                baseline_flops=f_base, entries=entries)
    (out / "pareto.json").write_text(json.dumps(data, indent=2) + "\n")
    _figure(out / "pareto.png", entries, S)
    print(f"wrote {out / 'pareto.json'} and {out / 'pareto.png'}")
    # where each shortcut stands against the best baseline at no more time
    for e in entries:
        if e["method"] in ("paper-preset", "searched", "reuse-encoder"):
            rivals = [r for r in entries if r["method"] in ("fewer-steps", "stop-early", "deepcache")
                      and r["time_fraction"] <= e["time_fraction"] + 1e-9]
            best = max(rivals, key=lambda r: r["ssim_mean"], default=None)
            if best:
                verdict = "ahead of" if e["ssim_mean"] >= best["ssim_mean"] else "behind"
                print(f"{e['label']}: SSIM {e['ssim_mean']:.3f} at time {e['time_fraction']:.3f}; {verdict} the best baseline "
                      f"at no more time ({best['method']} {best['label']}: SSIM {best['ssim_mean']:.3f}, time {best['time_fraction']:.3f})")


def _figure(path, entries, S):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    markers = {"fewer-steps": "o-", "stop-early": "s-", "deepcache": "^", "reuse-encoder": "v-", "paper-preset": "D",
               "searched": "*"}
    for method in markers:
        es = sorted((e for e in entries if e["method"] == method), key=lambda e: e["time_fraction"])
        if es:
            ax.plot([e["time_fraction"] for e in es], [e["ssim_mean"] for e in es], markers[method], label=method,
                    ms=9 if method == "searched" else 6)
    ax.axhline(0.8, color="gray", ls="--", lw=1)
    ax.set_xlabel(f"measured time / baseline ({S} steps)")
    ax.set_ylabel("mean SSIM vs the baseline")
    ax.set_title("Shortcuts and baselines: quality against measured time", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
