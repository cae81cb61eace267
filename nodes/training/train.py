"""TrainLoraNode (ComfyUI's name, inputs and outputs) plus FluxLoraTrainingOptions, the companion node
for what ComfyUI's trainer lacks. Saving / applying the trained LoRA is in `lora_io`, the loss plot in
`loss_graph`.

TrainLoraNode runs `models.training.train` inside one node execution: a progress bar per step,
the loss (raw, smoothed, fixed-timestep evaluation) pushed to the clients as `fluxloom.training`
messages, validation images every N steps as progress previews (on an optional separate inference
base), periodic atomic saves, and a stop from the UI that ends the run after the current step,
saves LoRA + resume state and then interrupts the prompt.

The node declares the run's working memory (`models.training.memory_plan`) when it places the model:
when the transformer and that memory do not fit the device budget, blocks are checkpointed and the
memory manager streams the ones that do not fit. Under torchrun (`main.py run --nproc N`) every rank
runs this node; the loop shards the batches and only rank 0 reports and saves.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from executor.errors import Interrupted
from executor.schema import (
    SEED_MAX,
    Boolean,
    Combo,
    Float,
    Int,
    Node,
    NodeOutput,
    Output,
    Schema,
    String,
    Typed,
)
from models.memory.working import attention_on_cpu
from models.patches import ModelHandle
from models.training import Sample, StepReport, TrainConfig, TrainingData, TrainResult, train
from models.training.checkpoint import (
    TrainState,
    load_state,
    read_safetensors,
    state_path_for,
    to_torch_dtype,
)
from models.training.config import LOSS_TARGETS, LR_SCHEDULES, TARGET_PRESETS, TIMESTEP_SAMPLINGS
from models.training.memory_plan import plan_training_memory
from models.training.validate import sample_latents
from nodes.image.files import save_images
from nodes.latent import vae_ops
from nodes.runtime.channel import CHANNEL
from nodes.runtime.device import use_models
from nodes.runtime.file_paths import save_folder, save_target
from nodes.runtime.services import Ctx
from nodes.training.lora_io import TrainedLora, write_lora

log = logging.getLogger(__name__)

NONE_LORA = "[None]"
TRAINING = "model/training"
MESSAGE = "fluxloom.training"


def _lora_choices(services: Any) -> list[str]:
    paths = getattr(services, "model_paths", None)
    try:
        names = list(paths.list_models("loras")) if paths is not None else []
    except Exception:  # noqa: BLE001 - a missing folder kind lists nothing
        names = []
    return [*names, NONE_LORA]


class FluxLoraTrainingOptions(Node):
    schema = Schema(
        "FluxLoraTrainingOptions", display_name="FLUX LoRA Training Options", category=TRAINING,
        description="Settings Train LoRA lacks in ComfyUI: FLUX guidance, flow-matching target and timestep "
                    "sampling, LR schedule, clipping, EMA, caption dropout, targets, evaluation, validation, saves.",
        inputs=(
            Float("guidance", 1.0, min=0.0, max=100.0, step=0.1, tooltip="Guidance the model sees while training."),
            Combo("timestep_sampling", TIMESTEP_SAMPLINGS, "flux_shift",
                  tooltip="flux_shift: sigmoid times shifted by the resolution's mu (FLUX's own schedule)."),
            Float("discrete_flow_shift", 3.1582, min=0.01, max=100.0, step=0.01, tooltip="Shift for 'shift'."),
            Float("sigmoid_scale", 1.0, min=0.01, max=10.0, step=0.01),
            Combo("loss_target", LOSS_TARGETS, "velocity",
                  tooltip="velocity: flow matching; x0: ComfyUI's denoised-image loss."),
            Combo("lr_schedule", LR_SCHEDULES, "constant"),
            Int("warmup_steps", 0, min=0, max=100000),
            Float("max_grad_norm", 1.0, min=0.0, max=1000.0, step=0.01, tooltip="0 disables clipping."),
            Float("ema_decay", 0.0, min=0.0, max=0.9999, step=0.0001, tooltip="0 disables EMA."),
            Float("caption_dropout", 0.0, min=0.0, max=0.99, step=0.01),
            Float("network_alpha", 1.0, min=0.01, max=1024.0, step=0.01, tooltip="Scale = alpha / rank."),
            Combo("targets", TARGET_PRESETS, "all_linear"),
            Int("eval_every", 0, min=0, max=100000, tooltip="Fixed-timestep evaluation loss every N steps."),
            Int("eval_holdout", 0, min=0, max=100000,
                tooltip="Keep the last N samples out of training and evaluate on them (0: the first 2 training samples)."),
            Int("validate_every", 0, min=0, max=100000, tooltip="Validation images every N steps."),
            Int("validation_steps", 8, min=1, max=100),
            Int("validation_width", 512, min=16, max=4096, step=16),
            Int("validation_height", 512, min=16, max=4096, step=16),
            Int("validation_seed", 0, min=0, max=SEED_MAX),
            Int("save_every", 0, min=0, max=100000, tooltip="Save LoRA + resume state every N steps."),
            String("checkpoint_prefix", "loras/ComfyUI_trained_lora", tooltip="Where periodic saves go (output)."),
            Combo("key_style", ("comfyui", "kohya", "diffusers"), "comfyui",
                  tooltip="Saved keys: ComfyUI generic, kohya, or diffusers/PEFT (LoRA only)."),
        ),
        outputs=(Output("TRAINING_OPTIONS", "options"),),
    )  # fmt: skip

    @classmethod
    def execute(cls, **options: Any) -> tuple[dict[str, Any]]:
        return (dict(options),)


def _samples(latents: list[Mapping[str, Any]], positive: list[list[Any]]) -> list[Sample]:
    flat_latents: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    for latent in latents:
        samples, masks = latent["samples"], latent.get("loss_mask")
        flat_latents.extend(
            (samples[i], None if masks is None else masks[i, 0]) for i in range(samples.shape[0])
        )
    conds = [entry for cond in positive for entry in cond]
    if len(conds) == 1:
        conds = conds * len(flat_latents)
    if len(conds) != len(flat_latents):
        raise ValueError(f"{len(conds)} positive conditionings for {len(flat_latents)} latents")
    out = []
    for (lat, mask), (context, options) in zip(flat_latents, conds):
        pooled = options.get("pooled_output")
        if pooled is None:
            raise ValueError("training conditioning needs a pooled_output (CLIP-L); encode with a FLUX CLIP")
        out.append(Sample(lat.float(), context[0].float(), pooled.reshape(-1).float(), mask,
                          options.get("guidance")))  # fmt: skip
    return out


def _existing(ctx: Ctx, name: str) -> tuple[Path, dict[str, torch.Tensor], int]:
    paths = ctx.services.model_paths
    if paths is None:
        raise RuntimeError("existing_lora needs the model folders (no model paths configured)")
    path = paths.resolve("loras", name)
    tensors, _meta = read_safetensors(path)
    match = re.search(r"_(\d+)_steps", Path(name).name)
    return path, tensors, int(match.group(1)) if match else 0


def _algorithm_of(tensors: Mapping[str, torch.Tensor]) -> tuple[str, int, float]:
    for key, t in tensors.items():
        if key.endswith(".lora_down.weight"):
            algo, rank = "LoRA", t.shape[0]
        elif key.endswith(".hada_w1_b"):
            algo, rank = "LoHa", t.shape[0]
        elif key.endswith(".lokr_w2_b"):
            algo, rank = "LoKr", t.shape[0]
        elif key.endswith(
            ".oft_blocks"
        ):  # rank: the block size (alpha: the constraint, ComfyUI's 1.0 if absent)
            algo, rank = "OFT", t.shape[1]
        else:
            continue
        alpha_key = key.rsplit(".", 2 if key.endswith(".weight") else 1)[0] + ".alpha"
        default = 1.0 if algo == "OFT" else float(rank)
        return algo, int(rank), float(tensors[alpha_key]) if alpha_key in tensors else default
    raise ValueError("existing_lora holds no LoRA / LoHa / LoKr / OFT tensors")


def _fit_budget(
    ctx: Ctx, modules: list[torch.nn.Module], data: TrainingData, cfg: TrainConfig
) -> tuple[TrainConfig, int]:
    """The config (gradient checkpointing turned on when the budget needs it) and the working memory
    to declare, so that the memory manager streams blocks when the model and the training do not fit."""
    memory = ctx.services.memory
    device = memory.device if memory is not None else next(modules[0].parameters()).device
    plan = plan_training_memory(
        modules,
        data.samples,
        cfg,
        budget=memory.budget() if memory is not None else None,
        attention_matrix=attention_on_cpu(device),
    )
    if plan.reason:
        log.info("TrainLoraNode: %s: gradient checkpointing on, blocks stream as needed", plan.reason)
    return cfg.replace(gradient_checkpointing=plan.gradient_checkpointing), plan.working_bytes


def _jpeg(image: torch.Tensor) -> bytes:
    arr = (image[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class TrainLoraNode(Node):
    schema = Schema(
        "TrainLoraNode", display_name="Train LoRA", category=TRAINING, experimental=True, is_input_list=True,
        description="Train a LoRA on latents + conditionings (whole run inside this node). FLUX defaults: "
                    "guidance 1.0, flow-matching velocity loss, resolution-shifted timesteps; more settings "
                    "in FLUX LoRA Training Options.",
        inputs=(
            Typed("model", "MODEL", tooltip="The model to train the LoRA on."),
            Typed("latents", "LATENT", tooltip="The latents to train on (the dataset)."),
            Typed("positive", "CONDITIONING", tooltip="The positive conditioning to use for training."),
            Int("batch_size", 1, min=1, max=10000, tooltip="The batch size to use for training."),
            Int("grad_accumulation_steps", 1, min=1, max=1024, tooltip="Gradient accumulation steps."),
            Int("steps", 16, min=1, max=100000, tooltip="The number of steps to train the LoRA for."),
            Float("learning_rate", 0.0005, min=0.0000001, max=1.0, step=0.0000001, tooltip="The learning rate."),
            Int("rank", 8, min=1, max=128, tooltip="The rank of the LoRA layers."),
            Combo("optimizer", ("AdamW", "Adam", "SGD", "RMSprop"), "AdamW", tooltip="The optimizer."),
            Combo("loss_function", ("MSE", "L1", "Huber", "SmoothL1"), "MSE", tooltip="The loss function."),
            Int("seed", 0, min=0, max=SEED_MAX, tooltip="Seed for LoRA initialisation, noise and timesteps."),
            Combo("training_dtype", ("bf16", "fp32", "none"), "bf16",
                  tooltip="bf16: autocast on CUDA (CPU trains in fp32); fp32/none: the model's own dtype."),
            Combo("lora_dtype", ("bf16", "fp32"), "bf16", tooltip="dtype the LoRA weights are trained and saved in."),
            Boolean("quantized_backward", False, tooltip="Accepted for compatibility: adapters never modify "
                    "the base weights, so quantized bases always train through them."),
            Combo("algorithm", ("LoRA", "LoHa", "LoKr", "OFT"), "LoRA", tooltip="The adapter algorithm."),
            Boolean("gradient_checkpointing", True, tooltip="Recompute block activations in the backward pass "
                    "(turned on by itself when the device budget needs it)."),
            Int("checkpoint_depth", 1, min=1, max=5, tooltip="Accepted for compatibility; whole blocks are "
                "checkpointed."),
            Boolean("offloading", False, tooltip="Accepted; when the model and the training memory do not fit "
                    "the device budget, blocks stream from CPU memory by themselves (checkpointed)."),
            Combo("existing_lora", _lora_choices, NONE_LORA,
                  tooltip="Continue a LoRA; with its .state.safetensors beside it, resume exactly."),
            Boolean("bucket_mode", False, tooltip="Accepted; equal-size samples are always batched together."),
            Boolean("bypass_mode", False, tooltip="Accepted; adapters always run as forward hooks."),
            Typed("options", "TRAINING_OPTIONS", optional=True, tooltip="FLUX LoRA Training Options."),
            Typed("inference_model", "MODEL", optional=True,
                  tooltip="Validate on this base (e.g. FLUX-dev when training on a de-distilled base)."),
            Typed("vae", "VAE", optional=True, tooltip="Decodes validation images."),
            Typed("validation_conditioning", "CONDITIONING", optional=True, tooltip="Prompt of validation images."),
        ),
        outputs=(Output("LORA_MODEL", "lora", tooltip="LoRA weights"),
                 Output("LOSS_MAP", "loss_map", tooltip="Loss history"),
                 Output("INT", "steps", tooltip="Total training steps")),
    )  # fmt: skip

    @classmethod
    def execute(cls, ctx: Ctx, **inputs: list[Any]) -> NodeOutput:
        one = {k: v[0] for k, v in inputs.items() if k not in ("latents", "positive") and v}
        opts: dict[str, Any] = dict(one.get("options") or {})
        handle: ModelHandle = one["model"]
        samples = _samples(inputs["latents"], inputs["positive"])
        holdout = int(opts.get("eval_holdout", 0))
        if holdout and holdout >= len(samples):
            raise ValueError(f"eval_holdout {holdout} leaves no training samples out of {len(samples)}")
        eval_samples = samples[len(samples) - holdout :] if holdout else []
        data = TrainingData(tuple(samples[: len(samples) - holdout]))
        cfg = TrainConfig(
            steps=one["steps"], batch_size=one["batch_size"], grad_accumulation_steps=one["grad_accumulation_steps"],
            learning_rate=one["learning_rate"], optimizer=one["optimizer"], loss_function=one["loss_function"],
            seed=one["seed"], algorithm=one["algorithm"], rank=one["rank"], lora_dtype=one["lora_dtype"],
            training_dtype=one["training_dtype"], gradient_checkpointing=one["gradient_checkpointing"],
            guidance=opts.get("guidance", 1.0), timestep_sampling=opts.get("timestep_sampling", "flux_shift"),
            discrete_flow_shift=opts.get("discrete_flow_shift", 3.1582), sigmoid_scale=opts.get("sigmoid_scale", 1.0),
            loss_target=opts.get("loss_target", "velocity"), lr_schedule=opts.get("lr_schedule", "constant"),
            warmup_steps=opts.get("warmup_steps", 0), max_grad_norm=opts.get("max_grad_norm", 0.0),
            ema_decay=opts.get("ema_decay", 0.0), caption_dropout=opts.get("caption_dropout", 0.0),
            alpha=opts.get("network_alpha", 1.0), targets=opts.get("targets", "all_linear"),
            eval_every=opts.get("eval_every", 0), validate_every=opts.get("validate_every", 0),
            save_every=opts.get("save_every", 0), key_style=opts.get("key_style", "comfyui"),
        )  # fmt: skip
        resume: TrainState | None = None
        offset = 0  # steps a weights-only existing LoRA had (its file name says how many)
        if one.get("existing_lora", NONE_LORA) != NONE_LORA:
            path, tensors, file_steps = _existing(ctx, one["existing_lora"])
            algorithm, rank, alpha = _algorithm_of(tensors)
            cfg = cfg.replace(algorithm=algorithm, rank=rank, alpha=alpha)
            if state_path_for(path).is_file():  # exact resume: continue the run for `steps` more steps
                resume = load_state(state_path_for(path))
                cfg = cfg.replace(steps=resume.step + cfg.steps)
            else:
                resume, offset = TrainState(adapters=tensors), file_steps
        if cfg.training_dtype == "bf16":
            device_type = next(handle.module.parameters()).device.type
            memory = ctx.services.memory
            if (memory.device.type if memory is not None else device_type) == "cpu":
                cfg = cfg.replace(training_dtype="fp32")
        if one.get("inference_model") is None:
            inference: ModelHandle = handle
        else:
            inference = one["inference_model"]
        if handle.patches:
            log.warning(
                "TrainLoraNode: the model carries %d patches; training uses its base weights",
                len(handle.patches),
            )

        settings = ctx.services.settings
        # periodic saves and the save on interrupt go here
        target = save_target(
            save_folder(settings, "output"), str(opts.get("checkpoint_prefix", "loras/ComfyUI_trained_lora"))
        )
        checkpoint_dir, checkpoint_name = target.folder, target.name
        validation_images: list[torch.Tensor] = []
        client = CHANNEL.current_client()

        def on_step(report: StepReport) -> None:
            ctx.report_progress(report.step, report.total)
            CHANNEL.send_json(MESSAGE, {
                "prompt_id": ctx.prompt_id, "node": ctx.node_id, "step": report.step + offset, "total": report.total, "loss": report.loss, "smoothed": report.smoothed,
                "eval_loss": report.eval_loss, "lr": report.lr, "grad_norm": report.grad_norm,
            }, client)  # fmt: skip

        def on_validate(step: int, adapters: Any) -> None:
            cond = one.get("validation_conditioning")
            vae = one.get("vae")
            if cond is None or vae is None:
                return
            context, extra = cond[0]
            hw = (int(opts.get("validation_height", 512)) // 8, int(opts.get("validation_width", 512)) // 8)
            hooked = inference.module is not handle.module
            if hooked:
                adapters.hook_into(inference.module)
            try:
                latent = sample_latents(
                    inference.module,
                    context[0],
                    extra["pooled_output"],
                    latent_hw=hw,
                    steps=int(opts.get("validation_steps", 8)),
                    guidance=extra.get("guidance", 3.5),
                    seed=int(opts.get("validation_seed", 0)),
                )
            finally:
                if hooked:
                    adapters.detach_from(inference.module)
            image = vae_ops.decode(ctx, vae, latent)
            validation_images.append(image)
            ctx.report_progress(step, cfg.steps, _jpeg(image))

        modules = [handle.module] + ([] if inference.module is handle.module else [inference.module])
        cfg, working_bytes = _fit_budget(ctx, modules, data, cfg)
        with use_models(ctx, *modules, working_bytes=working_bytes):
            memory = ctx.services.memory
            if memory is not None and memory.is_streamed(handle.module) and not cfg.gradient_checkpointing:
                # other models in use left less room than planned; streaming needs checkpointing
                log.info("TrainLoraNode: the transformer streams: gradient checkpointing turned on")
                cfg = cfg.replace(gradient_checkpointing=True)
            result: TrainResult = train(
                handle.module, data, cfg, resume=resume, checkpoint_dir=checkpoint_dir if cfg.save_every else None,
                checkpoint_name=checkpoint_name, eval_samples=eval_samples, on_step=on_step, on_validate=on_validate,
                should_stop=ctx.should_stop,
                metadata={"fluxloom.training_base": str(handle.options.source or ""),
                          "fluxloom.inference_base": str(inference.options.source or "")},
            )  # fmt: skip
        total_steps = result.state.step + offset
        dtype = to_torch_dtype(cfg.lora_dtype)
        lora = TrainedLora({k: v if k.endswith(".alpha") else v.to(dtype) for k, v in result.lora.items()})
        lora.metadata, lora.state = dict(result.metadata), result.state
        if result.stopped:
            path = Path(checkpoint_dir) / f"{checkpoint_name}_{total_steps}_steps_interrupted.safetensors"
            write_lora(path, lora)
            raise Interrupted(
                f"training stopped after step {total_steps}; saved {path.name} and its resume state"
            )
        loss_map = {"loss": list(result.state.losses), "eval": [list(e) for e in result.state.eval_losses]}
        ui: dict[str, Any] = {"text": [f"{total_steps} steps, final loss {result.state.losses[-1]:.4f}"]}
        if validation_images:
            ui["images"] = save_images(
                torch.cat(validation_images),
                save_folder(settings, "temp"),
                "fluxloom_validation",
                folder_type="temp",
                compress_level=1,
            )
        return NodeOutput.of(lora, loss_map, total_steps, ui=ui)


NODES = (TrainLoraNode, FluxLoraTrainingOptions)
