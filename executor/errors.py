"""Typed errors raised by the graph engine."""

from __future__ import annotations

from typing import Any


class NodeDefinitionError(TypeError):
    """A node class breaks the node contract; raised at registration, never mid-prompt."""


class PromptValidationError(ValueError):
    """A prompt failed validation. Carries ComfyUI's `error` + `node_errors` shapes."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any] | None = None) -> None:
        self.error = error
        self.node_errors = node_errors or {}
        super().__init__(f"{error.get('message', 'invalid prompt')}: {error.get('details', '')}".rstrip(": "))

    def as_response(self) -> dict[str, Any]:
        return {"error": self.error, "node_errors": self.node_errors}

    def lines(self) -> list[str]:
        """One readable line per problem: node id, class, input and what is wrong."""
        out = []
        for node_id, entry in self.node_errors.items():
            for err in entry.get("errors", []):
                input_name = err.get("extra_info", {}).get("input_name")
                where = f"node {node_id} ({entry.get('class_type', '?')})"
                if input_name:
                    where += f" input '{input_name}'"
                detail = err.get("details") or ""
                out.append(f"{where}: {err.get('message', '')}{': ' + detail if detail else ''}")
        if not out:
            out.append(str(self))
        return out


class NodeExecutionError(RuntimeError):
    """A node raised while running; the prompt fails, the engine keeps working."""

    def __init__(
        self,
        node_id: str,
        class_type: str,
        *,
        inputs: dict[str, Any],
        exception_type: str,
        exception_message: str,
        traceback: list[str],
    ) -> None:
        self.node_id = node_id
        self.class_type = class_type
        self.inputs = inputs
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.traceback = traceback
        super().__init__(f"node {node_id} ({class_type}) failed: {exception_type}: {exception_message}")


class Interrupted(Exception):
    """The prompt was cancelled; raised between nodes or from inside a node."""


class OutOfMemory(RuntimeError):
    """A node ran out of device memory (mapped from the torch error by the node hooks)."""
