"""The import table of DESIGN.md, for every module of executor/, models/, nodes/ and web/.

| package  | never imports                       |
|----------|-------------------------------------|
| executor | torch, numpy, nodes, models, web    |
| models   | executor, nodes, web                |
| nodes    | web                                 |
| web      | torch, nodes, models                |

Two checks, because each misses what the other sees:
- at run time, in a fresh interpreter per package, every module found by walking the package with
  pkgutil is imported and the forbidden packages must not be in `sys.modules` afterwards (this sees
  what third-party libraries drag in); a module that fails to import fails the test;
- statically, every `import` statement of every module, including those inside functions (lazy
  imports run later, so the first check cannot see them), resolved against its package.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "executor": {"torch", "numpy", "nodes", "models", "web"},
    "models": {"executor", "nodes", "web"},
    "nodes": {"web"},
    "web": {"torch", "nodes", "models"},
}


def modules_of(package: str) -> list[str]:
    """Every module and subpackage under `package`, found as the import system finds them (pkgutil),
    without importing anything in this process."""
    found = [package]
    for info in pkgutil.iter_modules([str(ROOT.joinpath(*package.split(".")))]):
        name = f"{package}.{info.name}"
        found.extend(modules_of(name) if info.ispkg else [name])
    return sorted(found)


def source_of(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


_IMPORT_ALL = """
import importlib, json, sys, traceback
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=3)
print(json.dumps({"loaded": sorted({m.split(".")[0] for m in sys.modules}), "failed": failed}))
"""


def import_in_fresh_interpreter(modules: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *modules], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_walk_misses_no_python_file():
    """A .py file outside any importable package (a folder without __init__.py) would escape both checks."""
    for package in FORBIDDEN:
        walked = {source_of(m) for m in modules_of(package)}
        files = {p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts}
        assert files <= walked, sorted(str(p.relative_to(ROOT)) for p in files - walked)


def test_every_package_has_modules_to_check():
    for package in FORBIDDEN:
        assert len(modules_of(package)) > 3, package
    assert {"nodes.primitives", "web.app", "executor.run", "models.patches"} <= {
        m for p in FORBIDDEN for m in modules_of(p)
    }


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_every_module_imports_and_loads_nothing_forbidden(package):
    modules = modules_of(package)
    result = import_in_fresh_interpreter(modules)
    assert not result["failed"], "\n".join(f"{m}:\n{tb}" for m, tb in result["failed"].items())
    leaked = FORBIDDEN[package] & set(result["loaded"])
    if leaked:  # name the culprits: each module alone, in its own interpreter
        culprits = {}
        for module in modules:
            alone = FORBIDDEN[package] & set(import_in_fresh_interpreter([module])["loaded"])
            if alone:
                culprits[module] = sorted(alone)
        pytest.fail(f"{package} loads {sorted(leaked)}: {culprits}")


def imported_packages(module: str) -> set[str]:
    """Top-level names of everything `module` imports anywhere in its source (relative imports resolved)."""
    path = source_of(module)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                names.add(base[0] if base else "")
            elif node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_statement_crosses_the_table(package):
    crossing = {}
    for module in modules_of(package):
        bad = imported_packages(module) & FORBIDDEN[package]
        if bad:
            crossing[module] = sorted(bad)
    assert not crossing, crossing


def test_static_check_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The checker itself: an import inside a function and a relative import out of the package count."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .. import other\n")
    (package / "sub" / "lazy.py").write_text("def f():\n    import torch\n    from web import app\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert modules_of("pkg") == ["pkg", "pkg.sub", "pkg.sub.lazy"]
    assert imported_packages("pkg.sub.lazy") == {"torch", "web"}
    assert imported_packages("pkg.sub") == {"pkg"}
