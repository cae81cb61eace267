#!/usr/bin/env bash
# Installs Fluxloom and its test tools into .venv, then runs the linters, the type checker and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy executor web nodes models
.venv/bin/python -m pytest "$@"
