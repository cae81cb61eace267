#!/usr/bin/env bash
# Installs Fluxloom into .venv (first time) and starts it: ./run.sh [main.py arguments]
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec .venv/bin/python main.py "$@"
