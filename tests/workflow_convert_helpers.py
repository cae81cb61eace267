"""Hand-written UI-format graphs for the workflow -> API prompt conversion tests, and their registry.

Node types the registry does not have yet are registered as schema-only stand-ins with ComfyUI's exact
input lists (tests/comfy_core_schemas.py); built-in nodes are used where they exist. The module-scoped
`registry` fixture lives here so that every conversion test module imports the same definition.
"""

from __future__ import annotations

from typing import Any

import pytest

from executor.schema import Combo, Float, Int, Node, Schema, String, Typed
from nodes.runtime.registry import build_registry
from tests.comfy_core_schemas import add_missing_core_nodes


class FloatControl(Node):
    schema = Schema(
        "FloatControl",
        outputs=("FLOAT",),
        inputs=(
            Float("amount", 0.5, control_after_generate=True),
            Combo("pick", ("a", "b"), control_after_generate=True),
            String("note", "n"),
            Typed("extra", "IMAGE", optional=True),
            Int("late", 3, optional=True),
            Int("wired", 1, force_input=True),
        ),
    )

    @classmethod
    def execute(cls, amount, pick, note, wired, extra=None, late=3):
        return (amount,)


class Split(Node):
    schema = Schema(
        "Split", inputs=(Typed("image", "IMAGE"), Typed("mask", "MASK")), outputs=("MASK", "IMAGE")
    )

    @classmethod
    def execute(cls, image, mask):
        return (mask, image)


class Pair(Node):
    schema = Schema(
        "Pair",
        inputs=(Typed("first", "IMAGE"), Typed("second", "IMAGE"), Int("seed", 0), Int("count", 1)),
        outputs=("IMAGE", "IMAGE"),
    )

    @classmethod
    def execute(cls, first, second, seed, count):
        return (first, second)


@pytest.fixture(scope="module")
def registry():
    reg = build_registry()
    add_missing_core_nodes(reg)
    for cls in (FloatControl, Split, Pair):
        reg.register(cls)
    return reg


def node(node_id: Any, type_: str, *, inputs=(), outputs=(), widgets=None, mode=0, **extra) -> dict:
    out = {
        "id": node_id,
        "type": type_,
        "mode": mode,
        "inputs": list(inputs),
        "outputs": list(outputs),
        "properties": {},
        **extra,
    }
    if widgets is not None:
        out["widgets_values"] = widgets
    return out


def inp(name: str, type_: str, link: int | None = None, widget: bool = False) -> dict:
    return {"name": name, "type": type_, "link": link, **({"widget": {"name": name}} if widget else {})}


def out(name: str, type_: str, *links: int) -> dict:
    return {"name": name, "type": type_, "links": list(links)}


def ui(nodes: list, links: list, **extra) -> dict:
    return {
        "last_node_id": 99,
        "last_link_id": 99,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
        **extra,
    }


KSAMPLER_WIDGETS = [42, "randomize", 20, 1.0, "euler", "simple", 1.0]


def sampler_graph(**ks_extra) -> dict:
    """Checkpoint -> 2 prompts -> KSampler -> VAEDecode -> SaveImage, with a note and a group."""
    nodes = [
        node(
            4,
            "CheckpointLoaderSimple",
            widgets=["flux1-dev.safetensors"],
            outputs=[out("MODEL", "MODEL", 1), out("CLIP", "CLIP", 2, 3), out("VAE", "VAE", 8)],
        ),
        node(
            6,
            "CLIPTextEncode",
            title="Positive",
            widgets=["a fox"],
            inputs=[inp("clip", "CLIP", 2)],
            outputs=[out("CONDITIONING", "CONDITIONING", 4)],
        ),
        node(
            7,
            "CLIPTextEncode",
            widgets=[""],
            inputs=[inp("clip", "CLIP", 3)],
            outputs=[out("CONDITIONING", "CONDITIONING", 5)],
        ),
        node(5, "EmptySD3LatentImage", widgets=[512, 768, 1], outputs=[out("LATENT", "LATENT", 6)]),
        node(
            3,
            "KSampler",
            widgets=list(KSAMPLER_WIDGETS),
            outputs=[out("LATENT", "LATENT", 7)],
            inputs=[
                inp("model", "MODEL", 1),
                inp("positive", "CONDITIONING", 4),
                inp("negative", "CONDITIONING", 5),
                inp("latent_image", "LATENT", 6),
            ],
            **ks_extra,
        ),
        node(
            8,
            "VAEDecode",
            inputs=[inp("samples", "LATENT", 7), inp("vae", "VAE", 8)],
            outputs=[out("IMAGE", "IMAGE", 9)],
        ),
        node(9, "SaveImage", widgets=["fluxloom"], inputs=[inp("images", "IMAGE", 9)]),
        node(10, "Note", widgets=["remember the milk"]),
        node(11, "MarkdownNote", widgets=["# hi"]),
    ]
    links = [
        [1, 4, 0, 3, 0, "MODEL"],
        [2, 4, 1, 6, 0, "CLIP"],
        [3, 4, 1, 7, 0, "CLIP"],
        [4, 6, 0, 3, 1, "CONDITIONING"],
        [5, 7, 0, 3, 2, "CONDITIONING"],
        [6, 5, 0, 3, 3, "LATENT"],
        [7, 3, 0, 8, 0, "LATENT"],
        [8, 4, 2, 8, 1, "VAE"],
        [9, 8, 0, 9, 0, "IMAGE"],
    ]
    return ui(nodes, links, groups=[{"id": 1, "title": "Models", "bounding": [0, 0, 10, 10]}])


SAMPLER_API = {
    "4": {"inputs": {"ckpt_name": "flux1-dev.safetensors"}, "class_type": "CheckpointLoaderSimple"},
    "6": {
        "inputs": {"text": "a fox", "clip": ["4", 1]},
        "class_type": "CLIPTextEncode",
        "_meta": {"title": "Positive"},
    },
    "7": {"inputs": {"text": "", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
    "5": {"inputs": {"width": 512, "height": 768, "batch_size": 1}, "class_type": "EmptySD3LatentImage"},
    "3": {
        "inputs": {
            "seed": 42,
            "steps": 20,
            "cfg": 1.0,
            "sampler_name": "euler",
            "scheduler": "simple",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
        "class_type": "KSampler",
    },
    "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode"},
    "9": {"inputs": {"filename_prefix": "fluxloom", "images": ["8", 0]}, "class_type": "SaveImage"},
}


def titled(registry, api: dict) -> dict:
    """`api` with `_meta.title` filled in from the node's display name where the test gave none."""
    return {
        k: {**v, "_meta": v.get("_meta") or {"title": registry[v["class_type"]].describe().title}}
        for k, v in api.items()
    }
