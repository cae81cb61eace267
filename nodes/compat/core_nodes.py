"""Our built-in nodes in ComfyUI's V1 shape, for packs that call or subclass `nodes.<Class>`.

Each class has ComfyUI's `INPUT_TYPES`, `RETURN_TYPES`, `FUNCTION` and method signature (e.g.
`CLIPTextEncode().encode(clip, text)`) and runs our node of the same id through the registry, inside
the running node's context (or a detached one at import time). The call signatures are in
`core_signatures`; `SaveImage`/`PreviewImage`, written out for subclassing, in `core_save_nodes`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from executor.schema import COMBO, Input, NodeContext, NodeOutput, Schema

from .core_save_nodes import PreviewImage, SaveImage
from .core_signatures import SIGNATURES
from .host import HOST, settings
from .missing import MissingComfyFeature

log = logging.getLogger(__name__)

_CACHE: dict[str, Any] = {}


def registry() -> Any:
    """The app's registry (packs included), else our built-ins alone."""
    if HOST.registry is not None:
        return HOST.registry
    if "registry" not in _CACHE:
        from nodes.runtime.registry import build_registry

        _CACHE["registry"] = build_registry()
    return _CACHE["registry"]


def _services() -> Any:
    if HOST.services is not None:
        return HOST.services
    from nodes.runtime.services import NodeServices

    return NodeServices(settings=settings())


def context() -> Any:
    """The running node's context, or a detached one (no progress, never cancelled)."""
    from executor.adapters import current_context

    ctx = current_context()
    if ctx is not None:
        return ctx
    return NodeContext("compat", "", _services(), progress=lambda *a: None, should_stop=lambda: False)


def spec_of(item: Input, services: Any) -> tuple[Any, ...]:
    """One input in ComfyUI's V1 spec form: `(type, {options})` or `([choices], {options})`."""
    opts: dict[str, Any] = {}
    for attr, key in (
        ("default", "default"),
        ("min", "min"),
        ("max", "max"),
        ("step", "step"),
        ("round", "round"),
        ("tooltip", "tooltip"),
        ("dynamic_prompts", "dynamicPrompts"),
    ):
        value = getattr(item, attr)
        if value is not None:
            opts[key] = value
    for attr, key in (
        ("multiline", "multiline"),
        ("control_after_generate", "control_after_generate"),
        ("force_input", "forceInput"),
        ("lazy", "lazy"),
        ("raw_link", "rawLink"),
    ):
        if getattr(item, attr):
            opts[key] = True
    opts.update(item.extra)
    if item.type == COMBO:
        options = item.options(services) if callable(item.options) else item.options
        return (list(options or ()), opts) if opts else (list(options or ()),)
    return (item.type, opts) if opts else (item.type,)


def input_types(schema: Schema, services: Any = None) -> dict[str, Any]:
    services = services if services is not None else _services()
    spec: dict[str, Any] = {
        "required": {i.name: spec_of(i, services) for i in schema.inputs if not i.optional}
    }
    optional = {i.name: spec_of(i, services) for i in schema.inputs if i.optional}
    if optional:
        spec["optional"] = optional
    if schema.hidden:
        spec["hidden"] = {h.name: h.kind for h in schema.hidden}
    return spec


def run_node(node_id: str, values: Mapping[str, Any]) -> Any:
    """Run our node `node_id` on `values`; V1 result form (`tuple`, or `{"ui", "result"}`)."""
    node_type = registry().get(node_id)
    if node_type is None:
        from .host import pack_of_caller

        raise MissingComfyFeature(pack_of_caller(3), f"nodes.{node_id}")
    out: NodeOutput = node_type.invoke(context(), dict(values))
    if out.ui:
        return {"ui": dict(out.ui), "result": tuple(out.values)}
    return tuple(out.values)


