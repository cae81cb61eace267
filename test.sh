#!/usr/bin/env bash
# Installs Fluxloom and its test tools into .venv, then runs the linter and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh dev
.venv/bin/ruff check .
.venv/bin/mypy executor web
.venv/bin/python -m pytest "$@"
