"""Time of the model-free image nodes on one 1024x1024 RGB image (milliseconds, median of repeats).

Calls each node's `execute` directly (no engine overhead; see benchmarks/executor.py for that).
Prints a table and, with --record, appends it to benchmarks/RESULTS.md.

    python benchmarks/image_nodes.py [--size 1024] [--repeats 5] [--record]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from nodes.image.canny import Canny  # noqa: E402
from nodes.image.files import LoadImage, PreviewImage, SaveImage  # noqa: E402
from nodes.image.transforms import ImagePadForOutpaint, ImageScale, ImageStitch  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
DATE, MACHINE = "2026-11-22", "2-core CPU sandbox"


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocations, lazy imports)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def cases(size: int, root: Path) -> list[tuple[str, Callable[[], object]]]:
    settings = SimpleNamespace(input_dir=root / "output", output_dir=root / "output", temp_dir=root / "temp")
    ctx = SimpleNamespace(services=SimpleNamespace(settings=settings))
    # Smooth content compresses like a real picture; pure noise would not.
    coarse = torch.rand(1, 3, size // 16, size // 16, generator=torch.Generator().manual_seed(0))
    image = (
        torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1).movedim(1, -1)
    )
    saved = SaveImage.execute(ctx, image, "bench_load").ui["images"][0]["filename"]
    return [
        ("SaveImage (PNG, level 4)", lambda: SaveImage.execute(ctx, image, "bench")),
        ("PreviewImage (PNG, level 1)", lambda: PreviewImage.execute(ctx, image)),
        ("LoadImage (PNG decode)", lambda: LoadImage.execute(ctx, saved)),
        (
            "ImageScale bicubic x1.5",
            lambda: ImageScale.execute(image, "bicubic", size * 3 // 2, size * 3 // 2, "disabled"),
        ),
        (
            "ImageScale lanczos x1.5",
            lambda: ImageScale.execute(image, "lanczos", size * 3 // 2, size * 3 // 2, "disabled"),
        ),
        (
            "ImageStitch right (lanczos match)",
            lambda: ImageStitch.execute(image, "right", True, 8, "white", image[:, ::2]),
        ),
        (
            "ImagePadForOutpaint 128 px, feather 40",
            lambda: ImagePadForOutpaint.execute(image, 128, 128, 128, 128, 40),
        ),
        ("Canny (0.4, 0.8)", lambda: Canny.execute(image, 0.4, 0.8)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(name, median_ms(fn, args.repeats)) for name, fn in cases(args.size, Path(tmp))]
    table = [f"| node ({args.size}x{args.size} RGB, batch 1) | ms |", "|---|---|"]
    table += [f"| {name} | {ms:.1f} |" for name, ms in rows]
    print("\n".join(table))
    if args.record:
        load = os.getloadavg()[0]  # the sandbox is shared: a high load inflates every number
        machine = (
            f"{MACHINE} ({platform.machine()}, CPython {platform.python_version()}, torch {torch.__version__}, "
            f"load average {load:.1f} at record time)"
        )
        section = [
            f"\n## Image nodes — {DATE} — {machine}\n",
            "`python benchmarks/image_nodes.py --record`\n",
            *table,
        ]
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write("\n".join(section) + "\n")


if __name__ == "__main__":
    main()
