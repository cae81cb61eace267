"""UI-format -> API conversion on real files: ComfyUI's workflow templates (comfyui-workflow-templates-json).

Loaders and sampling nodes the registry lacks are schema-only stand-ins with ComfyUI's input lists.
"""

from __future__ import annotations

import copy
import importlib.resources
import json

import pytest

from executor.workflow import ui_to_api, widget_slots
from nodes.runtime.registry import build_registry
from tests.comfy_core_schemas import add_missing_core_nodes


@pytest.fixture(scope="module")
def registry():
    reg = build_registry()
    add_missing_core_nodes(reg)
    return reg


TEMPLATES = importlib.resources.files("comfyui_workflow_templates_json") / "templates"


def template(name: str) -> dict:
    return json.loads((TEMPLATES / name).read_text(encoding="utf-8"))


def check_links_preserved(workflow: dict, api: dict) -> int:
    """Every root link between two emitted nodes appears in the API prompt as [origin, slot]."""
    by_id = {n["id"]: n for n in workflow["nodes"]}
    checked = 0
    for _, origin, slot, target, _, _ in workflow["links"]:
        o, t = by_id[origin], by_id[target]
        if str(origin) in api and str(target) in api and o["mode"] == 0 and t["mode"] == 0:
            names = [
                i.get("widget", {}).get("name") or i["name"] for i in t["inputs"] if i.get("link") is not None
            ]
            assert [str(origin), slot] in [api[str(target)]["inputs"].get(n) for n in names]
            checked += 1
    return checked


def test_flux_schnell_template(registry):
    workflow = template("flux_schnell.json")
    api = ui_to_api(workflow, registry)
    emitted = {str(n["id"]): n for n in workflow["nodes"] if n["type"] not in ("Note", "MarkdownNote")}
    assert api.keys() == emitted.keys()
    assert check_links_preserved(workflow, api) == len(workflow["links"])
    sampler = next(n for n in workflow["nodes"] if n["type"] == "KSampler")
    seed, _control, steps, cfg, sampler_name, scheduler, denoise = sampler["widgets_values"]
    assert {k: v for k, v in api[str(sampler["id"])]["inputs"].items() if not isinstance(v, list)} == {
        "seed": seed,
        "steps": steps,
        "cfg": cfg,
        "sampler_name": sampler_name,
        "scheduler": scheduler,
        "denoise": denoise,
    }


def test_flux_dev_subgraph_template(registry):
    workflow = template("flux_dev_checkpoint_example.json")
    (definition,) = workflow["definitions"]["subgraphs"]
    (instance,) = [n for n in workflow["nodes"] if n["type"] == definition["id"]]
    api = ui_to_api(workflow, registry)
    inner = {f"{instance['id']}:{n['id']}": n for n in definition["nodes"]}
    assert api.keys() == inner.keys() | {"9"}
    for exec_id, n in inner.items():
        assert api[exec_id]["class_type"] == n["type"]
        widgets = [s.name if s else None for s in widget_slots(registry[n["type"]].describe())]
        for i, name in enumerate(widgets):
            if name is not None:
                assert api[exec_id]["inputs"][name] == n["widgets_values"][i], (exec_id, name)
    save = api["9"]["inputs"]["images"]
    assert api[save[0]]["class_type"] == "VAEDecode" and save[0].startswith(f"{instance['id']}:")


def test_flux_redux_template_pushes_primitive_values(registry):
    workflow = template("flux_redux_model_example.json")
    api = ui_to_api(workflow, registry)
    primitives = {
        n["outputs"][0]["widget"]["name"]: n["widgets_values"][0]
        for n in workflow["nodes"]
        if n["type"] == "PrimitiveNode"
    }
    for n in workflow["nodes"]:
        if n["type"] in ("ModelSamplingFlux", "EmptySD3LatentImage"):
            for name, value in primitives.items():
                assert api[str(n["id"])]["inputs"][name] == value
    assert not any(v["class_type"] in ("PrimitiveNode", "Note", "MarkdownNote") for v in api.values())
    assert check_links_preserved(workflow, api) > 20


