"""Server benchmarks against a real `python main.py serve` process.

Default mode: latency and queue throughput under load. With 50 WebSocket clients connected (49
draining their sockets in a helper process), queues 200 prompts of trivial nodes (PrimitiveInt ->
PreviewAny, a distinct value each, so nothing is cached) one after another; after each POST /prompt
it also times GET /queue, and GET /object_info after every second one. Reports p50/p99/max latency
per route (pooled over --rounds against one server) and prompts/s through the queue (first POST to
the last prompt's `executing` null). The load average is printed because other work on a small
machine dominates the p99.

`--per-node`: the marginal cost of one more node, as a WebSocket client sees it. One client submits
chain and wide graphs of StringConcatenate nodes (10, 1,000 and 10,000 nodes; cold = salted so
nothing is cached, then the same prompt again = fully cached), reads and parses every message until
`executing` with node null for its prompt, and reports milliseconds per prompt, the marginal
microseconds per node against the 10-node graph, and the WebSocket bytes per node.

Both print a table and, with --record, append it to benchmarks/RESULTS.md. The per-node graphs and
their timing live in benchmarks/server_per_node.py.

    python benchmarks/server.py [--clients 50] [--prompts 200] [--rounds 3] [--record]
    python benchmarks/server.py --per-node [--sizes 10,1000,10000] [--repeats 3] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import TypeVar

import aiohttp
from server_per_node import measure_per_node, per_node_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("RESULTS.md")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, workdir: Path) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "main.py"), "serve", "--port", str(port)]
    for flag, name in (
        ("--user-dir", "user"),
        ("--input-dir", "input"),
        ("--output-dir", "output"),
        ("--temp-dir", "temp"),
        ("--models-dir", "models"),
        ("--custom-nodes-dir", "custom_nodes"),
    ):
        args += [flag, str(workdir / name)]
    return subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_ready(session: aiohttp.ClientSession, base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            async with session.get(f"{base}/api/features") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.2)  # waiting for another process to bind its port
    raise SystemExit("server did not start within 120 s")


def against_server(measure: Callable[[str, int], Awaitable[T]]) -> tuple[T, str]:
    """Serve from a temp folder, wait until ready, await `measure(base_url, server_pid)`, stop the server.

    Returns the measurement and the load average before/after it, as printed in the tables.
    """
    with tempfile.TemporaryDirectory(prefix="fluxloom-bench-") as tmp:
        port = free_port()
        server = start_server(port, Path(tmp))
        base = f"http://127.0.0.1:{port}"
        try:

            async def run() -> T:
                async with aiohttp.ClientSession() as session:
                    await wait_ready(session, base, server)
                return await measure(base, server.pid)

            before = os.getloadavg()
            result = asyncio.run(run())
            after = os.getloadavg()
        finally:
            server.terminate()
            server.wait(30)
    return result, f"{before[0]:.1f} / {after[0]:.1f} (1-minute, {os.cpu_count()} CPUs)"


class Listener:
    """The submitting WebSocket client: learns its sid, collects `executing` null per prompt id."""

    def __init__(self) -> None:
        self.sid = ""
        self.messages = 0
        self.finished: dict[str, float] = {}
        self.all_done = asyncio.Event()
        self.expected: set[str] = set()

    async def run(self, session: aiohttp.ClientSession, url: str, ready: asyncio.Event) -> None:
        async with session.ws_connect(url) as ws:
            async for message in ws:
                self.messages += 1
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = message.json()
                if data["type"] == "status" and "sid" in data["data"]:
                    self.sid = data["data"]["sid"]
                    ready.set()
                elif data["type"] == "executing" and data["data"].get("node") is None:
                    self.finished[data["data"]["prompt_id"]] = time.perf_counter()
                    if self.expected and self.expected <= set(self.finished):
                        self.all_done.set()


async def drain_clients(base: str, count: int) -> None:
    """`--listeners` mode (own process): keep `count` sockets connected and drained until killed."""

    async def one(session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(base.replace("http", "ws") + "/ws") as ws:
            async for _ in ws:
                pass

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(count)]
        print("CONNECTED", flush=True)
        await asyncio.gather(*tasks)


def start_listeners(base: str, count: int) -> subprocess.Popen:
    """The other WebSocket clients live in their own process, so their parsing does not delay our timer."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--listeners", str(count), "--base", base],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline() if process.stdout else ""
    if line.strip() != "CONNECTED":
        raise SystemExit(f"listener process failed: {line} {process.stderr.read() if process.stderr else ''}")
    return process


