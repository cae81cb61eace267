"""Training nodes: ComfyUI's names/inputs/defaults, dataset folders, a full training graph on the tiny
demo models (progress, live loss, validation images), saved LoRA keys against an independent key map,
LoraModelLoader patches against the trained adapters, dataset caches, cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

from executor import events as ev
from executor.cancel import CancelToken
from executor.errors import Interrupted
from nodes.runtime.channel import CHANNEL
from settings import Settings

SIZE = 32  # images 32x32 -> latents 4x4


def make_dataset_folder(root: Path) -> Path:
    """input/motif: 3 images of one motif (a red square on blue) with captions + a kohya repeat folder."""
    folder = root / "motif"
    (folder / "2_extra").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, where in enumerate((folder, folder, folder / "2_extra")):
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        img[..., 2] = 200
        img[8:24, 8:24] = (220, 30, 30)
        img = np.clip(img + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(where / f"img{i}.png")
        if i != 1:
            (where / f"img{i}.txt").write_text(f"  a red square, sample {i}\n")
    return folder


@pytest.fixture(scope="module")
def app(demo_models_dir, tmp_path_factory):
    import main

    root = tmp_path_factory.mktemp("training_app")
    (root / "input").mkdir()
    make_dataset_folder(root / "input")
    settings = Settings(
        models_dir=demo_models_dir,
        input_dir=root / "input",
        output_dir=root / "output",
        temp_dir=root / "temp",
    )
    return main.build_app(settings, load_packs=False)


def test_train_lora_node_has_comfyuis_inputs_and_outputs(app):
    schema = app.registry["TrainLoraNode"].schema
    names = [i.name for i in schema.inputs if not i.optional]
    assert names == ["model", "latents", "positive", "batch_size", "grad_accumulation_steps", "steps",
                     "learning_rate", "rank", "optimizer", "loss_function", "seed", "training_dtype", "lora_dtype",
                     "quantized_backward", "algorithm", "gradient_checkpointing", "checkpoint_depth", "offloading",
                     "existing_lora", "bucket_mode", "bypass_mode"]  # fmt: skip
    defaults = {i.name: i.default for i in schema.inputs}
    assert (defaults["batch_size"], defaults["steps"], defaults["learning_rate"], defaults["rank"]) == (
        1,
        16,
        5e-4,
        8,
    )
    assert (defaults["optimizer"], defaults["loss_function"], defaults["existing_lora"]) == (
        "AdamW",
        "MSE",
        "[None]",
    )
    assert defaults["gradient_checkpointing"] is True and schema.is_input_list
    assert [(o.type, o.name) for o in schema.outputs] == [
        ("LORA_MODEL", "lora"),
        ("LOSS_MAP", "loss_map"),
        ("INT", "steps"),
    ]
    loader = app.registry["LoraModelLoader"].schema
    assert [i.name for i in loader.inputs] == ["model", "lora", "strength_model", "bypass"]
    assert [o.type for o in loader.outputs] == ["MODEL"]
    save = app.registry["SaveLoRA"].schema
    assert [i.name for i in save.inputs] == ["lora", "prefix", "steps"] and save.is_output_node
    assert save.input("prefix").default == "loras/ComfyUI_trained_lora"
    graph = app.registry["LossGraphNode"].schema
    assert [i.name for i in graph.inputs] == ["loss", "filename_prefix"] and graph.input(
        "filename_prefix"
    ).default == "loss_graph"
    for node_id in (
        "LoadImageDataSetFromFolder",
        "LoadImageTextDataSetFromFolder",
        "ResolutionBucket",
        "MakeTrainingDataset",
        "SaveTrainingDataset",
        "LoadTrainingDataset",
        "ResizeImagesByShorterEdge",
        "CenterCropImages",
        "RandomCropImages",
        "AddTextPrefix",
        "ShuffleImageTextDataset",
    ):
        assert node_id in app.registry, node_id
    assert app.registry["SaveTrainingDataset"].schema.input("shard_size").default == 1000


class Capture:
    """An EventSink keeping progress events."""

    def __init__(self) -> None:
        self.progress: list[ev.Progress] = []

    def emit(self, event: Any) -> None:
        if isinstance(event, ev.Progress):
            self.progress.append(event)


def training_prompt(steps: int = 6, **train: Any) -> dict[str, Any]:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
              "clip_name2": "t5xxl_fp16.safetensors", "type": "flux", "device": "default"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "LoadImageTextDataSetFromFolder", "inputs": {"folder": "motif"}},
        "5": {"class_type": "MakeTrainingDataset", "inputs": {"images": ["4", 0], "vae": ["3", 0], "clip": ["2", 0],
              "texts": ["4", 1]}},
        "6": {"class_type": "FluxLoraTrainingOptions", "inputs": {
            "guidance": 1.0, "timestep_sampling": "flux_shift", "discrete_flow_shift": 3.1582, "sigmoid_scale": 1.0,
            "loss_target": "velocity", "lr_schedule": "constant", "warmup_steps": 2, "max_grad_norm": 1.0,
            "ema_decay": 0.0, "caption_dropout": 0.0, "network_alpha": 4.0, "targets": "all_linear",
            "eval_every": 2, "eval_holdout": 1, "validate_every": 3, "validation_steps": 2, "validation_width": 32,
            "validation_height": 32, "validation_seed": 0, "save_every": 0,
            "checkpoint_prefix": "loras/ckpt", "key_style": "comfyui"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["2", 0]}},
        "8": {"class_type": "TrainLoraNode", "inputs": {
            "model": ["1", 0], "latents": ["5", 0], "positive": ["5", 1], "batch_size": 2,
            "grad_accumulation_steps": 1, "steps": steps, "learning_rate": 1e-2, "rank": 4, "optimizer": "AdamW",
            "loss_function": "MSE", "seed": 0, "training_dtype": "bf16", "lora_dtype": "fp32",
            "quantized_backward": False, "algorithm": "LoRA", "gradient_checkpointing": False, "checkpoint_depth": 1,
            "offloading": False, "existing_lora": "[None]", "bucket_mode": False, "bypass_mode": False,
            "options": ["6", 0], "vae": ["3", 0], "validation_conditioning": ["7", 0], **train}},
        "9": {"class_type": "SaveLoRA", "inputs": {"lora": ["8", 0], "prefix": "loras/motif", "steps": ["8", 2]}},
        "10": {"class_type": "LossGraphNode", "inputs": {"loss": ["8", 1], "filename_prefix": "loss_graph"}},
    }  # fmt: skip


def comfyui_key_map(model: torch.nn.Module) -> dict[str, str]:
    """ComfyUI's generic FLUX map (flux-formats §7.2): `diffusion_model.<module>` -> `<module>.weight`,
    and the kohya form `lora_unet_<module with _>`, built from the model's own keys."""
    out = {}
    for key in model.state_dict():
        if key.endswith(".weight"):
            module = key[: -len(".weight")]
            out[f"diffusion_model.{module}"] = key
            out["lora_unet_" + module.replace(".", "_")] = key
    return out