def _method(node_id: str, params: tuple[str, ...], defaults: Mapping[str, Any]) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(args) > len(params):
            raise TypeError(f"{node_id}: {len(args)} positional arguments for {len(params)} inputs")
        values = {**{k: v for k, v in defaults.items()}, **dict(zip(params, args)), **kwargs}
        return run_node(node_id, values)

    if not all(p.isidentifier() for p in params):  # input names a Python signature cannot hold
        return method
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [
        inspect.Parameter(
            p, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults.get(p, inspect.Parameter.empty)
        )
        for p in params
    ]
    method.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return method


def v1_class(node_id: str) -> type:
    """ComfyUI's V1 class for our node `node_id` (cached; also made for nodes not registered yet)."""
    key = f"class:{node_id}"
    if key in _CACHE:
        return _CACHE[key]
    if node_id == "SaveImage":
        return SaveImage
    if node_id == "PreviewImage":
        return PreviewImage
    node_type = registry().get(node_id)
    schema: Schema | None = node_type.schema if node_type is not None else None
    if node_id in SIGNATURES:
        function, params, defaults, fallback = SIGNATURES[node_id]
    elif schema is not None:
        function, params, defaults, fallback = "execute", tuple(i.name for i in schema.inputs), {}, ()
    else:
        raise AttributeError(f"module 'nodes' has no attribute {node_id!r}")
    returns = tuple(o.type for o in schema.outputs) if schema is not None else fallback
    attrs: dict[str, Any] = {
        "RETURN_TYPES": returns,
        "RETURN_NAMES": tuple(o.label for o in schema.outputs) if schema is not None else returns,
        "FUNCTION": function,
        "CATEGORY": schema.category if schema is not None else "loaders",
        "OUTPUT_NODE": bool(schema and schema.is_output_node),
        "DESCRIPTION": schema.description if schema is not None else "",
        "__module__": "nodes",
        "__qualname__": node_id,
        function: _method(node_id, params, defaults),
    }

    def INPUT_TYPES(cls: type) -> dict[str, Any]:
        found = registry().get(node_id)
        if found is None:
            raise MissingComfyFeature(HOST.loading_pack or "unknown pack", f"nodes.{node_id}")
        return input_types(found.describe(_services()))

    attrs["INPUT_TYPES"] = classmethod(INPUT_TYPES)
    cls = type(node_id, (), attrs)
    _CACHE[key] = cls
    return cls


def common_ksampler(
    model: Any,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Any,
    negative: Any,
    latent: Any,
    denoise: float = 1.0,
    disable_noise: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> tuple[Any, ...]:
    """ComfyUI's helper: KSampler, or KSamplerAdvanced when steps are limited or noise is off."""
    if not disable_noise and start_step is None and last_step is None and not force_full_denoise:
        return run_node(
            "KSampler",
            {
                "model": model,
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": sampler_name,
                "scheduler": scheduler,
                "positive": positive,
                "negative": negative,
                "latent_image": latent,
                "denoise": denoise,
            },
        )
    return run_node(
        "KSamplerAdvanced",
        {
            "model": model,
            "add_noise": "disable" if disable_noise else "enable",
            "noise_seed": seed,
            "steps": steps,
            "cfg": cfg,
            "sampler_name": sampler_name,
            "scheduler": scheduler,
            "positive": positive,
            "negative": negative,
            "latent_image": latent,
            "start_at_step": start_step or 0,
            "end_at_step": last_step if last_step is not None else 10000,
            "return_with_leftover_noise": "disable" if force_full_denoise else "enable",
        },
    )


def class_mappings() -> dict[str, type]:
    """ComfyUI's `nodes.NODE_CLASS_MAPPINGS`: every registered node as a V1-callable class."""
    mappings: dict[str, type] = {}
    for node_type in registry():
        origin = node_type.origin
        if node_type.source != "nodes" and origin is not None:
            mappings[node_type.node_id] = origin  # a pack's own class
        else:
            try:
                mappings[node_type.node_id] = v1_class(node_type.node_id)
            except Exception:  # one odd node never hides the others from packs
                log.exception("node %s has no ComfyUI V1 form for packs", node_type.node_id)
    return mappings


def display_name_mappings() -> dict[str, str]:
    return {t.node_id: t.schema.display_name for t in registry() if t.schema.display_name}
