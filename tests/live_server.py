"""`python main.py serve` as a real process on a free port, for tests that drive it like a user would."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(flags: Sequence[str], log_path: Path, *, startup_s: float) -> Iterator[str]:
    """Run `main.py serve --port PORT *flags` (output to `log_path`) and yield its base URL once
    /api/system_stats answers; fails the test with the log's tail if it exits or takes over `startup_s`."""
    port = free_port()
    args = [sys.executable, str(ROOT / "main.py"), "serve", "--port", str(port), *flags]
    log = open(log_path, "w")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + startup_s
    while True:
        try:
            with urllib.request.urlopen(url + "api/system_stats", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)  # waiting for the child to bind its port
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
