"""/view, /upload/image, /upload/mask and /userdata: behaviour, and never leaving their folder."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import FormData
from PIL import Image
from yarl import URL

from tests.web_harness import make_services, serve

pytestmark = pytest.mark.asyncio


class Server:
    def __init__(self, client, services, root: Path) -> None:
        self.client = client
        self.services = services
        self.root = root


@pytest_asyncio.fixture
async def server(tmp_path):
    services = make_services(tmp_path, max_upload_size_mb=0.05)
    async with serve(services, start_worker=False) as client:
        yield Server(client, services, tmp_path)


def png(size=(6, 4), color=(10, 200, 30, 255), mode="RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color if mode == "RGBA" else color[:3]).save(buffer, format="PNG")
    return buffer.getvalue()


# --- /view --------------------------------------------------------------------------------------
async def test_view_serves_each_folder_and_subfolder(server):
    (server.root / "output" / "sub").mkdir()
    (server.root / "output" / "sub" / "a.png").write_bytes(png())
    (server.root / "input" / "b.png").write_bytes(png(color=(1, 2, 3, 255)))
    (server.root / "temp" / "c.png").write_bytes(png(color=(4, 5, 6, 255)))
    client = server.client
    response = await client.get("/view", params={"filename": "a.png", "subfolder": "sub"})
    assert response.status == 200 and await response.read() == png()
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert await (await client.get("/api/view", params={"filename": "b.png", "type": "input"})).read() == png(
        color=(1, 2, 3, 255)
    )
    annotated = await client.get("/view", params={"filename": "c.png [temp]", "type": "output"})
    assert await annotated.read() == png(color=(4, 5, 6, 255))


async def test_view_reencodes_preview_and_channels(server):
    (server.root / "output" / "a.png").write_bytes(png(color=(10, 200, 30, 128)))
    client = server.client
    webp = await client.get("/view", params={"filename": "a.png", "preview": "webp;80"})
    assert webp.headers["Content-Type"] == "image/webp"
    assert Image.open(io.BytesIO(await webp.read())).format == "WEBP"
    jpeg = await client.get("/view", params={"filename": "a.png", "preview": "jpeg;70"})
    assert Image.open(io.BytesIO(await jpeg.read())).mode == "RGB"
    alpha = Image.open(
        io.BytesIO(await (await client.get("/view", params={"filename": "a.png", "channel": "a"})).read())
    )
    assert alpha.getpixel((0, 0)) == (0, 0, 0, 128)
    rgb = Image.open(
        io.BytesIO(await (await client.get("/view", params={"filename": "a.png", "channel": "rgb"})).read())
    )
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (10, 200, 30)


async def test_view_sends_active_content_as_attachment(server):
    (server.root / "output" / "x.html").write_text("<script>alert(1)</script>")
    (server.root / "output" / "y.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    html = await server.client.get("/view", params={"filename": "x.html"})
    assert html.headers["Content-Disposition"].startswith("attachment")
    svg_as_image = await server.client.get(
        "/view", params={"filename": "y.svg"}, headers={"Sec-Fetch-Dest": "image"}
    )
    assert svg_as_image.headers["Content-Disposition"].startswith("inline")
    svg_page = await server.client.get("/view", params={"filename": "y.svg"})
    assert svg_page.headers["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize(
    "params,status",
    [
        ({}, 400),
        ({"filename": "missing.png"}, 404),
        ({"filename": "a.png", "type": "models"}, 400),
        ({"filename": "../secret.txt"}, 400),
        ({"filename": "..%2fsecret.txt"}, 400),
        ({"filename": "%252e%252e%252fsecret.txt"}, 400),
        ({"filename": "secret.txt", "subfolder": ".."}, 400),
        ({"filename": "secret.txt", "subfolder": "sub/../.."}, 400),
        ({"filename": "secret.txt", "subfolder": "%2e%2e"}, 400),
        ({"filename": "/etc/passwd"}, 400),
        ({"filename": "passwd", "subfolder": "/etc"}, 400),
        ({"filename": "..\\secret.txt"}, 400),
        ({"filename": "a.png\x00.txt"}, 400),
        ({"filename": "C:secret.txt"}, 400),
        ({"filename": "sub/a.png"}, 400),
        ({"filename": "a.png", "channel": "x"}, 400),
    ],
)
async def test_view_refuses_escapes_and_bad_input(server, params, status):
    (server.root / "secret.txt").write_text("top secret")
    (server.root / "output" / "a.png").write_bytes(png())
    response = await server.client.get("/view", params=params)
    assert response.status == status
    assert "top secret" not in await response.text()


async def test_view_refuses_symlinks_out_of_the_folder(server):
    (server.root / "secret.txt").write_text("top secret")
    os.symlink(server.root / "secret.txt", server.root / "output" / "link.txt")
    os.symlink(server.root, server.root / "output" / "up")
    assert (await server.client.get("/view", params={"filename": "link.txt"})).status == 403
    assert (
        await server.client.get("/view", params={"filename": "secret.txt", "subfolder": "up"})
    ).status == 403


# --- uploads ------------------------------------------------------------------------------------
def form(data: bytes, name: str, **fields: str) -> FormData:
    payload = FormData()
    payload.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        payload.add_field(key, value)
    return payload


async def test_upload_naming_reuse_dedupe_overwrite_subfolder_type(server):
    client = server.client
    first = await client.post("/upload/image", data=form(png(), "pic.png"))
    assert await first.json() == {"name": "pic.png", "subfolder": "", "type": "input"}
    assert (server.root / "input" / "pic.png").read_bytes() == png()
    same = await (await client.post("/api/upload/image", data=form(png(), "pic.png"))).json()
    assert same["name"] == "pic.png"  # same content: the existing file is reused
    other = await (await client.post("/upload/image", data=form(png(color=(0, 0, 0, 255)), "pic.png"))).json()
    assert other["name"] == "pic (1).png"
    third = await (await client.post("/upload/image", data=form(png(color=(9, 9, 9, 255)), "pic.png"))).json()
    assert third["name"] == "pic (2).png"
    replaced = await client.post(
        "/upload/image", data=form(png(color=(7, 7, 7, 255)), "pic.png", overwrite="true")
    )
    assert (await replaced.json())["name"] == "pic.png"
    assert (server.root / "input" / "pic.png").read_bytes() == png(color=(7, 7, 7, 255))
    nested = await client.post("/upload/image", data=form(png(), "n.png", subfolder="a/b", type="temp"))
    assert await nested.json() == {"name": "n.png", "subfolder": "a/b", "type": "temp"}
    assert (server.root / "temp" / "a" / "b" / "n.png").is_file()


async def test_upload_sanitizes_names_and_refuses_escapes(server):
    client = server.client
    sneaky = await (await client.post("/upload/image", data=form(png(), "../../evil.png"))).json()
    assert sneaky["name"] == "evil.png" and (server.root / "input" / "evil.png").is_file()
    windows = await (await client.post("/upload/image", data=form(png(), "..\\..\\win.png"))).json()
    assert windows["name"] == "win.png"
    for bad in ({"subfolder": "../x"}, {"subfolder": "/abs"}, {"subfolder": "%2e%2e"}, {"type": "models"}):
        response = await client.post("/upload/image", data=form(png(), "ok.png", **bad))
        assert response.status == 400, bad
    assert (await client.post("/upload/image", data=form(png(), ".."))).status == 400
    assert not (server.root / "x").exists() and not (server.root / "ok.png").exists()


async def test_upload_errors_and_size_limit(server):
    client = server.client
    answer = await client.post("/upload/image", json={"image": "x"})
    assert answer.status == 400 and "multipart" in (await answer.json())["error"]
    fields = FormData()
    fields.add_field("other", "x")
    assert (await client.post("/upload/image", data=fields)).status == 400
    huge = os.urandom(80 * 1024)  # the fixture allows 0.05 MB
    response = await client.post("/upload/image", data=form(huge, "big.png"))
    assert response.status == 413
    assert not (server.root / "input" / "big.png").exists()


async def test_upload_mask_puts_mask_alpha_on_the_original(server):
    (server.root / "input" / "orig.png").write_bytes(png(size=(4, 2), color=(50, 60, 70, 255)))
    mask = Image.new("RGBA", (8, 4), (0, 0, 0, 255))
    for x in range(4):
        for y in range(4):
            mask.putpixel((x, y), (0, 0, 0, 0))  # left half transparent
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    data = form(
        buffer.getvalue(), "masked.png", original_ref=json.dumps({"filename": "orig.png", "type": "input"})
    )
    answer = await server.client.post("/upload/mask", data=data)
    assert await answer.json() == {"name": "masked.png", "subfolder": "", "type": "input"}
    result = Image.open(server.root / "input" / "masked.png")
    assert result.size == (4, 2) and result.mode == "RGBA"
    assert result.getpixel((0, 0)) == (50, 60, 70, 0) and result.getpixel((3, 1)) == (50, 60, 70, 255)


@pytest.mark.parametrize(
    "ref,status",
    [
        (None, 400),
        ("{bad", 400),
        ('{"filename": "nope.png"}', 404),
        ('{"filename": "../x.png"}', 400),
        ('{"filename": "a", "type": "z"}', 400),
    ],
)
async def test_upload_mask_errors(server, ref, status):
    fields = {} if ref is None else {"original_ref": ref}
    assert (await server.client.post("/upload/mask", data=form(png(), "m.png", **fields))).status == status


# --- /userdata ----------------------------------------------------------------------------------
async def test_userdata_save_list_get_move_delete(server):
    client = server.client
    saved = await client.post("/api/userdata/workflows%2Fa.json?overwrite=false", data=b'{"nodes": []}')
    assert saved.status == 200 and await saved.json() == "workflows/a.json"
    info = await (
        await client.post("/api/userdata/workflows%2Fsub%2Fb.json?full_info=true", data=b"{}")
    ).json()
    assert info["path"] == "workflows/sub/b.json" and info["size"] == 2 and info["modified"] > 1e12
    conflict = await client.post("/api/userdata/workflows%2Fa.json?overwrite=false", data=b"{}")
    assert conflict.status == 409
    flat = await (await client.get("/api/userdata?dir=workflows")).json()
    assert flat == ["a.json"]
    deep = await (
        await client.get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")
    ).json()
    assert sorted(e["path"] for e in deep) == ["a.json", "sub/b.json"]
    split = await (await client.get("/userdata?dir=workflows&recurse=true&split=true")).json()
    assert ["sub/b.json", "sub", "b.json"] in split
    got = await client.get("/api/userdata/workflows%2Fa.json")
    assert await got.read() == b'{"nodes": []}' and got.headers["Content-Disposition"].startswith(
        "attachment"
    )
    moved = await client.post("/api/userdata/workflows%2Fa.json/move/workflows%2Fc.json")
    assert await moved.json() == "workflows/c.json"
    assert (await client.get("/api/userdata/workflows%2Fa.json")).status == 404
    await client.post("/api/userdata/workflows%2Fd.json", data=b"{}")
    clash = await client.post("/api/userdata/workflows%2Fc.json/move/workflows%2Fd.json")
    assert clash.status == 409
    forced = await client.post("/api/userdata/workflows%2Fc.json/move/workflows%2Fd.json?overwrite=true")
    assert forced.status == 200
    assert (await client.delete("/api/userdata/workflows%2Fd.json")).status == 204
    assert (await client.delete("/api/userdata/workflows%2Fd.json")).status == 404
    v2 = await (await client.get("/api/v2/userdata?path=workflows")).json()
    assert {(e["name"], e["type"]) for e in v2} == {("sub", "directory")}


async def test_userdata_listing_errors_and_user_css(server):
    client = server.client
    assert (await client.get("/api/userdata")).status == 400
    assert (await client.get("/api/userdata?dir=workflows")).status == 404
    await client.post("/api/userdata/user.css", data=b"body{}")
    css = await client.get("/api/userdata/user.css")
    assert css.headers["Content-Type"].startswith("text/css") and await css.read() == b"body{}"
    assert (await client.get("/api/userdata/missing.json")).status == 404


@pytest.mark.parametrize(
    "name",
    [
        "..%2Fsecret.txt",
        "%2E%2E%2Fsecret.txt",
        "%252e%252e%252fsecret.txt",
        "%2Fetc%2Fpasswd",
        "a%5C..%5C..%5Csecret.txt",
        "x%00.json",
        "workflows%2F..%2F..%2Fsecret.txt",
    ],
)
async def test_userdata_never_leaves_the_user_folder(server, name):
    (server.root / "secret.txt").write_text("top secret")
    client = server.client
    # encoded=True: the URL reaches the server exactly as written, not normalised by the client
    for method, url in (
        ("GET", f"/api/userdata/{name}"),
        ("POST", f"/api/userdata/{name}"),
        ("DELETE", f"/api/userdata/{name}"),
        ("POST", f"/api/userdata/ok.json/move/{name}"),
        ("GET", f"/api/userdata?dir={name}"),
    ):
        response = await client.request(method, URL(url, encoded=True), data=b"pwned")
        assert response.status == 400, (method, url, response.status)
        assert "top secret" not in await response.text()
    assert (server.root / "secret.txt").read_text() == "top secret"


async def test_userdata_symlink_out_is_refused(server):
    (server.root / "secret.txt").write_text("top secret")
    user = server.root / "user" / "default"
    user.mkdir(parents=True, exist_ok=True)
    os.symlink(server.root / "secret.txt", user / "leak.json")
    response = await server.client.get("/api/userdata/leak.json")
    assert response.status == 403
    listing = await (await server.client.get("/api/userdata?dir=.")).json()
    assert "leak.json" not in listing


async def test_missing_user_files_are_plain_text_404s(server):
    """Never JSON: a new user's missing user.css must still be usable as a stylesheet answer."""
    css = await server.client.get("/api/userdata/user.css")
    assert css.status == 404 and css.headers["Content-Type"].startswith("text/css")
    assert "not found" in await css.text()
    other = await server.client.get("/api/userdata/comfy.templates.json")
    assert other.status == 404 and other.headers["Content-Type"].startswith("text/plain")
    assert await other.text() == "user file 'comfy.templates.json' not found"
