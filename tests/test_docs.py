"""Every example in the README runs: bash lines starting with ``unetscope`` and python blocks."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


COMMANDS = [line.split("  #")[0].strip() for b in _blocks("bash") for line in b.splitlines()
            if line.strip().startswith("unetscope ")]


def test_readme_has_the_three_commands():
    bash = _blocks("bash")
    assert 'pip install -e ".[test]"' in bash[0]
    assert bash[1].strip().startswith("unetscope intervene --model default")
    assert bash[2].strip() == "python -m pytest"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, tmp_path):
    argv = shlex.split(command)
    if "--out" in argv:
        i = argv.index("--out")
        argv[i + 1] = str(tmp_path / Path(argv[i + 1]).name)
    r = subprocess.run([sys.executable, "-m", "unetscope.cli", *argv[1:], *(["--quiet"] if "--out" in argv else [])],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("code", _blocks("python"))
def test_readme_python_runs(code):
    exec(compile(code, "README.md", "exec"), {})
