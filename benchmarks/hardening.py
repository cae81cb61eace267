"""Costs of the hardening checks: cycle reports by ring size, strict JSON parsing against plain json.loads.

A ring of N StringConcatenate nodes feeding a PreviewAny is refused with one `dependency_cycle`
error; the table gives the validation time and the size of the JSON answer (before the linear
report it grew as ~19·N² bytes: 74 MB at N = 2,000). The second table compares `web.helpers.parse_json`
(depth scan, NaN/Infinity/digit hooks, surrogate check) with `json.loads` on big prompt bodies.

    python benchmarks/hardening.py [--record]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor.errors import PromptValidationError  # noqa: E402
from executor.graph import validate_prompt  # noqa: E402
from nodes.runtime.registry import build_registry  # noqa: E402
from web.helpers import parse_json  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def ring(size: int) -> dict:
    prompt = {
        str(i): {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": [str((i + 1) % size), 0], "string_b": "x", "delimiter": ""},
        }
        for i in range(size)
    }
    prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": ["0", 0]}}
    return prompt


def best_of(repeats: int, work) -> float:  # noqa: ANN001 - a callable
    times = []
    for _ in range(repeats):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return min(times)


def cycle_rows(registry, sizes: list[int]) -> list[str]:  # noqa: ANN001
    rows = []
    for size in sizes:
        text = json.dumps(ring(size))
        answer: dict = {}

        def refuse(text: str = text, answer: dict = answer) -> None:
            try:
                validate_prompt(json.loads(text), registry)
            except PromptValidationError as exc:
                answer["body"] = json.dumps(exc.as_response())

        seconds = best_of(3, refuse)
        rows.append(f"| {size:,} | {seconds * 1000:.1f} | {len(answer['body']):,} |")
    return rows


def parse_rows(sizes: list[int]) -> list[str]:
    rows = []
    for size in sizes:
        prompt = {
            str(i): {
                "class_type": "CLIPTextEncode",
                "inputs": {"text": "a photo of a cat " * 8, "clip": ["c", 1]},
            }
            for i in range(size)
        }
        raw = json.dumps({"prompt": prompt}).encode()
        plain = best_of(3, lambda raw=raw: json.loads(raw))
        strict = best_of(3, lambda raw=raw: parse_json(raw))
        rows.append(f"| {size:,} | {len(raw) / 1e6:.1f} | {plain * 1000:.1f} | {strict * 1000:.1f} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = parser.parse_args()
    registry = build_registry()
    table = "\n".join(
        [
            "| ring nodes | validation CPU ms | answer bytes |",
            "|---|---|---|",
            *cycle_rows(registry, [100, 2_000, 3_000, 20_000]),
            "",
            "| prompt nodes | body MB | json.loads CPU ms | strict parse_json CPU ms |",
            "|---|---|---|---|",
            *parse_rows([1_000, 10_000, 50_000]),
        ]
    )
    print(table)
    if args.record:
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write(
                f"\n## Hardening checks ({date.today()}, {platform.processor() or platform.machine()}, "
                f"Python {platform.python_version()})\n\n`python benchmarks/hardening.py --record` "
                "(CPU time of this process, best of 3; shared 2-core machine)\n\n"
                f"{table}\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
