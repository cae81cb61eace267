"""SaveImageWebsocket: sends each image of a batch to the prompt's client as a binary PNG frame.

ComfyUI ships it as an example pack that API clients rely on (they read the frames after an 8-byte
header: event type 1, format 2 = PNG). Nothing is written to disk; it re-runs every time.
"""

from __future__ import annotations

import math

import torch

from executor.schema import Node, NodeContext, NodeOutput, Schema, Typed
from nodes.image.tensors import tensor_to_pil
from nodes.runtime.channel import CHANNEL, image_frame


class SaveImageWebsocket(Node):
    schema = Schema(
        "SaveImageWebsocket",
        display_name="SaveImageWebsocket",
        category="api node/image",
        inputs=(Typed("images", "IMAGE"),),
        outputs=(),
        is_output_node=True,
        description="Sends the images to the client that queued the prompt over its WebSocket, as PNG.",
    )

    @classmethod
    def execute(cls, ctx: NodeContext, images: torch.Tensor) -> NodeOutput:
        client = CHANNEL.current_client()
        total = int(images.shape[0])
        for index, image in enumerate(images):
            CHANNEL.send_bytes(image_frame("PNG", tensor_to_pil(image)), client)
            ctx.report_progress(index + 1, total)
        return NodeOutput.of()

    @classmethod
    def fingerprint(cls, images: object = None) -> float:
        return math.nan  # always sends, like ComfyUI's (its IS_CHANGED is the time)


NODES = (SaveImageWebsocket,)