def test_positional_widgets_match_the_frontends_named_values_across_all_templates(registry):
    """The frontend writes `widgets_values_named` next to the positional list: our slot layout must agree."""
    checked = 0
    for path in TEMPLATES.iterdir():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or "nodes" not in data:
            continue
        subgraphs = (data.get("definitions") or {}).get("subgraphs") or []
        for n in data["nodes"] + [m for s in subgraphs for m in s["nodes"]]:
            named, values = n.get("widgets_values_named"), n.get("widgets_values")
            if n["type"] not in registry or not isinstance(named, dict) or not isinstance(values, list):
                continue
            slots = widget_slots(registry[n["type"]].describe())
            expected = {s.name: named[s.name] for s in slots if s is not None and s.name in named}
            if any(v not in values for v in expected.values()):
                continue  # the two lists disagree in the file itself (a value edited in one only)
            stripped = copy.deepcopy(n)
            del stripped["widgets_values_named"]
            stripped["inputs"], stripped["mode"] = [], 0
            api = ui_to_api({"nodes": [stripped], "links": []}, registry)
            got = {k: v for k, v in api[str(n["id"])]["inputs"].items() if k in expected}
            assert got == expected, (path.name, n["type"], values, named)
            checked += 1
    assert checked > 500


def test_default_flux_workflow_converts_to_a_well_typed_text_to_image_prompt(registry):
    """workflows/default_flux.json (what a first-time user sees) wires FLUX txt2img with matching types."""
    from pathlib import Path

    from executor.input_checks import types_compatible

    workflow = json.loads(
        (Path(__file__).resolve().parent.parent / "workflows/default_flux.json").read_text()
    )
    api = ui_to_api(workflow, registry)
    assert sorted(n["class_type"] for n in api.values()) == sorted(
        [
            "UNETLoader",
            "DualCLIPLoader",
            "VAELoader",
            "CLIPTextEncode",
            "FluxGuidance",
            "ConditioningZeroOut",
            "EmptySD3LatentImage",
            "KSampler",
            "VAEDecode",
            "SaveImage",
        ]
    )
    for node_id, entry in api.items():
        schema = registry[entry["class_type"]].describe()
        for spec in schema.inputs:
            if not spec.optional:
                assert spec.name in entry["inputs"], (node_id, spec.name)
        for name, value in entry["inputs"].items():
            if isinstance(value, list):
                source = registry[api[value[0]]["class_type"]].describe()
                assert types_compatible(source.outputs[value[1]].type, schema.input(name).type), (
                    node_id,
                    name,
                )
    by_type = {e["class_type"]: e for e in api.values()}
    assert by_type["DualCLIPLoader"]["inputs"]["type"] == "flux"
    assert by_type["KSampler"]["inputs"]["cfg"] == 1.0  # FLUX dev is guidance-distilled: guidance, not CFG
    assert by_type["FluxGuidance"]["inputs"]["guidance"] == 3.5


def test_every_template_converts_or_names_its_missing_node_types(registry):
    """644 real files (subgraphs, bypassed nodes, reroutes...): never a crash or a bad-link error."""
    from executor.errors import PromptValidationError

    converted = missing = 0
    for path in TEMPLATES.iterdir():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or "nodes" not in data:
            continue
        try:
            api = ui_to_api(data, registry)
        except PromptValidationError as exc:
            assert exc.error["type"] == "missing_node_type", (path.name, str(exc))
            assert exc.node_errors and all(e["class_type"] not in registry for e in exc.node_errors.values())
            missing += 1
            continue
        for entry in api.values():  # every link points at an emitted node
            assert all(v[0] in api for v in entry["inputs"].values() if isinstance(v, list)), path.name
        converted += 1
    assert converted >= 10 and converted + missing > 600
