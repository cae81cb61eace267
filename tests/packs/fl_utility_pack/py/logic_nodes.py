"""Nodes with "match anything" sockets, lists, IS_CHANGED and VALIDATE_INPUTS."""

import math
import random

from comfy_api.latest import io

from .shared import ANY, ANY_EQ


class AnySwitchFL:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"any_1": (ANY,), "any_2": (ANY,)}}

    RETURN_TYPES = (ANY,)
    FUNCTION = "switch"
    CATEGORY = "fl/logic"

    def switch(self, any_1=None, any_2=None):
        return (any_1 if any_1 is not None else any_2,)


class DisplayAnyFL:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"source": (ANY_EQ, {})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "fl/logic"

    def show(self, source):
        text = str(list(source.shape)) if hasattr(source, "shape") else str(source)
        return {"ui": {"text": [text]}, "result": (text,)}


class RandomFloatFL:
    """Re-runs every time (NaN IS_CHANGED) and refuses a negative scale itself."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"scale": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "draw"
    CATEGORY = "fl/logic"

    @classmethod
    def IS_CHANGED(cls, scale):
        return math.nan

    @classmethod
    def VALIDATE_INPUTS(cls, scale):
        return True if scale >= 0 else "scale must not be negative"

    def draw(self, scale):
        return (random.random() * scale,)


class RepeatFL:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (ANY,), "count": ("INT", {"default": 2, "min": 1, "max": 64})}}

    RETURN_TYPES = (ANY,)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "repeat"
    CATEGORY = "fl/logic"

    def repeat(self, value, count):
        return ([value] * count,)


class ClampV3FL(io.ComfyNode):
    """A V3 class inside a V1 mapping, as KJNodes mixes them."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ClampV3FL",
            category="fl/logic",
            inputs=[
                io.Float.Input("value", default=0.5),
                io.Float.Input("low", default=0.0),
                io.Float.Input("high", default=1.0),
            ],
            outputs=[io.Float.Output()],
        )

    @classmethod
    def execute(cls, value: float, low: float, high: float) -> io.NodeOutput:
        return io.NodeOutput(min(max(value, low), high))


NODE_CLASS_MAPPINGS = {
    "ClampV3FL": ClampV3FL,
    "AnySwitchFL": AnySwitchFL,
    "DisplayAnyFL": DisplayAnyFL,
    "RandomFloatFL": RandomFloatFL,
    "RepeatFL": RepeatFL,
}
