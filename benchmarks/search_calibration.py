"""How many calibration seeds does the shortcut search need? For each calibration size n (with n
validation seeds, or none), search a schedule for the target and measure it on held-out seeds the
search never saw: held-out mean / min SSIM, whether the target held there, and the compute. Also
the best uniform (DeepCache-style) schedule of no more compute, on the same held-out seeds.
Quality only (no timing), so it can run on a busy machine; results are written per point, and a
rerun skips the points already in the JSON.

    python benchmarks/search_calibration.py --model examples/mnist_unet.py:make_model --steps 100 \\
        --target-mean 0.8 --sizes 4 8 16 --held-out 32 --out results/search-calibration/mnist.json

Each file records the search's margin rule (``rule``): a file made under another rule is refused.
"""

import argparse
import json
import time
from pathlib import Path

import torch

import unetscope as us
from unetscope import Plan
from unetscope.shortcut import heldout_ssim, search
from unetscope.store import strict_json, write_atomic

# the margin a move's validation scores must clear (SearchConfig.holds): the 90% bootstrap bound of
# the mean, and Student's bound with the calibration seeds' spread pooled in (files made before the
# second bound hold no "rule": "bootstrap")
RULE = "bootstrap+student-pooled"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--guidance", type=float, default=None, help="default: 3 for a class model")
    p.add_argument("--target-mean", type=float, default=0.8)
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--held-out", type=int, default=32)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--no-validation", action="store_true", help="also run each size without validation seeds")
    p.add_argument("--validation", type=int, nargs="+", default=None,
                   help="validation sizes to run with each calibration size (default: as many as it)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if any(n < 1 for n in a.sizes) or any(v < 1 for v in a.validation or []) or a.held_out < 1:
        p.error("--sizes, --validation and --held-out must be >= 1")
    torch.set_num_threads(a.threads)
    model = us.load_model(a.model)
    guidance = a.guidance if a.guidance is not None else (3.0 if model.conditioning == "class" else 1.0)
    sampler = us.Sampler(model, steps=a.steps, guidance=guidance)

    def cond_of(seeds):
        return [s % model.num_classes_real for s in seeds] if model.conditioning == "class" else None

    test = list(range(10_000, 10_000 + a.held_out))  # never a calibration or validation seed
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.exists() else dict(model=model.describe(), steps=a.steps, guidance=guidance,
                                                                  target_mean=a.target_mean, held_out_seeds=test, points=[],
                                                                  rule=RULE)
    if data["model"] != model.describe() or data["steps"] != a.steps or data["target_mean"] != a.target_mean:
        raise SystemExit(f"{out} holds other settings; use another --out")
    if data.get("rule", "bootstrap") != RULE:
        raise SystemExit(f"{out} was made under the margin rule {data.get('rule', 'bootstrap')!r}, not {RULE!r}; "
                         "use another --out")
    done = {(pt["calibration"], pt["validation"]) for pt in data["points"]}
    for n in a.sizes:
        for v in (a.validation or [n]) + ([0] if a.no_validation else []):
            if (n, v) in done:
                continue
            cal, val = list(range(n)), list(range(1000, 1000 + v))
            t0 = time.perf_counter()
            res = search(sampler, cal, cond_of(cal), target_mean=a.target_mean, max_rounds=a.rounds,
                         validation_seeds=val or None, validation_cond=cond_of(val) if v else None)
            rival = res["uniform_rival"]
            # the result and its rival on the held-out seeds, with one baseline and shared prefixes
            plans = [res["plan"]] + ([Plan.from_dict(rival["plan"])] if rival else [])
            scored = heldout_ssim(sampler, plans, test, cond_of(test)) if res["plan"] else None
            ss = scored[0] if scored is not None else torch.ones(len(test)).numpy()
            rs = None
            if rival:
                rs = scored[1] if scored is not None else heldout_ssim(sampler, plans[1], test, cond_of(test))
            pt = dict(calibration=n, validation=v, plan=res["plan"].to_dict(), compute=res["predicted_compute"],
                      calibration_ssim_mean=res["calibration_ssim_mean"], validation_ssim_mean=res["validation_ssim_mean"],
                      held_out_ssim_mean=float(ss.mean()), held_out_ssim_min=float(ss.min()),
                      held_out_meets_target=bool(ss.mean() >= a.target_mean),
                      uniform_rival_compute=rival["compute"] if rival else None,
                      uniform_rival_held_out_ssim_mean=float(rs.mean()) if rs is not None else None,
                      rounds=len(res["history"]), evaluations=res["evaluations"], seconds=time.perf_counter() - t0)
            data["points"].append(pt)
            write_atomic(out, strict_json(data))
            print(f"calibration {n:>3} validation {v:>3}: compute {pt['compute']:.3f}, calibration SSIM "
                  f"{pt['calibration_ssim_mean']:.3f}, held-out SSIM {pt['held_out_ssim_mean']:.3f} (min "
                  f"{pt['held_out_ssim_min']:.3f}) {'meets' if pt['held_out_meets_target'] else 'MISSES'} {a.target_mean}; "
                  f"uniform rival {pt['uniform_rival_held_out_ssim_mean'] or float('nan'):.3f} at "
                  f"{pt['uniform_rival_compute'] or float('nan'):.3f} ({pt['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
