"""The second bundled model (examples/mnist_unet.py): a research-style unconditional U-Net with its
trained weights beside it, loaded by reference, through the whole path at reduced size."""

import json
import sys
from pathlib import Path

import torch

import unetscope as us
from unetscope.runner import UNetRunner
from unetscope.cli import main

ROOT = Path(__file__).resolve().parents[1]
REF = f"{ROOT / 'examples' / 'mnist_unet.py'}:make_model"


def test_loads_by_reference_and_matches_its_own_forward():
    model = us.load_model(REF)
    d = model.describe()
    assert d["K"] == 6 and d["conditioning"] == "none" and d["schedule"] == "linear" and d["sample_shape"] == [1, 28, 28]
    assert d["factory"] == REF and len(d["fingerprint"]) == 16
    net = model.module
    x, t = torch.randn(4, 1, 28, 28), torch.tensor([0, 250, 600, 999])
    with torch.no_grad():
        assert (UNetRunner(model.units)(x, t).out - net(x, t)).abs().max() <= 1e-6
    card = json.loads((ROOT / "examples" / "weights" / "mnist_unet.json").read_text())
    assert card["parameters"] == sum(p.numel() for p in net.parameters())


def test_samples_are_digits():
    """The bundled digit classifier reads most samples with confidence (an unconditional model: the
    digits it draws must look like digits, and more than a few kinds of them)."""
    from unetscope.bundled.classifier import load_classifier

    model = us.load_model(REF)
    images = us.Sampler(model, steps=50).sample(range(24)).images  # (24, 1, 28, 28) in [0, 1]
    clf = load_classifier()
    with torch.no_grad():
        probs = torch.softmax(clf(torch.nn.functional.pad(images, (2, 2, 2, 2))), dim=1)
    conf, digit = probs.max(1)
    assert (conf > 0.9).float().mean() >= 0.7, conf
    assert len(set(digit.tolist())) >= 5


def test_reproduce_quick_and_search_at_reduced_size(tmp_path, capsys):
    out = tmp_path / "q"
    code = main(["reproduce", "--model", REF, "--quick", "--samples", "2", "--steps", "10", "--t-step", "3",
                 "--out", str(out), "--quiet"])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert (out / "report.html").exists()
    findings = {json.loads(f.read_text())["experiment"] for f in (out / "findings").glob("*.json")}
    assert findings == {"trajectory", "phases", "skip-vs-block", "block-utility", "consecutive-limit", "relax", "feature-change"}
    code = main(["shortcut", "search", "--model", REF, "--samples", "4", "--calibration", "2", "--rounds", "2",
                 "--steps", "10", "--repeats", "1", "--out", str(tmp_path / "s"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "s" / "schedule.json").exists()


def test_training_script_runs_and_resumes(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    from train_mnist_unet import main as train_main

    w = tmp_path / "w.safetensors"
    args = ["--limit-images", "16", "--batch-size", "4", "--checkpoint-every", "1", "--out", str(tmp_path / "run"),
            "--weights", str(w)]
    train_main(["--steps", "2", *args])
    first = json.loads(w.with_suffix(".json").read_text())
    assert first["steps"] == 2
    train_main(["--steps", "3", *args])  # resumes from the checkpoint at step 2
    card = json.loads(w.with_suffix(".json").read_text())
    assert card["steps"] == 3 and card["parameters"] == first["parameters"]
    from mnist_unet import make_model

    assert make_model(w).num_blocks == 6
