"""DropBlocks saves real time: one evaluation for nb = 0..K, its time next to its share of FLOPs
(counted by torch's FlopCounterMode). Goal: time ratio within 0.05 of the FLOP ratio for nb >= K/2.
A third column predicts the time ratio from each unit's own measured time in a full evaluation
(the units a cut still runs): where FLOPs run at different speeds in different units (small-channel
high-resolution convolutions are slow per FLOP on a CPU), this is the share of the work skipped.

    python benchmarks/drop_blocks.py [--model default] [--batch 64] [--repeats 15] [--threads N]
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, setup  # noqa: E402

from unetscope.flops import flops_by_drop  # noqa: E402


def main():
    a, model, x, t, cond = setup(__doc__, repeats=15)
    runner, K = model.runner, model.num_blocks
    flops = flops_by_drop(runner, x, t, cond)
    with torch.no_grad():
        med = interleaved({nb: (lambda nb=nb: runner(x, t, cond, drop_blocks=nb)) for nb in range(K + 1)}, a.repeats,
                          device=model.device)
        unit = unit_times(runner, x, t, cond, a.repeats)
    full = sum(unit.values())

    def predicted(nb):
        keep = ["prepare", "head"] + [f"E[{i}]" for i in range(K - nb)] + [f"D[{j}]" for j in range(nb, K)] + (["M"] if nb == 0 else [])
        return sum(unit[k] for k in keep) / full
    print(f"model {a.model} (K={K}), batch {a.batch}, {torch.get_num_threads()} threads, {a.repeats} interleaved repeats")
    print(f"{'nb':>3} {'GFLOP':>8} {'flop ratio':>10} {'ms':>9} {'time ratio':>10} {'diff':>7} {'unit-time ratio':>15} {'diff':>7}")
    worst = worst_u = 0.0
    for nb in range(K + 1):
        fr, tr, ur = flops[nb] / flops[0], med[nb] / med[0], predicted(nb)
        if nb >= K / 2:
            worst, worst_u = max(worst, abs(tr - fr)), max(worst_u, abs(tr - ur))
        print(f"{nb:>3} {flops[nb] / 1e9:>8.3f} {fr:>10.3f} {med[nb] * 1e3:>9.2f} {tr:>10.3f} {tr - fr:>+7.3f} {ur:>15.3f} {tr - ur:>+7.3f}")
    print(f"largest |time ratio - flop ratio| for nb >= K/2: {worst:.3f}  (goal <= 0.05)")
    print(f"largest |time ratio - unit-time ratio| for nb >= K/2: {worst_u:.3f}")


def unit_times(runner, x, t, cond, repeats: int) -> dict:
    """Median seconds of each unit (prepare, E[i], M, D[j], head) inside full evaluations."""
    import statistics

    from unetscope.timing import timed as timed_call

    units, times = runner.units, {}
    device = x.device
    names = {"prepare": "prepare", "encoder": "E", "middle": "M", "decoder": "D", "head": "head"}
    orig = {k: getattr(units, k) for k in names}

    def timed(key, fn):
        def call(*args):
            seconds, out = timed_call(lambda: fn(*args), device)  # the device waited for around the unit
            name = key if key in ("prepare", "M", "head") else f"{key}[{args[0]}]"
            times.setdefault(name, []).append(seconds)
            return out
        return call

    try:
        for k, key in names.items():
            setattr(units, k, timed(key, orig[k]))
        for _ in range(repeats):
            runner(x, t, cond)
    finally:
        for k in names:
            delattr(units, k)
    return {k: statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    main()
