"""ComfyUI's LossGraphNode: the loss map of a training run drawn as a PNG preview."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from executor.schema import PROMPT_HIDDEN, Node, NodeOutput, Schema, String, Typed
from nodes.image.files import save_images
from nodes.runtime.file_paths import save_folder
from nodes.runtime.services import Ctx

TRAINING = "model/training"


def draw_loss_graph(loss_map: Mapping[str, Any], width: int = 800, height: int = 480) -> Image.Image:
    """Raw loss (grey), exponential moving average (blue) and evaluation loss points (red)."""
    values = [float(v) for v in loss_map["loss"]]
    margin = 48
    img = Image.new("RGB", (width + margin, height + margin), "white")
    draw = ImageDraw.Draw(img)
    evals = [(int(s), float(v)) for s, v in loss_map.get("eval", [])]
    every = values + [v for _, v in evals]
    low, high = min(every), max(every)
    span = (high - low) or 1.0

    def point(i: float, v: float) -> tuple[int, int]:
        x = margin + int(i / max(len(values) - 1, 1) * (width - 1))
        return x, int((height - 1) - (v - low) / span * (height - 1))

    smoothed, ema = [], values[0]
    for v in values:
        ema = 0.9 * ema + 0.1 * v
        smoothed.append(ema)
    if len(values) > 1:
        draw.line([point(i, v) for i, v in enumerate(values)], fill=(180, 180, 180), width=1)
        draw.line([point(i, v) for i, v in enumerate(smoothed)], fill="blue", width=2)
    for s, v in evals:
        x, y = point(s - 1, v)
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill="red")
    draw.line([(margin, 0), (margin, height)], fill="black", width=2)
    draw.line([(margin, height), (width + margin, height)], fill="black", width=2)
    draw.text((2, 0), f"{high:.3g}", fill="black")
    draw.text((2, height - 12), f"{low:.3g}", fill="black")
    draw.text((width // 2, height + 16), f"steps (1..{len(values)})", fill="black")
    return img


class LossGraphNode(Node):
    schema = Schema(
        "LossGraphNode", display_name="Plot Loss Graph", category=TRAINING, experimental=True, is_output_node=True,
        inputs=(Typed("loss", "LOSS_MAP", tooltip="Loss map from training node."),
                String("filename_prefix", "loss_graph", tooltip="Prefix for the saved loss graph image.")),
        outputs=(), hidden=PROMPT_HIDDEN,
    )  # fmt: skip

    @classmethod
    def execute(cls, ctx: Ctx, loss: Mapping[str, Any], filename_prefix: str, prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeOutput:  # fmt: skip
        if not loss.get("loss"):
            raise ValueError("the loss map is empty")
        img = draw_loss_graph(loss)
        image = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
        results = save_images(
            image,
            save_folder(ctx.services.settings, "temp"),
            filename_prefix,
            folder_type="temp",
            compress_level=1,
            prompt=prompt,
            extra_pnginfo=extra_pnginfo,
        )
        return NodeOutput.of(ui={"images": results, "loss": [json.dumps(loss["loss"][-1])]})


NODES = (LossGraphNode,)
