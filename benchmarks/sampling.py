"""Text-to-image time per image: our graph (CLIPTextEncode -> KSampler -> VAEDecode) vs diffusers' FluxPipeline.

Both run the same weights (ours in the BFL layout, diffusers' converted with
models/formats/diffusers_*), the same text encoders and tokenizers (shared modules), the same image
size, step count, guidance 3.5, cfg 1 and the same number of text tokens (256). Ours runs through
the executor with a fresh seed and prompt each image, so nothing after the model handles is cached.
Time inside the transformer's forward is measured with module hooks on both sides.

    python benchmarks/sampling.py [--repeats 3] [--record]           # CPU: tiny-but-not-trivial weights
    python benchmarks/sampling.py --full [--repeats 3] [--record]    # CUDA: full-size FLUX.1-dev, bf16

CPU config: transformer hidden 256 (2 heads x 128), 2 double + 4 single blocks, tiny CLIP/T5/VAE
from models/tiny, 512x512 (64x64 latent, 1024 image tokens), 8 steps, float32.
Full config: random FLUX.1-dev / CLIP-L / T5-XXL / FLUX VAE in bf16, 1024x1024, 20 steps.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from sampling_models import Models, full_models, tiny_models

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).with_name("RESULTS.md")
PROMPT = "a red fox sitting in a snowy forest at sunrise, variant {}"


class ForwardTimer:
    """Wall time spent inside the top-level forward of modules of the given types (synchronised on CUDA)."""

    def __init__(self, types: tuple[type, ...], cuda: bool) -> None:
        self.types, self.cuda, self.total, self._start = types, cuda, 0.0, 0.0
        self._depth = 0

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def pre(self, module: torch.nn.Module, args: Any) -> None:
        if isinstance(module, self.types):
            if self._depth == 0:
                self._sync()
                self._start = time.perf_counter()
            self._depth += 1

    def post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(module, self.types):
            self._depth -= 1
            if self._depth == 0:
                self._sync()
                self.total += time.perf_counter() - self._start

    @contextlib.contextmanager
    def installed(self) -> Iterator[ForwardTimer]:
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        handles = (register_module_forward_pre_hook(self.pre), register_module_forward_hook(self.post))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


def ours_runner(m: Models, size: int, steps: int, memory: Any = None):
    """A function (seed) -> None running the txt2img graph through our executor (`memory`: its MemoryManager)."""
    from executor.cache import OutputCache
    from executor.run import Executor
    from executor.schema import ANY, Node, Schema, String
    from models.memory import MemoryManager
    from models.patches import ClipHandle, ModelHandle, ModelOptions, VaeHandle
    from models.text.encode import TextEncoders
    from nodes.runtime.hooks import TorchNodeHooks, outputs_bytes
    from nodes.runtime.registry import build_registry
    from nodes.runtime.services import NodeServices
    from settings import Settings

    handles = {
        "model": ModelHandle(m.transformer, m.flux_params, options=ModelOptions(compute_dtype=m.dtype)),
        "clip": ClipHandle(TextEncoders(m.clip, m.t5, m.clip_tokenizer, m.t5_tokenizer), t5_max_length=256),
        "vae": VaeHandle(m.vae, m.vae_params, compute_dtype=m.dtype),
    }

    class BenchHandle(Node):
        schema = Schema("BenchHandle", inputs=(String("name"),), outputs=(ANY,))

        @classmethod
        def execute(cls, name: str) -> tuple[Any]:
            return (handles[name],)

    registry = build_registry()
    registry.register(BenchHandle)
    services = NodeServices(
        settings=Settings(), memory=memory if memory is not None else MemoryManager(m.device)
    )
    executor = Executor(
        registry,
        cache=OutputCache(max_bytes=1 << 30, sizeof=outputs_bytes),
        hooks=TorchNodeHooks(),
        services=services,
    )

    def run(seed: int) -> None:
        prompt = {
            "m": {"class_type": "BenchHandle", "inputs": {"name": "model"}},
            "c": {"class_type": "BenchHandle", "inputs": {"name": "clip"}},
            "v": {"class_type": "BenchHandle", "inputs": {"name": "vae"}},
            "pos": {
                "class_type": "CLIPTextEncode",
                "inputs": {"text": PROMPT.format(seed), "clip": ["c", 0]},
            },
            "g": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["pos", 0], "guidance": 3.5}},
            "neg": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["pos", 0]}},
            "e": {
                "class_type": "EmptySD3LatentImage",
                "inputs": {"width": size, "height": size, "batch_size": 1},
            },
            "k": {
                "class_type": "KSampler",
                "inputs": {
                    "model": ["m", 0],
                    "seed": seed,
                    "steps": steps,
                    "cfg": 1.0,
                    "sampler_name": "euler",
                    "scheduler": "simple",
                    "positive": ["g", 0],
                    "negative": ["neg", 0],
                    "latent_image": ["e", 0],
                    "denoise": 1.0,
                },
            },
            "d": {"class_type": "VAEDecode", "inputs": {"samples": ["k", 0], "vae": ["v", 0]}},
            "out": {"class_type": "PreviewAny", "inputs": {"source": ["d", 0]}},
        }
        executor.run_prompt(prompt, prompt_id=f"bench-{seed}")

    return run


def diffusers_runner(m: Models, size: int, steps: int, offload: str | None = None):
    """A function (seed) -> None running diffusers' FluxPipeline on the same weights.

    `offload`: "model_cpu_offload" (enable_model_cpu_offload) or "group_offload_streams" (block-level
    group offload of every component, one block per group, prefetch on a CUDA stream); None: as placed.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTokenizer, T5Tokenizer

    from models.formats.diffusers_flux import bfl_to_diffusers_transformer
    from models.formats.diffusers_vae import bfl_to_diffusers_vae

    p, a = m.flux_params, m.vae_params
    with torch.device("meta"):
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=p.in_channels,
            num_layers=p.depth,
            num_single_layers=p.depth_single_blocks,
            attention_head_dim=p.head_dim,
            num_attention_heads=p.num_heads,
            joint_attention_dim=p.context_in_dim,
            pooled_projection_dim=p.vec_in_dim,
            guidance_embeds=p.guidance_embed,
            axes_dims_rope=p.axes_dim,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=a.z_channels,
            block_out_channels=tuple(a.ch * k for k in a.ch_mult),
            layers_per_block=a.num_res_blocks,
            down_block_types=("DownEncoderBlock2D",) * len(a.ch_mult),
            up_block_types=("UpDecoderBlock2D",) * len(a.ch_mult),
            norm_num_groups=32,
            use_quant_conv=False,
            use_post_quant_conv=False,
            scaling_factor=a.scale_factor,
            shift_factor=a.shift_factor,
        )
    transformer.load_state_dict(bfl_to_diffusers_transformer(m.transformer.state_dict()), assign=True)
    vae.load_state_dict(bfl_to_diffusers_vae(m.vae.state_dict()), assign=True)
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
    )
    # The pipeline pads to the tokenizers' model_max_length, so it gets its own copies with the usual limits.
    clip_tok = CLIPTokenizer.from_pretrained(
        str(m.tokenizer_dir / "tokenizers" / "clip_l"), model_max_length=77
    )
    t5_tok = T5Tokenizer.from_pretrained(str(m.tokenizer_dir / "tokenizers" / "t5xxl"), model_max_length=512)
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae.eval(),
        text_encoder=m.clip,
        tokenizer=clip_tok,
        text_encoder_2=m.t5,
        tokenizer_2=t5_tok,
        transformer=transformer.eval(),
    )
    pipe.set_progress_bar_config(disable=True)
    if offload == "model_cpu_offload":
        pipe.enable_model_cpu_offload()
    elif offload == "group_offload_streams":
        pipe.enable_group_offload(
            onload_device=m.device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=True,
        )
    elif offload is not None:
        raise ValueError(f"unknown offload mode {offload!r}")

    def run(seed: int) -> None:
        with torch.no_grad():
            pipe(
                prompt=PROMPT.format(seed),
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=3.5,
                max_sequence_length=256,
                generator=torch.Generator("cpu").manual_seed(seed),
                output_type="pil",
            )

    return run


