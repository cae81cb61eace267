"""The trainable OFT adapter: a block-diagonal rotation of a layer's output features.

The math and the facts it follows (file keys, Cayley transform, constraint, initialisation) are in
`models.lora.oft`, shared with the loader, so the trained hook and the merged file agree. The hook
rotates the layer's output without its bias: (R^T W) x + b = R^T (W x) + b, block by block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.lora.oft import cayley_rotation, oft_block_size, oft_weight, rotate_features

from .adapters import Adapter


class OFT(Adapter):
    """oft_blocks [out / n, n, n], zero at start (R = I: the base output exactly).

    `rank` asks for the block size n (ComfyUI: the smaller factor of out_features near rank);
    `alpha` bounds the rotation's skew part (ComfyUI trains OFT with alpha 1), it is no scale.
    """

    def __init__(self, out_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        size = oft_block_size(out_features, rank)
        self.rank, self.alpha = size, alpha
        self.oft_blocks = nn.Parameter(torch.zeros(out_features // size, size, size))

    @property
    def scale(self) -> float:
        return 1.0

    def rotation(self) -> Tensor:
        return cayley_rotation(self.oft_blocks, self.alpha)

    def adapt_output(self, x: Tensor, output: Tensor, bias: Tensor | None, strength: float) -> Tensor:
        y = output.to(self.oft_blocks.dtype)
        if bias is not None:
            y = y - bias.to(y.dtype)
        rotated = rotate_features(self.rotation(), y)
        return output + ((rotated - y) * strength).to(output.dtype)

    def delta_weight(self) -> Tensor:
        raise NotImplementedError("OFT's change depends on the base weight: use merged_weight(weight)")

    def merged_weight(self, weight: Tensor) -> Tensor:
        """The adapted weight R^T W at strength 1 (what a loader merges from the saved file)."""
        return oft_weight(weight, self.oft_blocks, self.alpha, None)
