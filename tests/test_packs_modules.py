"""ComfyUI's modules as packs see them (nodes.compat): folders, placeholders, utils, devices,
interruption, server messages, the `nodes` API and wildcard types."""

from __future__ import annotations

import inspect
import json
import math
import struct
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from executor.adapters import input_from_spec, running, v1_node_type
from executor.errors import Interrupted
from executor.registry import NodeRegistry
from executor.run import Executor
from executor.schema import NodeContext
from nodes import compat
from nodes.compat.missing import MissingComfyFeature
from nodes.runtime.channel import CHANNEL
from nodes.runtime.custom_loader import load_custom_nodes
from nodes.runtime.model_paths import ModelPaths
from nodes.runtime.registry import build_registry
from nodes.runtime.services import NodeServices
from settings import Settings


@pytest.fixture
def host(tmp_path):
    settings = Settings(
        models_dir=tmp_path / "models",
        input_dir=tmp_path / "input",
        output_dir=tmp_path / "output",
        temp_dir=tmp_path / "temp",
        user_dir=tmp_path / "user",
        custom_nodes_dir=tmp_path / "custom_nodes",
    )
    for folder in ("input", "output", "temp"):
        (tmp_path / folder).mkdir()
    services = NodeServices(settings=settings, model_paths=ModelPaths.from_models_dir(settings.models_dir))
    registry = build_registry()
    compat.install(services, registry)
    yield services
    compat.HOST.registry = None


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def ctx(stop: bool = False, progress: list | None = None) -> NodeContext:
    def report(value, maximum, preview=None):
        if progress is not None:
            progress.append((value, maximum))

    return NodeContext("7", "p", None, progress=report, should_stop=lambda: stop)


# --- folder_paths -------------------------------------------------------------------------------
def test_folder_paths_over_model_paths(host, tmp_path):
    import folder_paths

    models = tmp_path / "models"
    touch(models / "unet" / "legacy.safetensors")
    touch(models / "diffusion_models" / "sub" / "new.sft")
    touch(models / "diffusion_models" / "notes.txt")
    touch(models / "loras" / "a.safetensors")
    assert folder_paths.models_dir == str(models.resolve())
    assert folder_paths.get_folder_paths("unet") == folder_paths.get_folder_paths("diffusion_models")
    assert folder_paths.get_filename_list("unet") == ["legacy.safetensors", "sub/new.sft"]
    assert folder_paths.get_full_path("diffusion_models", "sub/new.sft") == str(
        (models / "diffusion_models" / "sub" / "new.sft").resolve()
    )
    assert (
        folder_paths.get_full_path("loras", "../unet/legacy.safetensors") is None
    )  # never leaves the folder
    assert folder_paths.get_full_path("loras", "missing.safetensors") is None
    with pytest.raises(FileNotFoundError):
        folder_paths.get_full_path_or_raise("loras", "missing.safetensors")
    extra = tmp_path / "more_loras"
    touch(extra / "b.safetensors")
    folder_paths.add_model_folder_path("loras", str(extra), is_default=True)
    assert folder_paths.get_folder_paths("loras")[0] == str(extra)
    assert folder_paths.get_filename_list("loras") == ["a.safetensors", "b.safetensors"]
    folder_paths.add_model_folder_path("luts", str(tmp_path / "luts"))  # a new kind, as essentials does
    touch(tmp_path / "luts" / "film.cube")
    assert folder_paths.get_filename_list("luts") == ["film.cube"]
    assert folder_paths.folder_names_and_paths["custom_nodes"][0] == [
        str((tmp_path / "custom_nodes").resolve())
    ]


