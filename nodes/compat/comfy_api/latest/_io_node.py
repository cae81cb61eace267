"""The node side of ComfyUI's V3 `io` module: `Schema`, `ComfyNode`, `NodeOutput`, `Hidden`.

Packs reach these as `io.Schema` and so on; `_io` re-exports them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar


class Hidden(str, enum.Enum):
    """Hidden inputs a V3 node may declare; read in `execute` as `cls.hidden.<name>`."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    search_aliases: list[str] = field(default_factory=list)
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False
    essentials_category: str | None = None
    price_badge: Any = None

    def validate(self) -> None:
        ids = [i.id for i in self.inputs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"node {self.node_id!r}: duplicate input ids {dupes}")


class NodeOutput:
    """What `execute` returns: output values, optional `ui` (a ui.* object or dict), optional `expand`."""

    def __init__(
        self,
        *args: Any,
        ui: Any = None,
        expand: dict[str, Any] | None = None,
        block_execution: str | None = None,
    ) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args if self.args else None


class ComfyNode:
    """Base of V3 nodes: classmethods `define_schema()` and `execute(**inputs)`.

    Optional classmethods `validate_inputs`, `fingerprint_inputs` and `check_lazy_status` are used
    when a subclass defines them.
    """

    hidden: ClassVar[Any] = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError(f"{cls.__name__} must define define_schema()")

    @classmethod
    def execute(cls, *args: Any, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError(f"{cls.__name__} must define execute()")

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.validate()
        return schema


ComfyNodeV3 = ComfyNode
