"""Seeded fuzzing of every route family: malformed requests get 4xx answers, never 5xx or a hang.

Each family gets a few hundred generated requests (bad JSON of every kind, mutated prompts, hostile
names in paths and queries, broken multipart uploads, bogus content encodings). Afterwards the
server must still run a good prompt. Loopback only, a fixed seed, a few seconds in all.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from tests.web_harness import chain_prompt, make_services, serve, until_done

pytestmark = pytest.mark.asyncio

SEED = 1313
PER_FAMILY = 250

JUNK_NAMES = [
    "",
    ".",
    "..",
    "../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/x",
    "%252e%252e%252fx",
    "/abs/path.png",
    "C:\\windows\\x.png",
    "a\\b.png",
    "nul%00.png",
    "%00",
    "%ED%A0%80.png",  # a UTF-8-encoded lone surrogate
    "%FF%FE.png",  # not UTF-8
    "a" * 255,
    "b" * 256,
    "c" * 300 + ".png",
    "d/" * 200 + "x.png",
    "e" * 5000,
    "名前.png",
    "x.png [temp]",
    "x.png [output]",
    "sub/dir/x.png",
    "x.png\n",
    "%0d%0aSet-Cookie:x=y",
    "con",
    "x.json",
]


def junk_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON-compatible value of a random, often hostile, shape."""
    pick = rng.randrange(14 if depth < 3 else 9)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**64), 10**60, 7])
    if pick == 3:
        return rng.choice([0.5, -1e300, 1e308, 5e-324, -0.0])
    if pick == 4:
        return rng.choice(JUNK_NAMES)
    if pick == 5:
        return "z" * rng.choice([0, 10, 70_000])
    if pick == 6:
        return rng.choice(["1", "nan", "inf", "-Infinity", "1e999", " 3 ", "0x10", "true"])
    if pick == 7:
        return [rng.choice(["missing", "1", 1, None]), rng.choice([0, -1, 99, "0", 1.5])]
    if pick == 8:
        return rng.choice([[], [1], [1, 2, 3], {}, {"__value__": [1, 2]}])
    if pick in (9, 10):
        return [junk_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(junk_value(rng, depth + 1))[:40]: junk_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def raw_json_bodies(rng: random.Random) -> Iterator[bytes]:
    """Bodies that are not acceptable JSON (or barely are), of every kind seen in the wild."""
    fixed = [
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
        b"[" * 101 + b"]" * 101,
        b'{"number": NaN, "prompt": {}}',
        b'{"number": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": 1e999}',
        b'{"number": ' + b"9" * 400 + b"}",
        b'{"a": ' + b"9" * 5000 + b"}",
        b'{"a": "\\ud800"}',
        b'{"\\udc00": 1}',
        b'{"prompt": {"1": {"class_type": "Show", "inputs": {"\\ud800": 1}}}}',
        b"\xff\xfe{}",
        b'{"a": "\xed\xa0\x80"}',
        b"{",
        b'{"a": }',
        b"null",
        b'"text"',
        b"[]",
        b"12",
        b"   ",
        b"",
        b"\x00" * 10,
    ]
    yield from fixed
    for _ in range(PER_FAMILY - len(fixed)):
        choice = rng.randrange(4)
        if choice == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        elif choice == 1:
            text = json.dumps(junk_value(rng))
            cut = rng.randrange(len(text) + 1)
            yield text[:cut].encode()
        else:
            yield json.dumps(junk_value(rng)).encode()


def mutated_prompts(rng: random.Random) -> Iterator[dict[str, Any]]:
    """Prompt bodies derived from a good one, each with a few hostile changes."""
    for _ in range(PER_FAMILY):
        prompt = chain_prompt(2, steps=2)
        for _ in range(rng.randrange(1, 4)):
            node_id = rng.choice(list(prompt))
            node = prompt[node_id]
            what = rng.randrange(9)
            if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
                continue  # already replaced by junk
            if what == 0:
                key = rng.choice(list(node["inputs"]) or ["x"])
                node["inputs"][key] = junk_value(rng)
            elif what == 1:
                node["inputs"][rng.choice(["extra", "\x00", "k" * 300, "é"])] = junk_value(rng)
            elif what == 2:
                node["inputs"]["ghost"] = [rng.choice(["404", "", "1" * 100]), rng.randrange(-2, 3)]
            elif what == 3:
                node["class_type"] = junk_value(rng)
            elif what == 4:
                node["inputs"] = junk_value(rng)
            elif what == 5:
                prompt[node_id] = junk_value(rng)
            elif what == 6:
                prompt[str(junk_value(rng))[:60]] = {"class_type": "Show", "inputs": {"value": [node_id, 0]}}
            elif what == 7:
                node["inputs"]["value" if "value" in node["inputs"] else "x"] = [node_id, 0]  # a self-cycle
            else:
                node["_meta"] = junk_value(rng)
        body: dict[str, Any] = {"prompt": prompt}
        for field in ("number", "front", "client_id", "prompt_id", "extra_data", "partial_execution_targets"):
            if rng.random() < 0.3:
                body[field] = junk_value(rng)
        yield body


JSON_ROUTES = [
    "/prompt",
    "/api/prompt",
    "/workflow/run",
    "/queue",
    "/interrupt",
    "/free",
    "/history",
    "/jobs/cancel",
    "/settings",
    "/settings/Comfy.Setting",
    "/users",
    "/internal/logs/subscribe",
]
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    None,
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "application/json; charset=latin-1",
    "garbage/x;;=",
]


