"""Adapter overhead: one evaluation through unetscope's unit runner with an empty plan vs the
model's own forward, same batch, interleaved repeats. Prints the median ratio (goal: <= 1.03).

    python benchmarks/adapter_overhead.py [--model default] [--batch 64] [--repeats 30] [--threads N]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, model_inputs  # noqa: E402

from unetscope import load_model  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="default")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(a.model)
    x, t, cond = model_inputs(model, a.batch)
    units, runner = model.units, model.runner
    assert torch.allclose(units.full_forward(x, t, cond), runner(x, t, cond).out, atol=1e-5)
    with torch.no_grad():
        med = interleaved({"forward": lambda: units.full_forward(x, t, cond), "adapter": lambda: runner(x, t, cond)}, a.repeats)
    print(f"model {a.model} (K={model.num_blocks}), batch {a.batch}, {torch.get_num_threads()} threads, {a.repeats} interleaved repeats")
    print(f"model forward  {med['forward'] * 1e3:8.2f} ms (median)")
    print(f"adapter        {med['adapter'] * 1e3:8.2f} ms (median)")
    print(f"ratio adapter/forward: {med['adapter'] / med['forward']:.3f}  (goal <= 1.03)")


if __name__ == "__main__":
    main()
