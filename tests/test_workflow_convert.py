"""UI-format workflow -> API prompt: every conversion rule on hand-written graphs, plus real templates.

Node types the registry does not have yet are registered as schema-only stand-ins with ComfyUI's exact
input lists (tests/comfy_core_schemas.py); built-in nodes are used where they exist.
"""

from __future__ import annotations

from typing import Any

import pytest

from executor.errors import PromptValidationError
from executor.schema import Combo, Float, Int, Node, Schema, String, Typed
from executor.workflow import to_api_prompt, ui_to_api, widget_slots
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


def test_widgets_control_slots_titles_notes_and_groups(registry):
    assert ui_to_api(sampler_graph(), registry) == titled(registry, SAMPLER_API)


def test_widget_layout_follows_schema_order_with_control_slots(registry):
    layout = [s.name if s else None for s in widget_slots(registry["FloatControl"].describe())]
    # FLOAT control: one slot; COMBO control: mode + filter; optional widgets after required; no forceInput.
    assert layout == ["amount", None, "pick", None, None, "note", "late"]
    layout = [s.name if s else None for s in widget_slots(registry["KSampler"].describe())]
    assert layout == ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"]
    assert [s.name if s else None for s in widget_slots(registry["PrimitiveInt"].describe())] == [
        "value",
        None,
    ]
    # An INT named seed gets a control slot even when its spec does not ask for one (as in the frontend).
    assert [s.name if s else None for s in widget_slots(registry["Pair"].describe())] == [
        "seed",
        None,
        "count",
    ]


def test_named_values_win_and_dict_form_and_missing_values_take_defaults(registry):
    graph = sampler_graph(widgets_values_named={"seed": 7, "control_after_generate": "fixed", "steps": 4})
    graph["nodes"][3]["widgets_values"] = [512]  # too short: batch_size and height fall back to defaults
    graph["nodes"][0]["widgets_values"] = {"ckpt_name": "flux1-schnell.safetensors"}
    api = ui_to_api(graph, registry)
    assert api["3"]["inputs"] | {} == SAMPLER_API["3"]["inputs"] | {"seed": 7, "steps": 4}
    assert api["5"]["inputs"] == {"width": 512, "height": 1024, "batch_size": 1}
    assert api["4"]["inputs"] == {"ckpt_name": "flux1-schnell.safetensors"}
    fc = ui_to_api(
        ui([node(1, "FloatControl", widgets=[0.25, "fixed", "b", "increment", "", "memo", 9])], []), registry
    )
    assert fc["1"]["inputs"] == {"amount": 0.25, "pick": "b", "note": "memo", "late": 9}
    lists = ui_to_api(ui([node(1, "PrimitiveString", widgets=[["a", "b"]])], []), registry)
    assert lists["1"]["inputs"] == {"value": {"__value__": ["a", "b"]}}


def test_converted_widgets_primitive_nodes_and_reroutes(registry):
    graph = sampler_graph()
    ks = graph["nodes"][4]
    ks["inputs"] += [
        inp("steps", "INT", 20, widget=True),
        inp("cfg", "FLOAT", None, widget=True),
        inp("seed", "INT", 22, widget=True),
    ]
    graph["nodes"] += [
        node(
            20,
            "PrimitiveNode",
            widgets=[9, "fixed"],
            outputs=[{**out("INT", "INT", 20, 21), "widget": {"name": "steps"}}],
        ),
        node(21, "PrimitiveInt", widgets=[1234, "randomize"], outputs=[out("INT", "INT", 23)]),
        node(22, "Reroute", inputs=[inp("", "*", 23)], outputs=[out("", "INT", 24)]),
        node(23, "Reroute", inputs=[inp("", "*", 24)], outputs=[out("", "INT", 22)]),
        node(24, "EmptySD3LatentImage", widgets=[64, 64, 2], inputs=[inp("width", "INT", 21, widget=True)]),
    ]
    graph["links"] += [
        [20, 20, 0, 3, 4, "INT"],
        [21, 20, 0, 24, 0, "INT"],
        [22, 23, 0, 3, 6, "INT"],
        [23, 21, 0, 22, 0, "INT"],
        [24, 22, 0, 23, 0, "INT"],
    ]
    api = ui_to_api(graph, registry)
    assert api["3"]["inputs"] == {**SAMPLER_API["3"]["inputs"], "steps": 9, "seed": ["21", 0]}
    assert api["24"]["inputs"] == {"width": 9, "height": 64, "batch_size": 2}
    assert (
        api["21"] == titled(registry, {"21": {"inputs": {"value": 1234}, "class_type": "PrimitiveInt"}})["21"]
    )
    assert not {"20", "22", "23"} & api.keys()