def component_types() -> dict[str, tuple[type, ...]]:
    """Module types whose forward time is reported separately, ours and diffusers' alike."""
    from diffusers import FluxTransformer2DModel
    from diffusers.models.autoencoders.vae import Decoder as DiffusersDecoder
    from transformers import CLIPTextModel, T5EncoderModel

    from models.flux.autoencoder import Decoder
    from models.flux.model import Flux

    return {
        "transformer": (Flux, FluxTransformer2DModel),
        "vae": (Decoder, DiffusersDecoder),
        "text": (CLIPTextModel, T5EncoderModel),
    }


def measure(models: Models, size: int, steps: int, repeats: int) -> dict[str, dict[str, float]]:
    cuda = models.device.type == "cuda"
    runners = {"ours": ours_runner(models, size, steps), "diffusers": diffusers_runner(models, size, steps)}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    for run in runners.values():
        run(10_000)  # warm-up (allocations, kernels); not counted
    for i in range(repeats):
        for name, run in runners.items():  # interleaved, so load changes hit both alike
            timers = {part: ForwardTimer(types, cuda) for part, types in component_types().items()}
            with contextlib.ExitStack() as stack:
                for timer in timers.values():
                    stack.enter_context(timer.installed())
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                run(i)
                if cuda:
                    torch.cuda.synchronize()
                total = time.perf_counter() - start
            samples[name].append({"total": total, **{part: t.total for part, t in timers.items()}})
    out = {}
    for name, rows in samples.items():
        best = min(rows, key=lambda r: r["total"])
        out[name] = {
            "median_s": statistics.median(r["total"] for r in rows),
            "min_s": best["total"],
            "per_step_s": best["transformer"] / steps,
            "outside": 1 - best["transformer"] / best["total"],
            "vae": best["vae"] / best["total"],
            "text": best["text"] / best["total"],
            "rest": (best["total"] - best["transformer"] - best["vae"] - best["text"]) / best["total"],
        }
    return out


