"""Validation: every error kind is reported at once, per node, in ComfyUI's node_errors shape."""

from __future__ import annotations

import pytest

from executor.errors import PromptValidationError
from executor.graph import types_compatible, validate_prompt
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
    prompt = {"1": {"class_type": "Number", "inputs": {"value": "7"}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Number", "inputs": {"value": 3}}}
    validated = validate_prompt(prompt, registry)
    assert validated.outputs == ("2",)
    assert validated.nodes["1"].inputs["value"] == 7 and validated.node_errors == {}


def test_unknown_class_type_names_every_missing_type(registry):
    response = errors_of(registry, {"1": {"class_type": "Nope", "inputs": {}},
                                    "2": {"class_type": "AlsoNope", "inputs": {}},
                                    "3": {"class_type": "Show", "inputs": {"value": 1}}})
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
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Add", "inputs": {"a": ["99", 0], "b": ["1", 3]}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
              "4": {"class_type": "Scale", "inputs": {"x": ["1", 0, 7], "factor": 1.0}},
              "5": {"class_type": "Show", "inputs": {"value": ["4", 0]}}}
    response = errors_of(registry, prompt)
    errs = response["node_errors"]["2"]["errors"]
    assert [e["type"] for e in errs] == ["bad_linked_input", "bad_linked_input"]
    assert "node 99" in errs[0]["details"] and "output 3" in errs[1]["details"]
    assert kinds(response, "4") == ["bad_linked_input"]


def test_type_mismatch_on_link(registry):
    prompt = {"1": {"class_type": "Text", "inputs": {"text": "a"}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    response = errors_of(registry, prompt)
    assert kinds(response, "2") == ["return_type_mismatch", "return_type_mismatch"]
    assert response["node_errors"]["2"]["errors"][0]["extra_info"]["received_type"] == "STRING"


def test_type_compatibility_rules():
    assert types_compatible("IMAGE", "*") and types_compatible("*", "LATENT")
    assert types_compatible("INT,FLOAT", "FLOAT")
    assert types_compatible("IMAGE", "MASK,IMAGE")
    assert not types_compatible("IMAGE", "MASK")


def test_cycle_names_its_nodes(registry):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["2", 0]}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    response = errors_of(registry, prompt)
    # one error per cycle, on its first member, naming every member once
    assert kinds(response, "1") == ["dependency_cycle"] and set(response["node_errors"]) == {"1"}
    info = response["node_errors"]["1"]["errors"][0]["extra_info"]
    assert info["cycle_nodes"] == ["1", "2"] and info["cycle_size"] == 2
    assert response["node_errors"]["1"]["dependent_outputs"] == ["3"]


def test_custom_validation(registry):
    prompt = {"1": {"class_type": "Even", "inputs": {"value": 3}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    response = errors_of(registry, prompt)
    assert kinds(response, "1") == ["custom_validation_failed"]
    assert "must be even, got 3" in response["node_errors"]["1"]["errors"][0]["details"]


def test_one_good_output_is_enough_and_bad_ones_are_reported(registry):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Number", "inputs": {"value": 1000}},
              "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}}}
    validated = validate_prompt(prompt, registry)
    assert validated.outputs == ("2",)
    assert validated.node_errors["3"]["dependent_outputs"] == ["4"]


def test_targets_restrict_outputs(registry):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    assert validate_prompt(prompt, registry, targets=["3"]).outputs == ("3",)


def test_optional_input_may_be_absent(registry):
    prompt = {"1": {"class_type": "Text", "inputs": {"text": "a"}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    assert validate_prompt(prompt, registry).outputs == ("2",)


def test_deep_chain_validates_without_recursion(registry):
    depth = 5000
    prompt = {"0": {"class_type": "Number", "inputs": {"value": 1}}}
    for i in range(1, depth):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": [str(i - 1), 0]}}
    prompt["out"] = {"class_type": "Show", "inputs": {"value": [str(depth - 1), 0]}}
    assert validate_prompt(prompt, registry).outputs == ("out",)


def test_error_lines_name_node_class_and_input(registry):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 500}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    with pytest.raises(PromptValidationError) as info:
        validate_prompt(prompt, registry)
    (line,) = info.value.lines()
    assert line.startswith("node 1 (Number) input 'value': Value 500 bigger than max of 100")