def test_annotated_paths_and_save_image_path(host, tmp_path):
    import folder_paths

    output = str((tmp_path / "output").resolve())
    assert folder_paths.get_annotated_filepath("a.png [output]") == str(Path(output) / "a.png")
    assert folder_paths.get_annotated_filepath("sub/a.png") == str(
        (tmp_path / "input" / "sub" / "a.png").resolve()
    )
    assert folder_paths.get_annotated_filepath("a.png [temp]") == str((tmp_path / "temp" / "a.png").resolve())
    assert folder_paths.annotated_filepath("x.png") == ("x.png", None)
    with pytest.raises(ValueError):
        folder_paths.get_annotated_filepath("../../etc/passwd [output]")
    touch(Path(output) / "a.png")
    assert folder_paths.exists_annotated_filepath("a.png [output]")
    assert not folder_paths.exists_annotated_filepath("../x.png [output]")
    folder, name, counter, subfolder, prefix = folder_paths.get_save_image_path("shots/img", output, 64, 32)
    assert (folder, name, counter, subfolder, prefix) == (
        str(Path(output) / "shots"),
        "img",
        1,
        "shots",
        "shots/img",
    )
    touch(Path(folder) / "img_00007_.png")
    assert folder_paths.get_save_image_path("shots/img", output)[2] == 8
    assert folder_paths.get_save_image_path("%width%x%height%", output, 64, 32)[1] == "64x32"
    with pytest.raises(ValueError):
        folder_paths.get_save_image_path("../outside", output)
    assert (
        folder_paths.get_directory_by_type("output") == output
        and folder_paths.get_directory_by_type("x") is None
    )


# --- placeholders --------------------------------------------------------------------------------
def test_unknown_comfy_names_import_and_fail_when_used(host, tmp_path):
    pack = tmp_path / "custom_nodes" / "deep_pack"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text(
        textwrap.dedent("""
        import comfy.ldm.flux.layers
        from comfy.model_patcher import ModelPatcher
        from comfy_extras.nodes_custom_sampler import SamplerCustom
        import comfy_extras.chainner_models.model_loading as loading

        class Patched(ModelPatcher):  # subclassing at import works
            pass

        class Node:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "run"
            def run(self):
                return (comfy.ldm.flux.layers.DoubleStreamBlock(1),)

        NODE_CLASS_MAPPINGS = {"DeepNode": Node}
    """)
    )
    registry = NodeRegistry()
    report = load_custom_nodes(tmp_path / "custom_nodes", registry)
    assert report.packs[0].error is None and report.packs[0].nodes == ("DeepNode",)
    module = __import__("custom_nodes.deep_pack", fromlist=["Node"])
    with pytest.raises(MissingComfyFeature) as error:
        module.Node().run()
    assert error.value.pack == "deep_pack" and error.value.symbol == "comfy.ldm.flux.layers.DoubleStreamBlock"
    with pytest.raises(MissingComfyFeature, match="comfy.model_patcher.ModelPatcher"):
        module.Patched()
    import folder_paths

    with pytest.raises(MissingComfyFeature, match="uses folder_paths.no_such_helper,"):
        folder_paths.no_such_helper()


# --- comfy.utils -----------------------------------------------------------------------------------
def test_common_upscale_matches_torch_reference(host):
    import comfy.utils

    x = torch.rand(2, 3, 10, 16, dtype=torch.float64)
    for method in ("nearest-exact", "bilinear", "bicubic", "area"):
        expected = F.interpolate(x, size=(5, 8), mode=method)
        torch.testing.assert_close(comfy.utils.common_upscale(x, 8, 5, method, "disabled"), expected)
    # center crop to the target aspect first: 16x10 -> 10x10 columns 3..13
    cropped = comfy.utils.common_upscale(x, 4, 4, "bilinear", "center")
    torch.testing.assert_close(cropped, F.interpolate(x[..., 3:13], size=(4, 4), mode="bilinear"))
    video = torch.rand(1, 3, 2, 8, 8)
    assert comfy.utils.common_upscale(video, 4, 6, "bilinear", "disabled").shape == (1, 3, 2, 6, 4)