def q(text: str) -> str:
    """Percent-encode a junk name for a URL, leaving its own percent escapes as they are."""
    return quote(text, safe="%/[]")


NUMBERS = ["-1", "0", "x", "1e3", "0x10", "9" * 30, "-" + "9" * 30, str(2**63 - 1), str(2**63), "9" * 5000]


REAL_BYTES: dict[str, bytes] = {}
REAL_IMAGES = ("rgba.png", "gray.png", "deep.png", "palette.png", "bits.png", "photo.jpg")


def write_real_images(folder: Path) -> None:
    """Small images of every mode Pillow may meet, for /view re-encoding and mask uploads."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (5, 4), (1, 2, 3, 4)).save(folder / "rgba.png")
    Image.new("L", (5, 4), 7).save(folder / "gray.png")
    Image.new("I;16", (5, 4), 300).save(folder / "deep.png")
    Image.new("P", (5, 4), 3).save(folder / "palette.png")
    Image.new("1", (5, 4), 1).save(folder / "bits.png")
    Image.new("RGB", (5, 4), (9, 9, 9)).save(folder / "photo.jpg")


def file_requests(rng: random.Random) -> Iterator[tuple[str, str, bytes | None]]:
    """(method, encoded URL, body) for the file and query routes."""
    for _ in range(PER_FAMILY):
        name = q(rng.choice(JUNK_NAMES))
        other = q(rng.choice(JUNK_NAMES))
        kind = rng.choice(["output", "input", "temp", "models", "", "../x", "a" * 300])
        yield rng.choice(
            [
                ("GET", f"/view?filename={name}&type={kind}&subfolder={other}", None),
                ("GET", f"/view?filename={name}&preview={rng.choice(['webp;x', 'jpeg;999', 'x;'])}", None),
                (
                    "GET",
                    f"/view?filename={rng.choice(REAL_IMAGES)}&type={rng.choice(['input', 'output'])}"
                    f"&preview={rng.choice(['webp;90', 'jpeg;0', 'png', 'jpeg;-5', 'gif', ''])}"
                    f"&channel={rng.choice(['rgb', 'a', 'rgba', '', 'x'])}",
                    None,
                ),
                ("GET", f"/api/view?filename={name}&channel={other}", None),
                ("GET", f"/view_metadata/{rng.choice(['loras', 'vae', name])}?filename={name}", None),
                ("GET", f"/userdata?dir={name}&recurse=true&full_info=true", None),
                ("GET", f"/v2/userdata?path={name}", None),
                ("GET", f"/userdata/{q(name)}", None),
                ("POST", f"/userdata/{q(name)}?overwrite={other}", b"{}"),
                ("DELETE", f"/userdata/{q(name)}", None),
                ("POST", f"/userdata/{q(name)}/move/{q(other)}", None),
                ("GET", f"/internal/files/{name}", None),
                ("GET", f"/object_info/{name}", None),
                ("GET", f"/models/{name}", None),
                ("GET", f"/experiment/models/{name}", None),
                ("GET", f"/extensions/{rng.choice(['fluxloom', name])}/{name}", None),
                ("GET", f"/jobs/{name}", None),
                ("POST", f"/jobs/{name}/cancel", None),
                ("GET", f"/history/{name}", None),
                ("GET", f"/settings/{name}", None),
                ("GET", f"/history?max_items={other}&offset={name}", None),
                ("GET", f"/history?max_items={rng.choice(NUMBERS)}&offset={rng.choice(NUMBERS)}", None),
                (
                    "GET",
                    f"/jobs?status={other}&limit={rng.choice(NUMBERS)}"
                    f"&offset={name}&sort_by={other}&sort_order={name}",
                    None,
                ),
                ("GET", f"/api/jobs?limit={rng.choice(NUMBERS)}&offset={rng.choice(NUMBERS)}", None),
                ("GET", "/" + name.lstrip("/"), None),
                ("GET", f"/assets/{name}", None),
            ]
        )


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode(
            "utf-8", "surrogateescape"
        )
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def upload_requests(rng: random.Random) -> Iterator[tuple[str, dict[str, str], bytes]]:
    """(path, headers, body) for /upload/image and /upload/mask, mostly broken."""
    png = bytes.fromhex("89504e470d0a1a0a")  # a PNG signature and nothing else
    for _ in range(PER_FAMILY):
        path = rng.choice(["/upload/image", "/api/upload/image", "/upload/mask"])
        filename = rng.choice([*JUNK_NAMES, "ok.png", "nul\x00.png", 'quote".png', None])
        parts = [("image", filename, rng.choice([png, b"", b"not an image", bytes(range(256))]))]
        if rng.random() < 0.5:
            parts.append(("type", None, rng.choice([b"input", b"temp", b"output", b"x", b"\xff"])))
        if rng.random() < 0.5:
            parts.append(("subfolder", None, rng.choice(JUNK_NAMES).encode("utf-8", "surrogatepass")))
        if rng.random() < 0.5:
            parts.append(("overwrite", None, b"true"))
        if path == "/upload/mask":
            ref = rng.choice([junk_value(rng), {"filename": rng.choice(REAL_IMAGES), "type": "input"}])
            parts.append(("original_ref", None, json.dumps(ref).encode()))
            if rng.random() < 0.5:
                parts[0] = ("image", "mask.png", REAL_BYTES.get(rng.choice(REAL_IMAGES), b""))
        body = multipart(parts)
        headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
        damage = rng.randrange(7)
        if damage == 0:
            body = body[: rng.randrange(len(body))]  # truncated anywhere, headers included
        elif damage == 1:
            headers["Content-Type"] = rng.choice(
                ["multipart/form-data", "multipart/form-data; boundary=", "x"]
            )
        elif damage == 2:
            body = body.replace(b"\r\n\r\n", b"\r\n", 1)  # a part whose headers never end
        elif damage == 3:
            body = body.replace(b"Content-Disposition", b"Content-Dispo\x00sition", 1)
        elif damage == 4:
            headers["Content-Encoding"] = rng.choice(["gzip", "deflate", "br", "zstd", "bogus"])
        yield path, headers, body


async def _check(client: Any, failures: list[str], method: str, url: str | URL, **kw: Any) -> None:
    try:
        response = await asyncio.wait_for(client.request(method, url, **kw), 10)
        await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        sent = f"{kw.get('headers')} {str(kw.get('data'))[:80]}"
        failures.append(f"{method} {str(url)[:120]} -> no answer: {type(exc).__name__} ({sent})")
        return
    if response.status >= 500:
        failures.append(f"{method} {str(url)[:120]} -> {response.status}: {(await response.text())[:200]}")


async def test_malformed_requests_never_get_5xx_and_a_good_prompt_still_runs(tmp_path):
    rng = random.Random(SEED)
    services = make_services(tmp_path, max_upload_size_mb=1)
    for folder in ("input", "output"):
        write_real_images(tmp_path / folder)
    REAL_BYTES.update({name: (tmp_path / "input" / name).read_bytes() for name in REAL_IMAGES})
    failures: list[str] = []
    sent = 0
    async with serve(services) as client:
        for raw in raw_json_bodies(rng):
            route = rng.choice(JSON_ROUTES)
            headers = {}
            content_type = rng.choice(CONTENT_TYPES)
            if content_type:
                headers["Content-Type"] = content_type
            if rng.random() < 0.1:
                headers["Content-Encoding"] = rng.choice(["gzip", "deflate", "br", "bogus"])
            method = "PATCH" if route == "/internal/logs/subscribe" else "POST"
            await _check(client, failures, method, route, data=raw, headers=headers)
            sent += 1
        for body in mutated_prompts(rng):
            route = rng.choice(["/prompt", "/api/prompt"])
            await _check(
                client, failures, "POST", route, data=json.dumps(body), headers={"Content-Type": "text/plain"}
            )
            sent += 1
        for method, url, data in file_requests(rng):
            await _check(client, failures, method, URL(url, encoded=True), data=data)
            sent += 1
        for path, headers, body in upload_requests(rng):
            await _check(client, failures, "POST", path, data=body, headers=headers)
            sent += 1
        assert not failures, f"{len(failures)} of {sent} requests got 5xx:\n" + "\n".join(failures[:20])
        assert sent >= 4 * PER_FAMILY

        # the server still works: a good prompt runs to the end, and every listing still parses as JSON
        ws = await client.ws_connect("/ws?clientId=fuzz")
        await ws.receive_json(timeout=5)
        response = await client.post("/prompt", json={"prompt": chain_prompt(4), "client_id": "fuzz"})
        assert response.status == 200, await response.text()
        prompt_id = (await response.json())["prompt_id"]
        await until_done(ws, prompt_id)
        await ws.close()
        history = json.loads(await (await client.get(f"/history/{prompt_id}")).text())
        assert history[prompt_id]["status"]["status_str"] == "success"
        for listing in ("/history", "/queue", "/api/jobs", "/settings"):
            response = await client.get(listing)
            assert response.status == 200
            json.loads(await response.text(), parse_constant=_no_constants)


def _no_constants(name: str) -> Callable[[], None]:
    raise AssertionError(f"the server answered the non-JSON constant {name}")
