"""UI-format workflow -> API prompt: subgraphs flattened to colon ids (promoted widgets, proxy widgets,
nesting, muted and bypassed instances), and unknown node types named in the error.
"""

from __future__ import annotations

import pytest

from executor.errors import PromptValidationError
from executor.workflow import ui_to_api
from tests import workflow_convert_helpers
from tests.workflow_convert_helpers import (
    inp,
    node,
    out,
    titled,
    ui,
)

# The shared module-scoped fixture, bound here so that pytest finds it for this module's tests.
registry = workflow_convert_helpers.registry


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
