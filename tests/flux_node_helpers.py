"""Run FLUX workflow nodes inside the real executor, and build the tiny models their tests share.

Values that JSON cannot carry enter through a `Given` node (looked up in the services object) and
leave through a `Capture` output node, so every node under test runs inside the real executor.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from executor.registry import NodeRegistry
from executor.run import Executor
from executor.schema import ANY, Node, NodeContext, NodeOutput, Schema, String, Typed
from nodes.conditioning import flux as conditioning
from nodes.latent import latents as latent


class Given(Node):
    schema = Schema("Given", inputs=(String("key"),), outputs=(ANY,))

    @classmethod
    def execute(cls, ctx: NodeContext, key: str) -> tuple[Any]:
        return (ctx.services.values[key],)


class Capture(Node):
    schema = Schema("Capture", inputs=(Typed("value", ANY),), outputs=(), is_output_node=True)

    @classmethod
    def execute(cls, value: Any) -> NodeOutput:
        return NodeOutput.of(ui={"value": [value]})


def make_executor(values: dict[str, Any], *modules: Any) -> Executor:
    registry = NodeRegistry()
    for node in (Given, Capture):
        registry.register(node)
    for module in modules or (conditioning, latent):
        for node in module.NODES:
            registry.register(node)
    return Executor(registry, services=SimpleNamespace(values=values, memory=None))


def run_node(
    class_type: str,
    inputs: dict[str, Any],
    values: dict[str, Any] | None = None,
    outputs: int = 1,
    modules: tuple = (),
) -> list[Any]:
    """Run one node whose linked inputs come from `values` (name -> object); return its outputs."""
    values = dict(values or {})
    prompt: dict[str, Any] = {}
    node_inputs = dict(inputs)
    for name in values:
        prompt[f"given_{name}"] = {"class_type": "Given", "inputs": {"key": name}}
        node_inputs[name] = [f"given_{name}", 0]
    prompt["node"] = {"class_type": class_type, "inputs": node_inputs}
    for index in range(outputs):
        prompt[f"out{index}"] = {"class_type": "Capture", "inputs": {"value": ["node", index]}}
    result = make_executor(values, *modules).run_prompt(prompt, prompt_id="t")
    return [result.outputs[f"out{index}"]["value"][0] for index in range(outputs)]


def cond(tokens: int = 4, dim: int = 8, **options: Any) -> list[list[Any]]:
    gen = torch.Generator().manual_seed(tokens * 31 + dim)
    return [
        [
            torch.randn(1, tokens, dim, generator=gen),
            {"pooled_output": torch.randn(1, 6, generator=gen), **options},
        ]
    ]


TINY = dict(
    hidden_size=64,
    num_heads=2,
    depth=1,
    depth_single_blocks=2,
    axes_dim=(8, 12, 12),
    context_in_dim=32,
    vec_in_dim=16,
)


def tiny_handle(guidance_embed: bool = True, in_channels: int = 64, seed: int = 0):
    from models.flux.model import Flux
    from models.flux.params import FluxParams
    from models.patches import ModelHandle, ModelOptions

    params = FluxParams(in_channels=in_channels, guidance_embed=guidance_embed, **TINY)
    torch.manual_seed(seed)
    module = Flux(params).eval()
    return ModelHandle(module=module, params=params, options=ModelOptions(compute_dtype=torch.float32))


def sampling_modules():
    from nodes.sampling import custom as sampling_custom
    from nodes.sampling import ksampler as sampling

    return (conditioning, latent, sampling, sampling_custom)


def run_prompt(prompt: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    for key in values:
        prompt[f"given_{key}"] = {"class_type": "Given", "inputs": {"key": key}}
    result = make_executor(values, *sampling_modules()).run_prompt(prompt, prompt_id="t")
    return {k: v["value"][0] for k, v in result.outputs.items()}


def g(key: str) -> list[Any]:
    return [f"given_{key}", 0]
