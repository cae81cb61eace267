"""Validation: every error kind is reported at once, per node, in ComfyUI's node_errors shape."""

from __future__ import annotations

import pytest

from executor.errors import PromptValidationError
from executor.graph import validate_prompt
from executor.input_checks import types_compatible
from tests.fake_nodes import fake_registry


@pytest.fixture
def registry():
    return fake_registry()


def errors_of(registry, prompt, **kw) -> dict:
    with pytest.raises(PromptValidationError) as info:
        validate_prompt(prompt, registry, **kw)
    return info.value.as_response()


def kinds(response: dict, node_id: str) -> list[str]:
    return [e["type"] for e in response["node_errors"][node_id]["errors"]]


def test_valid_prompt_coerces_literals_and_selects_outputs(registry):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": "7"}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Number", "inputs": {"value": 3}},
    }
    validated = validate_prompt(prompt, registry)
    assert validated.outputs == ("2",)
    assert validated.nodes["1"].inputs["value"] == 7 and validated.node_errors == {}


def test_unknown_class_type_names_every_missing_type(registry):
    response = errors_of(
        registry,
        {
            "1": {"class_type": "Nope", "inputs": {}},
            "2": {"class_type": "AlsoNope", "inputs": {}},
            "3": {"class_type": "Show", "inputs": {"value": 1}},
        },
    )
    assert response["error"]["type"] == "missing_node_type"
    assert "Nope" in response["error"]["message"] and "AlsoNope" in response["error"]["message"]
    assert set(response["node_errors"]) == {"1", "2"}


def test_no_output_node(registry):
    response = errors_of(registry, {"1": {"class_type": "Number", "inputs": {"value": 1}}})
    assert response["error"]["type"] == "prompt_no_outputs"


def test_malformed_prompt_documents(registry):
    assert errors_of(registry, [])["error"]["type"] == "invalid_prompt"
    assert errors_of(registry, {"1": {"inputs": {}}})["error"]["type"] == "invalid_prompt"


def test_all_input_errors_are_collected_at_once(registry):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 500}},  # > max
        "2": {"class_type": "Number", "inputs": {"value": -1}},  # < min
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0]}},  # b missing
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "Pick", "inputs": {"x": ["2", 0], "mode": "triple"}},  # not in list
        "6": {"class_type": "Show", "inputs": {"value": ["5", 0]}},
        "7": {"class_type": "Number", "inputs": {"value": "seven"}},  # wrong type
        "8": {"class_type": "Show", "inputs": {"value": ["7", 0]}},
    }
    response = errors_of(registry, prompt)
    assert response["error"]["type"] == "prompt_outputs_failed_validation"
    assert kinds(response, "1") == ["value_bigger_than_max"]
    assert kinds(response, "2") == ["value_smaller_than_min"]
    assert kinds(response, "3") == ["required_input_missing"]
    assert response["node_errors"]["3"]["errors"][0]["details"] == "b"
    assert kinds(response, "5") == ["value_not_in_list"]
    assert "'triple' not in ['same', 'double']" in response["node_errors"]["5"]["errors"][0]["details"]
    assert kinds(response, "7") == ["invalid_input_type"]
    assert response["node_errors"]["1"]["dependent_outputs"] == ["4"]
    assert response["node_errors"]["1"]["class_type"] == "Number"
    assert "4" not in response["node_errors"]  # downstream of an error, but no reason of its own