def test_muted_nodes_are_dropped_with_their_links(registry):
    graph = sampler_graph()
    graph["nodes"][2]["mode"] = 2  # negative prompt muted
    graph["nodes"][4]["inputs"].append(inp("steps", "INT", 30, widget=True))
    graph["nodes"].append(
        node(30, "PrimitiveInt", mode=2, widgets=[5, "fixed"], outputs=[out("INT", "INT", 30)])
    )
    graph["links"].append([30, 30, 0, 3, 4, "INT"])
    api = ui_to_api(graph, registry)
    expected = {k: v for k, v in SAMPLER_API["3"]["inputs"].items() if k != "negative"}
    assert api["3"]["inputs"] == expected  # the socket is gone; the converted widget keeps its value
    assert "7" not in api and "30" not in api


def test_bypassed_nodes_pass_a_matching_input_through(registry):
    graph = sampler_graph()
    graph["nodes"][4]["inputs"][0]["link"] = 41
    graph["nodes"][0]["outputs"][0]["links"] = [40]
    graph["nodes"] += [
        node(
            40,
            "LoraLoaderModelOnly",
            mode=4,
            widgets=["lora.safetensors", 1.0],
            inputs=[inp("model", "MODEL", 40)],
            outputs=[out("MODEL", "MODEL", 42)],
        ),
        node(
            41,
            "LoraLoaderModelOnly",
            mode=4,
            widgets=["lora.safetensors", 0.5],
            inputs=[inp("model", "MODEL", 42)],
            outputs=[out("MODEL", "MODEL", 41)],
        ),
    ]
    graph["links"] = [lk for lk in graph["links"] if lk[0] != 1] + [
        [40, 4, 0, 40, 0, "MODEL"],
        [42, 40, 0, 41, 0, "MODEL"],
        [41, 41, 0, 3, 0, "MODEL"],
    ]
    graph["nodes"][5]["mode"] = 4  # VAEDecode bypassed: no input carries IMAGE, so SaveImage loses its link
    api = ui_to_api(graph, registry)
    assert api["3"]["inputs"]["model"] == ["4", 0]  # through a chain of two bypassed LoRA loaders
    assert api["9"]["inputs"] == {"filename_prefix": "fluxloom"}
    assert not {"8", "40", "41"} & api.keys()


def test_bypass_prefers_same_slot_then_exact_type_then_any_for_wildcards(registry):
    nodes = [
        node(
            1,
            "LoadImage",
            widgets=["example.png", "image"],
            outputs=[out("IMAGE", "IMAGE", 1), out("MASK", "MASK", 2)],
        ),
        node(
            2,
            "Split",
            mode=4,
            inputs=[inp("image", "IMAGE", 1), inp("mask", "MASK", 2)],
            outputs=[out("MASK", "MASK", 3), out("IMAGE", "IMAGE", 4, 5)],
        ),
        node(3, "PreviewAny", inputs=[inp("source", "*", 3)]),
        node(4, "ImageInvert", inputs=[inp("image", "IMAGE", 4)], outputs=[out("IMAGE", "IMAGE")]),
        node(5, "PreviewAny", inputs=[inp("source", "*", 5)]),
    ]
    links = [
        [1, 1, 0, 2, 0, "IMAGE"],
        [2, 1, 1, 2, 1, "MASK"],
        [3, 2, 0, 3, 0, "MASK"],
        [4, 2, 1, 4, 0, "IMAGE"],
        [5, 2, 1, 5, 0, "IMAGE"],
    ]
    api = ui_to_api(ui(nodes, links), registry)
    assert api["1"]["inputs"] == {"image": "example.png"}  # the upload button's slot is not an input
    assert api["4"]["inputs"] == {"image": ["1", 0]}  # slot 1 is MASK, so the exact IMAGE input wins
    assert api["3"]["inputs"] == {"source": ["1", 0]}  # a wildcard consumer takes the same slot index
    assert api["5"]["inputs"] == {"source": ["1", 1]}


