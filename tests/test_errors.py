"""One base class for every typed error: ``UnetscopeError``. The CLI turns any of them into one line
and exit code 2 (no table of the errors that are "ours" to keep up to date); a bug stays a traceback."""

import ast
import importlib
import sys
from pathlib import Path

import pytest

import unetscope
from conftest import run_cli
from unetscope.errors import UnetscopeError

PKG = Path(unetscope.__file__).parent


def _error_classes():
    """(module, class name) of every class named ``*Error`` defined at the top of a module of the package."""
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                yield ".".join(parts), node.name


ERRORS = list(_error_classes())


def test_the_walk_finds_the_errors():
    names = {n for _, n in ERRORS}
    assert {"PlanError", "SamplerError", "ModelError", "StoreError", "UsageError", "DeployError", "UnetscopeError"} <= names
    assert len(ERRORS) >= 20


@pytest.mark.parametrize("module, name", ERRORS, ids=[f"{m}.{n}" for m, n in ERRORS])
def test_every_typed_error_subclasses_unetscope_error(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, UnetscopeError), f"{module}.{name} does not subclass UnetscopeError"


def test_typed_errors_keep_their_builtin_base():
    """User code that caught ``ValueError`` (or ``RuntimeError``) still catches what it caught."""
    import unetscope as us
    from unetscope.store import StoreError

    for cls in (us.PlanError, us.SamplerError, us.ModelError, us.SettingsError, us.AdapterError, us.DeployError):
        assert issubclass(cls, ValueError) and issubclass(cls, UnetscopeError), cls
    assert issubclass(StoreError, RuntimeError) and issubclass(StoreError, UnetscopeError)


def test_the_base_class_is_public_and_light():
    import subprocess

    assert unetscope.UnetscopeError is UnetscopeError and "UnetscopeError" in unetscope.__all__
    code = "import sys, unetscope; unetscope.UnetscopeError; import unetscope.cli; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


class _Custom(UnetscopeError, ValueError):
    """An error class the CLI has never heard of."""


def test_the_cli_reports_any_typed_error_in_one_line(monkeypatch, tmp_path, capsys):
    explore_pkg = sys.modules["unetscope.explore"]  # (unetscope.explore is the function)

    def boom(*a, **k):
        raise _Custom("the field x must be in 1..3, got 9\nand a second line the user does not need")

    monkeypatch.setattr(explore_pkg, "explore", boom)
    code, _, err = run_cli(["explore", str(tmp_path)], capsys)
    assert code == 2, err
    assert err == "unetscope explore: error: the field x must be in 1..3, got 9\n"


def test_the_cli_lets_a_bug_be_a_traceback(monkeypatch, tmp_path, capsys):
    explore_pkg = sys.modules["unetscope.explore"]  # (unetscope.explore is the function)

    def bug(*a, **k):
        raise ValueError("not a user's input: a bug")

    monkeypatch.setattr(explore_pkg, "explore", bug)
    with pytest.raises(ValueError, match="a bug"):
        run_cli(["explore", str(tmp_path)], capsys)