def test_bad_links(registry):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 1}},
        "2": {"class_type": "Add", "inputs": {"a": ["99", 0], "b": ["1", 3]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Scale", "inputs": {"x": ["1", 0, 7], "factor": 1.0}},
        "5": {"class_type": "Show", "inputs": {"value": ["4", 0]}},
    }
    response = errors_of(registry, prompt)
    errs = response["node_errors"]["2"]["errors"]
    assert [e["type"] for e in errs] == ["bad_linked_input", "bad_linked_input"]
    assert "node 99" in errs[0]["details"] and "output 3" in errs[1]["details"]
    assert kinds(response, "4") == ["bad_linked_input"]


def test_type_mismatch_on_link(registry):
    prompt = {
        "1": {"class_type": "Text", "inputs": {"text": "a"}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    response = errors_of(registry, prompt)
    assert kinds(response, "2") == ["return_type_mismatch", "return_type_mismatch"]
    assert response["node_errors"]["2"]["errors"][0]["extra_info"]["received_type"] == "STRING"


def test_type_compatibility_rules():
    assert types_compatible("IMAGE", "*") and types_compatible("*", "LATENT")
    assert types_compatible("INT,FLOAT", "FLOAT")
    assert types_compatible("IMAGE", "MASK,IMAGE")
    assert not types_compatible("IMAGE", "MASK")


def test_cycle_names_its_nodes(registry):
    prompt = {
        "1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["2", 0]}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    response = errors_of(registry, prompt)
    # one error per cycle, on its first member, naming every member once
    assert kinds(response, "1") == ["dependency_cycle"] and set(response["node_errors"]) == {"1"}
    info = response["node_errors"]["1"]["errors"][0]["extra_info"]
    assert info["cycle_nodes"] == ["1", "2"] and info["cycle_size"] == 2
    assert response["node_errors"]["1"]["dependent_outputs"] == ["3"]


def test_custom_validation(registry):
    prompt = {
        "1": {"class_type": "Even", "inputs": {"value": 3}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    response = errors_of(registry, prompt)
    assert kinds(response, "1") == ["custom_validation_failed"]
    assert "must be even, got 3" in response["node_errors"]["1"]["errors"][0]["details"]


def test_one_good_output_is_enough_and_bad_ones_are_reported(registry):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 1}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Number", "inputs": {"value": 1000}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    validated = validate_prompt(prompt, registry)
    assert validated.outputs == ("2",)
    assert validated.node_errors["3"]["dependent_outputs"] == ["4"]


def test_targets_restrict_outputs(registry):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 1}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    assert validate_prompt(prompt, registry, targets=["3"]).outputs == ("3",)


def test_optional_input_may_be_absent(registry):
    prompt = {
        "1": {"class_type": "Text", "inputs": {"text": "a"}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    assert validate_prompt(prompt, registry).outputs == ("2",)


def test_deep_chain_validates_without_recursion(registry):
    depth = 5000
    prompt = {"0": {"class_type": "Number", "inputs": {"value": 1}}}
    for i in range(1, depth):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": [str(i - 1), 0]}}
    prompt["out"] = {"class_type": "Show", "inputs": {"value": [str(depth - 1), 0]}}
    assert validate_prompt(prompt, registry).outputs == ("out",)


def test_error_lines_name_node_class_and_input(registry):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 500}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    with pytest.raises(PromptValidationError) as info:
        validate_prompt(prompt, registry)
    (line,) = info.value.lines()
    assert line.startswith("node 1 (Number) input 'value': Value 500 bigger than max of 100")


# --- hardening: nothing a client sends fails outside a node, and reports stay linear -------------


def _image_registry():
    from executor.schema import Node, NodeOutput, Schema, Typed

    class TakesImage(Node):
        schema = Schema(
            "TakesImage",
            inputs=(Typed("images", "IMAGE"), Typed("mask", "MASK", optional=True)),
            outputs=(),
            is_output_node=True,
        )

        @classmethod
        def execute(cls, images, mask=None) -> NodeOutput:
            return NodeOutput.of()

    registry = fake_registry()
    registry.register(TakesImage, source="tests")
    return registry


def test_literal_for_a_link_only_type_is_refused_in_comfy_shape():
    registry = _image_registry()
    for value in ("abc", 5, {"a": 1}):
        response = errors_of(registry, {"1": {"class_type": "TakesImage", "inputs": {"images": value}}})
        (err,) = response["node_errors"]["1"]["errors"]
        assert set(err) == {"type", "message", "details", "extra_info"}
        assert err["type"] == "invalid_input_type" and err["extra_info"]["input_name"] == "images"
        assert "takes a link" in err["details"]
    # an optional socket sent as null is the same as absent: only `images` is reported
    response = errors_of(registry, {"1": {"class_type": "TakesImage", "inputs": {"images": 1, "mask": None}}})
    assert [e["extra_info"]["input_name"] for e in response["node_errors"]["1"]["errors"]] == ["images"]


def test_undeclared_input_linking_to_a_missing_node_is_refused(registry):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 1, "ghost": ["404", 0]}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0], "extra": ["1", 7]}},
    }
    response = errors_of(registry, prompt)
    (missing,) = response["node_errors"]["1"]["errors"]
    assert missing["type"] == "bad_linked_input" and missing["extra_info"]["input_name"] == "ghost"
    assert "404" in missing["details"]
    (slot,) = response["node_errors"]["2"]["errors"]
    assert slot["type"] == "bad_linked_input" and "output index out of range" in slot["message"]
    # undeclared literals and links to real outputs stay allowed (dynamic inputs of custom nodes)
    fine = {
        "1": {"class_type": "Number", "inputs": {"value": 1, "note": "x"}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0], "also": ["1", 0]}},
    }
    assert validate_prompt(fine, registry).outputs == ("2",)