def test_bypass_takes_the_input_at_the_same_slot_before_the_first_of_the_type(registry):
    nodes = [
        node(1, "LoadImage", widgets=["example.png", "image"], outputs=[out("IMAGE", "IMAGE", 1, 2)]),
        node(2, "ImageInvert", inputs=[inp("image", "IMAGE", 1)], outputs=[out("IMAGE", "IMAGE", 3)]),
        node(
            3,
            "Pair",
            mode=4,
            widgets=[1, "fixed", 2],
            inputs=[inp("first", "IMAGE", 2), inp("second", "IMAGE", 3)],
            outputs=[out("IMAGE", "IMAGE", 4), out("IMAGE", "IMAGE", 5)],
        ),
        node(4, "SaveImage", widgets=["a"], inputs=[inp("images", "IMAGE", 4)]),
        node(5, "SaveImage", widgets=["b"], inputs=[inp("images", "IMAGE", 5)]),
        node(
            6,
            "Pair",
            widgets=[11, "randomize", 3],
            inputs=[inp("first", "IMAGE", 6), inp("second", "IMAGE", 7)],
        ),
    ]
    links = [
        [1, 1, 0, 2, 0, "IMAGE"],
        [2, 1, 0, 3, 0, "IMAGE"],
        [3, 2, 0, 3, 1, "IMAGE"],
        [4, 3, 0, 4, 0, "IMAGE"],
        [5, 3, 1, 5, 0, "IMAGE"],
        [6, 1, 0, 6, 0, "IMAGE"],
        [7, 2, 0, 6, 1, "IMAGE"],
    ]
    api = ui_to_api(ui(nodes, links), registry)
    assert api["4"]["inputs"]["images"] == ["1", 0]
    assert api["5"]["inputs"]["images"] == ["2", 0]
    assert api["6"]["inputs"] == {"seed": 11, "count": 3, "first": ["1", 0], "second": ["2", 0]}


def subgraph_definition() -> dict:
    """model, text, steps in; LATENT and the model passed straight through out (schema 1 link objects)."""

    def link(lid, o, os_, t, ts, kind):
        return {
            "id": lid,
            "origin_id": o,
            "origin_slot": os_,
            "target_id": t,
            "target_slot": ts,
            "type": kind,
        }

    return {
        "id": "sg-sample",
        "version": 1,
        "name": "Sample",
        "state": {"lastNodeId": 6, "lastLinkId": 109},
        "inputNode": {"id": -10, "bounding": [0, 0, 1, 1]},
        "outputNode": {"id": -20, "bounding": [0, 0, 1, 1]},
        "inputs": [
            {"id": "u1", "name": "model", "type": "MODEL", "linkIds": [103, 109]},
            {"id": "u2", "name": "text", "type": "STRING", "linkIds": [102]},
            {"id": "u3", "name": "steps", "type": "INT", "linkIds": [107]},
        ],
        "outputs": [
            {"id": "u4", "name": "LATENT", "type": "LATENT", "linkIds": [108]},
            {"id": "u5", "name": "model", "type": "MODEL", "linkIds": [109]},
        ],
        "widgets": [],
        "nodes": [
            node(
                3,
                "CheckpointLoaderSimple",
                widgets=["flux1-dev.safetensors"],
                outputs=[out("MODEL", "MODEL"), out("CLIP", "CLIP", 101), out("VAE", "VAE")],
            ),
            node(
                4,
                "CLIPTextEncode",
                widgets=["inner text"],
                inputs=[inp("clip", "CLIP", 101), inp("text", "STRING", 102, widget=True)],
                outputs=[out("CONDITIONING", "CONDITIONING", 104, 105)],
            ),
            node(5, "EmptySD3LatentImage", widgets=[512, 512, 1], outputs=[out("LATENT", "LATENT", 106)]),
            node(
                6,
                "KSampler",
                widgets=[7, "fixed", 20, 1.0, "euler", "simple", 1.0],
                inputs=[
                    inp("model", "MODEL", 103),
                    inp("positive", "CONDITIONING", 104),
                    inp("negative", "CONDITIONING", 105),
                    inp("latent_image", "LATENT", 106),
                    inp("steps", "INT", 107, widget=True),
                ],
                outputs=[out("LATENT", "LATENT", 108)],
            ),
        ],
        "links": [
            link(101, 3, 1, 4, 0, "CLIP"),
            link(102, -10, 1, 4, 1, "STRING"),
            link(103, -10, 0, 6, 0, "MODEL"),
            link(104, 4, 0, 6, 1, "CONDITIONING"),
            link(105, 4, 0, 6, 2, "CONDITIONING"),
            link(106, 5, 0, 6, 3, "LATENT"),
            link(107, -10, 2, 6, 4, "INT"),
            link(108, 6, 0, -20, 0, "LATENT"),
            link(109, -10, 0, -20, 1, "MODEL"),
        ],
    }


