"""Text-encoder costs on this machine: building, loading, tokenizing, encoding (random weights).

Measures, in milliseconds (median of --repeats): meta-device construction of full-size CLIP-L and
T5-XXL; loading a full-size CLIP-L fp16 file (header, meta build, assign); ComfyUI-style
tokenization of a short and a long prompt with the tiny tokenizers; CLIP-L pooled encoding at 77
tokens and one full-width T5-XXL block at 256 tokens (the encoder has 24), fp32 on the CPU. Prints a table and, with
--record, appends it to benchmarks/RESULTS.md.

    python benchmarks/text_encoders.py [--repeats 3] [--record]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from safetensors.torch import save_file  # noqa: E402

from models.text.clip import CLIP_L, build_clip  # noqa: E402
from models.text.loading import build_meta, load_text_encoder_file  # noqa: E402
from models.text.prompt import tokenize_clip, tokenize_t5  # noqa: E402
from models.text.t5 import T5_XXL, build_t5  # noqa: E402
from models.text.tokenizers import load_flux_tokenizers, write_tiny_tokenizers  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
SHORT = "a photo of a red fox in a misty forest at sunset, (highly detailed:1.2), 35mm film"
LONG = ", ".join([SHORT] * 12)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def matmul_gflops(repeats: int) -> float:
    """fp32 GEMM throughput of this machine right now, [77, 768] x [768, 3072], to read the table by."""
    a, w = torch.randn(77, 768), torch.randn(3072, 768)
    return 2 * 77 * 768 * 3072 / (median_ms(lambda: a @ w.T, repeats * 10) / 1000) / 1e9


def run(repeats: int) -> list[tuple[str, float]]:
    rows = [
        ("meta build CLIP-L", median_ms(lambda: build_meta("clip_l", CLIP_L), repeats)),
        ("meta build T5-XXL (24 blocks)", median_ms(lambda: build_meta("t5xxl", T5_XXL), repeats)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        clip = build_clip(CLIP_L)
        sd = {"text_model." + k: v.half().contiguous() for k, v in clip.state_dict().items()}
        save_file(sd, f"{tmp}/clip_l.safetensors")
        rows.append(
            (
                "load CLIP-L fp16 file (246 MB)",
                median_ms(lambda: load_text_encoder_file(f"{tmp}/clip_l.safetensors"), repeats),
            )
        )
        write_tiny_tokenizers(Path(tmp))
        clip_tok, t5_tok = load_flux_tokenizers(Path(tmp))
        clip_ids, t5_ids = (lambda t: clip_tok(t)["input_ids"]), (lambda t: t5_tok(t)["input_ids"])
        for name, text in (("short", SHORT), ("long", LONG)):
            rows.append(
                (
                    f"tokenize {name} prompt (CLIP + T5)",
                    median_ms(
                        lambda text=text: (tokenize_clip(clip_ids, text), tokenize_t5(t5_ids, text)), repeats
                    ),
                )
            )
    ids = torch.randint(0, 49406, (1, 77))
    with torch.no_grad():
        rows.append(
            ("CLIP-L pooled, 77 tokens, fp32", median_ms(lambda: clip(input_ids=ids).pooler_output, repeats))
        )
    torch.manual_seed(0)
    t5 = build_t5(dataclasses.replace(T5_XXL, num_layers=1))
    ids = torch.randint(0, 32100, (1, 256))
    with torch.no_grad():
        rows.append(
            (
                "T5-XXL one block, 256 tokens, fp32",
                median_ms(lambda: t5(input_ids=ids).last_hidden_state, repeats),
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = run(args.repeats)
    table = "| what | ms |\n|---|---|\n" + "".join(f"| {name} | {ms:.1f} |\n" for name, ms in rows)
    load = os.getloadavg()[0]  # the sandbox is shared; a load above 2 inflates the compute rows
    gflops = matmul_gflops(args.repeats)
    print(f"{table}\n1-min load average {load:.1f}, fp32 GEMM {gflops:.1f} GFLOP/s")
    if args.record:
        machine = f"2-core CPU sandbox ({platform.machine()}, torch {torch.__version__})"
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write(
                f"\n## Text encoders — {date(2026, 11, 22).isoformat()} — {machine}\n\n"
                f"`python benchmarks/text_encoders.py --record` (random weights, fp32, median of {args.repeats}; "
                f"T5-XXL encoder ≈ 24 × one block; at the end: 1-min load average {load:.1f}, fp32 GEMM "
                f"{gflops:.1f} GFLOP/s)\n\n{table}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
