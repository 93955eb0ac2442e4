"""DropBlocks saves real time: one evaluation for nb = 0..K, its time next to its share of FLOPs
(counted by torch's FlopCounterMode). Goal: time ratio within 0.05 of the FLOP ratio for nb >= K/2.

    python benchmarks/drop_blocks.py [--model default] [--batch 64] [--repeats 15] [--threads N]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, model_inputs  # noqa: E402

from unetscope import load_model  # noqa: E402
from unetscope.flops import flops_by_drop  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="default")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(a.model)
    x, t, cond = model_inputs(model, a.batch)
    runner, K = model.runner, model.num_blocks
    flops = flops_by_drop(runner, x, t, cond)
    with torch.no_grad():
        med = interleaved({nb: (lambda nb=nb: runner(x, t, cond, drop_blocks=nb)) for nb in range(K + 1)}, a.repeats)
    print(f"model {a.model} (K={K}), batch {a.batch}, {torch.get_num_threads()} threads, {a.repeats} interleaved repeats")
    print(f"{'nb':>3} {'GFLOP':>8} {'flop ratio':>10} {'ms':>9} {'time ratio':>10} {'diff':>7}")
    worst = 0.0
    for nb in range(K + 1):
        fr, tr = flops[nb] / flops[0], med[nb] / med[0]
        if nb >= K / 2:
            worst = max(worst, abs(tr - fr))
        print(f"{nb:>3} {flops[nb] / 1e9:>8.3f} {fr:>10.3f} {med[nb] * 1e3:>9.2f} {tr:>10.3f} {tr - fr:>+7.3f}")
    print(f"largest |time ratio - flop ratio| for nb >= K/2: {worst:.3f}  (goal <= 0.05)")


if __name__ == "__main__":
    main()
