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

Both print a table and, with --record, append it to benchmarks/RESULTS.md.

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
from datetime import date
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("RESULTS.md")


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


# --- per-node cost --------------------------------------------------------------------------------
def concat(a: object, b: object) -> dict:
    return {"class_type": "StringConcatenate", "inputs": {"string_a": a, "string_b": b, "delimiter": ""}}


def chain_graph(count: int, salt: str) -> dict:
    """count - 1 StringConcatenate nodes in a line (the string does not grow), then a PreviewAny."""
    graph = {"0": concat(salt, "")}
    for i in range(1, count - 1):
        graph[str(i)] = concat([str(i - 1), 0], "")
    graph["out"] = {"class_type": "PreviewAny", "inputs": {"source": [str(count - 2), 0]}}
    return graph


def wide_graph(count: int, salt: str) -> dict:
    """count // 2 independent leaves joined pairwise (a reduction tree) into one PreviewAny."""
    graph: dict = {}
    level = []
    for i in range(count // 2):
        graph[f"l{i}"] = concat(f"{salt}{i}", "")
        level.append(f"l{i}")
    joins = 0
    while len(level) > 1 and len(graph) < count - 1:
        joined = []
        for i in range(0, len(level) - 1, 2):
            graph[f"j{joins}"] = concat([level[i], 0], [level[i + 1], 0])
            joined.append(f"j{joins}")
            joins += 1
            if len(graph) >= count - 1:
                joined.extend(level[i + 2 :])
                break
        else:
            joined.extend(level[len(level) - len(level) % 2 :])
        level = joined
    while len(level) > 1:  # the node budget is spent: join what is left in a line
        graph[f"j{joins}"] = concat([level[0], 0], [level[1], 0])
        level = [f"j{joins}"] + level[2:]
        joins += 1
    graph["out"] = {"class_type": "PreviewAny", "inputs": {"source": [level[0], 0]}}
    return graph


SHAPES = {"chain": chain_graph, "wide": wide_graph}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux /proc; 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_once(
    session: aiohttp.ClientSession,
    base: str,
    ws: aiohttp.ClientWebSocketResponse,
    sid: str,
    graph: dict,
    server_pid: int,
) -> dict:
    """Seconds from POST to `executing` null (wall, server CPU, client CPU), WebSocket bytes and messages."""
    server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
    start = time.perf_counter()
    async with session.post(f"{base}/prompt", json={"prompt": graph, "client_id": sid}) as response:
        answer = await response.json()
        if response.status != 200:
            raise SystemExit(f"POST /prompt -> {response.status}: {str(answer)[:2000]}")
    prompt_id = answer["prompt_id"]
    received = messages = 0
    done = False
    while not done:
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            received += len(message.data)
            data = message.json()
            done = (
                data["type"] == "executing"
                and data["data"].get("node") is None
                and data["data"].get("prompt_id") == prompt_id
            )
        elif message.type == aiohttp.WSMsgType.BINARY:
            received += len(message.data)
        else:
            raise SystemExit(f"websocket closed: {message.type} {message.data!r}")
        messages += 1
    run = {
        "seconds": time.perf_counter() - start,
        "server_cpu": cpu_seconds(server_pid) - server_cpu,
        "client_cpu": time.process_time() - client_cpu,
        "bytes": received,
        "messages": messages,
    }
    async with session.get(f"{base}/history/{prompt_id}") as response:
        status = (await response.json())[prompt_id]["status"]["status_str"]
    if status != "success":
        raise SystemExit(f"prompt {prompt_id} ended with {status}")
    return run


async def measure_per_node(base: str, server_pid: int, sizes: list[int], repeats: int) -> list[dict]:
    timeout = aiohttp.ClientTimeout(total=1800)
    rows = []
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.ws_connect(base.replace("http", "ws") + "/ws", max_msg_size=0) as ws:
            hello = await ws.receive_json()
            sid = hello["data"]["sid"]
            for shape, build in SHAPES.items():  # warm-up: code paths, first allocations
                await run_once(session, base, ws, sid, build(50, f"warm-{shape}-"), server_pid)
            for shape, build in SHAPES.items():
                for size in sizes:
                    cold, cached = [], []
                    for r in range(repeats):
                        graph = build(size, f"{shape}-{size}-{r}-")
                        cold.append(await run_once(session, base, ws, sid, graph, server_pid))
                        cached.append(await run_once(session, base, ws, sid, graph, server_pid))
                    for kind, runs in (("cold", cold), ("cached", cached)):
                        row = {
                            "shape": shape,
                            "nodes": size,
                            "kind": kind,
                            "bytes": runs[0]["bytes"],
                            "messages": runs[0]["messages"],
                        }
                        for key in ("seconds", "server_cpu", "client_cpu"):  # medians; CPU has 10 ms ticks
                            row[key] = statistics.median(run[key] for run in runs)
                        rows.append(row)
                    print(
                        f"{shape} {size}: cold {rows[-2]['seconds'] * 1000:.1f} ms, "
                        f"cached {rows[-1]['seconds'] * 1000:.1f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    return rows


def per_node_table(rows: list[dict]) -> str:
    """Marginal µs and bytes per node against the smallest graph of the same shape and kind."""
    lines = [
        "| graph | nodes | run | wall ms | wall µs/node | server CPU µs/node | client CPU µs/node "
        "| WS bytes/node | messages |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = {}
    for row in rows:
        first = base.setdefault((row["shape"], row["kind"]), row)
        extra = row["nodes"] - first["nodes"]

        def marginal(
            key: str, scale: float = 1e6, row: dict = row, first: dict = first, extra: int = extra
        ) -> str:
            return f"{(row[key] - first[key]) / extra * scale:.1f}" if extra else "-"

        lines.append(
            f"| {row['shape']} | {row['nodes']:,} | {row['kind']} | {row['seconds'] * 1000:.1f} | "
            f"{marginal('seconds')} | {marginal('server_cpu')} | {marginal('client_cpu')} | "
            f"{marginal('bytes', 1)} | {row['messages']:,} |"
        )
    return "\n".join(lines)


def main_per_node(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="fluxloom-bench-") as tmp:
        port = free_port()
        server = start_server(port, Path(tmp))
        base = f"http://127.0.0.1:{port}"
        try:

            async def run() -> list[dict]:
                async with aiohttp.ClientSession() as session:
                    await wait_ready(session, base, server)
                return await measure_per_node(base, server.pid, sizes, args.repeats)

            before = os.getloadavg()
            rows = asyncio.run(run())
            after = os.getloadavg()
        finally:
            server.terminate()
            server.wait(30)
    text = per_node_table(rows)
    load = f"{before[0]:.1f} / {after[0]:.1f} (1-minute, {os.cpu_count()} CPUs)"
    print(text)
    print(f"\nLoad average before/after: {load}")
    if args.record:
        header = (
            f"\n## Server cost per node over HTTP + WebSocket — {date.today().isoformat()} — 2-core CPU sandbox, "
            f"CPU only ({platform.machine()}, CPython {platform.python_version()})\n\n"
            f"`python benchmarks/server.py --per-node --record` (server: `python main.py serve` in its own "
            f"process; client: one aiohttp WebSocket in this process that parses every message until "
            f"`executing` null, then checks history; median of {args.repeats}; per node = marginal, against "
            f"the {sizes[0]}-node graph of the same shape and run; CPU from /proc, 10 ms ticks; the machine "
            f"is shared, load average before/after {load}, so wall time is an upper bound)\n\n"
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
    with tempfile.TemporaryDirectory(prefix="fluxloom-bench-") as tmp:
        port = free_port()
        server = start_server(port, Path(tmp))
        base = f"http://127.0.0.1:{port}"
        try:

            async def run() -> list[dict]:
                async with aiohttp.ClientSession() as session:
                    await wait_ready(session, base, server)
                return [
                    await measure(base, args.clients, args.prompts, 1000 * (n + 1))
                    for n in range(args.rounds)
                ]

            before = os.getloadavg()
            rounds = asyncio.run(run())
            after = os.getloadavg()
        finally:
            server.terminate()
            server.wait(30)
    load = f"{before[0]:.1f} / {after[0]:.1f} (1-minute, {os.cpu_count()} CPUs)"
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
