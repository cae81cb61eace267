"""The executor: validates prompts (memoised) and runs them, reusing outputs across prompts.

One prompt's scheduling lives in `prompt_run`; this is the long-lived object the app holds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from . import events as ev
from .cache import OutputCache
from .cancel import CancelToken
from .graph import ValidatedPrompt, still_valid, validate_prompt
from .history import prompt_text
from .hooks import NodeHooks, NullHooks
from .prompt_run import PromptRun, RunResult
from .registry import NodeRegistry

# (prompt text, targets): the route asks with the client's targets, the worker with the queued outputs.
MemoKey = tuple[str, tuple[str, ...] | None]


class Executor:
    """Runs prompts against one registry, reusing outputs across prompts through an OutputCache."""

    memo_size = 32  # entries: a prompt takes two (the route's targets and the queued outputs)

    def __init__(
        self,
        registry: NodeRegistry,
        *,
        cache: OutputCache | None = None,
        hooks: NodeHooks | None = None,
        services: Any = None,
    ) -> None:
        self.registry = registry
        self.cache = cache if cache is not None else OutputCache()
        self.hooks = hooks or NullHooks()
        self.services = services
        self._memo: dict[MemoKey, ValidatedPrompt] = {}  # recent prompts, insertion-ordered (LRU)
        self._memo_lock = threading.Lock()

    def validate(
        self, prompt: Any, targets: Iterable[str] | None = None, *, text: str | None = None
    ) -> ValidatedPrompt:
        """Validate a prompt; a prompt seen recently re-checks only its volatile nodes.

        `text` is the prompt's JSON text when the caller has it (the queue stores it): the memo key.
        """
        targets = None if targets is None else tuple(targets)
        if text is None:
            # The same prompt submitted again (or read back from the queue) comes in the same key order,
            # so its text is a key; sorting keys would double the cost.
            text = prompt_text(prompt)
        if text is None:  # not JSON (e.g. built in code with objects): validate every time
            return validate_prompt(prompt, self.registry, services=self.services, targets=targets)
        with self._memo_lock:
            hit = self._memo.get((text, targets))
        if hit is not None and still_valid(hit, self.registry, services=self.services):
            with self._memo_lock:
                self._memo[(text, targets)] = self._memo.pop((text, targets), hit)
            return hit
        validated = validate_prompt(prompt, self.registry, services=self.services, targets=targets)
        with self._memo_lock:
            self._memo[(text, targets)] = validated
            # The worker asks again with the outputs the queue stored as its targets: same nodes, same order.
            self._memo[(text, validated.outputs)] = validated
            while len(self._memo) > self.memo_size:
                self._memo.pop(next(iter(self._memo)))
        return validated

    def execute(
        self,
        validated: ValidatedPrompt,
        raw_prompt: Mapping[str, Any],
        *,
        prompt_id: str = "",
        sink: ev.EventSink | None = None,
        extra_data: Mapping[str, Any] | None = None,
        cancel: CancelToken | None = None,
    ) -> RunResult:
        """Run a validated prompt. `raw_prompt` is the API prompt it came from, handed to nodes that ask
        for the hidden PROMPT input (SaveImage embeds it). Raises NodeExecutionError or Interrupted
        after emitting the matching event."""
        run = PromptRun(
            validated,
            registry=self.registry,
            cache=self.cache,
            hooks=self.hooks,
            services=self.services,
            prompt_id=prompt_id,
            sink=sink or ev.NullSink(),
            extra_data=extra_data or {},
            cancel=cancel or CancelToken(),
            raw_prompt=raw_prompt,
        )
        return run.run()

    def run_prompt(
        self,
        prompt: Mapping[str, Any],
        *,
        prompt_id: str = "",
        sink: ev.EventSink | None = None,
        extra_data: Mapping[str, Any] | None = None,
        targets: Iterable[str] | None = None,
        cancel: CancelToken | None = None,
    ) -> RunResult:
        """Validate an API prompt (raises PromptValidationError) and execute it."""
        validated = self.validate(prompt, targets)
        return self.execute(
            validated, prompt, prompt_id=prompt_id, sink=sink, extra_data=extra_data, cancel=cancel
        )
