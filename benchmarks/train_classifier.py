"""Train the digit classifier once and ship its weights to src/unetscope/weights/classifier/.

Usage: python benchmarks/train_classifier.py [--seed 0] [--epochs 12]
(its MNIST data comes with the bundled extra: pip install "unetscope[bundled]")
"""

import argparse

import torch

from unetscope.bundled.classifier import CLASSIFIER_DIR, export_classifier, train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", default=str(CLASSIFIER_DIR))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, accuracy = train_classifier(seed=args.seed, epochs=args.epochs, progress=True)
    folder = export_classifier(model, accuracy, args.out)
    print(f"held-out accuracy {accuracy:.4f} ({model.train_info['seconds']} s) -> {folder}")


if __name__ == "__main__":
    main()