def table(results: dict[str, dict[str, float]], title: str) -> str:
    ours, theirs = results["ours"], results["diffusers"]
    lines = [
        title,
        "",
        "| pipeline | s/image (median) | s/image (best) | transformer s/step | outside transformer "
        "| VAE decode | text encoders | everything else |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['per_step_s']:.3f} | "
            f"{100 * r['outside']:.1f}% | {100 * r['vae']:.1f}% | {100 * r['text']:.1f}% | "
            f"{100 * r['rest']:.1f}% |"
        )
    lines.append(
        f"| ratio ours/diffusers | {ours['median_s'] / theirs['median_s']:.3f} | "
        f"{ours['min_s'] / theirs['min_s']:.3f} | {ours['per_step_s'] / theirs['per_step_s']:.3f} | | | | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="full-size FLUX.1-dev in bf16 on CUDA")
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.full:
            if not torch.cuda.is_available():
                print("--full needs CUDA; skipped")
                return 0
            models, size, steps = full_models(Path(tmp)), 1024, 20
            title = f"full-size FLUX.1-dev random bf16, {size}x{size}, {steps} steps, {torch.cuda.get_device_name()}"
        else:
            models, size, steps = tiny_models(Path(tmp)), 512, 8
            title = (
                f"hidden 256, 2+4 blocks, tiny CLIP/T5/VAE, {size}x{size} ({size // 8}x{size // 8} latent), "
                f"{steps} steps, float32 CPU ({torch.get_num_threads()} threads)"
            )
        results = measure(models, size, steps, args.repeats)
    text = table(results, title)
    print(text)
    if args.record:
        machine = "GPU machine" if args.full else "2-core CPU sandbox"
        header = (
            f"\n## Sampling: txt2img ours vs diffusers FluxPipeline — 2026-11-22 — {machine} "
            f"({platform.machine()}, torch {torch.__version__})\n\n`python benchmarks/sampling.py"
            f"{' --full' if args.full else ''} --repeats {args.repeats} --record`\n\n"
        )
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
