"""Peak resident memory while loading stays about one copy of the weights (measured in a child process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The child resets the kernel's peak-RSS counter (VmHWM) after its imports, builds the file-backed
# model, touches every weight (so lazily mapped pages count too) and reports the peak.
CHILD = textwrap.dedent("""
    import json, resource, sys
    import torch
    sys.path.insert(0, sys.argv[1])
    from models.formats.header import inspect_weights
    from models.formats.lazy import Source, load_module

    def stack():
        from torch import nn

        return nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(12)])

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    def peak():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    path, mode = sys.argv[2], sys.argv[3]
    torch.zeros(1) @ torch.zeros(1, 1)  # warm torch's allocators before the baseline
    info = inspect_weights(path)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        resettable = True
    except OSError:
        resettable = False
    before = rss()
    kwargs = {"linear_dtype": torch.float8_e4m3fn} if mode == "fp8" else {}
    if mode == "cast":
        kwargs = {"compute_dtype": torch.float32}
    model = load_module(stack, Source(info), **kwargs)
    # page everything in: one byte per 4 KiB page, without temporary copies
    total = sum(int(p.detach().view(-1).view(torch.uint8)[::4096].sum()) for p in model.parameters())
    stored = sum(p.numel() * p.element_size() for p in model.parameters())
    high = peak() if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"delta": high - before, "stored": stored, "resettable": resettable, "sum": total}))
""")


def write_file(path: Path, dtype) -> int:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    sd = {}
    for i in range(12):
        sd[f"{i}.weight"] = (torch.randn(2048, 2048, generator=g) * 0.02).to(dtype)
        sd[f"{i}.bias"] = torch.zeros(2048, dtype=dtype)
    save_file(sd, str(path))
    return path.stat().st_size


def run_child(path: Path, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO), str(path), mode],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bf16_file(tmp_path_factory) -> tuple[Path, int]:
    import torch

    path = tmp_path_factory.mktemp("rss") / "stack.safetensors"
    return path, write_file(path, torch.bfloat16)  # ~100 MB


@pytest.mark.parametrize(
    "mode",
    [
        "as_stored",  # mmap: the weights are the file's pages
        "fp8",  # pread + cast per tensor: the result is half the file
        "cast",  # bf16 -> fp32: the result is twice the file
    ],
)
def test_peak_rss_is_one_copy(bf16_file, mode):
    path, size = bf16_file
    result = run_child(path, mode)
    ratio = result["delta"] / size
    print(
        f"{mode}: file {size / 1e6:.1f} MB, stored {result['stored'] / 1e6:.1f} MB, "
        f"peak RSS delta {result['delta'] / 1e6:.1f} MB ({ratio:.2f}x)"
    )
    assert result["delta"] <= 1.1 * max(size, result["stored"])  # one copy of the larger of file and result
    assert result["delta"] >= 0.9 * result["stored"]  # the measurement does see the weights
