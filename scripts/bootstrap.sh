#!/usr/bin/env bash
# Creates .venv and installs Fluxloom's requirements into it. Usage: scripts/bootstrap.sh [dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# torch first, pinned only when missing: a loose `torch` requirement would pull a multi-GB build
# where a CPU wheel of 2.13.0 is available locally.
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
if [ "${1:-}" = "dev" ]; then
  pip install -r requirements-dev.txt
  # API clients whose pins clash with ours get their own environment; tests drive a server with them.
  [ -x .venv-clients/bin/python ] || "$PYTHON" -m venv .venv-clients
  .venv-clients/bin/python -m pip --disable-pip-version-check -q install -r requirements-clients.txt
  # Browser tests drive Debian's chromium; install it when we can (root + apt), never download one.
  if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  fi
else
  pip install -r requirements.txt
fi
