"""The one worker thread that runs queued prompts; the event loop never waits on node work.

Per prompt: take it from the queue, run it with a fresh CancelToken, record the run, write history,
broadcast the new queue status, and only then send `executing` null (API clients read that as "done,
history is ready"). Any failure is recorded in history; the worker itself never dies. Stopping the
worker interrupts the running prompt and puts it back in the queue, so it runs after a restart.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from executor.cancel import CancelToken
from executor.errors import Interrupted, NodeExecutionError, PromptValidationError
from executor.messages import exception_type_name
from executor.queue import PromptQueue, QueueItem
from executor.recorder import RunRecorder
from executor.run import Executor

from .hub import Hub
from .sink import WebEventSink

log = logging.getLogger(__name__)


@dataclass
class _Running:
    prompt_id: str
    client_id: str | None
    cancel: CancelToken
    sink: WebEventSink


class PromptWorker:
    """Runs prompts from `queue` on `executor`, reporting through `hub`."""

    def __init__(
        self,
        executor: Executor,
        queue: PromptQueue,
        hub: Hub,
        *,
        free_models: Callable[[], None] | None = None,
        progress_interval_s: float = 0.05,
        state_interval_s: float = 0.25,
    ) -> None:
        self.executor = executor
        self.queue = queue
        self.hub = hub
        self.free_models = free_models
        self.progress_interval_s = progress_interval_s
        self.state_interval_s = state_interval_s
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: _Running | None = None
        self._free = {"unload_models": False, "free_memory": False}

    # --- control (any thread) --------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="fluxloom-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Interrupt the running prompt (re-queued, not failed) and wait for the thread to end."""
        self._stopping.set()
        with self._lock:
            if self._running is not None:
                self._running.cancel.cancel()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("worker did not stop within %.0f s (a node ignores cancellation)", timeout)
            self._thread = None

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Cancel the running prompt (only if it is `prompt_id`, when given). True if one was cancelled."""
        with self._lock:
            running = self._running
            if running is None or (prompt_id is not None and running.prompt_id != prompt_id):
                return False
            running.cancel.cancel()
            return True

    def request_free(self, *, unload_models: bool, free_memory: bool) -> None:
        """Unload models and/or drop cached outputs once the current prompt is done."""
        with self._lock:
            self._free["unload_models"] |= unload_models
            self._free["free_memory"] |= free_memory
        self.queue.wake()

    def running_node(self, client_id: str) -> str | None:
        """The node executing for `client_id`'s prompt right now, if any (sent to a reconnecting socket)."""
        with self._lock:
            running = self._running
        if running is None or running.client_id != client_id:
            return None
        return running.sink.current_node

    @property
    def running_prompt(self) -> str | None:
        with self._lock:
            return self._running.prompt_id if self._running else None

    # --- the thread ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._apply_free()
            try:
                # The timeout only bounds a stop() racing with entering get(); wake() normally ends the wait.
                item = self.queue.get(timeout=1.0)
            except Exception:  # the queue was closed under us: nothing more to run
                log.exception("prompt queue unavailable; worker stops")
                return
            if item is None:
                if self.queue.closed:
                    return
                continue
            self._apply_free()  # a /free that came before this prompt was queued applies to it
            try:
                self._run(item)
            except Exception:  # last resort: a bug here must not kill the worker
                log.exception("worker failed while handling prompt %s", item.prompt_id)
            finally:
                with self._lock:
                    self._running = None

    def _apply_free(self) -> None:
        with self._lock:
            unload, free = self._free["unload_models"], self._free["free_memory"]
            self._free = {"unload_models": False, "free_memory": False}
        if free:
            self.executor.cache.clear()
        if (unload or free) and self.free_models is not None:
            try:
                self.free_models()
            except Exception:
                log.exception("unloading models failed")

    def _broadcast_status(self) -> None:
        self.hub.send_threadsafe([self.hub.status_frame(self.queue.remaining())])

    def _run(self, item: QueueItem) -> None:
        client_id = item.extra_data.get("client_id") or None
        recorder = RunRecorder(item.prompt_id)
        sink = WebEventSink(
            self.hub,
            recorder,
            client_id=client_id,
            progress_interval_s=self.progress_interval_s,
            state_interval_s=self.state_interval_s,
        )
        cancel = CancelToken()
        with self._lock:
            self._running = _Running(item.prompt_id, client_id, cancel, sink)
        if self._stopping.is_set():
            cancel.cancel()
        self._broadcast_status()
        try:
            validated = self.executor.validate(
                item.prompt, item.outputs_to_execute or None, text=item.prompt_text or None
            )
            self.executor.execute(
                validated,
                item.prompt,
                prompt_id=item.prompt_id,
                sink=sink,
                extra_data={**item.extra_data, **item.sensitive},
                cancel=cancel,
            )
        except Interrupted:
            if self._stopping.is_set():
                self.queue.requeue(item.prompt_id)
                log.info("prompt %s re-queued: the server is stopping", item.prompt_id)
                return
        except NodeExecutionError as exc:
            log.info("prompt %s failed: %s", item.prompt_id, exc)
        except PromptValidationError as exc:  # e.g. a model file vanished since it was queued
            sink.error(recorder.fail("PromptValidationError", "; ".join(exc.lines())))
        except Exception as exc:
            log.exception("prompt %s failed outside any node", item.prompt_id)
            sink.error(recorder.fail(exception_type_name(exc), str(exc), traceback.format_exception(exc)))
        try:
            self.queue.task_done(item.prompt_id, recorder.status(), recorder.outputs, recorder.meta)
        except Exception:
            log.exception("writing history of prompt %s failed", item.prompt_id)
        self._broadcast_status()
        sink.finish()
