"""``--device`` on every command that runs a model, ``--compile`` on every command that samples: a
device that is not here, or a compiler that does not run, is one line naming what is wrong, exit 2,
and nothing written."""

import pytest

from conftest import run_cli
from unetscope import compiling
from unetscope.checks import available_devices

SAMPLING = [["sample"], ["intervene", "--drop-blocks", "1", "--start", "2"], ["sweep", "phases"], ["reproduce", "--quick"],
            ["shortcut", "--preset", "paper"], ["shortcut", "search"]]
MODEL_COMMANDS = SAMPLING + [["models", "default"], ["train"]]


def _argv(cmd, tiny_model_dir, out):
    argv = list(cmd) + ["--out", str(out)] if cmd[0] != "models" else list(cmd)
    if cmd[0] not in ("models", "train"):
        argv += ["--model", str(tiny_model_dir), "--steps", "4", "--quiet"]
    return argv


@pytest.mark.parametrize("cmd", MODEL_COMMANDS, ids=[" ".join(c) for c in MODEL_COMMANDS])
def test_a_device_that_is_not_here_is_one_line_naming_those_that_are(cmd, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = run_cli(_argv(cmd, tiny_model_dir, out) + ["--device", "cuda:7"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "'cuda:7' is not available on this machine; it has " + ", ".join(available_devices()) in err
    assert not out.exists()


@pytest.mark.parametrize("cmd", SAMPLING, ids=[" ".join(c) for c in SAMPLING])
def test_compile_where_no_compiler_runs_is_one_line(cmd, tiny_model_dir, tmp_path, capsys, monkeypatch):
    compiling._probe.cache_clear()
    monkeypatch.setattr(compiling, "_static_problem", lambda device, backend: "no C++ compiler (a test's machine)")
    try:
        out = tmp_path / "o"
        code, _, err = run_cli(_argv(cmd, tiny_model_dir, out) + ["--compile"], capsys)
    finally:
        compiling._probe.cache_clear()
    assert code == 2 and err.count("\n") == 1, err
    assert "compile: no C++ compiler (a test's machine); run without compiling" in err
    assert not out.exists()


def test_a_device_name_that_is_no_device():
    import unetscope as us

    with pytest.raises(us.ModelError, match="'gpu0' is not a device name; this machine has cpu"):
        us.load_model("default", device="gpu0")
