"""Engine overhead per node on 1,000-node graphs of StringConcatenate nodes.

Measures, in microseconds per node: a cold run (validation + execution, empty cache), a fully cached
re-run, a re-run after changing one leaf widget, and validation alone. Prints a table and, with
--record, appends it to benchmarks/RESULTS.md.

    python benchmarks/executor.py [--nodes 1000] [--repeats 5] [--record]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor.run import Executor  # noqa: E402
from nodes.runtime.registry import build_registry  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def concat(a, b) -> dict:
    return {"class_type": "StringConcatenate", "inputs": {"string_a": a, "string_b": b, "delimiter": ""}}


def chain_graph(count: int) -> tuple[dict, str]:
    """count-1 StringConcatenate nodes in a line, then a PreviewAny. Returns (prompt, first leaf id)."""
    prompt = {"0": concat("a", "b")}
    for i in range(1, count - 1):
        prompt[str(i)] = concat([str(i - 1), 0], "x")
    prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": [str(count - 2), 0]}}
    return prompt, "0"


def wide_graph(count: int) -> tuple[dict, str]:
    """A reduction tree: half the nodes are independent leaves, pairwise joined up to one PreviewAny."""
    prompt: dict = {}
    level = []
    leaves = count // 2
    for i in range(leaves):
        prompt[f"l{i}"] = concat(f"leaf{i}", "!")
        level.append(f"l{i}")
    n = 0
    while len(level) > 1 and len(prompt) < count - 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            if len(prompt) >= count - 1:
                nxt.extend(level[i:])
                break
            prompt[f"j{n}"] = concat([level[i], 0], [level[i + 1], 0])
            nxt.append(f"j{n}")
            n += 1
        else:
            if len(level) % 2:
                nxt.append(level[-1])
        level = nxt
    # whatever is left unjoined still needs to reach the output: chain it
    while len(level) > 1:
        prompt[f"j{n}"] = concat([level[0], 0], [level[1], 0])
        level = [f"j{n}"] + level[2:]
        n += 1
    prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": [level[0], 0]}}
    return prompt, "l0"


def median_us(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def measure(prompt: dict, leaf: str, repeats: int) -> dict[str, float]:
    registry = build_registry()
    nodes = len(prompt)

    def cold() -> None:
        Executor(registry).run_prompt(prompt, prompt_id="cold")

    warm = Executor(registry)
    warm.run_prompt(prompt, prompt_id="warm")
    edits = iter(range(10**9))

    def one_leaf() -> None:
        # a value never seen before, so neither the validation memo nor the output cache can answer it
        changed = copy.deepcopy(prompt)
        changed[leaf]["inputs"]["string_b"] = f"edit {next(edits)}"
        start = time.perf_counter()
        warm.run_prompt(changed, prompt_id="leaf")
        return time.perf_counter() - start

    def timed_median(fn: Callable[[], float]) -> float:
        return statistics.median(fn() for _ in range(repeats)) * 1e6

    return {
        "cold": median_us(lambda: Executor(registry).run_prompt(prompt, prompt_id="cold"), repeats) / nodes,
        "cached": median_us(lambda: warm.run_prompt(prompt, prompt_id="c"), repeats) / nodes,
        "one leaf changed": timed_median(one_leaf) / nodes,
        "validation": median_us(lambda: Executor(registry).validate(prompt), repeats) / nodes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    sys.setrecursionlimit(10_000)
    rows = []
    for name, build in (("chain", chain_graph), ("wide", wide_graph)):
        prompt, leaf = build(args.nodes)
        rows.append((name, len(prompt), measure(prompt, leaf, args.repeats)))
    header = (
        "| graph | nodes | cold µs/node | cached µs/node | one-leaf-changed µs/node | validation µs/node |"
    )
    lines = [header, "|---|---|---|---|---|---|"]
    for name, count, r in rows:
        lines.append(
            f"| {name} | {count} | {r['cold']:.1f} | {r['cached']:.1f} | {r['one leaf changed']:.1f} | "
            f"{r['validation']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    print("(targets: < 50 µs/node cold, < 5 µs/node cached; cold = validation + execution with empty caches)")
    if args.record:
        machine = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write(
                f"\n## Executor overhead — {date.today().isoformat()} — 2-core CPU sandbox ({machine})\n\n"
                f"`python benchmarks/executor.py --record`\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
