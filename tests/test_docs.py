"""Every example in the README and docs/ runs: bash lines starting with ``unetscope``, python
blocks, and YAML schedules. Placeholder paths (``path/to/...``) are mapped to tiny models made here."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path, lang):
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


COMMANDS = [(p.name, line.split("  #")[0].strip()) for p in DOCS for b in _blocks(p, "bash") for line in b.splitlines()
            if line.strip().startswith("unetscope ")]
PYTHON = [(p.name, code) for p in DOCS for code in _blocks(p, "python")]
YAML = [(p.name, code) for p in DOCS for code in _blocks(p, "yaml")]


def test_readme_has_the_three_commands():
    bash = _blocks(ROOT / "README.md", "bash")
    assert 'pip install -e ".[test]"' in bash[0]
    assert bash[1].strip().startswith("unetscope intervene --model default")
    assert bash[2].strip() == "python -m pytest"


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("docs")
    (root / "prompts.txt").write_text("tench\ngoldfish\n")
    return {"path/to/unet-folder": str(tiny_model_dir), "prompts.txt": str(root / "prompts.txt")}


def _argv(command, tmp_path, places, request):
    """The command's arguments, with the docs' placeholder paths mapped and --out under tmp_path."""
    argv = shlex.split(command)
    if "path/to/sd-pipeline" in argv:
        argv[argv.index("path/to/sd-pipeline")] = str(request.getfixturevalue("sd_dir"))
    argv = [places.get(a, a) for a in argv]
    if "--out" in argv:
        i = argv.index("--out")
        argv[i + 1] = str(tmp_path / Path(argv[i + 1]).name)
        argv.append("--quiet")
    _link_repo_folders(tmp_path)  # examples/ and tests/ resolve as they do from the repository root
    return argv


def _params(cases):
    return [pytest.param(d, c, id=f"{d}: {c}") for d, c in cases]


@pytest.fixture
def eager_compile(monkeypatch):
    """The docs' compiled examples run their whole path (each unit through dynamo, the compilations
    counted) with dynamo's eager backend: inductor's C++ on a CPU takes minutes, and its images are
    checked against uncompiled ones in tests/test_compile.py (slow) on the same shapes."""
    monkeypatch.setenv("UNETSCOPE_COMPILE_BACKEND", "eager")


@pytest.mark.parametrize("doc, command", _params([(d, c) for d, c in COMMANDS if "--executor ray" not in c]))
def test_doc_command_runs(doc, command, tmp_path, places, request, monkeypatch, capsys):
    """Each command with the docs' flags, in this process and on one sample (a search on its own): the command line
    parses and its whole path runs. The documented sizes run in ``test_doc_command_runs_as_written``."""
    from conftest import run_cli

    argv = _argv(command, tmp_path, places, request)
    if "--compile" in argv:
        request.getfixturevalue("eager_compile")
    if argv[1] == "explore" and "--html" not in argv:  # it serves until stopped: see that it serves, then stop it
        return _explore_serves(argv, tmp_path)
    if "--samples" in argv and "--calibration" not in argv:  # a search's split needs the samples it names
        i = argv.index("--samples")
        argv[i + 1] = str(min(int(argv[i + 1]), 1))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        code, _, err = run_cli(argv[1:], capsys)
    finally:
        torch.set_num_threads(threads)  # a command's --threads must not leak into the next test
    assert code == 0, err[-2000:]


# as printed, sizes included, through the real entry point: the README's main command (the first a new
# user runs), and the commands whose fast form above cannot run here (Ray); every other command's flags
# run in test_doc_command_runs
AS_WRITTEN = [(d, c) for d, c in COMMANDS if "--executor ray" in c or c.startswith("unetscope intervene --model default")
              and (d, c) == next((x for x in COMMANDS if x[1].startswith("unetscope intervene")), None)]


@pytest.mark.slow
@pytest.mark.parametrize("doc, command", _params(AS_WRITTEN))
def test_doc_command_runs_as_written(doc, command, tmp_path, places, request):
    """A command exactly as the docs print it (sizes included), in a process of its own."""
    argv = _argv(command, tmp_path, places, request)
    r = subprocess.run([sys.executable, "-m", "unetscope.cli", *argv[1:]], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]


def _explore_serves(argv, cwd):
    """``unetscope explore DIR ... --no-browser``, in a process of its own on a free port: it prints its
    address and serves the page and the folders' index there; then it is stopped."""
    import json
    import urllib.request

    assert "--no-browser" in argv, "a served explore command in the docs must say --no-browser"
    if "--port" in argv:
        argv[argv.index("--port") + 1] = "0"
    else:
        argv += ["--port", "0"]
    p = subprocess.Popen([sys.executable, "-m", "unetscope.cli", *argv[1:]], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert "http://127.0.0.1:" in line, line + p.stderr.read()
        url = line[line.index("http://"):].split()[0]
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200 and b"unetscope explorer" in r.read()
        with urllib.request.urlopen(url + "api/index", timeout=30) as r:
            from unetscope.cli import build_parser

            assert len(json.loads(r.read())["folders"]) == len(build_parser().parse_args(argv[1:]).dirs)
    finally:
        p.terminate()
        p.wait(30)


def _link_repo_folders(where):
    for name in ("examples", "tests", "results"):
        if not (where / name).exists():
            (where / name).symlink_to(ROOT / name)


@pytest.mark.parametrize("doc, code", [pytest.param(d, c, id=d, marks=[pytest.mark.slow] if "RayExecutor" in c else [])
                                       for d, c in PYTHON])  # an example on Ray starts an instance of its own: slow
def test_doc_python_runs(doc, code, tmp_path, monkeypatch, request):
    if "compile=True" in code:
        request.getfixturevalue("eager_compile")
    if "path/to/sd-pipeline" in code:
        code = code.replace("path/to/sd-pipeline", str(request.getfixturevalue("sd_dir")))
    _link_repo_folders(tmp_path)
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, str(ROOT / "examples"))
    ns = {}
    if "ResearchUNetUnits(net)" in code and "class ResearchUNetUnits" not in code:
        import torch
        from own_unet import ResearchUNetUnits
        from research_unet import ResearchUNet

        torch.manual_seed(0)
        ns.update(ResearchUNetUnits=ResearchUNetUnits, net=ResearchUNet().eval())
    exec(compile(code, doc, "exec"), ns)


@pytest.mark.parametrize("doc, code", YAML, ids=[d for d, _ in YAML])
def test_doc_yaml_schedules_load(doc, code, tmp_path):
    from unetscope.shortcut import load_schedule

    f = tmp_path / "s.yaml"
    f.write_text(code)
    plan = load_schedule(f)
    plan.check(100, 16)
    assert len(plan) >= 1
