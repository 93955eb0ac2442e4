"""Your own U-Net, first class: every command takes --model FILE.py:FACTORY or package.module:FACTORY,
the model's identity holds the reference and its weights' hash, bad references are one line."""

import json
import sqlite3
import sys
from pathlib import Path

import pytest

import unetscope as us
from unetscope.experiments import ORDER
from conftest import run_cli as run

ROOT = Path(__file__).resolve().parents[1]
PAD = f"{ROOT / 'tests' / 'research_shapes.py'}:make_pad_model"


FAST = ["--steps", 6, "--samples", 2, "--quiet"]


@pytest.mark.parametrize("argv", [
    ["sample"], ["intervene", "--drop-blocks", 2, "--start", 4, "--n", 2],
    ["intervene", "--reuse-encoder", "--start", 4, "--n", 2],
    ["sweep", "phases", "--t-step", 2], ["sweep", "block-utility", "--t-step", 3],
    ["shortcut", "--preset", "paper"],
    ["shortcut", "search", "--calibration", 1, "--rounds", 1],
], ids=lambda a: " ".join(map(str, a)))
def test_every_command_runs_on_a_factory(argv, tmp_path, capsys):
    code, out, err = run(argv + ["--model", PAD, "--out", tmp_path / "o"] + FAST, capsys)
    assert code == 0, err
    assert "Traceback" not in err


def test_reproduce_and_report_on_a_factory(tmp_path, capsys):
    out = tmp_path / "r"
    code, text, err = run(["reproduce", "--model", PAD, "--quick", "--out", out, "--steps", 6, "--samples", 2,
                           "--t-step", 3, "--quiet"], capsys)
    assert code == 0, err
    assert (out / "report.html").exists() and f"reproduced {len(ORDER)} experiments" in text  # feature-change too
    with sqlite3.connect(out / "results.sqlite") as db:
        settings = [json.loads(s) for (s,) in db.execute("SELECT settings FROM runs")]
    assert {s["model"]["factory"] for s in settings} == {PAD}
    assert len({s["model"]["fingerprint"] for s in settings}) == 1


def test_models_describes_a_factory(capsys):
    code, text, err = run(["models", PAD], capsys)
    assert code == 0, err
    d = json.loads(text)
    assert d["factory"] == PAD and d["K"] == 4 and len(d["fingerprint"]) == 16


def test_a_resumed_run_refuses_other_weights(tmp_path, capsys, monkeypatch):
    out = tmp_path / "w"
    argv = ["sweep", "phases", "--model", PAD, "--out", out, "--t-step", 3] + FAST
    assert run(argv, capsys)[0] == 0
    monkeypatch.setenv("PAD_SEED", "1")
    code, _, err = run(argv, capsys)
    assert code == 2 and "other weights" in err and err.count("\n") == 1


def test_package_module_factory(tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "mylab"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                                 "from research_shapes import make_unit_time_model as make\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # what PYTHONPATH gives a process of its own
    try:
        code, _, err = run(["sample", "--model", "mylab.nets:make", "--steps", "4", "--samples", "2", "--out",
                            tmp_path / "s", "--quiet"], capsys)
    finally:
        for name in [m for m in sys.modules if m == "mylab" or m.startswith("mylab.")]:
            del sys.modules[name]
    assert code == 0, err
    meta = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert meta["model"]["factory"] == "mylab.nets:make" and meta["model"]["sample_shape"] == [1, 16, 16]


BAD = [
    ("no/such/file.py:make", "the file 'no/such/file.py' does not exist"),
    (f"{ROOT / 'tests' / 'research_shapes.py'}:make_missing", "has no callable 'make_missing'"),
    (f"{ROOT / 'tests' / 'research_shapes.py'}:make_broken", "the factory raised RuntimeError: the checkpoint is missing"),
    (f"{ROOT / 'tests' / 'research_shapes.py'}:make_nothing", "the factory returned int"),
    ("no_such_package_xyz.nets:make", "cannot import no_such_package_xyz.nets"),
    (f"{ROOT / 'tests' / 'research_shapes.py'}:1bad", "is not a Python name"),
]


@pytest.mark.parametrize("ref, message", BAD, ids=[m for _, m in BAD])
def test_bad_factory_is_one_line_and_writes_nothing(ref, message, tmp_path, capsys):
    out = tmp_path / "never"
    code, _, err = run(["sample", "--model", ref, "--out", out, "--quiet"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_python_api_twins(tmp_path):
    """The Python twins take the CLI's parameters and give the same results."""
    res = us.experiment("phases", PAD, tmp_path / "e", t_step=2, steps=6, samples=2, progress=False)
    assert res["experiment"] == "phases" and res["stats"]["spent"] == res["stats"]["minimum"]
    summ = us.measure_shortcut(PAD, tmp_path / "s", preset="paper", steps=6, samples=2)
    assert 0 < summ["compute_saving"] < 1
    found = us.search_shortcut(PAD, tmp_path / "q", calibration=1, rounds=1, steps=6, samples=3)
    assert found["schedule"].exists() and found["held_out"]["samples"] == 1 and found["validation_seeds"] == [1]
    assert us.write_report(tmp_path / "e")["report"].exists()
    with pytest.raises(us.SettingsError, match="give one of schedule"):
        us.measure_shortcut(PAD, tmp_path / "s")


def test_factory_file_with_dataclasses_and_future_annotations(tmp_path, capsys):
    """A factory file is imported as a module of its own (dataclasses with string annotations work)."""
    f = tmp_path / "lab.py"
    f.write_text("from __future__ import annotations\nimport sys\nfrom dataclasses import dataclass\nfrom typing import ClassVar\n"
                 f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                 "@dataclass\nclass Settings:\n    shape: tuple = (1, 16, 16)\n    kind: ClassVar[str] = 'unit-time'\n"
                 "def make():\n    from research_shapes import make_unit_time_model\n    units, _ = make_unit_time_model()\n"
                 "    return units, dict(sample_shape=Settings().shape)\n")
    code, text, err = run(["models", f"{f}:make"], capsys)
    assert code == 0, err
    assert json.loads(text)["sample_shape"] == [1, 16, 16]