def subgraph_workflow(**instance_extra) -> dict:
    nodes = [
        node(
            1,
            "CheckpointLoaderSimple",
            widgets=["flux1-schnell.safetensors"],
            outputs=[out("MODEL", "MODEL", 1), out("CLIP", "CLIP"), out("VAE", "VAE", 5)],
        ),
        node(
            2,
            "PrimitiveNode",
            widgets=[33, "fixed"],
            outputs=[{**out("INT", "INT", 2), "widget": {"name": "steps"}}],
        ),
        node(
            12,
            "sg-sample",
            inputs=[inp("model", "MODEL", 1), inp("steps", "INT", 2, widget=True)],
            outputs=[out("LATENT", "LATENT", 3), out("model", "MODEL", 4)],
            **instance_extra,
        ),
        node(
            7,
            "VAEDecode",
            inputs=[inp("samples", "LATENT", 3), inp("vae", "VAE", 5)],
            outputs=[out("IMAGE", "IMAGE", 6)],
        ),
        node(8, "SaveImage", widgets=["out"], inputs=[inp("images", "IMAGE", 6)]),
        node(
            9,
            "BasicGuider",
            inputs=[inp("model", "MODEL", 4), inp("conditioning", "CONDITIONING")],
            outputs=[out("GUIDER", "GUIDER")],
        ),
    ]
    links = [
        [1, 1, 0, 12, 0, "MODEL"],
        [2, 2, 0, 12, 1, "INT"],
        [3, 12, 0, 7, 0, "LATENT"],
        [4, 12, 1, 9, 0, "MODEL"],
        [5, 1, 2, 7, 1, "VAE"],
        [6, 7, 0, 8, 0, "IMAGE"],
    ]
    return ui(nodes, links, definitions={"subgraphs": [subgraph_definition()]})


def subgraph_api(registry, text: str) -> dict:
    return titled(
        registry,
        {
            "1": {
                "inputs": {"ckpt_name": "flux1-schnell.safetensors"},
                "class_type": "CheckpointLoaderSimple",
            },
            "12:3": {
                "inputs": {"ckpt_name": "flux1-dev.safetensors"},
                "class_type": "CheckpointLoaderSimple",
            },
            "12:4": {"inputs": {"text": text, "clip": ["12:3", 1]}, "class_type": "CLIPTextEncode"},
            "12:5": {
                "inputs": {"width": 512, "height": 512, "batch_size": 1},
                "class_type": "EmptySD3LatentImage",
            },
            "12:6": {
                "inputs": {
                    "seed": 7,
                    "steps": 33,
                    "cfg": 1.0,
                    "sampler_name": "euler",
                    "scheduler": "simple",
                    "denoise": 1.0,
                    "model": ["1", 0],
                    "positive": ["12:4", 0],
                    "negative": ["12:4", 0],
                    "latent_image": ["12:5", 0],
                },
                "class_type": "KSampler",
            },
            "7": {"inputs": {"samples": ["12:6", 0], "vae": ["1", 2]}, "class_type": "VAEDecode"},
            "8": {"inputs": {"filename_prefix": "out", "images": ["7", 0]}, "class_type": "SaveImage"},
            "9": {"inputs": {"model": ["1", 0]}, "class_type": "BasicGuider"},
        },
    )


def test_subgraph_flattened_with_colon_ids_and_links_across_the_boundary(registry):
    # Unconnected promoted input without an instance value: the inner widget keeps its own value.
    assert ui_to_api(subgraph_workflow(), registry) == subgraph_api(registry, "inner text")
    # Old files: instance widgets_values follow the subgraph's widget inputs (text, steps).
    assert ui_to_api(subgraph_workflow(widgets_values=["outer text", 0]), registry) == subgraph_api(
        registry, "outer text"
    )
    assert ui_to_api(subgraph_workflow(widgets_values_named={"text": "named"}), registry) == subgraph_api(
        registry, "named"
    )
    proxied = subgraph_workflow(widgets_values=["proxy text", 99])
    proxied["nodes"][2]["properties"] = {"proxyWidgets": [["4", "text"], ["6", "seed"]]}
    expected = subgraph_api(registry, "proxy text")
    expected["12:6"]["inputs"]["seed"] = 99
    assert ui_to_api(proxied, registry) == expected


