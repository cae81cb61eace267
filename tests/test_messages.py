"""ComfyUI message shapes from one module; the run recorder keeps the very messages the socket sends;
Executor.execute takes the validated prompt and the raw prompt it hands to PROMPT hidden inputs."""

from __future__ import annotations

from typing import Any

import pytest

from executor import events as ev
from executor import messages
from executor.errors import NodeExecutionError
from executor.recorder import RunRecorder
from executor.run import Executor
from executor.schema import Hidden, Node, NodeOutput, Schema
from tests.fake_nodes import fake_registry

ERROR_FIELDS = [
    "prompt_id",
    "node_id",
    "node_type",
    "executed",
    "exception_message",
    "exception_type",
    "traceback",
    "current_inputs",
    "current_outputs",
    "timestamp",
]


def test_recorder_fail_builds_error_status():
    recorder = RunRecorder("p")
    kind, data = recorder.fail("PromptValidationError", "bad input")
    assert kind == "execution_error"
    assert recorder.status()["status_str"] == "error" and not recorder.status()["completed"]
    assert recorder.status()["messages"] == [["execution_error", data]]
    assert data["node_id"] is None and data["exception_message"] == "bad input"


def test_execution_error_has_one_shape_inside_and_outside_nodes():
    recorder = RunRecorder("p")
    with pytest.raises(NodeExecutionError):
        Executor(fake_registry()).run_prompt(
            {
                "1": {"class_type": "Number", "inputs": {"value": 7}},
                "2": {"class_type": "Fail", "inputs": {"x": ["1", 0]}},
                "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
            },
            prompt_id="p",
            sink=recorder,
        )
    kind, in_node = recorder.messages[-1]
    _, outside = RunRecorder("p").fail("RuntimeError", "engine bug", ["trace\n"])
    assert kind == "execution_error"
    assert list(in_node) == list(outside) == ERROR_FIELDS
    assert in_node["node_id"] == "2" and in_node["node_type"] == "Fail"
    assert in_node["current_inputs"] == {"x": 7} and in_node["executed"] == ["1"]
    assert outside["traceback"] == ["trace\n"] and outside["current_inputs"] == {}


def test_lifecycle_messages_match_comfyui_fields():
    assert messages.lifecycle(ev.ExecutionStart("p"), 5) == (
        "execution_start",
        {"prompt_id": "p", "timestamp": 5},
    )
    assert messages.lifecycle(ev.ExecutionCached("p", ("1", "2")), 6) == (
        "execution_cached",
        {"nodes": ["1", "2"], "prompt_id": "p", "timestamp": 6},
    )
    assert messages.lifecycle(ev.ExecutionInterrupted("p", "4", "Slow", ("1",)), 7) == (
        "execution_interrupted",
        {"prompt_id": "p", "node_id": "4", "node_type": "Slow", "executed": ["1"], "timestamp": 7},
    )
    assert messages.lifecycle(ev.Executing("p", "1"), 8) is None  # node messages are not kept in history
    assert messages.executing("p", "3", None) == (
        "executing",
        {"node": "3", "display_node": "3", "prompt_id": "p"},
    )
    assert messages.executing_done("p") == ("executing", {"node": None, "prompt_id": "p"})
    assert messages.status(2, "sid") == (
        "status",
        {"status": {"exec_info": {"queue_remaining": 2}}, "sid": "sid"},
    )


def test_format_value_keeps_error_reports_short_and_json_safe():
    assert messages.format_value("x" * 300) == "x" * 200 + "..."
    assert messages.format_value(list(range(20))) == [0, 1, 2, 3, 4, 5, 6, 7, "..."]
    assert messages.format_value(object()) == "<object>"
    assert messages.exception_type_name(ValueError()) == "ValueError"
    assert messages.exception_type_name(
        NodeExecutionError("1", "X", inputs={}, exception_type="E", exception_message="m", traceback=[])
    ) == ("executor.errors.NodeExecutionError")


class SeesPrompt(Node):
    schema = Schema(
        "SeesPrompt", inputs=(), outputs=(), is_output_node=True, hidden=(Hidden("prompt", "PROMPT"),)
    )

    @classmethod
    def execute(cls, prompt: Any) -> NodeOutput:
        return NodeOutput.of(ui={"prompt": [prompt]})


def test_execute_hands_the_raw_prompt_to_prompt_hidden_inputs():
    registry = fake_registry()
    registry.register(SeesPrompt, source="tests")
    executor = Executor(registry)
    raw = {"9": {"class_type": "SeesPrompt", "inputs": {}}}
    validated = executor.validate(raw)
    result = executor.execute(validated, raw, prompt_id="p")
    assert result.outputs["9"]["prompt"] == [raw]


def test_progress_state_text_is_the_message_the_frontend_parses():
    import json

    nodes = {
        "1": messages.node_state("p", "1", "finished", 1, 1, None),
        'odd "id" é': messages.node_state("p", 'odd "id" é', "running", 0.5, 4, "9"),
    }
    entries = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in nodes.items()]
    kind, data = messages.progress_state("p", nodes)
    text = messages.progress_state_text("p", entries)
    assert text == json.dumps({"type": kind, "data": data})
    assert list(json.loads(text)["data"]["nodes"]) == list(nodes)  # start order kept
    assert json.loads(messages.progress_state_text("p", [])) == {
        "type": "progress_state",
        "data": {"prompt_id": "p", "nodes": {}},
    }


@pytest.mark.parametrize(
    ("node_id", "display"),
    [("5", None), ("5", "5"), ("12:3", "12"), ('q"uo\\te é', None), ("a\nb\x7f", "\x00")],
)
def test_per_node_texts_are_the_json_of_their_messages(node_id, display):
    import json

    kind, data = messages.executing("p-1", node_id, display)
    assert messages.executing_text("p-1", node_id, display) == json.dumps({"type": kind, "data": data})
    for value, maximum in ((0, 1), (2.5, 7), (float("nan"), 1e300)):
        entry = messages.node_state("p-1", node_id, "running", value, maximum, display)
        assert messages.node_state_text(node_id, entry) == f"{json.dumps(node_id)}: {json.dumps(entry)}"
