"""The bundled model's quality gate: with guidance 3 and 100 ancestral steps, the share of 500
class-conditional samples (50 per digit) that the bundled digit classifier reads as the digit
asked for (goal: at least 90%). ``--write-card`` stores the figures in the model's card.

    python benchmarks/quality_gate.py [--model default] [--samples 500] [--steps 100] [--write-card] [--grid FILE]
"""

import argparse
import json
import sys

import torch

from unetscope import load_model
from unetscope.bundled.card import class_agreement, write_model_card
from unetscope.images import make_grid, save_png
from unetscope.models import default_model_path


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="default")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--write-card", action="store_true", help="store the figures in the model's card (default model)")
    p.add_argument("--grid", default=None, help="write a grid of the first 100 samples here")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(a.model)
    q = class_agreement(model, a.samples, a.steps, a.guidance, progress=True)
    images = q.pop("images")
    print(json.dumps(q, indent=2))
    print(f"class agreement {q['agreement']:.1%} over {q['samples']} samples (goal >= 90%): "
          f"{'PASS' if q['agreement'] >= 0.9 else 'FAIL'}")
    if a.grid:
        save_png(make_grid(images[:100], nrow=10), a.grid, 2)
    if a.write_card:
        folder = default_model_path() if a.model == "default" else __import__("pathlib").Path(a.model)
        meta = json.loads((folder / "unetscope.json").read_text())
        meta["quality"] = q
        (folder / "unetscope.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(f"wrote {write_model_card(folder)}")
    sys.exit(0 if q["agreement"] >= 0.9 else 1)


if __name__ == "__main__":
    main()
