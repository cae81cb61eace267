"""API-format prompts parsed into nodes and links, and the error-dict shape validation reports in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .errors import PromptValidationError

SHOWN_CHARS = 200  # echoed values are cut to this many characters, so reports stay linear in size


def shown(value: Any, limit: int = SHOWN_CHARS) -> Any:
    """`value` for an error report: unchanged when short, else its text cut to `limit` with a count."""
    if value is None or isinstance(value, (bool, int, float)) and len(repr(value)) <= limit:
        return value
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return value
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def utf8_safe(text: str) -> bool:
    """False for strings holding unpaired surrogates, which no file, socket or database can encode."""
    if text.isascii():  # a flag CPython keeps on every string: no scan
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Link(NamedTuple):
    """A connection to output `index` of node `node_id`."""

    node_id: str
    slot: int


class PromptNode:
    """One node of a prompt. Links never change after parsing (only literals are coerced)."""

    __slots__ = ("node_id", "class_type", "inputs", "title", "link_items", "sources")

    def __init__(
        self, node_id: str, class_type: str, inputs: dict[str, Any], title: str | None = None
    ) -> None:
        self.node_id = node_id
        self.class_type = class_type
        self.inputs = inputs  # literals (coerced by validation) and Links
        self.title = title
        self.link_items = tuple([(k, v) for k, v in inputs.items() if type(v) is Link])
        self.sources = frozenset([v.node_id for _, v in self.link_items])

    def links(self) -> tuple[tuple[str, Link], ...]:
        return self.link_items


def error(kind: str, message: str, details: str = "", **extra_info: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra_info}


def to_link(value: Any) -> Link | None:
    """A JSON `[node_id, index]` pair as a Link, else None."""
    if type(value) is Link:
        return value
    if type(value) is list and len(value) == 2:
        source, index = value
        if type(index) is int and type(source) in (str, int):
            return Link(str(source), index)
    return None


def parse_prompt(prompt: Any) -> dict[str, PromptNode]:
    """API-format prompt -> nodes. Raises PromptValidationError for a malformed document."""
    if not isinstance(prompt, Mapping) or not prompt:
        raise PromptValidationError(
            error(
                "invalid_prompt",
                "Invalid prompt",
                "the prompt must be a non-empty object mapping node ids to {class_type, inputs}",
            )
        )
    nodes: dict[str, PromptNode] = {}
    problems: dict[str, Any] = {}
    for raw_id, raw in prompt.items():
        node_id = raw_id if type(raw_id) is str else str(raw_id)
        # `type(x) is dict or isinstance(...)`: the ABC check alone costs more than the rest of a node
        is_mapping = type(raw) is dict or isinstance(raw, Mapping)
        if not utf8_safe(node_id) or (is_mapping and not utf8_safe(str(raw.get("class_type")))):
            problems[shown(node_id.encode("utf-8", "backslashreplace").decode(), 100)] = {
                "errors": [
                    error(
                        "invalid_prompt",
                        "Node id or class_type is not Unicode text",
                        "node ids and class_type must not hold unpaired surrogates (\\ud800-\\udfff)",
                    )
                ],
                "dependent_outputs": [],
                "class_type": None,
            }
            continue
        if not is_mapping or not isinstance(raw.get("class_type"), str):
            problems[shown(node_id, 100)] = {
                "errors": [
                    error(
                        "invalid_prompt",
                        "Node has no class_type",
                        f"node {shown(node_id, 100)} must be an object with a 'class_type' string",
                    )
                ],
                "dependent_outputs": [],
                "class_type": None,
            }
            continue
        raw_inputs = raw.get("inputs") or {}
        if type(raw_inputs) is not dict and not isinstance(raw_inputs, Mapping):
            raw_inputs = {}
        inputs = {
            k if type(k) is str else str(k): (to_link(v) or v) if type(v) is list else v
            for k, v in raw_inputs.items()
        }
        meta = raw.get("_meta")
        title = meta.get("title") if meta is not None and isinstance(meta, Mapping) else None
        nodes[node_id] = PromptNode(node_id, raw["class_type"], inputs, title)
    if problems:
        raise PromptValidationError(
            error(
                "invalid_prompt",
                "Invalid prompt",
                "; ".join(f"node {k}: {v['errors'][0]['details']}" for k, v in problems.items()),
            ),
            problems,
        )
    return nodes
