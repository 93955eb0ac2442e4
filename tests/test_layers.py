"""The house's shape: no module reaches into another module's private names, and layers point one
way (the sampler knows nothing of experiments; the runner nothing of samplers; adapters nothing of the runner)."""

import ast
from pathlib import Path

import unetscope

PKG = Path(unetscope.__file__).parent


def _modules():
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), f, ast.parse(f.read_text())


def _imports(name, tree, is_pkg):
    """(imported module, [names]) of every import, relative ones resolved."""
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join(base[:len(base) - node.level + 1] + ([mod] if mod else []))
            yield mod, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for name, f, tree in _modules():
        for mod, names in _imports(name, tree, f.name == "__init__.py"):
            if mod == "__future__" or not mod.startswith("unetscope"):
                continue
            bad += [f"{name}: from {mod} import {n}" for n in names if n.startswith("_") and mod != name]
            bad += [f"{name}: import {mod}" for part in mod.split(".") if part.startswith("_")]
    assert not bad, bad


def test_layers_point_one_way():
    below = {  # a module and the project modules it must not import
        "unetscope.plan": ("sampler", "sweep", "experiments", "shortcut", "cli", "adapters", "models"),
        "unetscope.plan_file": ("sampler", "sweep", "experiments", "shortcut", "cli", "adapters", "models", "runner"),
        "unetscope.adapters": ("sampler", "sweep", "experiments", "shortcut", "cli", "models", "guidance", "runner"),
        "unetscope.runner": ("sampler", "sweep", "experiments", "shortcut", "cli", "models", "guidance"),
        "unetscope.models": ("sampler", "sweep", "experiments", "shortcut", "cli", "guidance"),
        "unetscope.sampler": ("sweep", "experiments", "shortcut", "cli", "report"),
        "unetscope.guidance": ("sampler", "sweep", "experiments", "shortcut", "cli"),
        "unetscope.sweep": ("experiments", "shortcut", "cli"),
    }
    bad = []
    for name, f, tree in _modules():
        for owner, banned in below.items():
            if name == owner or name.startswith(owner + "."):
                for mod, _ in _imports(name, tree, f.name == "__init__.py"):
                    if any(mod == f"unetscope.{b}" or mod.startswith(f"unetscope.{b}.") for b in banned):
                        bad.append(f"{name} imports {mod}")
    assert not bad, bad