def test_keys_and_strings_that_are_not_unicode_are_refused(registry):
    bad_key = {
        "1": {"class_type": "Number", "inputs": {"value": 1, "\ud800": 2}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    response = errors_of(registry, bad_key)
    assert kinds(response, "1") == ["invalid_input_name"]
    response["node_errors"]["1"]["errors"][0]["details"].encode("utf-8")  # the report itself is encodable
    bad_id = {
        "\udc80": {"class_type": "Number", "inputs": {"value": 1}},
        "2": {"class_type": "Show", "inputs": {"value": 1}},
    }
    assert errors_of(registry, bad_id)["error"]["type"] == "invalid_prompt"
    bad_text = {
        "1": {"class_type": "Text", "inputs": {"text": "a\ud800"}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    assert kinds(errors_of(registry, bad_text), "1") == ["invalid_input_type"]


@pytest.mark.parametrize(
    "value,kind",
    [
        ("nan", "invalid_input_type"),
        ("inf", "invalid_input_type"),
        (float("nan"), "invalid_input_type"),
        (float("-inf"), "invalid_input_type"),
        (10**400, "invalid_input_type"),  # OverflowError converting to float
        ("1" * 5000, "invalid_input_type"),
        ("abc" * 100_000, "invalid_input_type"),  # the conversion error quotes it: cut too
        (11, "value_bigger_than_max"),
        (-1e300, "value_smaller_than_min"),
    ],
)
def test_float_inputs_must_be_finite_and_in_range(registry, value, kind):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 1}},
        "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": value}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    response = errors_of(registry, prompt)
    assert kinds(response, "2") == [kind]
    assert len(str(response)) < 2000  # a huge value is not echoed whole


@pytest.mark.parametrize("value", [10**400, -(10**30), "9" * 400, 1e300])
def test_int_inputs_are_range_checked_whatever_their_size(registry, value):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": value}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    response = errors_of(registry, prompt)
    assert kinds(response, "1")[0] in ("value_bigger_than_max", "value_smaller_than_min")
    assert len(str(response)) < 2000


def test_refused_huge_values_are_echoed_cut(registry):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 1}},
        "2": {"class_type": "Pick", "inputs": {"x": ["1", 0], "mode": "m" * 1_000_000}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    response = errors_of(registry, prompt)
    assert kinds(response, "2") == ["value_not_in_list"]
    assert len(str(response)) < 5000 and "more characters" in str(response)


def _ring(size: int) -> dict:
    prompt = {
        str(i): {"class_type": "Double", "inputs": {"x": [str((i + 1) % size), 0]}} for i in range(size)
    }
    prompt["out"] = {"class_type": "Show", "inputs": {"value": ["0", 0]}}
    return prompt


def test_a_2000_node_cycle_is_one_small_error_in_well_under_a_second(registry):
    import json
    import time

    prompt = _ring(2000)
    start = time.process_time()  # CPU time: wall time on a shared CI machine measures its neighbours
    response = errors_of(registry, prompt)
    elapsed = time.process_time() - start
    size = len(json.dumps(response))
    assert elapsed < 1.0 and size < 1_000_000, (elapsed, size)
    assert size < 10_000  # in fact a few hundred bytes: members are named once, then counted
    (node_id,) = response["node_errors"]
    (err,) = response["node_errors"][node_id]["errors"]
    assert err["type"] == "dependency_cycle" and err["extra_info"]["cycle_size"] == 2000
    assert len(err["extra_info"]["cycle_nodes"]) == 20 and "and 1980 more" in err["details"]
    assert response["node_errors"][node_id]["dependent_outputs"] == ["out"]


def test_two_cycles_and_a_self_link_are_three_errors(registry):
    prompt = {
        "a": {"class_type": "Add", "inputs": {"a": ["b", 0], "b": ["b", 0]}},
        "b": {"class_type": "Add", "inputs": {"a": ["a", 0], "b": ["a", 0]}},
        "c": {"class_type": "Double", "inputs": {"x": ["c", 0]}},
        "d": {"class_type": "Double", "inputs": {"x": ["e", 0]}},
        "e": {"class_type": "Add", "inputs": {"a": ["d", 0], "b": ["a", 0]}},
        "o1": {"class_type": "Show", "inputs": {"value": ["e", 0]}},
        "o2": {"class_type": "Show", "inputs": {"value": ["c", 0]}},
    }
    response = errors_of(registry, prompt)
    cycles = {n: e["errors"][0]["extra_info"]["cycle_nodes"] for n, e in response["node_errors"].items()}
    assert cycles == {"a": ["a", "b"], "c": ["c"], "d": ["d", "e"]}
    assert response["node_errors"]["a"]["dependent_outputs"] == ["o1"]
    assert response["node_errors"]["c"]["dependent_outputs"] == ["o2"]


def test_many_outputs_on_one_bad_chain_stay_linear(registry):
    import time

    size = 2000
    prompt = {str(i): {"class_type": "Double", "inputs": {"x": [str(i - 1), 0]}} for i in range(1, size)}
    prompt["0"] = {"class_type": "Number", "inputs": {"value": 1000}}  # above max: every output is bad
    prompt.update({f"o{i}": {"class_type": "Show", "inputs": {"value": [str(i), 0]}} for i in range(size)})
    start = time.process_time()  # CPU time: wall time on a shared CI machine measures its neighbours
    response = errors_of(registry, prompt)
    assert time.process_time() - start < 1.0
    assert len(response["node_errors"]["0"]["dependent_outputs"]) == 100  # capped, in prompt order
    assert response["node_errors"]["0"]["dependent_outputs"][:2] == ["o0", "o1"]


def test_signature_of_a_link_outside_the_run_is_deterministic_not_a_key_error(registry):
    from executor.cache import node_signature
    from executor.prompt_nodes import Link, PromptNode

    node = PromptNode("2", "Show", {"value": Link("1", 0), "ghost": Link("404", 0)})
    first = node_signature(node, registry["Show"], {"1": "abc"}, None)
    assert first == node_signature(node, registry["Show"], {"1": "abc"}, None)
    assert first != node_signature(node, registry["Show"], {"1": "abd"}, None)
