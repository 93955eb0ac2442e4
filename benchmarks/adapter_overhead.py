"""Adapter overhead: one evaluation through unetscope's unit runner with an empty plan vs the
model's own forward, same batch, interleaved repeats. Prints the median ratio (goal: <= 1.03).

    python benchmarks/adapter_overhead.py [--model default] [--batch 64] [--repeats 30] [--threads N]
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, setup  # noqa: E402



def main():
    a, model, x, t, cond = setup(__doc__, repeats=30)
    units, runner = model.units, model.runner
    assert torch.allclose(units.full_forward(x, t, cond), runner(x, t, cond).out, atol=1e-5)
    with torch.no_grad():
        med = interleaved({"forward": lambda: units.full_forward(x, t, cond), "adapter": lambda: runner(x, t, cond)}, a.repeats,
                          device=model.device)
    print(f"model {a.model} (K={model.num_blocks}), batch {a.batch}, {torch.get_num_threads()} threads, {a.repeats} interleaved repeats")
    print(f"model forward  {med['forward'] * 1e3:8.2f} ms (median)")
    print(f"adapter        {med['adapter'] * 1e3:8.2f} ms (median)")
    print(f"ratio adapter/forward: {med['adapter'] / med['forward']:.3f}  (goal <= 1.03)")


if __name__ == "__main__":
    main()
