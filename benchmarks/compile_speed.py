"""What compiling buys: one evaluation of the model, uncompiled against compiled unit by unit
(``DiffusionModel.compile``: each unit function compiled once) and against ``torch.compile`` of the
whole U-Net's forward, on the same batch; the first call's cost (the compilation) of each compiled
side; a cut evaluation (``DropBlocks(K/2)``) uncompiled and compiled, which must not recompile.
Interleaved repeats after a warm-up, the device synchronised; the median and the spread.

    python benchmarks/compile_speed.py [--model default] [--batch 64] [--repeats 20] [--threads N]
        [--device cpu] [--backend inductor] [--no-whole]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import model_inputs  # noqa: E402


def main(argv=None):
    import unetscope as us
    from unetscope.timing import interleave, timed

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (inductor; eager/aot_eager to test the script)")
    p.add_argument("--no-whole", action="store_true", help="skip torch.compile of the whole forward (its first call is long)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    eager = us.load_model(a.model, device=a.device)
    units_c = us.load_model(a.model, device=a.device)
    K = eager.num_blocks
    x, t, cond = model_inputs(eager, a.batch)
    nb = max(1, K // 2)
    sides = {"uncompiled": lambda: eager.runner(x, t, cond).out,
             "units compiled": lambda: units_c.runner(x, t, cond).out,
             f"uncompiled, DropBlocks({nb})": lambda: eager.runner(x, t, cond, drop_blocks=nb).out,
             f"units compiled, DropBlocks({nb})": lambda: units_c.runner(x, t, cond, drop_blocks=nb).out}
    first = {}
    with torch.no_grad():
        ref = eager.runner(x, t, cond).out
        units_c.compile(backend=a.backend)
        first["units compiled"], out = timed(sides["units compiled"], eager.device)
        diffs = {"units compiled": float((out - ref).abs().max())}
        if not a.no_whole:
            whole = torch.compile(eager.units.unet, backend=a.backend)
            sides["whole forward compiled"] = lambda: whole(x, t, **cond, return_dict=False)[0]
            first["whole forward compiled"], out = timed(sides["whole forward compiled"], eager.device)
            diffs["whole forward compiled"] = float((out - ref).abs().max())
        timings, _ = interleave(sides, a.repeats, warmup=2, device=eager.device)
    st = units_c.compile_stats()
    base = timings["uncompiled"].median
    print(f"model {a.model} (K={K}) on {eager.device}, batch {a.batch}, {torch.get_num_threads()} threads, backend "
          f"{a.backend}, {a.repeats} interleaved repeats after 2 warm-ups; torch {torch.__version__}")
    print(f"{'side':<32} {'median ms':>10} {'min-max ms':>17} {'spread':>7} {'speedup':>8} {'first call s':>13} {'max |diff|':>11}")
    for k, tm in timings.items():
        ref_k = timings[f"uncompiled, DropBlocks({nb})"].median if "DropBlocks" in k else base
        fc = f"{first[k]:.1f}" if k in first else ""
        diff = f"{diffs[k]:.1e}" if k in diffs else ""
        print(f"{k:<32} {tm.median * 1e3:>10.2f} {tm.low * 1e3:>8.2f}-{tm.high * 1e3:<8.2f} {tm.spread:>7.0%} "
              f"{ref_k / tm.median:>7.2f}x {fc:>13} {diff:>11}")
    print(f"compilations of the unit functions: {st['compilations']} for {st['units']} units "
          f"({'one each: the cut evaluation compiled nothing new' if st['compilations'] == st['units'] else 'recompiled'})")
    spread = max(tm.spread for tm in timings.values())
    if spread > 0.10:
        print(f"warning: timed runs spread by {spread:.0%}: the machine is busy; rerun on a quiet one", file=sys.stderr)


if __name__ == "__main__":
    main()
