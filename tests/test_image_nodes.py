"""Image and mask nodes without models, run through the real app's executor and checked against
independent computations (torch.nn.functional, Pillow, float64 loops, kornia as the Canny oracle).

Tensors enter through a test-only `TestGiven` node and leave through a `TestCapture` output node,
both registered into the app built by `main.build_app`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from executor.errors import NodeExecutionError
from executor.events import ListSink
from executor.object_info import object_info
from executor.prompt_run import RunResult
from executor.schema import ANY, Node, NodeOutput, Schema, String, Typed
from main import App, build_app
from settings import Settings

ATOL = 1e-6  # float32 arithmetic on values in 0..1


@dataclass
class Harness:
    """The real app over temporary folders, plus a way to feed tensors in and read outputs back."""

    app: App
    root: Path
    values: dict[str, Any] = field(default_factory=dict)

    def run(self, prompt: dict[str, Any], *, workflow: Any = None, prompt_id: str = "p") -> RunResult:
        extra = {"extra_pnginfo": {"workflow": workflow}} if workflow is not None else {}
        return self.app.executor.run_prompt(prompt, prompt_id=prompt_id, sink=ListSink(), extra_data=extra)

    def node(self, class_type: str, inputs: dict[str, Any], outputs: int = 1) -> list[Any]:
        """Run one node; tensor (non-JSON) inputs go through TestGiven; returns every output value."""
        prompt: dict[str, Any] = {}
        literal = {}
        for name, value in inputs.items():
            if isinstance(value, (torch.Tensor, list, dict)):
                key = f"{class_type}.{name}.{len(self.values)}"
                self.values[key] = value
                prompt[f"given_{name}"] = {"class_type": "TestGiven", "inputs": {"key": key}}
                literal[name] = [f"given_{name}", 0]
            else:
                literal[name] = value
        prompt["node"] = {"class_type": class_type, "inputs": literal}
        for slot in range(outputs):
            prompt[f"out{slot}"] = {"class_type": "TestCapture", "inputs": {"value": ["node", slot]}}
        result = self.run(prompt)
        return [result.outputs[f"out{slot}"]["value"][0] for slot in range(outputs)]

    def one(self, class_type: str, **inputs: Any) -> Any:
        return self.node(class_type, inputs)[0]


def make_harness(root: Path) -> Harness:
    settings = Settings(
        base_dir=root,
        models_dir=root / "models",
        input_dir=root / "input",
        output_dir=root / "output",
        temp_dir=root / "temp",
        user_dir=root / "user",
        custom_nodes_dir=root / "custom_nodes",
    )
    for folder in (settings.input_dir, settings.output_dir, settings.temp_dir):
        folder.mkdir(parents=True, exist_ok=True)
    app = build_app(settings, load_packs=False)
    harness = Harness(app, root)
    values = harness.values

    class TestGiven(Node):
        schema = Schema("TestGiven", inputs=(String("key"),), outputs=(ANY,))

        @classmethod
        def execute(cls, key: str) -> tuple[Any]:
            return (values[key],)

    class TestCapture(Node):
        schema = Schema("TestCapture", inputs=(Typed("value", ANY),), outputs=(), is_output_node=True)

        @classmethod
        def execute(cls, value: Any) -> NodeOutput:
            return NodeOutput.of(ui={"value": [value]})

    app.registry.register(TestGiven)
    app.registry.register(TestCapture)
    return harness


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return make_harness(tmp_path)


def rand_image(batch: int, height: int, width: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, height, width, channels, generator=torch.Generator().manual_seed(seed))


def smooth_image(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Blobs with real edges (noise upsampled), for Canny."""
    coarse = torch.rand(batch, 3, height // 5, width // 5, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(height, width), mode="bilinear").movedim(1, -1)


def interpolate(image: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    return F.interpolate(image.movedim(-1, 1), size=(height, width), mode=mode).movedim(1, -1)


# --- scaling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic"])
def test_image_scale_torch_modes_match_interpolate(harness, method):
    image = rand_image(2, 12, 20)
    out = harness.one("ImageScale", image=image, upscale_method=method, width=33, height=17, crop="disabled")
    assert out.shape == (2, 17, 33, 3)
    torch.testing.assert_close(out, interpolate(image, 17, 33, method), atol=ATOL, rtol=0)


def test_image_scale_lanczos_matches_pillow_on_8bit(harness):
    pixels = np.random.default_rng(1).integers(0, 256, (9, 14, 3), dtype=np.uint8)
    image = torch.from_numpy(pixels.astype(np.float32) / 255.0)[None]
    out = harness.one(
        "ImageScale", image=image, upscale_method="lanczos", width=31, height=20, crop="disabled"
    )
    expected = (
        np.asarray(Image.fromarray(pixels).resize((31, 20), Image.Resampling.LANCZOS), np.float32) / 255
    )
    torch.testing.assert_close(out[0], torch.from_numpy(expected), atol=ATOL, rtol=0)


def test_image_scale_center_crop_and_zero_sides(harness):
    image = rand_image(1, 8, 16)
    # Same height, square target: center crop keeps columns 4..11, nearest-exact at 1:1 is the identity.
    out = harness.one(
        "ImageScale", image=image, upscale_method="nearest-exact", width=8, height=8, crop="center"
    )
    torch.testing.assert_close(out, image[:, :, 4:12], atol=0, rtol=0)
    keep_aspect = harness.one(
        "ImageScale", image=image, upscale_method="bilinear", width=0, height=4, crop="disabled"
    )
    assert keep_aspect.shape == (1, 4, 8, 3)
    same = harness.one(
        "ImageScale", image=image, upscale_method="bilinear", width=0, height=0, crop="disabled"
    )
    torch.testing.assert_close(same, image, atol=0, rtol=0)


def test_image_scale_by_rounds_sizes(harness):
    image = rand_image(1, 10, 15)
    out = harness.one("ImageScaleBy", image=image, upscale_method="bilinear", scale_by=1.5)
    assert out.shape == (1, 15, 22, 3)  # round(15 * 1.5) = 22 (banker's rounding of 22.5)
    torch.testing.assert_close(out, interpolate(image, 15, 22, "bilinear"), atol=ATOL, rtol=0)


def test_scale_to_total_pixels_hits_the_budget_in_steps(harness):
    image = rand_image(1, 30, 60)
    out = harness.one(
        "ImageScaleToTotalPixels", image=image, upscale_method="area", megapixels=0.01, resolution_steps=1
    )
    target = 0.01 * 1024 * 1024
    assert abs(out.shape[1] * out.shape[2] - target) / target < 0.02
    assert abs(out.shape[2] / out.shape[1] - 2.0) < 0.03
    stepped = harness.one(
        "ImageScaleToTotalPixels",
        image=image,
        upscale_method="bilinear",
        megapixels=0.05,
        resolution_steps=16,
    )
    assert stepped.shape[1] % 16 == 0 and stepped.shape[2] % 16 == 0
    assert stepped.shape[1:3] == (160, 320)  # sqrt(0.05 * 2^20 / 1800) = 5.397: 161.9 -> 160, 323.8 -> 320


@pytest.mark.parametrize(
    ("size", "expected"), [((40, 20), (512, 256)), ((20, 40), (256, 512)), ((30, 30), (512, 512))]
)
def test_scale_to_max_dimension(harness, size, expected):
    image = rand_image(1, size[1], size[0])  # size is (width, height)
    out = harness.one("ImageScaleToMaxDimension", image=image, upscale_method="bilinear", largest_size=512)
    assert (out.shape[2], out.shape[1]) == expected


# --- simple image ops ----------------------------------------------------------------------------


def test_invert_batch_size_empty_and_crop(harness):
    image = rand_image(2, 6, 9)
    torch.testing.assert_close(harness.one("ImageInvert", image=image), 1.0 - image, atol=0, rtol=0)
    assert harness.node("GetImageSize", {"image": image}, outputs=3) == [9, 6, 2]
    empty = harness.one("EmptyImage", width=5, height=3, batch_size=2, color=0xFF8000)
    assert empty.shape == (2, 3, 5, 3)
    torch.testing.assert_close(empty[1, 2, 4], torch.tensor([1.0, 128 / 255, 0.0]), atol=ATOL, rtol=0)
    crop = harness.one("ImageCrop", image=image, width=4, height=3, x=2, y=1)
    torch.testing.assert_close(crop, image[:, 1:4, 2:6], atol=0, rtol=0)
    # A corner past the border is clamped to the last pixel, as in ComfyUI.
    assert harness.one("ImageCrop", image=image, width=4, height=4, x=50, y=50).shape == (2, 1, 1, 3)


def test_image_batch_fits_second_image_to_first(harness):
    first, second = rand_image(1, 8, 8, seed=1), rand_image(2, 8, 16, seed=2)
    out = harness.one("ImageBatch", image1=first, image2=second)
    assert out.shape == (3, 8, 8, 3)
    torch.testing.assert_close(out[:1], first, atol=0, rtol=0)
    # bilinear + center crop: the middle 8 columns, resized 8x8 -> 8x8.
    torch.testing.assert_close(out[1:], interpolate(second[:, :, 4:12], 8, 8, "bilinear"), atol=ATOL, rtol=0)
    rgba = harness.one("ImageBatch", image1=rand_image(1, 4, 4, 4), image2=rand_image(1, 4, 4, 3))
    assert rgba.shape == (2, 4, 4, 4) and torch.all(rgba[1, ..., 3] == 1.0)


def outpaint_reference(h: int, w: int, pads: tuple[int, int, int, int], feathering: int) -> np.ndarray:
    """ComfyUI's per-pixel definition of the outpaint mask, in float64 loops."""
    left, top, right, bottom = pads
    mask = np.ones((h + top + bottom, w + left + right))
    inner = np.zeros((h, w))
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        for i in range(h):
            for j in range(w):
                d = min(i if top else h, h - i if bottom else h, j if left else w, w - j if right else w)
                if d < feathering:
                    inner[i, j] = ((feathering - d) / feathering) ** 2
    mask[top : top + h, left : left + w] = inner
    return mask


@pytest.mark.parametrize(
    ("pads", "feathering"), [((8, 0, 16, 8), 5), ((0, 8, 0, 0), 3), ((8, 8, 8, 8), 0), ((8, 0, 0, 0), 12)]
)
def test_pad_for_outpaint(harness, pads, feathering):
    image = rand_image(2, 20, 24)
    left, top, right, bottom = pads
    padded, mask = harness.node(
        "ImagePadForOutpaint",
        {
            "image": image,
            "left": left,
            "top": top,
            "right": right,
            "bottom": bottom,
            "feathering": feathering,
        },
        outputs=2,
    )
    assert padded.shape == (2, 20 + top + bottom, 24 + left + right, 3)
    torch.testing.assert_close(padded[:, top : top + 20, left : left + 24], image, atol=0, rtol=0)
    assert torch.all(padded[:, :top] == 0.5) and torch.all(padded[:, :, :left] == 0.5)
    assert mask.shape == (1, *padded.shape[1:3])
    expected = torch.from_numpy(outpaint_reference(20, 24, pads, feathering)).float()
    torch.testing.assert_close(mask[0], expected, atol=ATOL, rtol=0)


# --- stitch --------------------------------------------------------------------------------------


def test_stitch_right_with_spacing_matches_height(harness):
    a, b = rand_image(1, 10, 12, seed=1), rand_image(1, 5, 8, seed=2)
    out = harness.one(
        "ImageStitch",
        image1=a,
        image2=b,
        direction="right",
        match_image_size=True,
        spacing_width=3,
        spacing_color="red",
    )
    # b is resized to height 10 keeping aspect 8:5 -> width 16; spacing 3 rounds up to 4.
    assert out.shape == (1, 10, 12 + 4 + 16, 3)
    torch.testing.assert_close(out[:, :, :12], a, atol=0, rtol=0)
    assert torch.all(out[:, :, 12:16] == torch.tensor([1.0, 0.0, 0.0]))


def test_stitch_up_without_matching_pads_centered(harness):
    a, b = rand_image(2, 4, 10, seed=3), rand_image(1, 3, 6, seed=4)
    out = harness.one(
        "ImageStitch",
        image1=a,
        image2=b,
        direction="up",
        match_image_size=False,
        spacing_width=0,
        spacing_color="white",
    )
    assert out.shape == (2, 7, 10, 3)
    # b on top, padded 2 columns each side with white (the spacing color), repeated for the 2nd batch item.
    torch.testing.assert_close(out[:, :3, 2:8], b.expand(2, -1, -1, -1), atol=0, rtol=0)
    assert torch.all(out[:, :3, :2] == 1.0) and torch.all(out[:, :3, 8:] == 1.0)
    torch.testing.assert_close(out[:, 3:], a, atol=0, rtol=0)
    alone = harness.one(
        "ImageStitch",
        image1=a,
        direction="left",
        match_image_size=True,
        spacing_width=0,
        spacing_color="black",
    )
    torch.testing.assert_close(alone, a, atol=0, rtol=0)


# --- masks ---------------------------------------------------------------------------------------


def test_mask_nodes(harness):
    mask = torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(5))
    as_image = harness.one("MaskToImage", mask=mask)
    assert as_image.shape == (2, 5, 7, 3)
    for channel in range(3):
        torch.testing.assert_close(as_image[..., channel], mask, atol=0, rtol=0)
    torch.testing.assert_close(harness.one("InvertMask", mask=mask), 1.0 - mask, atol=0, rtol=0)
    image = rand_image(2, 5, 7, channels=4)
    for index, channel in enumerate(("red", "green", "blue", "alpha")):
        torch.testing.assert_close(
            harness.one("ImageToMask", image=image, channel=channel), image[..., index], atol=0, rtol=0
        )
    solid = harness.one("SolidMask", value=0.25, width=6, height=3)
    assert solid.shape == (1, 3, 6) and torch.all(solid == 0.25)


def test_image_to_mask_alpha_of_rgb_fails_clearly(harness):
    with pytest.raises(NodeExecutionError, match="'alpha' asked of an image with 3 channels"):
        harness.one("ImageToMask", image=rand_image(1, 2, 2), channel="alpha")


# --- Canny ---------------------------------------------------------------------------------------


def test_canny_matches_kornia(harness):
    import kornia  # test-only oracle (requirements-dev.txt); ComfyUI itself calls kornia.filters.canny

    image = smooth_image(2, 40, 60, seed=7)
    for low, high in ((0.4, 0.8), (0.1, 0.3)):
        out = harness.one("Canny", image=image, low_threshold=low, high_threshold=high)
        _, expected = kornia.filters.canny(image.movedim(-1, 1), low, high)
        assert out.shape == (2, 40, 60, 3)
        assert 50 < int(out[..., 0].sum()) < 2400  # real edges, not all or nothing
        torch.testing.assert_close(out, expected.expand(-1, 3, -1, -1).movedim(1, -1), atol=0, rtol=0)


def test_canny_finds_a_vertical_step(harness):
    image = torch.zeros(1, 16, 16, 3)
    image[:, :, 8:] = 1.0
    edges = harness.one("Canny", image=image, low_threshold=0.4, high_threshold=0.8)[0, ..., 0]
    columns = edges.sum(0)
    # One thin line down the step (tie rule keeps the left of the two equal columns), nothing elsewhere.
    assert columns[7] == 16 and columns.sum() == 16


def test_canny_rejects_low_above_high(harness):
    with pytest.raises(NodeExecutionError, match="low_threshold <= high_threshold"):
        harness.one("Canny", image=rand_image(1, 8, 8), low_threshold=0.9, high_threshold=0.2)


# --- schemas as ComfyUI declares them ------------------------------------------------------------


def test_object_info_matches_comfyui_declarations(harness):
    info = object_info(harness.app.registry, harness.app.services)
    scale = info["ImageScale"]["input"]["required"]
    assert list(scale) == ["image", "upscale_method", "width", "height", "crop"]
    assert scale["upscale_method"] == [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]]
    assert scale["width"] == ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}]
    assert info["ImagePadForOutpaint"]["output"] == ["IMAGE", "MASK"]
    assert info["Canny"]["input"]["required"]["low_threshold"][1]["default"] == 0.4
    assert info["SaveImage"]["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert info["SaveImage"]["output_node"] and info["PreviewImage"]["output_node"]
    assert info["GetImageSize"]["output_name"] == ["width", "height", "batch_size"]
    assert info["EmptyImage"]["input"]["required"]["color"][1]["display"] == "color"
    assert info["LoadImageMask"]["input"]["required"]["channel"] == [["alpha", "red", "green", "blue"]]
