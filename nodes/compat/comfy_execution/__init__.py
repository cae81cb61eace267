"""ComfyUI's `comfy_execution`: `graph.ExecutionBlocker` and `graph_utils.GraphBuilder`."""

from ..missing import module_getattr

__getattr__ = module_getattr(__name__, submodules=True)
