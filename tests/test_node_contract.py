"""The node contract: registration checks, V1/V3 adapters, object_info in ComfyUI's shape."""

from __future__ import annotations

import enum

import pytest

from executor.errors import NodeDefinitionError
from executor.object_info import node_info, object_info
from executor.registry import NodeRegistry
from executor.run import Executor
from executor.schema import Combo, Float, Int, Node, NodeOutput, Schema, String, Typed

# --- native nodes ------------------------------------------------------------------------------


class Blend(Node):
    schema = Schema(
        "Blend",
        category="image/blend",
        display_name="Blend Images",
        description="Mixes two images.",
        inputs=(
            Typed("image1", "IMAGE"),
            Typed("image2", "IMAGE", tooltip="second"),
            Float("blend_factor", 0.5, min=0.0, max=1.0, step=0.01),
            Combo("blend_mode", ("normal", "multiply")),
            Int("seed", 0, min=0, max=2**64 - 1, control_after_generate=True),
            String("note", multiline=True, optional=True),
        ),
        outputs=("IMAGE",),
    )

    @classmethod
    def execute(cls, image1, image2, blend_factor, blend_mode, seed, note=""):
        return (image1,)


def test_object_info_shape_matches_comfyui():
    info = node_info(Blend.schema)
    assert info["input"]["required"]["image1"] == ["IMAGE"]
    assert info["input"]["required"]["image2"] == ["IMAGE", {"tooltip": "second"}]
    assert info["input"]["required"]["blend_factor"] == [
        "FLOAT",
        {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01},
    ]
    assert info["input"]["required"]["blend_mode"] == [["normal", "multiply"]]
    assert info["input"]["required"]["seed"][1]["control_after_generate"] is True
    assert info["input"]["optional"] == {"note": ["STRING", {"default": "", "multiline": True}]}
    assert info["input_order"] == {
        "required": ["image1", "image2", "blend_factor", "blend_mode", "seed"],
        "optional": ["note"],
    }
    assert (info["output"], info["output_is_list"], info["output_name"]) == (["IMAGE"], [False], ["IMAGE"])
    assert (info["name"], info["display_name"], info["category"]) == ("Blend", "Blend Images", "image/blend")
    assert info["output_node"] is False and info["python_module"] == "nodes"
    assert "deprecated" not in info


def test_registration_rejects_mismatched_execute():
    class Wrong(Node):
        schema = Schema("Wrong", inputs=(Int("a"),), outputs=("INT",))

        @classmethod
        def execute(cls, b: int) -> tuple[int]:
            return (b,)

    with pytest.raises(
        NodeDefinitionError, match=r"missing parameters \['a'\].*undeclared parameters \['b'\]"
    ):
        NodeRegistry().register(Wrong)


def test_registration_rejects_wrong_return_arity():
    class TwoOut(Node):
        schema = Schema("TwoOut", inputs=(), outputs=("INT",))

        @classmethod
        def execute(cls) -> tuple[int, int]:
            return (1, 2)

    with pytest.raises(NodeDefinitionError, match="return 2 values but the schema declares 1"):
        NodeRegistry().register(TwoOut)


def test_registration_requires_defaults_for_optional_inputs():
    class NoDefault(Node):
        schema = Schema("NoDefault", inputs=(Int("a", optional=True),), outputs=("INT",))

        @classmethod
        def execute(cls, a):
            return (a,)

    with pytest.raises(NodeDefinitionError, match="optional input 'a' needs a default"):
        NodeRegistry().register(NoDefault)


def test_override_warns_naming_both_packs(caplog):
    registry = NodeRegistry()
    registry.register(Blend, source="nodes")
    registry.register(Blend, source="custom_nodes.pack")
    assert "overrides" in caplog.text and "custom_nodes.pack" in caplog.text and "nodes" in caplog.text


def test_wrong_runtime_arity_is_a_clear_node_error():
    class Liar(Node):
        schema = Schema("Liar", inputs=(), outputs=("INT",), is_output_node=True)

        @classmethod
        def execute(cls):
            return (1, 2)

    registry = NodeRegistry()
    registry.register(Liar)
    from executor.errors import NodeExecutionError

    with pytest.raises(NodeExecutionError, match="returned 2 values but declares 1 outputs"):
        Executor(registry).run_prompt({"1": {"class_type": "Liar", "inputs": {}}}, prompt_id="x")


# --- ComfyUI V1 classes ------------------------------------------------------------------------


