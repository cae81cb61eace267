"""A multi-file utility pack: every node module is imported relatively, as popular packs do."""

from .py import image_nodes, logic_nodes, routes  # noqa: F401  (routes registers at import)

NODE_CLASS_MAPPINGS = {**image_nodes.NODE_CLASS_MAPPINGS, **logic_nodes.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {key: f"{key} (FL)" for key in NODE_CLASS_MAPPINGS}
WEB_DIRECTORY = "./web"
