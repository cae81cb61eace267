"""`benchmarks/server.py --per-node`: graphs of N StringConcatenate nodes, timed through one WebSocket.

`measure_per_node` runs each shape cold and then fully cached; `per_node_table` turns the runs into
marginal µs and WebSocket bytes per node against the smallest graph.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp


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
