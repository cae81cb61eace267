"""Builds the node registry from the built-in node modules (custom packs are added by the loader)."""

from __future__ import annotations

import importlib

from executor.registry import NodeRegistry

# Each module exports NODES: tuple of Node classes. Order only matters for object_info listing.
BUILTIN_MODULES = (
    "nodes.primitives",
    "nodes.image.files",
    "nodes.image.transforms",
    "nodes.image.masks",
    "nodes.image.websocket",
    "nodes.conditioning.flux",
    "nodes.latent.latents",
    "nodes.sampling.ksampler",
    "nodes.sampling.custom",
    "nodes.sampling.guiders",
    "nodes.loaders.model_files",
    "nodes.lora.loaders",
    "nodes.lora.merge",
    "nodes.lora.save",
    "nodes.control.controlnet",
    "nodes.control.vision",
    "nodes.control.ipadapter",
    "nodes.training.folder_loaders",
    "nodes.training.dataset_transforms",
    "nodes.training.datasets",
    "nodes.training.train",
    "nodes.training.lora_io",
    "nodes.training.loss_graph",
)


def build_registry(modules: tuple[str, ...] = BUILTIN_MODULES) -> NodeRegistry:
    registry = NodeRegistry()
    for module_name in modules:
        module = importlib.import_module(module_name)
        for node_class in module.NODES:
            registry.register(node_class, source="nodes")
    return registry
