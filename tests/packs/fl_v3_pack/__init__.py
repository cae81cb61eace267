"""A V3 pack: io.ComfyNode classes registered through comfy_entrypoint (as the Krita plugin's pack)."""

import torch
from comfy_api.latest import ComfyExtension, io, ui


class InvertV3(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FL_InvertV3",
            display_name="Invert (V3)",
            category="fl/v3",
            inputs=[
                io.Image.Input("image"),
                io.Float.Input("amount", default=1.0, min=0.0, max=1.0, step=0.05),
                io.Combo.Input("mode", options=["rgb", "luma"], default="rgb"),
            ],
            outputs=[io.Image.Output(display_name="inverted"), io.Int.Output(display_name="width")],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, amount: float, mode: str) -> io.NodeOutput:
        out = image * (1 - amount) + (1 - image) * amount
        if mode == "luma":
            out = out.mean(dim=-1, keepdim=True).expand_as(out)
        return io.NodeOutput(out, int(image.shape[2]), ui=ui.PreviewImage(out, cls=cls))


class LabelV3(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FL_LabelV3",
            category="fl/v3",
            inputs=[
                io.String.Input("text", default="hi", multiline=True),
                io.Int.Input("repeat", default=1, min=1),
            ],
            outputs=[io.String.Output()],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    async def execute(cls, text: str, repeat: int) -> io.NodeOutput:
        label = f"{cls.hidden.unique_id}:{text * repeat}"
        return io.NodeOutput(label, ui=ui.PreviewText(label))

    @classmethod
    def validate_inputs(cls, text: str, repeat: int) -> bool | str:
        return True if text.strip() else "text must not be blank"


class FixtureExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [InvertV3, LabelV3]


async def comfy_entrypoint() -> FixtureExtension:
    return FixtureExtension()
