"""The import table of DESIGN.md, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def loaded_after(module: str) -> set[str]:
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["executor", "executor.run", "executor.graph", "executor.object_info",
                                    "executor.adapters", "executor.cache"])
def test_executor_loads_no_torch_nodes_models_or_web(module):
    assert not loaded_after(module) & {"torch", "nodes", "models", "web", "numpy"}


def test_models_never_load_executor_nodes_or_web():
    packages = [p.name for p in (ROOT / "models").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    modules = ["models." + p for p in packages] + ["models." + p.stem for p in (ROOT / "models").glob("*.py")
                                                    if p.stem != "__init__"]
    for module in modules:
        assert not loaded_after(module) & {"executor", "nodes", "web"}, module


def test_web_loads_no_models_or_torch():
    if not (ROOT / "web" / "app.py").exists():
        pytest.skip("web app not present")
    assert not loaded_after("web.app") & {"torch", "models"}
