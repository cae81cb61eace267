"""ComfyUI's `comfy.sd`, the simplest pieces: loading checkpoints and diffusion models from a path.

They run our loader nodes (so packs get the same MODEL/CLIP/VAE handles our nodes use). A file outside
our model folders is loaded from its own folder. Everything else here is a placeholder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from executor.schema import NodeContext

from ..core_nodes import context, registry
from ..host import pack_of_caller
from ..missing import MissingComfyFeature, module_getattr

__getattr__ = module_getattr(__name__)


def _run_with_file(
    node_id: str, kind: str, path: str | Path, field: str, extra: dict[str, Any]
) -> tuple[Any, ...]:
    """Run loader `node_id` on the file `path`, as a name in a `kind` folder that holds it."""
    node_type = registry().get(node_id)
    if node_type is None:
        raise MissingComfyFeature(pack_of_caller(3), f"comfy.sd ({node_id} is not available)")
    file = Path(path).resolve()
    ctx = context()
    services = ctx.services
    model_paths = services.model_paths
    name = None
    for folder in model_paths.folders_for(kind) if model_paths is not None else ():
        try:
            name = file.relative_to(Path(folder).resolve()).as_posix()
            break
        except ValueError:
            continue
    if name is None:  # a file elsewhere: search its own folder too, for this call only
        from nodes.runtime.model_paths import ModelPaths

        base = model_paths if model_paths is not None else ModelPaths({})
        services = dataclasses.replace(
            services, model_paths=base.with_folder(kind, file.parent, is_default=True)
        )
        ctx = NodeContext(
            ctx.node_id, ctx.prompt_id, services, progress=ctx.report_progress, should_stop=ctx.should_stop
        )
        name = file.name
    return tuple(node_type.invoke(ctx, {field: name, **extra}).values)


def load_checkpoint_guess_config(
    ckpt_path: str | Path,
    output_vae: bool = True,
    output_clip: bool = True,
    output_clipvision: bool = False,
    embedding_directory: Any = None,
    output_model: bool = True,
    model_options: Any = None,
    te_model_options: Any = None,
) -> tuple[Any, Any, Any, Any]:
    """(model, clip, vae, clip_vision) from an all-in-one checkpoint; unrequested parts are None."""
    model, clip, vae = _run_with_file("CheckpointLoaderSimple", "checkpoints", ckpt_path, "ckpt_name", {})
    return (model if output_model else None, clip if output_clip else None, vae if output_vae else None, None)


def load_diffusion_model(unet_path: str | Path, model_options: Any = None) -> Any:
    """The diffusion model of a file (weights kept as stored: ComfyUI's "default" dtype)."""
    (model,) = _run_with_file(
        "UNETLoader", "diffusion_models", unet_path, "unet_name", {"weight_dtype": "default"}
    )
    return model


load_unet = load_diffusion_model
