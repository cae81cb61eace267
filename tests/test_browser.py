"""End to end in a real browser: `python main.py serve`, the official frontend, our default graph, a run.

Headless Debian chromium driven by playwright (never a downloaded browser). The server runs in a
subprocess with temporary folders; every request to another host is aborted, so the test is offline.
Skipped, with the reason, when chromium, playwright or the frontend package is missing.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tests.live_server import live_server

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
INPUT_RGB = (200, 30, 10)

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("comfyui_frontend_package", reason="comfyui-frontend-package is not installed")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

# The only console errors allowed: requests to other hosts failing name resolution (the test machine is
# offline; the page's requests to other hosts are aborted as unresolvable), and the 404s ComfyUI gives
# a fresh user too (comfy-protocol.md 10.3: no saved workflows, blueprints, legacy node templates or
# custom CSS). Anything else, e.g. a stylesheet refused for its MIME type, fails the test.
TOLERATED_404_PATHS = ("/api/userdata", "/api/userdata/comfy.templates.json", "/api/userdata/user.css")
NOT_FOUND = "Failed to load resource: the server responded with a status of 404"
OFFLINE = "net::ERR_NAME_NOT_RESOLVED"


def console_problem(text: str, where: str, origin: str) -> str | None:
    """Why a console error counts against us, or None when it is one of the tolerated ones."""
    url = urlsplit(where)
    if OFFLINE in text and url.netloc not in ("", origin):
        return None
    if text.startswith(NOT_FOUND) and url.netloc == origin and url.path in TOLERATED_404_PATHS:
        return None
    return f"console error: {text} ({where})"


def image_invert_workflow(filename: str) -> dict:
    """LoadImage -> ImageInvert -> SaveImage, as the canvas saves it (schema 0.4)."""

    def node(node_id, type_, x, inputs, outputs, widgets=None):
        return {
            "id": node_id,
            "type": type_,
            "pos": [x, 80],
            "size": [320 if widgets else 240, 320],
            "flags": {},
            "order": node_id - 1,
            "mode": 0,
            "inputs": inputs,
            "outputs": outputs,
            "properties": {},
            **({"widgets_values": widgets} if widgets is not None else {}),
        }

    return {
        "last_node_id": 3,
        "last_link_id": 2,
        "version": 0.4,
        "groups": [],
        "config": {},
        "extra": {},
        "nodes": [
            node(
                1,
                "LoadImage",
                40,
                [],
                [
                    {"name": "IMAGE", "type": "IMAGE", "links": [1]},
                    {"name": "MASK", "type": "MASK", "links": []},
                ],
                [filename, "image"],
            ),
            node(
                2,
                "ImageInvert",
                400,
                [{"name": "image", "type": "IMAGE", "link": 1}],
                [{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
            ),
            node(3, "SaveImage", 760, [{"name": "images", "type": "IMAGE", "link": 2}], [], ["browser_test"]),
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    }


@pytest.fixture
def server(tmp_path):
    dirs = {name: tmp_path / name for name in ("models", "input", "output", "temp", "user", "custom_nodes")}
    flags: list[str] = []
    for name, path in dirs.items():
        path.mkdir()
        flags += [f"--{name.replace('_', '-')}-dir", str(path)]
    with live_server(flags, tmp_path / "server.log", startup_s=60) as url:
        yield url, dirs


def test_canvas_shows_flux_graph_and_runs_a_workflow(server, tmp_path):
    url, dirs = server
    origin = urlsplit(url).netloc
    default_types = [
        n["type"] for n in json.loads((ROOT / "workflows/default_flux.json").read_text())["nodes"]
    ]
    problems: list[str] = []

    def on_console(message) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "") if message.location else ""
        problem = console_problem(message.text, where, origin)
        if problem:
            problems.append(problem)

    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.route(
                "**/*",
                lambda route: (
                    route.continue_()
                    if urlsplit(route.request.url).netloc == origin
                    else route.abort("namenotresolved")
                ),
            )
            page.on("console", on_console)
            # Uploaded before the page loads, so the canvas's list of input files already has it.
            buffer = io.BytesIO()
            Image.new("RGB", (64, 48), INPUT_RGB).save(buffer, "PNG")
            upload = page.request.post(
                url + "api/upload/image",
                multipart={
                    "image": {"name": "browser_in.png", "mimeType": "image/png", "buffer": buffer.getvalue()}
                },
            )
            assert upload.ok, upload.text()
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.goto(url)
            # A first-time user gets our FLUX text-to-image graph, not the package's default.
            page.wait_for_function("window.app?.graph?._nodes?.length > 0", timeout=40_000)
            assert sorted(page.evaluate("window.app.graph._nodes.map(n => n.type)")) == sorted(default_types)
            page.screenshot(path=str(tmp_path / "first_run.png"))
            # Our sidebar tab lists the node packs that loaded and failed.
            # (this frontend's sidebar shows few buttons; open the tab through its workspace store)
            page.evaluate("window.app.extensionManager.sidebarTab.toggleSidebarTab('fluxloom-node-packs')")
            summary = page.locator('[data-fluxloom-packs="summary"]')
            summary.wait_for(timeout=10_000)
            assert re.fullmatch(r"\d+ loaded, \d+ failed", summary.inner_text()), summary.inner_text()

            page.evaluate(
                "workflow => window.app.loadGraphData(workflow)", image_invert_workflow(upload.json()["name"])
            )
            page.wait_for_function("window.app.graph.getNodeById(3)?.type === 'SaveImage'")

            page.get_by_role("button", name="Run", exact=True).click()
            page.wait_for_function(
                "(() => { const img = window.app.graph.getNodeById(3)?.imgs?.[0];"
                " return !!img && img.complete && img.naturalWidth === 64 })()",
                timeout=30_000,
            )
            shown = page.evaluate("window.app.graph.getNodeById(3).imgs[0].src")
            page.screenshot(path=str(tmp_path / "after_run.png"))
        finally:
            browser.close()

    assert "filename=browser_test_00001_.png" in shown and "type=output" in shown
    saved = dirs["output"] / "browser_test_00001_.png"
    with Image.open(saved) as image:
        assert image.size == (64, 48)
        pixel = image.convert("RGB").getpixel((10, 10))
    # 8-bit -> float32 -> 8-bit: SaveImage truncates like ComfyUI, so allow one level.
    assert all(abs(got - (255 - want)) <= 1 for got, want in zip(pixel, INPUT_RGB)), pixel
    with urllib.request.urlopen(url + "api/settings") as response:
        assert json.load(response).get("Comfy.TutorialCompleted") is True  # the first run is over
    assert (tmp_path / "after_run.png").stat().st_size > 10_000
    assert not problems, "\n".join(problems)
    shutil.copy(tmp_path / "after_run.png", tmp_path / "screenshot.png")


def test_console_filter_tolerates_only_offline_and_comfyui_404s():
    origin = "127.0.0.1:8188"
    here = f"http://{origin}"
    assert console_problem(f"{NOT_FOUND} (Not Found)", f"{here}/api/userdata/user.css", origin) is None
    assert console_problem(f"{NOT_FOUND} (Not Found)", f"{here}/api/view?filename=x", origin)
    assert (
        console_problem(f"Failed to load resource: {OFFLINE}", "https://fonts.example.com/a.css", origin)
        is None
    )
    assert console_problem(f"Failed to load resource: {OFFLINE}", f"{here}/api/x", origin)
    refused = "Refused to apply style from 'api/userdata/user.css' because its MIME type ('application/json')"
    assert console_problem(refused, f"{here}/", origin)
