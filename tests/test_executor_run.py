"""Running prompts: caching across prompts, lazy inputs, list mapping, expansion, errors, interrupts."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from executor import events as ev
from executor.cache import OutputCache
from executor.cancel import CancelToken
from executor.errors import Interrupted, NodeExecutionError, PromptValidationError
from executor.run import Executor
from executor.schema import Node, Schema, String
from tests.fake_nodes import Slow, fake_registry


@pytest.fixture
def executor():
    return Executor(fake_registry())


def chain_prompt(a: int = 1, b: int = 2, factor: float = 2.0) -> dict:
    return {
        "1": {"class_type": "Number", "inputs": {"value": a}},
        "2": {"class_type": "Number", "inputs": {"value": b}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Scale", "inputs": {"x": ["3", 0], "factor": factor}},
        "5": {"class_type": "Show", "inputs": {"value": ["4", 0]}},
        "6": {"class_type": "Number", "inputs": {"value": 9}},
    }  # not needed by any output


def test_runs_in_dependency_order_and_reports_ui(executor):
    sink = ev.ListSink()
    result = executor.run_prompt(chain_prompt(), prompt_id="p1", sink=sink)
    assert result.outputs == {"5": {"text": ["6.0"]}}
    assert sorted(result.ran) == ["1", "2", "3", "4", "5"]  # node 6 feeds no output
    order = [e.node_id for e in sink.of_kind("executing")]
    assert order.index("3") > max(order.index("1"), order.index("2")) and order[-1] == "5"
    kinds = [e.kind for e in sink.events]
    assert (
        kinds[0] == "execution_start" and kinds[1] == "execution_cached" and kinds[-1] == "execution_success"
    )
    assert sink.of_kind("executed")[0].output == {"text": ["6.0"]}


def test_only_the_changed_widget_and_its_dependents_rerun(executor):
    executor.run_prompt(chain_prompt(), prompt_id="p1")
    result = executor.run_prompt(chain_prompt(b=5), prompt_id="p2")
    assert sorted(result.ran) == ["2", "3", "4", "5"] and result.cached == ["1"]
    assert result.outputs["5"] == {"text": ["12.0"]}
    result = executor.run_prompt(chain_prompt(b=5, factor=3.0), prompt_id="p3")
    assert sorted(result.ran) == ["4", "5"] and sorted(result.cached) == ["3"]
    sink = ev.ListSink()
    result = executor.run_prompt(chain_prompt(b=5, factor=3.0), prompt_id="p4", sink=sink)
    assert result.ran == [] and result.cached == ["5"]
    assert sink.of_kind("execution_cached")[0].nodes == ("5",)
    assert sink.of_kind("executed")[0].output == {"text": ["18.0"]}  # cached UI is re-sent


def test_identical_nodes_share_outputs_unless_not_idempotent(executor):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 4}},
        "2": {"class_type": "Number", "inputs": {"value": 4}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    result = executor.run_prompt(prompt, prompt_id="a")
    assert len([n for n in result.ran if n in ("1", "2")]) == 1  # same signature: second is a cache hit
    unique = {
        "1": {"class_type": "Unique", "inputs": {"value": 4}},
        "2": {"class_type": "Unique", "inputs": {"value": 4}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    result = executor.run_prompt(unique, prompt_id="b")
    assert {"1", "2"} <= set(result.ran)
    assert executor.run_prompt(unique, prompt_id="c").ran == []  # still cached across prompts


def test_nan_fingerprint_always_reruns(executor):
    prompt = {
        "1": {"class_type": "Always", "inputs": {"value": 1}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    executor.run_prompt(prompt, prompt_id="a")
    assert sorted(executor.run_prompt(prompt, prompt_id="b").ran) == ["1", "2"]


def test_hidden_unique_id(executor):
    prompt = {
        "7": {"class_type": "WhoAmI", "inputs": {}},
        "8": {"class_type": "Show", "inputs": {"value": ["7", 0]}},
    }
    assert executor.run_prompt(prompt, prompt_id="a").outputs["8"] == {"text": ["'7'"]}


def test_lazy_inputs_evaluate_only_the_needed_branch(executor):
    def prompt(use_a: bool) -> dict:
        return {
            "1": {"class_type": "Number", "inputs": {"value": 10}},
            "2": {"class_type": "Number", "inputs": {"value": 20}},
            "3": {"class_type": "Switch", "inputs": {"use_a": use_a, "a": ["1", 0], "b": ["2", 0]}},
            "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
        }

    result = executor.run_prompt(prompt(True), prompt_id="a")
    assert result.outputs["4"] == {"text": ["10"]} and "2" not in result.ran and "1" in result.ran
    result = executor.run_prompt(prompt(False), prompt_id="b")
    assert result.outputs["4"] == {"text": ["20"]} and result.ran.count("2") == 1 and "1" not in result.ran


def test_list_outputs_map_downstream_nodes_and_input_lists_collect(executor):
    prompt = {
        "1": {"class_type": "Range", "inputs": {"count": 4}},
        "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 2.0}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Sum", "inputs": {"values": ["1", 0]}},
        "5": {"class_type": "Show", "inputs": {"value": ["4", 0]}},
    }
    result = executor.run_prompt(prompt, prompt_id="a")
    assert result.outputs["3"] == {"text": ["0.0", "2.0", "4.0", "6.0"]}  # one call per element, UI merged
    assert result.outputs["5"] == {"text": ["6"]}  # INPUT_IS_LIST: one call with the whole list


def test_shorter_lists_repeat_their_last_element(executor):
    prompt = {
        "1": {"class_type": "Range", "inputs": {"count": 3}},
        "2": {"class_type": "Range", "inputs": {"count": 1}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    assert executor.run_prompt(prompt, prompt_id="a").outputs["4"] == {"text": ["0", "1", "2"]}


def test_node_expansion_runs_the_returned_graph(executor):
    sink = ev.ListSink()
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 21}},
        "2": {"class_type": "Double", "inputs": {"x": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    result = executor.run_prompt(prompt, prompt_id="a", sink=sink)
    assert result.outputs["3"] == {"text": ["42"]}
    expanded = [e for e in sink.of_kind("executing") if e.node_id.startswith("2.")]
    assert [e.node_id for e in expanded] == ["2.0.sum"] and expanded[0].display_node == "2"
    assert "2.0.n" in result.cached  # Number(21) inside the expansion has node 1's signature
    assert executor.run_prompt(prompt, prompt_id="b").ran == []


def test_node_exception_fails_the_prompt_and_the_next_prompt_works(executor):
    sink = ev.ListSink()
    bad = {
        "1": {"class_type": "Number", "inputs": {"value": 3}},
        "2": {"class_type": "Fail", "inputs": {"x": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    with pytest.raises(NodeExecutionError) as info:
        executor.run_prompt(bad, prompt_id="bad", sink=sink)
    assert (info.value.node_id, info.value.class_type) == ("2", "Fail")
    assert info.value.exception_type == "ValueError" and info.value.exception_message == "cannot use 3"
    assert info.value.inputs == {"x": 3}
    (error,) = sink.of_kind("execution_error")
    assert error.node_id == "2" and error.node_type == "Fail" and "ValueError" in "".join(error.traceback)
    assert "execution_success" not in [e.kind for e in sink.events]
    assert executor.run_prompt(chain_prompt(), prompt_id="good").outputs["5"] == {"text": ["6.0"]}


def test_interrupt_mid_prompt_then_run_again():
    executor = Executor(fake_registry())
    token, sink = CancelToken(), ev.ListSink()
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 1}},
        "2": {"class_type": "Slow", "inputs": {"x": ["1", 0], "steps": 3}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    Slow.started.clear()
    Slow.release.clear()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            executor.run_prompt(prompt, prompt_id="slow", sink=sink, cancel=token)
        except BaseException as exc:  # collected for the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert Slow.started.wait(timeout=5)
    token.cancel()
    Slow.release.set()
    worker.join(timeout=5)
    assert isinstance(outcome[0], Interrupted)
    (event,) = sink.of_kind("execution_interrupted")
    assert event.node_id == "2" and event.node_type == "Slow" and "1" in event.executed
    assert sink.of_kind("progress")[0].value == 1
    token.reset()
    assert executor.run_prompt(prompt, prompt_id="again", cancel=token).outputs["3"] == {"text": ["1"]}


def test_cancel_before_start_stops_between_nodes(executor):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Interrupted):
        executor.run_prompt(chain_prompt(), prompt_id="x", cancel=token)


def test_cache_is_bounded_lru():
    cache = OutputCache(max_bytes=100, sizeof=lambda outputs: outputs[0][0])
    cache.put("a", ([60],))
    cache.put("b", ([30],))
    assert cache.get("a") is not None  # a is now most recent
    cache.put("c", ([30],))  # over budget: evicts b, the least recently used
    assert "b" not in cache and "a" in cache and "c" in cache and cache.bytes == 90
    small = OutputCache(max_entries=2)
    for key in "xyz":
        small.put(key, ([0],))
    assert len(small) == 2 and "x" not in small


def test_hooks_wrap_every_executed_node():
    calls: list[tuple[str, str]] = []

    class Recording:
        def around_node(self, node_id: str, class_type: str):
            import contextlib

            calls.append((node_id, class_type))
            return contextlib.nullcontext()

    Executor(fake_registry(), hooks=Recording()).run_prompt(chain_prompt(), prompt_id="h")
    assert sorted(calls) == [("1", "Number"), ("2", "Number"), ("3", "Add"), ("4", "Scale"), ("5", "Show")]


class FileStamp(Node):
    """Like LoadImage: its hooks read the app services (a folder) to fingerprint and validate."""

    schema = Schema("FileStamp", inputs=(String("name", "a.txt"),), outputs=("STRING",))

    @classmethod
    def fingerprint(cls, name: str, services: Any = None) -> Any:
        return services["stamps"][name] if services is not None else float("nan")

    @classmethod
    def validate_inputs(cls, name: str, services: Any = None) -> bool | str:
        return services is not None and name in services["stamps"] or f"no stamp for {name!r}"

    @classmethod
    def execute(cls, name: str) -> tuple[str]:
        return (name,)


class V1AnyKwargs:
    """A V1 IS_CHANGED taking **kwargs sees the node's inputs only, never the engine's services."""

    seen: list[dict] = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        cls.seen.append(kwargs)
        return kwargs["value"]

    def run(self, value):
        return (value,)


def test_hooks_that_name_services_get_the_executors_services():
    registry = fake_registry()
    registry.register(FileStamp, source="tests")
    registry.register_v1("V1AnyKwargs", V1AnyKwargs)
    services = {"stamps": {"a.txt": 1}}
    executor = Executor(registry, services=services)
    prompt = {
        "1": {"class_type": "FileStamp", "inputs": {"name": "a.txt"}},
        "2": {"class_type": "V1AnyKwargs", "inputs": {"value": 3}},
        "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    assert sorted(executor.run_prompt(prompt, prompt_id="a").ran) == ["1", "2", "3", "4"]
    assert executor.run_prompt(prompt, prompt_id="b").ran == []  # same stamp: cached
    services["stamps"]["a.txt"] = 2
    assert sorted(executor.run_prompt(prompt, prompt_id="c").ran) == ["1", "3"]
    assert V1AnyKwargs.seen and all(seen == {"value": 3} for seen in V1AnyKwargs.seen)
    with pytest.raises(PromptValidationError, match="no stamp for 'b.txt'"):
        executor.validate(
            {
                "1": {"class_type": "FileStamp", "inputs": {"name": "b.txt"}},
                "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
            }
        )