SUFFIXES = (".lora_up.weight", ".lora_down.weight", ".alpha")


def test_training_graph_runs_saves_and_streams(app, tmp_path):
    messages: list[tuple[str, dict[str, Any]]] = []
    CHANNEL.connect(
        lambda kind, data, sid: messages.append((kind, dict(data))), lambda b, sid: None, lambda: None
    )
    sink = Capture()
    try:
        result = app.executor.run_prompt(training_prompt(), prompt_id="train", sink=sink)
    finally:
        CHANNEL.disconnect()
    out = Path(app.settings.output_dir)
    (saved,) = sorted((out / "loras").glob("motif_6_steps_*_.safetensors"))
    assert saved.name == "motif_6_steps_00001_.safetensors"
    assert (out / "loras" / "motif_6_steps_00001_.state.safetensors").is_file()
    # every key maps onto a weight of the model through an independent ComfyUI-style key map
    from models.tiny import tiny_flux

    model = tiny_flux()
    key_map = comfyui_key_map(model)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    with safe_open(str(saved), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        tensors = {k: f.get_tensor(k) for k in keys}
    unmapped = [k for k in keys if not (k.endswith(SUFFIXES) and k[: -len(next(s for s in SUFFIXES if k.endswith(s)))]
                                        in key_map)]  # fmt: skip
    assert unmapped == []
    modules = {k.rsplit(".", 1)[0] for k in keys if k.endswith(".alpha")}
    assert len(modules) == 2 * 10 + 2 * 3  # every Linear of 2 double + 2 single blocks
    for prefix in modules:
        up, down = tensors[f"{prefix}.lora_up.weight"], tensors[f"{prefix}.lora_down.weight"]
        assert (up.shape[0], down.shape[1]) == tuple(shapes[key_map[prefix]])
        assert float(tensors[f"{prefix}.alpha"]) == 4.0 and down.shape[0] == 4
    settings = json.loads(meta["fluxloom.training"])
    assert (
        settings["guidance"] == 1.0
        and settings["timestep_sampling"] == "flux_shift"
        and settings["rank"] == 4
    )
    assert meta["ss_network_dim"] == "4" and meta["ss_steps"] == "6"
    # progress per step, live loss messages, validation previews, loss graph image
    steps = [p for p in sink.progress if p.node_id == "8"]
    assert [p.value for p in steps if p.preview is None] == list(range(1, 7))
    assert len([p for p in steps if p.preview is not None]) == 2  # steps 3 and 6
    live = [d for kind, d in messages if kind == "fluxloom.training"]
    assert [d["step"] for d in live] == list(range(1, 7))
    assert all(np.isfinite(d["loss"]) for d in live) and live[1]["eval_loss"] is not None
    assert result.outputs["10"]["images"][0]["type"] == "temp"
    assert len(result.outputs["8"]["images"]) == 2


def test_trained_lora_loads_through_the_lora_loader(app):
    load = pytest.importorskip("models.lora.load")
    targets = pytest.importorskip("models.lora.targets")
    from models.tiny import tiny_flux

    (saved,) = sorted((Path(app.settings.output_dir) / "loras").glob("motif_6_steps_*_.safetensors"))
    with safe_open(str(saved), framework="pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    converted = load.convert_lora(sd, targets.LoraTargets.of(tiny_flux()))
    assert converted.unmapped == () and len(converted.model) == 26


def test_lora_model_loader_patches_equal_the_trained_adapters():
    from models.lora.math import patched_weight
    from models.patches import ModelHandle
    from models.tiny import TINY_FLUX_DEV, tiny_flux
    from models.training import Sample, TrainConfig, TrainingData, train
    from nodes.training.lora_io import LoraModelLoader

    model = tiny_flux()
    gen = torch.Generator().manual_seed(0)
    sample = Sample(torch.randn(16, 4, 4, generator=gen),                     torch.randn(3, TINY_FLUX_DEV.context_in_dim, generator=gen),
                    torch.randn(TINY_FLUX_DEV.vec_in_dim, generator=gen))  # fmt: skip
    for algorithm in ("LoRA", "LoHa", "LoKr"):
        result = train(
            model,
            TrainingData((sample,)),
            TrainConfig(steps=2, learning_rate=5e-2, rank=2, algorithm=algorithm),
        )
        handle = ModelHandle(model, TINY_FLUX_DEV)
        (patched,) = LoraModelLoader.execute(handle, result.lora, 0.5)
        assert patched.module is model and handle.patches == ()
        x = torch.randn(5, 128)
        layer = model.double_blocks[0].img_attn.qkv
        (patch,) = [p for p in patched.patches if p.key == "double_blocks.0.img_attn.qkv.weight"]
        merged = F.linear(x, patched_weight(layer.weight, [patch]), layer.bias)
        result.adapters.hook_into(model, strength=0.5)
        hooked = layer(x)
        result.adapters.detach()
        assert torch.allclose(merged, hooked, atol=1e-5), algorithm
        assert not torch.allclose(hooked, layer(x), atol=1e-6), algorithm


def test_dataset_folder_nodes_read_captions_and_repeats(app):
    from executor.schema import NodeContext
    from nodes.training.folder_loaders import LoadImageTextDataSetFromFolder

    ctx = NodeContext("n", "p", app.services, progress=lambda *a: None, should_stop=lambda: False)
    out = LoadImageTextDataSetFromFolder.execute(ctx, "motif")
    images, texts = out.values
    assert len(images) == 4 and all(tuple(i.shape) == (1, SIZE, SIZE, 3) for i in images)  # 2 + 1 x 2 repeats
    assert texts == ["a red square, sample 2", "a red square, sample 2", "a red square, sample 0", ""]


def test_training_dataset_saves_and_loads_as_safetensors(app):
    prompt = training_prompt()
    save = {k: prompt[k] for k in ("2", "3", "4", "5")}
    save["11"] = {
        "class_type": "SaveTrainingDataset",
        "inputs": {
            "latents": ["5", 0],
            "conditioning": ["5", 1],
            "folder_name": "motif_cache",
            "shard_size": 3,
        },
    }
    app.executor.run_prompt(save, prompt_id="save")
    folder = Path(app.settings.output_dir) / "datasets" / "motif_cache"
    assert sorted(p.name for p in folder.iterdir()) == [
        "metadata.json",
        "shard_0000.safetensors",
        "shard_0001.safetensors",
    ]
    from executor.schema import NodeContext
    from nodes.training.datasets import LoadTrainingDataset, dataset_folders

    assert dataset_folders(app.services) == ["motif_cache"]
    ctx = NodeContext("n", "p", app.services, progress=lambda *a: None, should_stop=lambda: False)
    latents, conds = LoadTrainingDataset.execute(ctx, "motif_cache").values
    assert len(latents) == len(conds) == 4
    assert latents[0]["samples"].shape == (1, 16, 4, 4)
    assert conds[0][0][1]["pooled_output"].shape[-1] == 64 or conds[0][0][1]["pooled_output"].ndim == 2


def test_cancel_stops_after_the_step_and_saves(app):
    cancel = CancelToken()
    sink = Capture()

    class CancelAfterTwo:
        def emit(self, event: Any) -> None:
            sink.emit(event)
            if isinstance(event, ev.Progress) and event.node_id == "8" and event.value >= 2:
                cancel.cancel()

    prompt = training_prompt(steps=50)
    with pytest.raises(Exception):  # noqa: B017 - the run reports the interrupt in its own way
        result = app.executor.run_prompt(prompt, prompt_id="cancel", sink=CancelAfterTwo(), cancel=cancel)
        if not any(isinstance(e, Interrupted) for e in [getattr(result, "error", None)]):
            raise Interrupted("run ended")
    done = [p.value for p in sink.progress if p.node_id == "8" and p.preview is None]
    assert max(done) < 50
    saved = sorted((Path(app.settings.output_dir) / "loras").glob("ckpt_*_steps_interrupted.safetensors"))
    assert (
        saved and (saved[0].with_name(saved[0].name.replace(".safetensors", ".state.safetensors"))).is_file()
    )


def test_comfyui_training_workflow_with_algorithm_oft_saves_a_loadable_file(app):
    from models.lora.load import load_lora, read_lora
    from models.lora.targets import LoraTargets
    from models.tiny import tiny_flux
    from nodes.training.train import _algorithm_of

    prompt = training_prompt(steps=3, algorithm="OFT")
    prompt["6"]["inputs"].update(validate_every=0, eval_every=0, network_alpha=1.0)
    app.executor.run_prompt(prompt, prompt_id="oft")
    (saved,) = sorted((app.settings.output_dir / "loras").glob("motif_3_steps_*_.safetensors"))
    lora = load_lora(saved, LoraTargets.of(tiny_flux()))
    assert lora.unmapped == () and len(lora.model) == 2 * 10 + 2 * 3
    assert {p.kind for p in lora.model} == {"oft"} and {p.alpha for p in lora.model} == {1.0}
    tensors, _metadata = read_lora(saved)
    assert _algorithm_of(tensors) == ("OFT", 4, 1.0)  # what existing_lora resumes with
