"""Workflow files: PNG text chunks (as SaveImage writes them) and `main.py run` on API JSON, UI JSON and PNGs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import main
from nodes.runtime.png_workflow import PngWorkflowError, read_png_workflow
from nodes.runtime.registry import build_registry

ROOT = Path(__file__).resolve().parent.parent

API = {
    "1": {"class_type": "PrimitiveString", "inputs": {"value": "flux"}, "_meta": {"title": "String"}},
    "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}, "_meta": {"title": "Preview Any"}},
}


def ui_workflow(string_type: str = "PrimitiveString") -> dict:
    return {
        "nodes": [
            {
                "id": 1,
                "type": string_type,
                "mode": 0,
                "widgets_values": ["flux"],
                "inputs": [],
                "outputs": [{"name": "STRING", "type": "STRING", "links": [1]}],
                "properties": {},
            },
            {
                "id": 2,
                "type": "PreviewAny",
                "mode": 0,
                "inputs": [{"name": "source", "type": "*", "link": 1}],
                "outputs": [],
                "properties": {},
            },
            {"id": 3, "type": "Note", "mode": 0, "widgets_values": ["not sent"], "inputs": [], "outputs": []},
        ],
        "links": [[1, 1, 0, 2, 0, "STRING"]],
        "version": 0.4,
    }


def write_png(path: Path, *, prompt=None, workflow=None, compressed: bool = False) -> Path:
    info = PngInfo()
    for key, value in (("prompt", prompt), ("workflow", workflow)):
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            if compressed:
                info.add_itxt(key, text, zip=True)
            else:
                info.add_text(key, text)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, pnginfo=info)
    return path


def test_png_chunks_are_read_and_the_api_prompt_is_preferred(tmp_path):
    both = read_png_workflow(write_png(tmp_path / "both.png", prompt=API, workflow=ui_workflow()))
    assert both.prompt == API and both.workflow == ui_workflow() and both.best() == API
    ui_only = read_png_workflow(write_png(tmp_path / "ui.png", workflow=ui_workflow(), compressed=True))
    assert ui_only.prompt is None and ui_only.best() == ui_workflow()
    broken = read_png_workflow(write_png(tmp_path / "broken.png", prompt="{not json", workflow=ui_workflow()))
    assert broken.prompt is None and broken.best() == ui_workflow()
    with pytest.raises(PngWorkflowError, match="no 'prompt' or 'workflow'"):
        read_png_workflow(write_png(tmp_path / "plain.png")).best()
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg")
    with pytest.raises(PngWorkflowError, match="JPEG"):
        read_png_workflow(tmp_path / "photo.jpg")


def test_load_workflow_reads_every_form(tmp_path):
    registry = build_registry()
    api_file = tmp_path / "api.json"
    api_file.write_text(json.dumps(API))
    ui_file = tmp_path / "ui.json"
    ui_file.write_text(json.dumps(ui_workflow()))
    assert main.load_workflow(api_file, registry) == API
    assert main.load_workflow(ui_file, registry) == API
    assert main.load_workflow(write_png(tmp_path / "ui.png", workflow=ui_workflow()), registry) == API
    # The API prompt wins even when the UI workflow beside it could not be converted.
    png = write_png(tmp_path / "both.png", prompt=API, workflow=ui_workflow("NoSuchNode"))
    assert main.load_workflow(png, registry) == API
    with pytest.raises(SystemExit, match="NoSuchNode"):
        main.load_workflow(write_png(tmp_path / "bad.png", workflow=ui_workflow("NoSuchNode")), registry)
    with pytest.raises(SystemExit, match="no 'prompt' or 'workflow'"):
        main.load_workflow(write_png(tmp_path / "plain.png"), registry)


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_main_run_runs_a_png_carrying_a_ui_workflow(tmp_path):
    png = write_png(tmp_path / "ui.png", workflow=ui_workflow())
    dirs = ("--output-dir", str(tmp_path / "out"), "--custom-nodes-dir", str(tmp_path / "packs"))
    out = run_main("run", str(png), *dirs)
    assert out.returncode == 0, out.stderr