def test_nested_subgraphs_and_muted_or_bypassed_instances(registry):
    inner = {
        "id": "sg-inner",
        "name": "inner",
        "inputs": [],
        "outputs": [{"name": "INT", "type": "INT", "linkIds": [1]}],
        "nodes": [node(3, "PrimitiveInt", widgets=[5, "fixed"], outputs=[out("INT", "INT", 1)])],
        "links": [[1, 3, 0, -20, 0, "INT"]],
    }
    outer = {
        "id": "sg-outer",
        "name": "outer",
        "inputs": [],
        "outputs": [{"name": "INT", "type": "INT", "linkIds": [2]}],
        "nodes": [node(7, "sg-inner", outputs=[out("INT", "INT", 2)])],
        "links": [[2, 7, 0, -20, 0, "INT"]],
        "definitions": {"subgraphs": [inner]},
    }
    nodes = [
        node(20, "sg-outer", outputs=[out("INT", "INT", 1)]),
        node(21, "PreviewAny", inputs=[inp("source", "*", 1)]),
    ]
    graph = ui(nodes, [[1, 20, 0, 21, 0, "INT"]], definitions={"subgraphs": [outer]})
    assert ui_to_api(graph, registry) == titled(
        registry,
        {
            "20:7:3": {"inputs": {"value": 5}, "class_type": "PrimitiveInt"},
            "21": {"inputs": {"source": ["20:7:3", 0]}, "class_type": "PreviewAny"},
        },
    )
    graph["nodes"][0]["mode"] = 2
    assert ui_to_api(graph, registry) == titled(registry, {"21": {"inputs": {}, "class_type": "PreviewAny"}})
    bypassed = subgraph_workflow(mode=4)
    api = ui_to_api(bypassed, registry)
    assert api["9"]["inputs"] == {"model": ["1", 0]} and "12:6" not in api
    assert api["7"]["inputs"] == {"vae": ["1", 2]}  # no input of the instance carries LATENT


def test_unknown_node_types_are_named_in_the_error(registry):
    graph = subgraph_workflow()
    graph["nodes"].append(node(30, "FancyUpscaler", widgets=[2]))
    graph["nodes"].append(node(31, "MutedMystery", mode=2))  # never emitted, so not an error
    graph["definitions"]["subgraphs"][0]["nodes"].append(node(9, "InnerMystery"))
    with pytest.raises(PromptValidationError) as info:
        ui_to_api(graph, registry)
    err = info.value
    assert err.error["type"] == "missing_node_type"
    assert "FancyUpscaler" in err.error["message"] and "InnerMystery" in err.error["message"]
    assert err.node_errors.keys() == {"30", "12:9"}
    assert err.node_errors["12:9"]["class_type"] == "InnerMystery"


def test_bad_links_are_reported_per_node(registry):
    graph = sampler_graph()
    graph["links"] = [lk for lk in graph["links"] if lk[0] != 6]  # KSampler's latent link vanished
    with pytest.raises(PromptValidationError) as info:
        ui_to_api(graph, registry)
    assert info.value.node_errors.keys() == {"3"}
    assert "link 6" in info.value.node_errors["3"]["errors"][0]["details"]
    with pytest.raises(PromptValidationError):
        ui_to_api({"nodes": [{"id": 1}]}, registry)


def test_to_api_prompt_accepts_every_form(registry):
    api = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 3}}}
    assert to_api_prompt(api, registry) == api
    assert to_api_prompt({"prompt": api, "client_id": "x"}, registry) == api
    assert to_api_prompt({"workflow": sampler_graph()}, registry) == titled(registry, SAMPLER_API)
    assert to_api_prompt(sampler_graph(), registry) == titled(registry, SAMPLER_API)
    for junk in ([], "text", {}, {"a": 1}):
        with pytest.raises(PromptValidationError):
            to_api_prompt(junk, registry)
