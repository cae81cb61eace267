"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_models_dir(tmp_path_factory):
    """A models root filled by `models.tiny.write_demo_models` (written once per test session; read-only)."""
    from models.tiny import write_demo_models

    root = tmp_path_factory.mktemp("demo_models")
    write_demo_models(root)
    return root
