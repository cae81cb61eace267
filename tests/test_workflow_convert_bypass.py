"""UI-format workflow -> API prompt: muted nodes are dropped with their links, and bypassed nodes pass
an input through by slot, then exact type, then any type for wildcard consumers.
"""

from __future__ import annotations

from executor.workflow import ui_to_api
from tests import workflow_convert_helpers
from tests.workflow_convert_helpers import (
    SAMPLER_API,
    inp,
    node,
    out,
    sampler_graph,
    ui,
)

# The shared module-scoped fixture, bound here so that pytest finds it for this module's tests.
registry = workflow_convert_helpers.registry


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
