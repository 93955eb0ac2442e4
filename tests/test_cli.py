import json
import subprocess
import sys

import pytest
from PIL import Image

from conftest import run_cli as run


def test_sample_writes_pngs_and_grid(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "s"
    code, text, _ = run(["sample", "--model", tiny_model_dir, "--steps", 8, "--seeds", "0-2", "--class", "7",
                         "--out", out, "--quiet"], capsys)
    assert code == 0, text
    meta = json.loads((out / "samples.json").read_text())
    assert meta["seeds"] == [0, 1, 2] and meta["classes"] == [7, 7, 7] and meta["nfe"] == 8
    assert Image.open(out / "sample_00001.png").size == (128, 128)  # 32x32 enlarged x4
    assert (out / "grid.png").exists()


def test_intervene_writes_side_by_side_and_metrics(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "i"
    code, text, _ = run(["intervene", "--model", tiny_model_dir, "--steps", 10, "--samples", 3,
                         "--drop-blocks", 2, "--start", 7, "--n", 3, "--out", out, "--quiet"], capsys)
    assert code == 0, text
    m = json.loads((out / "metrics.json").read_text())
    assert m["plan"] == {"interventions": [{"type": "DropBlocks", "nb": 2, "start": 7, "n": 3, "fill": "zeros"}]}
    assert len(m["samples"]) == 3 and all(0 < s["ssim"] <= 1 for s in m["samples"])
    assert m["units_intervened"] < m["units_baseline"]
    w, h = Image.open(out / m["samples"][0]["file"]).size
    assert w > 2 * 128 - 1 and h >= 128  # baseline | intervened
    # the JSON form of the same plan gives the same numbers
    out2 = tmp_path / "j"
    code, _, _ = run(["intervene", "--model", tiny_model_dir, "--steps", 10, "--samples", 3, "--out", out2, "--quiet",
                      "--plan", json.dumps(m["plan"])], capsys)
    assert code == 0
    assert json.loads((out2 / "metrics.json").read_text())["samples"] == m["samples"]


def test_intervene_reuse_encoder(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "r"
    code, text, _ = run(["intervene", "--model", tiny_model_dir, "--steps", 10, "--samples", 2,
                         "--reuse-encoder", "--start", 8, "--n", 3, "--out", out, "--quiet"], capsys)
    assert code == 0, text
    m = json.loads((out / "metrics.json").read_text())
    assert m["plan"] == {"interventions": [{"type": "ReuseEncoder", "start": 8, "n": 3}]}
    K = 4  # the tiny model: 3 steps run only the K decoder units, not the K encoder units and the middle
    assert m["units_baseline"] - m["units_intervened"] == 3 * (K + 1)
    assert all(0 < s["ssim"] < 1 for s in m["samples"])


BAD = [
    (["sample", "--model", "/no/such/folder"], "is not 'default', a local folder"),
    (["sample", "--steps", 0], "steps must be an integer in 1..T"),
    (["sample", "--steps", 5000], "steps must be an integer in 1..1000"),
    (["sample", "--class", 10], "class labels must be in 0..9"),
    (["sample", "--class", "three"], "--class must be an integer"),
    (["sample", "--seeds", "a-b"], "--seeds must be integers"),
    (["sample", "--samples", 0], "--samples must be in 1..1,000,000"),
    (["sample", "--guidance", -1], "guidance must be a finite number >= 0"),
    (["sample", "--sampler", "euler"], "invalid choice: 'euler'"),
    (["sample", "--eta", 2, "--sampler", "ddim"], "eta must be a number in [0, 1]"),
    (["intervene", "--drop-blocks", 9, "--start", 5], "DropBlocks.nb must be in 1..4"),
    (["intervene", "--skip-steps", 3, "--start", 50, "--steps", 20], "start must be in 1..20"),
    (["intervene", "--drop-blocks", 2], "--start is needed"),
    (["intervene", "--plan", "{bad json"], "not valid JSON"),
    (["intervene", "--plan", '[{"type": "DropBlocks", "nb": 2, "start": 9, "n": 3}, {"type": "DropBlocks", "nb": 1, "start": 8}]'],
     "both set DropBlocks at step 8"),
    (["intervene", "--drop-blocks", 2, "--start", 5, "--fill", "noise"], "invalid choice: 'noise'"),
    (["intervene", "--zero-skips", 1, "--start", 5, "--n", 9], "ZeroSkips.n must be in 1..5"),
    (["intervene"], "nothing to intervene on"),
    (["intervene", "--plan", "[]"], "nothing to intervene on"),
    (["intervene", "--drop-blocks", 2, "--start", 20, "--steps", 20, "--fill", "cache"], "no earlier step computes D[1]"),
    (["intervene", "--reuse-encoder", "--start", 20, "--steps", 20], "no earlier step computes E[0]"),
    (["intervene", "--reuse-encoder", "--drop-blocks", 2, "--start", 5], "got --drop-blocks and --reuse-encoder"),
    (["intervene", "--reuse-encoder"], "--start is needed with --reuse-encoder"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(map(str, a)) for a, _ in BAD])
def test_bad_input_one_line_exit_2(argv, message, tiny_model_dir, tmp_path, capsys):
    if "--model" not in argv:
        argv = argv + ["--model", tiny_model_dir]
    code, _, err = run(argv + ["--out", tmp_path / "o", "--quiet"], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_console_script_runs(tiny_model_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "unetscope.cli", "intervene", "--model", str(tiny_model_dir),
                        "--steps", "4", "--samples", "1", "--stop-early", "2", "--out", str(tmp_path / "x"), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "StopEarly(at=2)" in r.stdout
    r = subprocess.run([sys.executable, "-m", "unetscope.cli", "sample", "--steps", "-1", "--model", str(tiny_model_dir),
                        "--out", str(tmp_path / "y")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_unconditional_model_needs_no_guidance_flag(tmp_path, capsys):
    from conftest import save_tiny_model

    folder = save_tiny_model(tmp_path / "uncond", classes=None)
    code, text, err = run(["sample", "--model", folder, "--steps", 4, "--samples", 2, "--out", tmp_path / "s", "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run(["sample", "--model", folder, "--steps", 4, "--guidance", 2, "--out", tmp_path / "s"], capsys)
    assert code == 2 and "is unconditional" in err