def test_torch_files_round_trip(host, tmp_path):
    import comfy.utils

    sd = {"a.weight": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.float16)}
    comfy.utils.save_torch_file(sd, tmp_path / "x.safetensors", metadata={"k": "v"})
    loaded, meta = comfy.utils.load_torch_file(str(tmp_path / "x.safetensors"), return_metadata=True)
    assert meta == {"k": "v"} and loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    header = json.loads(comfy.utils.safetensors_header(str(tmp_path / "x.safetensors")))
    assert header["a.weight"]["shape"] == [2, 3]
    torch.save({"state_dict": sd}, tmp_path / "x.ckpt")
    assert torch.equal(comfy.utils.load_torch_file(str(tmp_path / "x.ckpt"))["b"], sd["b"])
    assert comfy.utils.calculate_parameters(sd) == 8


def test_progress_bar_reports_through_the_running_node(host):
    import comfy.utils

    seen: list = []
    with running(ctx(progress=seen)):
        bar = comfy.utils.ProgressBar(4)
        bar.update(1)
        bar.update(2)
        bar.update_absolute(9)  # clamped to the total
    comfy.utils.ProgressBar(3).update(1)  # outside a node: counts, reports nothing
    assert seen == [(1, 4), (3, 4), (4, 4)]


# --- model_management, samplers, cli_args ----------------------------------------------------------
def test_devices_memory_and_interruption(host):
    import comfy
    import comfy.utils  # noqa: F401  (packs reach comfy.model_management through the package)

    mm = comfy.model_management
    assert mm is __import__("nodes.compat.comfy.model_management", fromlist=["x"])

    assert mm.get_torch_device().type in ("cpu", "cuda") and mm.intermediate_device() == torch.device("cpu")
    total, free = mm.get_total_memory(torch.device("cpu")), mm.get_free_memory(torch.device("cpu"))
    assert 0 < free <= total
    mm.soft_empty_cache()
    mm.unload_all_models()
    assert not mm.processing_interrupted()
    with running(ctx(stop=True)):
        assert mm.processing_interrupted()
        with pytest.raises(Interrupted):
            mm.throw_exception_if_processing_interrupted()
        with pytest.raises(mm.InterruptProcessingException):
            mm.interrupt_current_processing()
    with running(ctx(stop=False)):
        mm.throw_exception_if_processing_interrupted()


def test_sampler_lists_are_what_our_ksampler_accepts(host):
    import comfy.cli_args
    import comfy.samplers

    ksampler = host_registry_schema("KSampler")
    assert comfy.samplers.KSampler.SAMPLERS == list(ksampler.input("sampler_name").options)
    assert comfy.samplers.KSampler.SCHEDULERS == list(ksampler.input("scheduler").options)
    assert comfy.cli_args.args.preview_method == comfy.cli_args.LatentPreviewMethod.NoPreviews
    assert comfy.cli_args.args.some_flag_we_never_heard_of is None


def host_registry_schema(node_id: str):
    return compat.HOST.registry[node_id].schema


def test_node_helpers(host):
    import node_helpers

    cond = [[torch.zeros(1, 2, 3), {"guidance": 1.0, "list": [1]}]]
    out = node_helpers.conditioning_set_values(cond, {"guidance": 4.0, "list": [2]}, append=True)
    assert out[0][1] == {"guidance": 5.0, "list": [1, 2]} and cond[0][1] == {"guidance": 1.0, "list": [1]}
    rgba, rgb = torch.rand(1, 2, 2, 4), torch.rand(1, 2, 2, 3)
    dst, src = node_helpers.image_alpha_fix(rgba, rgb)
    assert src.shape[-1] == 4 and torch.equal(src[..., 3], torch.ones(1, 2, 2))


# --- server ----------------------------------------------------------------------------------------
def test_send_sync_json_binary_and_text_frames(host):
    from PIL import Image
    from server import BinaryEventTypes, PromptServer

    sent: list = []
    CHANNEL.connect(
        lambda kind, data, sid: sent.append(("json", kind, data, sid)),
        lambda frame, sid: sent.append(("bytes", frame, sid)),
        lambda: "client-1",
    )
    try:
        server = PromptServer.instance
        assert server.client_id == "client-1" and "custom_nodes_from_web" in server.supports
        server.send_sync("my.event", {"a": 1}, server.client_id)
        server.send_sync(BinaryEventTypes.UNENCODED_PREVIEW_IMAGE, ["JPEG", Image.new("RGB", (40, 20)), 10])
        server.send_progress_text("step 3", "12")
    finally:
        CHANNEL.disconnect()
    assert sent[0] == ("json", "my.event", {"a": 1}, "client-1")
    kind, frame, sid = sent[1]
    assert sid is None and struct.unpack(">II", frame[:8]) == (1, 1)
    import io

    with Image.open(io.BytesIO(frame[8:])) as image:
        assert image.format == "JPEG" and image.size == (10, 5)  # fitted into max_size
    _, text, sid = sent[2]
    assert sid == "client-1" and text == struct.pack(">II", 3, 2) + b"12" + b"step 3"


