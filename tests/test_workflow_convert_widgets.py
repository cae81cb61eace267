"""UI-format workflow -> API prompt: widget values (control slots, named and dict forms, defaults),
converted widgets fed by primitive nodes and reroutes, broken links, and every accepted prompt form.
"""

from __future__ import annotations

import pytest

from executor.errors import PromptValidationError
from executor.workflow import to_api_prompt, ui_to_api, widget_slots
from tests import workflow_convert_helpers
from tests.workflow_convert_helpers import (
    SAMPLER_API,
    inp,
    node,
    out,
    sampler_graph,
    titled,
    ui,
)

# The shared module-scoped fixture, bound here so that pytest finds it for this module's tests.
registry = workflow_convert_helpers.registry


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
