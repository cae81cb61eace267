"""`main.py run` on several devices: data-parallel training under torch.distributed.

`main.py run WORKFLOW --nproc N` starts `python -m torch.distributed.run --standalone
--nproc_per_node N main.py run WORKFLOW ...` (the same arguments without --nproc); `torchrun ...
main.py run WORKFLOW` does the same by hand. Every process runs the whole workflow on its own
device (LOCAL_RANK on CUDA, NCCL; gloo on the CPU); the training loop gives each rank its slice of
every global batch and DistributedDataParallel averages the adapter gradients, so a `batch_size`
is per process. Only rank 0 shows progress, prints the saved files and saves files where the user
sees them; the other ranks save into a scratch folder deleted at exit and print errors only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from settings import Settings

MAIN = Path(__file__).resolve().parent / "main.py"


def without_nproc(argv: Sequence[str]) -> list[str]:
    """`argv` without `--nproc N` / `--nproc=N`."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run `main.py <argv without --nproc>` in `nproc` processes under torchrun; its exit status."""
    import torch

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        print(
            f"error: --nproc {nproc} needs {nproc} GPUs; {torch.cuda.device_count()} found", file=sys.stderr
        )
        return 2
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
        str(MAIN), *without_nproc(argv),
    ]  # fmt: skip
    return subprocess.call(command)


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


@contextlib.contextmanager
def data_parallel(settings: Settings) -> Iterator[tuple[int, Settings]]:
    """(rank, settings for this process) inside torchrun's process group; (0, settings) outside it.

    Joins the group before anything picks a device (the memory manager uses the current CUDA
    device, set here from LOCAL_RANK) and leaves it at exit. Ranks other than 0 get a scratch folder
    for what they save, log errors only and print nothing to stdout.
    """
    if not under_torchrun():
        yield 0, settings
        return
    import torch.distributed as dist

    from models.training.distributed import setup

    setup()
    rank = dist.get_rank()
    try:
        if rank == 0:
            yield 0, settings
            return
        logging.getLogger().setLevel(logging.ERROR)
        with (
            tempfile.TemporaryDirectory(prefix=f"fluxloom-rank{rank}-") as scratch,
            open(os.devnull, "w") as devnull,
            contextlib.redirect_stdout(devnull),  # what packs print as they load, for one
        ):
            yield rank, dataclasses.replace(settings, scratch_dir=Path(scratch))
    finally:
        dist.destroy_process_group()
