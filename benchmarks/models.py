"""Model benchmarks, one function per section; each returns a table, `main` prints them.

(a) CPU fp32 forward time of our FLUX transformer vs diffusers' FluxTransformer2DModel with the
    same weights on a small config (hidden 256, 2 heads x 128, 2 double + 4 single blocks,
    64x64 latent = 1024 image tokens, 64 text tokens); medians of interleaved runs after warm-up,
    as wall time with torch's default threads and as one thread's CPU time.
(c) CUDA only: full-size FLUX.1-dev with random bf16 weights, 1024x1024 (4096 image + 512 text
    tokens), seconds per transformer forward, ours vs diffusers vs the 0.094 s H100 compute floor.

    python benchmarks/models.py [--sections a,c] [--repeats 7] [--record]

--record appends the CPU section (a) table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.flux.model import Flux  # noqa: E402
from models.flux.packing import make_image_ids, make_text_ids  # noqa: E402
from models.flux.params import FLUX_DEV, FluxParams  # noqa: E402
from models.formats.diffusers_flux import bfl_to_diffusers_transformer  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
RESULT_DATE = "2026-11-22"
MACHINE = "2-core CPU sandbox"
H100_FLOOR_S = 0.094  # 1024^2 FLUX.1-dev step at ~790 TFLOP/s bf16 (shared/reference/performance.md 1.2)


@dataclass(frozen=True)
class Table:
    """One section's result: a markdown table plus a note printed under it."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + (f"\n\n{self.note}" if self.note else "")


