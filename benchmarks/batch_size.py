"""Time per image of the model's plain forward at several batch sizes, interleaved: the curve that
sets how many images a stacked sweep call holds when --max-batch is not given
(``unetscope.sweep.AUTO_PIXELS``), and the batch the sweep engine picks for this model.

    python benchmarks/batch_size.py [--model default] [--sizes 32,64,128,256,512,1024] [--repeats 5] [--threads N]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import interleaved, model_inputs  # noqa: E402

from unetscope import Sampler, load_model  # noqa: E402
from unetscope.sweep import auto_max_batch  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--sizes", default="32,64,128,256,512,1024", help="comma-separated batch sizes (images)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    sizes = [int(v) for v in a.sizes.split(",")]
    model = load_model(a.model)
    units = model.units
    inputs = {b: model_inputs(model, b) for b in sizes}
    with torch.no_grad():
        med = interleaved({b: (lambda b=b: units.full_forward(*inputs[b])) for b in sizes}, a.repeats, warmup=1, device=model.device)
    best = min(sizes, key=lambda b: med[b] / b)
    print(f"model {a.model} (K={model.num_blocks}, sample {tuple(model.sample_shape)}), {torch.get_num_threads()} threads, "
          f"{a.repeats} interleaved repeats")
    print(f"{'images':>7} {'ms/call':>9} {'ms/image':>9} {'vs best':>8}")
    for b in sizes:
        print(f"{b:>7} {med[b] * 1e3:>9.1f} {med[b] / b * 1e3:>9.3f} {med[b] / b / (med[best] / best):>8.2f}")
    s = Sampler(model, steps=10, guidance=3.0 if model.has_null_branch else 1.0)
    per = auto_max_batch(s, 1)
    print(f"sweep calls without --max-batch: {per} samples = {per * s.denoiser.rows_per_sample} images per call"
          + (" (guidance doubles each sample)" if s.denoiser.rows_per_sample == 2 else ""))


if __name__ == "__main__":
    main()