class V1Multiply:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"value": ("INT", {"default": 2, "min": 0, "max": 10}), "mode": (["times", "plus"],)},
            "optional": {"extra": ("INT", {"forceInput": True})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("INT", "STRING")
    RETURN_NAMES = ("number", "label")
    FUNCTION = "run"
    CATEGORY = "tests"
    calls = 0

    def run(self, value, mode, unique_id, extra=0):
        type(self).calls += 1
        result = value * 3 if mode == "times" else value + 3
        return (result + extra, f"{unique_id}:{result}")


class V1Show:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True

    @classmethod
    def IS_CHANGED(cls, text):
        return "constant"

    def show(self, text):
        return {"ui": {"text": [text]}, "result": ()}


def test_v1_adapter_schema_and_execution():
    registry = NodeRegistry()
    registry.register_v1("V1Multiply", V1Multiply, display_name="Multiply (V1)", source="custom_nodes.demo")
    registry.register_v1("V1Show", V1Show)
    info = object_info(registry)["V1Multiply"]
    assert info["input"]["required"]["mode"] == [["times", "plus"]]
    assert info["input"]["optional"]["extra"] == ["INT", {"forceInput": True}]
    assert info["input"]["hidden"] == {"unique_id": "UNIQUE_ID"}
    assert info["output_name"] == ["number", "label"] and info["display_name"] == "Multiply (V1)"
    assert info["python_module"] == "custom_nodes.demo" and info["category"] == "tests"
    assert object_info(registry)["V1Show"]["output_node"] is True
    prompt = {
        "1": {"class_type": "V1Multiply", "inputs": {"value": 4, "mode": "times"}},
        "2": {"class_type": "V1Show", "inputs": {"text": ["1", 1]}},
    }
    executor = Executor(registry)
    assert executor.run_prompt(prompt, prompt_id="a").outputs == {"2": {"text": ["1:12"]}}
    calls = V1Multiply.calls
    assert executor.run_prompt(prompt, prompt_id="b").ran == []
    assert V1Multiply.calls == calls


def test_v1_adapter_rejects_broken_classes():
    class NoFunction:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "missing"

    with pytest.raises(NodeDefinitionError, match="FUNCTION names 'missing'"):
        NodeRegistry().register_v1("NoFunction", NoFunction)

    class BadNames(V1Multiply):
        RETURN_NAMES = ("only_one",)

    with pytest.raises(NodeDefinitionError, match="RETURN_NAMES has 1 entries for 2 RETURN_TYPES"):
        NodeRegistry().register_v1("BadNames", BadNames)


# --- ComfyUI V3 classes (a minimal stand-in for comfy_api.latest.io, written here) ---------------


class Hidden(str, enum.Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"


class _In:
    io_type = ""

    def __init__(self, id, optional=False, **options):
        self.id, self.optional, self.options = id, optional, options

    def get_io_type(self):
        return self.io_type

    def as_dict(self):
        return dict(self.options)


class IntIn(_In):
    io_type = "INT"


class ComboIn(_In):
    io_type = "COMBO"


class _Out:
    def __init__(self, io_type, display_name=None, is_output_list=False):
        self.io_type, self.display_name, self.is_output_list, self.tooltip = (
            io_type,
            display_name,
            is_output_list,
            None,
        )

    def get_io_type(self):
        return self.io_type


class V3Schema:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class V3Output:
    def __init__(self, *args, ui=None):
        self.args, self.ui, self.expand = args, ui, None


class V3Power:
    hidden = None

    @classmethod
    def define_schema(cls):
        return V3Schema(
            node_id="V3Power",
            display_name="Power",
            category="tests/v3",
            inputs=[IntIn("base", default=2, min=0, max=16), ComboIn("exponent", options=["2", "3"])],
            outputs=[_Out("INT", display_name="result")],
            hidden=[Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, base, exponent):
        value = base ** int(exponent)
        return V3Output(value, ui={"text": [f"{cls.hidden.unique_id}={value}"]})

    @classmethod
    def validate_inputs(cls, base):
        return True if base != 13 else "unlucky base"


def test_v3_adapter_schema_hidden_and_execution():
    registry = NodeRegistry()
    registry.register(V3Power, source="custom_nodes.v3pack")
    info = object_info(registry)["V3Power"]
    assert info["input"]["required"]["exponent"] == ["COMBO", {"options": ["2", "3"]}]
    assert info["input"]["required"]["base"] == ["INT", {"default": 2, "min": 0, "max": 16}]
    assert info["input"]["hidden"] == {
        "unique_id": "UNIQUE_ID",
        "prompt": "PROMPT",
        "extra_pnginfo": "EXTRA_PNGINFO",
    }
    assert info["output_name"] == ["result"] and info["output_node"] is True
    executor = Executor(registry)
    result = executor.run_prompt(
        {"9": {"class_type": "V3Power", "inputs": {"base": 3, "exponent": "3"}}}, prompt_id="a"
    )
    assert result.outputs == {"9": {"text": ["9=27"]}}
    assert V3Power.hidden is None  # hidden values never leak onto the class
    from executor.errors import PromptValidationError

    with pytest.raises(PromptValidationError) as info_err:
        executor.validate({"9": {"class_type": "V3Power", "inputs": {"base": 13, "exponent": "5"}}})
    errors = info_err.value.node_errors["9"]["errors"]
    assert [e["type"] for e in errors] == ["value_not_in_list"]


def test_dynamic_combo_options_come_from_services():
    class Pick(Node):
        schema = Schema(
            "PickFile",
            inputs=(Combo("name", options=lambda services: services["files"]),),
            outputs=("STRING",),
            is_output_node=True,
        )

        @classmethod
        def execute(cls, name: str) -> NodeOutput:
            return NodeOutput.of(name, ui={"text": [name]})

    registry = NodeRegistry()
    registry.register(Pick)
    services = {"files": ["a.safetensors", "b.safetensors"]}
    assert object_info(registry, services)["PickFile"]["input"]["required"]["name"] == [
        ["a.safetensors", "b.safetensors"]
    ]
    executor = Executor(registry, services=services)
    assert executor.run_prompt(
        {"1": {"class_type": "PickFile", "inputs": {"name": "b.safetensors"}}}, prompt_id="x"
    ).outputs["1"] == {"text": ["b.safetensors"]}
    services["files"].remove("b.safetensors")
    from executor.errors import PromptValidationError

    with pytest.raises(PromptValidationError):
        executor.validate({"1": {"class_type": "PickFile", "inputs": {"name": "b.safetensors"}}})