# --- the nodes module ------------------------------------------------------------------------------
def test_nodes_module_serves_comfyui_api(host, tmp_path):
    import nodes

    assert nodes.MAX_RESOLUTION == 16384
    mappings = nodes.NODE_CLASS_MAPPINGS
    assert {
        "SaveImage",
        "KSampler",
        "CLIPTextEncode",
        "VAEEncode",
        "CheckpointLoaderSimple",
    } <= mappings.keys()
    assert list(inspect.signature(nodes.CLIPTextEncode.encode).parameters) == ["self", "clip", "text"]
    assert (
        nodes.CLIPTextEncode.RETURN_TYPES == ("CONDITIONING",) and nodes.CLIPTextEncode.FUNCTION == "encode"
    )
    assert list(nodes.VAEEncode.INPUT_TYPES()["required"]) == ["pixels", "vae"]
    assert nodes.LoraLoader.FUNCTION == "load_lora"  # subclassable even before a LoRA node exists
    # Calling a built-in the ComfyUI way runs ours.
    (latent,) = nodes.EmptyLatentImage().generate(64, 32, 2)
    (expected,) = (
        host_registry_type("EmptyLatentImage")
        .invoke(ctx(), {"width": 64, "height": 32, "batch_size": 2})
        .values
    )
    assert torch.equal(latent["samples"], expected["samples"])
    image = torch.rand(1, 6, 8, 3)
    (scaled,) = nodes.ImageScale().upscale(image, "bilinear", 4, 3, "disabled")
    torch.testing.assert_close(
        scaled, F.interpolate(image.movedim(-1, 1), size=(3, 4), mode="bilinear").movedim(1, -1)
    )
    with pytest.raises(AttributeError):
        nodes.NoSuchNodeAnywhere  # noqa: B018


def host_registry_type(node_id: str):
    return compat.HOST.registry[node_id]


def test_save_image_subclass_honours_its_folder_and_prefix(host, tmp_path):
    import nodes

    class Saver(nodes.SaveImage):
        def __init__(self):
            self.output_dir = str(tmp_path / "elsewhere")
            self.type = "output"
            self.prefix_append = "_x"
            self.compress_level = 1

    result = Saver().save_images(
        torch.zeros(2, 4, 4, 3), "shot", prompt={"1": {}}, extra_pnginfo={"workflow": {}}
    )
    names = [i["filename"] for i in result["ui"]["images"]]
    assert names == ["shot_x_00001_.png", "shot_x_00002_.png"]
    assert all((tmp_path / "elsewhere" / n).is_file() for n in names)
    preview = nodes.PreviewImage().save_images(torch.zeros(1, 4, 4, 3))["ui"]["images"][0]
    assert preview["type"] == "temp" and "_temp_" in preview["filename"]
    node_type = v1_node_type("Saver", Saver, source="custom_nodes.x")  # registers like any pack node
    assert node_type.schema.is_output_node and [h.kind for h in node_type.schema.hidden] == [
        "PROMPT",
        "EXTRA_PNGINFO",
    ]


# --- wildcard types --------------------------------------------------------------------------------
class NeverUnequal(str):
    def __ne__(self, other):
        return False