def prompt(value: int) -> dict:
    return {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": value}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }


async def timed(session: aiohttp.ClientSession, method: str, url: str, samples: list[float], **kw) -> dict:
    start = time.perf_counter()
    async with session.request(method, url, **kw) as response:
        body = await response.json()
        samples.append((time.perf_counter() - start) * 1000)
        if response.status != 200:
            raise SystemExit(f"{method} {url} -> {response.status}: {body}")
        return body


async def measure(base: str, clients: int, prompts: int, first_value: int = 1000) -> dict[str, object]:
    timeout = aiohttp.ClientTimeout(total=120)
    others = start_listeners(base, clients - 1)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        submitter, ready = Listener(), asyncio.Event()
        task = asyncio.create_task(submitter.run(session, base.replace("http", "ws") + "/ws", ready))
        await asyncio.wait_for(ready.wait(), 60)
        warm: list[float] = []
        for _ in range(3):
            await timed(session, "GET", f"{base}/api/object_info", warm)
        samples: dict[str, list[float]] = {"POST /prompt": [], "GET /queue": [], "GET /object_info": []}
        ids: list[str] = []
        first = time.perf_counter()
        for i in range(prompts):
            body = {"prompt": prompt(first_value + i), "client_id": submitter.sid}
            answer = await timed(session, "POST", f"{base}/prompt", samples["POST /prompt"], json=body)
            ids.append(answer["prompt_id"])
            await timed(session, "GET", f"{base}/queue", samples["GET /queue"])
            if i % 2 == 0:
                await timed(session, "GET", f"{base}/object_info", samples["GET /object_info"])
        submitter.expected = set(ids)
        if not submitter.expected <= set(submitter.finished):
            await asyncio.wait_for(submitter.all_done.wait(), 120)
        elapsed = max(submitter.finished[p] for p in ids) - first
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    others.terminate()
    others.wait(30)
    return {"samples": samples, "throughput": prompts / elapsed, "messages": submitter.messages}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def table(rounds: list[dict], clients: int, prompts: int) -> str:
    """Latencies pooled over all rounds; throughput per round."""
    lines = ["| route | requests | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
    for route in rounds[0]["samples"]:
        values = [v for r in rounds for v in r["samples"][route]]
        lines.append(
            f"| {route} | {len(values)} | {statistics.median(values):.2f} | "
            f"{percentile(values, 0.99):.2f} | {max(values):.2f} |"
        )
    rates = ", ".join(f"{r['throughput']:.1f}" for r in rounds)
    lines.append("")
    lines.append(
        f"Throughput through the queue: {rates} prompts/s ({len(rounds)} rounds of {prompts} prompts, "
        f"{clients} WebSocket clients connected; the submitting one received {rounds[0]['messages']} "
        f"messages per round). Load average before/after: {{load}}."
    )
    return "\n".join(lines)


def machine_speed() -> float:
    """CPU seconds of a fixed pure-Python loop (10 million additions). The sandbox's speed drifts by up
    to 1.7x within an hour, so per-node costs are only comparable next to this number."""
    start = time.process_time()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.process_time() - start


def main_per_node(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    before = machine_speed()
    rows, load = against_server(lambda base, pid: measure_per_node(base, pid, sizes, args.repeats))
    speed = f"{before:.2f} s before, {machine_speed():.2f} s after"
    text = per_node_table(rows)
    print(text)
    print(f"\nLoad average before/after: {load}; speed check (10M-addition Python loop): {speed}")
    if args.record:
        header = (
            f"\n## Server cost per node over HTTP + WebSocket — {date.today().isoformat()} — 2-core CPU sandbox, "
            f"CPU only ({platform.machine()}, CPython {platform.python_version()})\n\n"
            f"`python benchmarks/server.py --per-node --record` (server: `python main.py serve` in its own "
            f"process; client: one aiohttp WebSocket in this process that parses every message until "
            f"`executing` null, then checks history; median of {args.repeats}; per node = marginal, against "
            f"the {sizes[0]}-node graph of the same shape and run; CPU from /proc, 10 ms ticks; the machine "
            f"is shared, load average before/after {load}, so wall time is an upper bound; speed check, "
            f"a 10M-addition Python loop: {speed})\n\n"
        )
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write(header + text + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds against one server; latencies are pooled"
    )
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    parser.add_argument("--per-node", action="store_true", help="marginal cost per node (chain, wide)")
    parser.add_argument("--sizes", default="10,1000,10000", help="graph sizes for --per-node")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size for --per-node (median)")
    parser.add_argument("--listeners", type=int, help=argparse.SUPPRESS)  # internal: the listener process
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listeners is not None:
        asyncio.run(drain_clients(args.base, args.listeners))
        return 0
    if args.per_node:
        return main_per_node(args)

    async def rounds_of(base: str, server_pid: int) -> list[dict]:
        return [await measure(base, args.clients, args.prompts, 1000 * (n + 1)) for n in range(args.rounds)]

    rounds, load = against_server(rounds_of)
    text = table(rounds, args.clients, args.prompts).replace("{load}", load)
    print(text)
    if args.record:
        header = (
            f"\n## Server latency and queue throughput — 2026-11-22 — 2-core CPU sandbox "
            f"({platform.machine()}, CPython {platform.python_version()})\n\n"
            f"`python benchmarks/server.py --record` (server: `python main.py serve` in its own process, "
            f"built-in nodes; client: aiohttp in this process; run on {date.today().isoformat()})\n\n"
        )
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