def interleaved_medians(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    sync: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per call of each fn, runs interleaved so background load hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            fn()
            sync()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def diffusers_twin(model: Flux) -> torch.nn.Module:
    """diffusers FluxTransformer2DModel holding `model`'s weights (shared where no conversion is needed)."""
    from diffusers import FluxTransformer2DModel

    p = model.params
    config = dict(
        patch_size=1,
        in_channels=p.in_channels,
        out_channels=p.out_channels,
        num_layers=p.depth,
        num_single_layers=p.depth_single_blocks,
        attention_head_dim=p.head_dim,
        num_attention_heads=p.num_heads,
        joint_attention_dim=p.context_in_dim,
        pooled_projection_dim=p.vec_in_dim,
        guidance_embeds=p.guidance_embed,
        axes_dims_rope=p.axes_dim,
    )
    with torch.device("meta"):
        twin = FluxTransformer2DModel(**config)
    twin.load_state_dict(bfl_to_diffusers_transformer(model.state_dict()), strict=True, assign=True)
    return twin.eval()


def _inputs(p: FluxParams, tokens_hw: tuple[int, int], n_txt: int, device: str, dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    h, w = tokens_hw
    return {
        "img": torch.randn(1, h * w, p.in_channels, generator=g).to(device, dtype),
        "img_ids": make_image_ids(1, h, w, device=device),
        "txt": torch.randn(1, n_txt, p.context_in_dim, generator=g).to(device, dtype),
        "txt_ids": make_text_ids(1, n_txt, device=device),
        "timesteps": torch.tensor([0.7], device=device),
        "y": torch.randn(1, p.vec_in_dim, generator=g).to(device, dtype),
        "guidance": torch.tensor([3.5], device=device),
    }


def _runners(model: Flux, twin: torch.nn.Module, x: dict) -> tuple[Callable, Callable]:
    def ours() -> torch.Tensor:
        return model(x["img"], x["img_ids"], x["txt"], x["txt_ids"], x["timesteps"], x["y"], x["guidance"])

    def theirs() -> torch.Tensor:
        return twin(
            hidden_states=x["img"],
            encoder_hidden_states=x["txt"],
            pooled_projections=x["y"],
            timestep=x["timesteps"],
            img_ids=x["img_ids"][0],
            txt_ids=x["txt_ids"][0],
            guidance=x["guidance"],
            return_dict=False,
        )[0]

    return ours, theirs


def section_a_cpu_forward(repeats: int = 7, warmup: int = 2) -> Table:
    """(a) fp32 CPU forward, small config; ratio ours / diffusers (target <= 1.0)."""
    params = FluxParams(
        in_channels=64,
        out_channels=64,
        vec_in_dim=128,
        context_in_dim=256,
        hidden_size=256,
        num_heads=2,
        depth=2,
        depth_single_blocks=4,
        axes_dim=(16, 56, 56),
    )
    torch.manual_seed(0)
    model = Flux(params).eval()
    with torch.no_grad():
        for t in model.parameters():
            t.normal_(0.0, 0.02)
    twin = diffusers_twin(model)
    x = _inputs(params, (32, 32), 64, "cpu", torch.float32)
    ours, theirs = _runners(model, twin, x)
    threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        diff = (ours() - theirs()).abs().max().item()
        wall = interleaved_medians({"ours": ours, "theirs": theirs}, repeats, warmup)
        # CPU time of one thread: barely moved by other processes, unlike wall time with OpenMP
        # threads that wait on each other when the cores are shared
        torch.set_num_threads(1)
        try:
            cpu = interleaved_medians(
                {"ours": ours, "theirs": theirs}, repeats, warmup, clock=time.thread_time
            )
        finally:
            torch.set_num_threads(threads)
    rows = (
        (
            "fluxloom Flux",
            f"{wall['ours'] * 1e3:.0f}",
            f"{wall['ours'] / wall['theirs']:.2f}",
            f"{cpu['ours'] * 1e3:.0f}",
            f"{cpu['ours'] / cpu['theirs']:.2f}",
        ),
        (
            "diffusers FluxTransformer2DModel",
            f"{wall['theirs'] * 1e3:.0f}",
            "1.00",
            f"{cpu['theirs'] * 1e3:.0f}",
            "1.00",
        ),
    )
    note = (
        f"hidden 256 (2 heads x 128), 2 double + 4 single blocks, 1024 image + 64 text tokens, fp32, "
        f"torch {torch.__version__}; medians of {repeats} interleaved runs after {warmup} warm-up; "
        f"1-minute load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after on "
        f"{os.cpu_count()} CPUs; max |ours - diffusers| = {diff:.1e}"
    )
    header = ("model", f"wall ms ({threads} threads)", "ratio", "CPU ms (1 thread)", "ratio")
    return Table("(a) transformer forward, CPU fp32", header, rows, note)


def _random_bf16(module: torch.nn.Module, device: str) -> None:
    module.to_empty(device=device)
    with torch.no_grad():
        for t in module.parameters():
            t.normal_(0.0, 0.02)


def section_c_gpu_forward(repeats: int = 10, warmup: int = 3) -> Table:
    """(c) full-size FLUX.1-dev bf16 on CUDA at 1024x1024; skipped without a GPU."""
    if not torch.cuda.is_available():
        return Table(
            "(c) FLUX.1-dev forward, CUDA bf16",
            ("model", "s / forward"),
            (),
            "skipped: torch.cuda.is_available() is False",
        )
    with torch.device("meta"):
        model = Flux(FLUX_DEV)
    _random_bf16(model, "cuda")
    model = model.to(torch.bfloat16).eval()
    twin = diffusers_twin(model)
    x = _inputs(FLUX_DEV, (64, 64), 512, "cuda", torch.bfloat16)
    ours, theirs = _runners(model, twin, x)
    with torch.inference_mode():
        rel = ((ours().float() - theirs().float()).norm() / theirs().float().norm()).item()
        t = interleaved_medians({"ours": ours, "theirs": theirs}, repeats, warmup, torch.cuda.synchronize)
        t_ours, t_theirs = t["ours"], t["theirs"]
    rows = (
        ("fluxloom Flux", f"{t_ours:.3f}", f"{t_ours / H100_FLOOR_S:.2f}"),
        ("diffusers FluxTransformer2DModel", f"{t_theirs:.3f}", f"{t_theirs / H100_FLOOR_S:.2f}"),
        ("H100 bf16 compute floor", f"{H100_FLOOR_S:.3f}", "1.00"),
    )
    note = (
        f"{torch.cuda.get_device_name()}, 4096 image + 512 text tokens, eager, median of {repeats}; "
        f"relative L2 difference ours vs diffusers {rel:.1e}"
    )
    return Table("(c) FLUX.1-dev forward, CUDA bf16", ("model", "s / forward", "x floor"), rows, note)


# --- (b) loading: peak RSS and seconds vs file size (section owned by "formats") -------------------

_LOAD_CHILD = """
import json, os, sys, time
import torch
sys.path.insert(0, sys.argv[1])
from models.formats import load_flux_transformer
import models.flux.model, models.text.layouts  # imported by the loader on first use; not part of the timing

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

path, weight_dtype = sys.argv[2], (sys.argv[3] if sys.argv[3] != "default" else None)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS counter (VmHWM) after imports
before = status("VmRSS:")
start = time.perf_counter()
model = load_flux_transformer(path, weight_dtype=weight_dtype)
loaded = time.perf_counter() - start
touched = sum(int(p.detach().view(-1).view(torch.uint8)[::4096].sum()) for p in model.parameters())
total = time.perf_counter() - start
stored = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"load_s": loaded, "touch_s": total, "peak": status("VmHWM:") - before, "stored": stored}))
"""


def _evict(path: Path) -> None:
    """Drop a file's pages from the page cache so a load reads from disk (no root needed)."""
    import os

    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _load_in_child(path: Path, weight_dtype: str) -> dict:
    import json
    import subprocess

    _evict(path)
    repo = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_CHILD, repo, str(path), weight_dtype],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def section_b_load(repeats: int = 1, hidden: int = 3072, depth: int = 1, single: int = 2) -> Table:
    """(b) load a ~1.4 GB random bf16 checkpoint (real FLUX.1 widths, fewer blocks): peak RSS and seconds.

    Rows: BFL file as stored (mmap), BFL file cast to fp8 on load (pread + cast per tensor), and the
    same weights as a 2-shard diffusers folder (pread + q/k/v fused per block). Each load runs in a
    fresh process with the file evicted from the page cache; peak RSS is the VmHWM delta over the
    load plus touching every weight page.
    """
    import shutil
    import tempfile

    from safetensors.torch import save_file

    from models.tiny.demo import write_sharded

    params = FluxParams(hidden_size=hidden, num_heads=hidden // 128, depth=depth, depth_single_blocks=single)
    with torch.device("meta"):
        model = Flux(params)
    g = torch.Generator().manual_seed(0)
    state = {
        k: (torch.randn(v.shape, generator=g) * 0.02).to(torch.bfloat16)
        for k, v in model.state_dict().items()
    }
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="fluxloom-load-bench-"))
    try:
        bfl = tmp / "flux-bench.safetensors"
        save_file(state, str(bfl))
        size = bfl.stat().st_size
        cases = [
            ("BFL file, as stored (mmap)", bfl, "default"),
            ("BFL file -> fp8_e4m3fn", bfl, "fp8_e4m3fn"),
        ]
        for label, path, dtype in cases:
            runs = [_load_in_child(path, dtype) for _ in range(repeats)]
            rows.append(_load_row(label, size, runs))
        bfl.unlink()
        folder = tmp / "transformer"
        write_sharded(folder, bfl_to_diffusers_transformer(state), "diffusion_pytorch_model", shards=2)
        del state
        dsize = sum(p.stat().st_size for p in folder.iterdir())
        runs = [_load_in_child(folder, "default") for _ in range(repeats)]
        rows.append(_load_row("diffusers folder (2 shards, converted)", dsize, runs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    note = (
        f"FluxParams hidden {hidden}, {depth} double + {single} single blocks, bf16 random weights; "
        f"cold page cache (posix_fadvise DONTNEED); median of {repeats} fresh process(es); 'load' is the "
        f"loader call, '+ touch' adds reading one byte of every 4 KiB page of the weights"
    )
    return Table(
        "(b) checkpoint loading: peak RSS and time",
        ("case", "file GB", "stored GB", "load s", "load + touch s", "peak RSS GB", "peak / file"),
        tuple(rows),
        note,
    )


def _load_row(label: str, size: int, runs: list[dict]) -> tuple[str, ...]:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return (
        label,
        f"{size / 1e9:.2f}",
        f"{med['stored'] / 1e9:.2f}",
        f"{med['load_s']:.2f}",
        f"{med['touch_s']:.2f}",
        f"{med['peak'] / 1e9:.2f}",
        f"{med['peak'] / size:.2f}",
    )


SECTIONS: dict[str, Callable[..., Table]] = {
    "a": section_a_cpu_forward,
    "b": section_b_load,
    "c": section_c_gpu_forward,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, e.g. a,c")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--record", action="store_true", help="append section (a) to benchmarks/RESULTS.md")
    args = parser.parse_args()
    tables = {}
    for name in args.sections.split(","):
        table = SECTIONS[name.strip()](repeats=args.repeats)
        tables[name.strip()] = table
        print(f"\n{table.title}\n\n{table.markdown()}\n")
    if args.record and "a" in tables:
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write(
                f"\n## Models (a): FLUX transformer forward vs diffusers — {RESULT_DATE} — {MACHINE}\n\n"
                f"`python benchmarks/models.py --sections a --record`\n\n{tables['a'].markdown()}\n"
            )


if __name__ == "__main__":
    main()