class AlwaysEqual(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


class Plain(str):
    pass


@pytest.mark.parametrize(
    "kind", ["*", NeverUnequal("*"), NeverUnequal("any"), AlwaysEqual("*"), AlwaysEqual("")]
)
def test_match_anything_types_of_every_form(kind):
    assert input_from_spec("x", (kind, {})).type == "*"
    assert input_from_spec("x", (kind,), optional=True).type == "*"


def test_ordinary_types_are_kept():
    assert input_from_spec("x", (Plain("IMAGE"),)).type == "IMAGE"
    assert input_from_spec("x", (["a", "b"],)).type == "COMBO"
    assert input_from_spec("x", ("INT", {"default": 3})).default == 3


def test_wildcard_outputs_link_to_anything():
    class Source:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        RETURN_TYPES = (AlwaysEqual("*"),)
        FUNCTION = "run"

        def run(self):
            return (torch.ones(1, 2, 2, 3),)

    class Sink:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"image": ("IMAGE",), "anything": (NeverUnequal("*"),)}}

        RETURN_TYPES = ("STRING",)
        FUNCTION = "run"
        OUTPUT_NODE = True

        def run(self, image, anything):
            return {"ui": {"text": [f"{tuple(image.shape)} {type(anything).__name__}"]}, "result": ("",)}

    registry = NodeRegistry()
    registry.register_v1("Source", Source)
    registry.register_v1("Sink", Sink)
    prompt = {
        "1": {"class_type": "Source", "inputs": {}},
        "2": {"class_type": "Sink", "inputs": {"image": ["1", 0], "anything": ["1", 0]}},
    }
    assert Executor(registry).run_prompt(prompt, prompt_id="w").outputs == {
        "2": {"text": ["(1, 2, 2, 3) Tensor"]}
    }


# --- execution graph helpers -----------------------------------------------------------------------
def test_graph_builder_expansion_and_execution_blocker(host):
    from comfy_execution.graph import ExecutionBlocker
    from comfy_execution.graph_utils import GraphBuilder

    class Double:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT", {"default": 1})}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def run(self, value):
            return (value * 2,)

    class Expand:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT", {"default": 1})}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def run(self, value):
            graph = GraphBuilder()
            first = graph.node("Double", value=value)
            second = graph.node("Double", value=first.out(0))
            return {"result": (second.out(0),), "expand": graph.finalize()}

    class Gate:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT", {"default": 1}), "open": ("BOOLEAN", {"default": True})}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def run(self, value, open):
            return (value if open else ExecutionBlocker(None),)

    class Show:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT", {"forceInput": True})}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        def run(self, value):
            return {"ui": {"value": [value]}}

    registry = NodeRegistry()
    for cls in (Double, Expand, Gate, Show):
        registry.register_v1(cls.__name__, cls)
    executor = Executor(registry)
    expand = {
        "1": {"class_type": "Expand", "inputs": {"value": 3}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    assert executor.run_prompt(expand, prompt_id="e").outputs == {"2": {"value": [12]}}
    registry.register(host_registry_type("PreviewAny").origin, source="nodes")  # a native node
    for is_open, expected in ((True, {"2": {"value": [5]}, "3": {"text": ["5"]}}), (False, {})):
        gated = {
            "1": {"class_type": "Gate", "inputs": {"value": 5, "open": is_open}},
            "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        }
        assert executor.run_prompt(gated, prompt_id=f"g{is_open}").outputs == expected


def test_v3_api_shapes():
    from comfy_api.latest import io

    assert io.Int.Input("n", default=2, min=0, max=9, step=1).as_dict() == {
        "default": 2,
        "min": 0,
        "max": 9,
        "step": 1,
    }
    assert io.Combo.Input("m", options=["a", "b"], default="b").as_dict() == {
        "default": "b",
        "options": ["a", "b"],
    }
    assert io.String.Input("t", multiline=True).as_dict() == {"multiline": True}
    assert io.Custom("MY_TYPE").Input("x").get_io_type() == "MY_TYPE"
    assert io.AnyType.Output().get_io_type() == "*"
    assert io.Hidden.unique_id.value == "UNIQUE_ID"
    assert math.isclose(io.Float.Input("f", default=0.5).as_dict()["default"], 0.5)
