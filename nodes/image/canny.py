"""ComfyUI's Canny node (the algorithm lives in models.imaging.canny)."""

from __future__ import annotations

import torch

from executor.schema import Float, Node, Schema, Typed
from models.imaging.canny import canny
from nodes.runtime.types import IMAGE


class Canny(Node):
    schema = Schema(
        "Canny",
        category="image/preprocessors",
        outputs=(IMAGE,),
        inputs=(
            Typed("image", "IMAGE"),
            Float("low_threshold", 0.4, min=0.01, max=0.99, step=0.01),
            Float("high_threshold", 0.8, min=0.01, max=0.99, step=0.01),
        ),
    )

    @classmethod
    def execute(cls, image: torch.Tensor, low_threshold: float, high_threshold: float) -> tuple[torch.Tensor]:
        _, edges = canny(image.movedim(-1, 1), low_threshold, high_threshold)
        return (edges.expand(-1, 3, -1, -1).movedim(1, -1).contiguous(),)
