"""Image files in and out: safe paths, SaveImage/PreviewImage/LoadImage/LoadImageMask through the executor,
PNG metadata read back with Pillow, counters, escapes, fingerprints, and `main.py run` end to end."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from executor.errors import NodeExecutionError, PromptValidationError
from nodes.image.files import LoadImage, LoadImageMask
from nodes.image.tensors import encode_image
from nodes.runtime.file_paths import (
    UnsafePathError,
    list_input_images,
    resolve_annotated,
    safe_resolve,
    save_target,
    split_annotation,
)
from tests.test_image_nodes import Harness, make_harness

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = {"last_node_id": 3, "nodes": [{"id": 1, "type": "SaveImage"}], "extra": {"note": "é ✓"}}


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return make_harness(tmp_path)


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def random_pixels(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save_prompt(image_key: str, prefix: str = "ComfyUI") -> dict:
    return {
        "1": {"class_type": "TestGiven", "inputs": {"key": image_key}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def load_prompt(name: str, class_type: str = "LoadImage", **extra: str) -> dict:
    return {
        "1": {"class_type": class_type, "inputs": {"image": name, **extra}},
        "2": {"class_type": "TestCapture", "inputs": {"value": ["1", 0]}},
    }


# --- safe paths ----------------------------------------------------------------------------------


def test_safe_resolve_keeps_names_inside(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    assert safe_resolve(root, "a.png") == root.resolve() / "a.png"
    assert safe_resolve(root, "sub/a.png") == root.resolve() / "sub" / "a.png"
    assert safe_resolve(root, "sub/../a.png") == root.resolve() / "a.png"  # `..` that stays inside is fine
    for bad in (
        "../x.png",
        "sub/../../x.png",
        "/etc/passwd",
        str(tmp_path / "x.png"),
        "C:\\x.png",
        "\\\\server\\share\\x.png",
        "",
        "a\x00.png",
        "..\\x.png",
    ):
        with pytest.raises(UnsafePathError):
            safe_resolve(root, bad)


def test_safe_resolve_follows_symlinks(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "file_link.png").symlink_to(outside / "secret.png")
    (root / "inner").mkdir()
    (root / "inner_link").symlink_to(root / "inner", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="resolves outside its folder"):
        safe_resolve(root, "link/secret.png")
    with pytest.raises(UnsafePathError):
        safe_resolve(root, "file_link.png")
    assert safe_resolve(root, "inner_link/a.png") == (root / "inner" / "a.png").resolve()


def test_annotations_and_input_listing(tmp_path):
    settings = SimpleNamespace(
        input_dir=tmp_path / "in", output_dir=tmp_path / "out", temp_dir=tmp_path / "tmp"
    )
    assert split_annotation("x.png [output]") == ("x.png", "output")
    assert split_annotation("sub/x y.png [temp]") == ("sub/x y.png", "temp")
    assert split_annotation("x.png") == ("x.png", "input")
    assert resolve_annotated("x.png [output]", settings) == (tmp_path / "out" / "x.png").resolve()
    assert resolve_annotated("sub/x.png", settings) == (tmp_path / "in" / "sub" / "x.png").resolve()
    with pytest.raises(UnsafePathError):
        resolve_annotated("../out/x.png [input]", settings)
    assert list_input_images(settings.input_dir) == []  # missing folder
    for name in ("b.png", "a.JPG", "notes.txt", "c.webp"):
        write_png(settings.input_dir / name, random_pixels(2, 2)) if name != "notes.txt" else (
            settings.input_dir / name
        ).write_text("x")
    (settings.input_dir / "dir.png").mkdir()
    (settings.input_dir / "escape.png").symlink_to(tmp_path / "elsewhere.png")
    write_png(tmp_path / "elsewhere.png", random_pixels(2, 2))
    assert list_input_images(settings.input_dir) == ["a.JPG", "b.png", "c.webp"]


# --- SaveImage / LoadImage round trip ------------------------------------------------------------


def test_save_then_load_round_trip_with_metadata(harness):
    pixels = random_pixels(12, 17, seed=3)
    harness.values["img"] = torch.from_numpy(pixels.astype(np.float32) / 255.0)[None]
    prompt = save_prompt("img", "run/shot")
    result = harness.run(prompt, workflow=WORKFLOW)
    [entry] = result.outputs["2"]["images"]
    assert entry == {"filename": "shot_00001_.png", "subfolder": "run", "type": "output"}
    path = harness.app.settings.output_dir / "run" / "shot_00001_.png"
    with Image.open(path) as png:
        assert np.array_equal(np.asarray(png), pixels)
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == WORKFLOW
    loaded, mask = harness.node("LoadImage", {"image": "run/shot_00001_.png [output]"}, outputs=2)
    assert loaded.dtype == torch.float32 and loaded.shape == (1, 12, 17, 3)
    assert torch.equal(loaded, harness.values["img"])  # k / 255 both ways: exact
    assert mask.shape == (1, 64, 64) and not mask.any()


def test_counters_continue_and_never_overwrite(harness):
    output = harness.app.settings.output_dir
    (output / "ComfyUI_00007_.png").write_bytes(b"keep me")
    (output / "Other_00042_.png").write_bytes(b"unrelated prefix")
    harness.values["two"] = torch.rand(2, 4, 4, 3)
    result = harness.run(save_prompt("two"))
    assert [e["filename"] for e in result.outputs["2"]["images"]] == [
        "ComfyUI_00008_.png",
        "ComfyUI_00009_.png",
    ]
    assert (output / "ComfyUI_00007_.png").read_bytes() == b"keep me"
    harness.values["three"] = torch.rand(1, 4, 4, 3)  # a new value: the save node must run again
    result = harness.run(save_prompt("three"))
    assert result.outputs["2"]["images"][0]["filename"] == "ComfyUI_00010_.png"
    # %batch_num% names never match the scanned prefix, so the counter restarts at 1 and must skip taken names.
    for run in range(2):
        harness.values[f"b{run}"] = torch.full((1, 2, 2, 3), run / 2)
        harness.run(save_prompt(f"b{run}", "batch_%batch_num%"))
    assert sorted(p.name for p in output.glob("batch_*")) == ["batch_0_00001_.png", "batch_0_00002_.png"]
    with Image.open(output / "batch_0_00001_.png") as first:
        assert np.asarray(first).max() == 0  # the first file was not replaced by the second run


def test_save_target_variables(tmp_path):
    target = save_target(tmp_path, "%width%x%height%/img", width=64, height=32)
    assert target.subfolder == "64x32" and target.name == "img" and target.counter == 1
    assert target.folder == (tmp_path / "64x32").resolve()


@pytest.mark.parametrize(
    "prefix", ["../escaped", "/tmp/fluxloom-escape/x", "sub/../../escaped", "link/x", "sub/.."]
)
def test_save_prefix_escapes_are_rejected(harness, prefix):
    outside = harness.root / "outside"
    outside.mkdir(exist_ok=True)
    (harness.app.settings.output_dir / "link").symlink_to(outside, target_is_directory=True)
    harness.values["img"] = torch.rand(1, 2, 2, 3)
    with pytest.raises(NodeExecutionError) as info:
        harness.run(save_prompt("img", prefix))
    assert "filename_prefix" in str(info.value) and repr(prefix) in str(info.value)
    assert not list(outside.iterdir()) and not (harness.root / "escaped_00001_.png").exists()
    assert not Path("/tmp/fluxloom-escape").exists()


def test_preview_image_goes_to_temp(harness):
    harness.values["img"] = torch.rand(2, 3, 5, 3)
    prompt = {
        "1": {"class_type": "TestGiven", "inputs": {"key": "img"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    entries = harness.run(prompt, workflow=WORKFLOW).outputs["2"]["images"]
    assert [e["type"] for e in entries] == ["temp", "temp"] and {e["subfolder"] for e in entries} == {""}
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", entries[0]["filename"])
    assert entries[1]["filename"] == entries[0]["filename"].replace("00001", "00002")
    with Image.open(harness.app.settings.temp_dir / entries[0]["filename"]) as png:
        assert png.size == (5, 3) and json.loads(png.text["workflow"]) == WORKFLOW
    assert not list(harness.app.settings.output_dir.iterdir())


# --- LoadImage / LoadImageMask -------------------------------------------------------------------


def test_load_image_mask_from_alpha(harness):
    rgba = random_pixels(6, 5, channels=4, seed=4)
    write_png(harness.app.settings.input_dir / "alpha.png", rgba)
    image, mask = harness.node("LoadImage", {"image": "alpha.png"}, outputs=2)
    assert torch.equal(image[0], torch.from_numpy(rgba[..., :3].astype(np.float32) / 255))
    torch.testing.assert_close(
        mask[0], torch.from_numpy(1.0 - rgba[..., 3].astype(np.float32) / 255), atol=1e-6, rtol=0
    )
    for channel, index in (("alpha", 3), ("red", 0), ("green", 1), ("blue", 2)):
        got = harness.one("LoadImageMask", image="alpha.png", channel=channel)[0]
        expected = rgba[..., index].astype(np.float64) / 255
        expected = 1.0 - expected if channel == "alpha" else expected
        torch.testing.assert_close(got, torch.from_numpy(expected).float(), atol=1e-6, rtol=0)
    # Without alpha, LoadImageMask's alpha channel is fully opaque: mask 0.
    write_png(harness.app.settings.input_dir / "rgb.png", random_pixels(3, 3))
    assert not harness.one("LoadImageMask", image="rgb.png", channel="alpha").any()


def test_load_palette_transparency_exif_and_frames(harness):
    folder = harness.app.settings.input_dir
    palette = Image.new("P", (4, 3), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((1, 1), 1)
    palette.save(folder / "pal.png", transparency=1)
    _, mask = harness.node("LoadImage", {"image": "pal.png"}, outputs=2)
    assert mask.shape == (1, 3, 4) and mask[0, 1, 1] == 1.0 and mask.sum() == 1.0
    # EXIF orientation 6 (rotate 90 clockwise to display): a 6x4 file loads as 4x6.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(random_pixels(4, 6)).save(folder / "rot.jpg", exif=exif.tobytes())
    assert harness.one("LoadImage", image="rot.jpg").shape == (1, 6, 4, 3)
    # Multi-page TIFF: frames of the first frame's size are stacked, the odd-sized one is dropped.
    frames = [Image.fromarray(random_pixels(5, 7, seed=s)) for s in range(3)] + [Image.new("RGB", (3, 3))]
    frames[0].save(folder / "pages.tiff", save_all=True, append_images=frames[1:])
    image, mask = harness.node("LoadImage", {"image": "pages.tiff"}, outputs=2)
    assert image.shape == (3, 5, 7, 3) and mask.shape == (3, 64, 64)
    assert torch.equal(image[2], torch.from_numpy(np.asarray(frames[2], np.float32) / 255))


def test_load_image_missing_or_unsafe_names_fail_clearly(harness):
    secret = write_png(harness.root / "secret.png", random_pixels(2, 2))
    for name in ("../secret.png", str(secret), "x.png [output] [input]/../../../secret.png"):
        with pytest.raises(PromptValidationError) as info:
            harness.run(load_prompt(name))
        assert "Invalid image file" in json.dumps(info.value.node_errors)
    (harness.app.settings.input_dir / "link.png").symlink_to(secret)
    with pytest.raises((PromptValidationError, NodeExecutionError), match="outside its folder"):
        harness.run(load_prompt("link.png"))
    # A missing file: refused at validation when the engine passes services to hooks, else on run.
    with pytest.raises((PromptValidationError, NodeExecutionError)) as info:
        harness.run(load_prompt("missing.png"))
    assert "missing.png" in str(info.value) + json.dumps(getattr(info.value, "node_errors", {}))
    (harness.app.settings.input_dir / "broken.png").write_bytes(b"not a png")
    with pytest.raises(NodeExecutionError, match="not a readable image") as broken:
        harness.run(load_prompt("broken.png"))
    assert str(harness.app.settings.input_dir.resolve()) not in str(broken.value)  # no absolute paths


def test_hooks_hash_and_validate_with_services(harness):
    services = harness.app.services
    path = write_png(harness.app.settings.input_dir / "a.png", random_pixels(3, 3))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert LoadImage.fingerprint(image="a.png", services=services) == digest
    assert LoadImageMask.fingerprint(image="a.png", services=services) == digest
    write_png(path, random_pixels(3, 3, seed=9))
    assert LoadImage.fingerprint(image="a.png", services=services) != digest
    assert LoadImage.validate_inputs(image="a.png", services=services) is True
    message = LoadImage.validate_inputs(image="nope.png", services=services)
    assert isinstance(message, str) and message.startswith("Invalid image file: nope.png")
    assert "outside" in LoadImage.validate_inputs(image="../x.png [output]", services=services)


def test_changed_input_file_reruns_load_image(harness):
    path = write_png(harness.app.settings.input_dir / "a.png", random_pixels(4, 4, seed=1))
    first = harness.run(load_prompt("a.png")).outputs["2"]["value"][0]
    write_png(path, random_pixels(4, 4, seed=2))
    second = harness.run(load_prompt("a.png"))
    assert "1" in second.ran
    assert not torch.equal(second.outputs["2"]["value"][0], first)
    assert torch.equal(
        second.outputs["2"]["value"][0][0], torch.from_numpy(random_pixels(4, 4, seed=2) / 255).float()
    )


def test_unchanged_input_file_is_cached_and_a_changed_one_reruns(harness):
    write_png(harness.app.settings.input_dir / "a.png", random_pixels(4, 4))
    assert "1" in harness.run(load_prompt("a.png")).ran
    assert harness.run(load_prompt("a.png")).ran == []  # same file: everything served from the cache
    write_png(harness.app.settings.input_dir / "a.png", random_pixels(4, 4, seed=5))
    assert "1" in harness.run(load_prompt("a.png")).ran


# --- previews and the command line ---------------------------------------------------------------


def test_encode_image_formats_and_size():
    image = torch.rand(300, 700, 3)
    for fmt in ("JPEG", "PNG", "WEBP"):
        with Image.open(__import__("io").BytesIO(encode_image(image, fmt=fmt, max_size=256))) as decoded:
            assert decoded.format == fmt and max(decoded.size) == 256 and decoded.size[1] in (109, 110)
    with pytest.raises(ValueError, match="preview format"):
        encode_image(image, fmt="GIF")


def test_main_run_load_invert_save(tmp_path):
    folders = {
        name: tmp_path / name for name in ("input", "output", "temp", "user", "custom_nodes", "models")
    }
    for folder in folders.values():
        folder.mkdir()
    pixels = random_pixels(8, 6, seed=11)
    write_png(folders["input"] / "in.png", pixels)
    workflow = tmp_path / "wf.json"
    workflow.write_text(
        json.dumps(
            {
                "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
                "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                "3": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["2", 0], "filename_prefix": "cli/inv"},
                },
            }
        )
    )
    args = [sys.executable, str(ROOT / "main.py"), "run", str(workflow)]
    for name, folder in folders.items():
        args += [f"--{name.replace('_', '-')}-dir", str(folder)]
    out = subprocess.run(
        args,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    saved = [Path(line) for line in out.stdout.splitlines() if line.endswith(".png")]
    assert saved == [folders["output"] / "cli" / "inv_00001_.png"] and saved[0].is_file()
    with Image.open(saved[0]) as png:
        inverted = np.asarray(png).astype(int)
    # 1 - k/255 in float32 then truncated to 8 bits (as ComfyUI saves): 255 - k, or one less.
    difference = (255 - pixels.astype(int)) - inverted
    assert difference.min() >= 0 and difference.max() <= 1
