"""The prompt queue and history, persisted in SQLite so that a restart loses nothing.

One file (`<user_dir>/queue.sqlite3`, WAL mode) holds two tables: `queue` (pending and running prompts)
and `history` (finished prompts with their outputs and status). Items that were running when the
process stopped are pending again on the next open, so they run again; history is kept as written.
Each item counts the runs it started (`attempts`); one that was running when the process died
`MAX_CRASHED_ATTEMPTS` times in a row (e.g. killed by the kernel's OOM killer) is not run again but
recorded in history as failed, so a poison prompt cannot take the server down on every restart.
Every method is thread-safe: the web handlers call it from the event loop, the worker from its thread.
Credentials in `extra_data` (see `history.SENSITIVE_KEYS`) stay in memory and are never written.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .history import HistoryTables, dumps, plain_number, split_sensitive
from .queue_schema import crash_status, create_or_migrate

log = logging.getLogger(__name__)

QUEUE_FILE = "queue.sqlite3"
MAX_CRASHED_ATTEMPTS = 2


class QueueStoreError(RuntimeError):
    """The queue file cannot be opened or is not a queue database."""


class QueueNumberError(ValueError):
    """A queue number that SQLite cannot order (NaN, infinite, or beyond a 64-bit float)."""


@dataclass(frozen=True)
class QueueItem:
    """A queued prompt: ComfyUI's 5-tuple plus credentials that never leave memory."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: tuple[str, ...]
    sensitive: dict[str, Any] = field(default_factory=dict, repr=False)
    # The prompt as stored (JSON text): the executor's validation memo key, so the worker finds the
    # route's validation without serialising the prompt again.
    prompt_text: str = field(default="", repr=False, compare=False)

    def as_list(self) -> list[Any]:
        """`[number, prompt_id, prompt, extra_data, outputs_to_execute]` as served by /queue and /history."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, list(self.outputs_to_execute)]


@dataclass(frozen=True)
class Queued:
    """What `put` assigned: the priority number, and the queue size right after the insert."""

    number: float | int
    remaining: int


def _workflow_id(extra_data: Mapping[str, Any]) -> str | None:
    """`extra_pnginfo.workflow.id`: the UI workflow a job came from (jobs API `workflow_id`)."""
    pnginfo = extra_data.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, Mapping) else None
    workflow_id = workflow.get("id") if isinstance(workflow, Mapping) else None
    return None if workflow_id is None else str(workflow_id)


def _item_text(row: tuple[Any, ...]) -> str:
    """The stored columns (number, prompt_id, prompt, extra_data, outputs texts) as the JSON text of
    ComfyUI's 5-tuple, without parsing the prompt: history keeps it as written."""
    number, prompt_id, prompt, extra, outputs = row
    return f"[{json.dumps(plain_number(number))},{json.dumps(prompt_id)},{prompt},{extra},{outputs}]"


class PromptQueue(HistoryTables):
    """Pending/running prompts and finished history in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path | str, *, max_history: int = 10_000) -> None:
        self.path = Path(path)
        self.max_history = max_history
        self._lock = threading.RLock()
        self._ready = threading.Condition(self._lock)
        self._sensitive: dict[str, dict[str, Any]] = {}
        # Items queued by this process, as given: `get` hands them out without parsing the stored text.
        self._live: dict[str, QueueItem] = {}
        self._wakeups = 0
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash loses nothing
            create_or_migrate(self._db)
            failed = self._fail_poison_prompts()
            recovered = self._db.execute(
                "UPDATE queue SET state='pending', start_time=NULL WHERE state='running'"
            ).rowcount
        except sqlite3.DatabaseError as exc:
            raise QueueStoreError(f"cannot open the prompt queue {self.path}: {exc}") from exc
        for prompt_id, attempts in failed:
            log.error(
                "prompt %s was running during %d crashes in a row; it is recorded as failed, not run again",
                prompt_id,
                attempts,
            )
        if recovered:
            log.info("re-queued %d prompt(s) that were running when the server stopped", recovered)

    def _fail_poison_prompts(self) -> list[tuple[str, int]]:
        """Move prompts that were running during MAX_CRASHED_ATTEMPTS crashes in a row to history."""
        failed: list[tuple[str, int]] = []
        with self._transaction() as db:
            rows = db.execute(
                "SELECT number, prompt_id, prompt, extra_data, outputs, create_time, workflow_id, attempts,"
                " start_time FROM queue WHERE state='running' AND attempts >= ?",
                (MAX_CRASHED_ATTEMPTS,),
            ).fetchall()
            for row in rows:
                prompt_id, attempts = row[1], int(row[7])
                status = crash_status(prompt_id, attempts, row[8])
                db.execute("DELETE FROM queue WHERE prompt_id=?", (prompt_id,))
                self._record(db, row[1], row[0], _item_text(row[:5]), (row[5], row[6]), status, {}, {})
                failed.append((prompt_id, attempts))
        return failed

    @classmethod
    def in_user_dir(cls, user_dir: Path | str, **kw: Any) -> PromptQueue:
        return cls(Path(user_dir) / QUEUE_FILE, **kw)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise QueueStoreError(f"the prompt queue {self.path} is closed")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._closed:
                raise QueueStoreError(f"the prompt queue {self.path} is closed")
            return self._db.execute(sql, tuple(args)).fetchall()

    # --- queue ---------------------------------------------------------------------------------
    def _next_counter(self, db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO counters(name, value) VALUES('number', 0) ON CONFLICT(name) DO NOTHING")
        db.execute("UPDATE counters SET value = value + 1 WHERE name='number'")
        return int(db.execute("SELECT value FROM counters WHERE name='number'").fetchone()[0])

    def put(
        self,
        prompt_id: str,
        number: float | None,
        prompt: Mapping[str, Any],
        extra_data: Mapping[str, Any],
        outputs_to_execute: Iterable[str],
        front: bool = False,
        *,
        prompt_text: str | None = None,
    ) -> Queued:
        """Queue a prompt; `number` None takes the next counter value (negated with `front`).

        Lower numbers run first. Returns the number and the queue size counted in the same transaction
        (a status sent from it cannot be overtaken by the worker). Raises ValueError if `prompt_id` is
        already queued. `prompt_text` is `dumps(prompt)` when the caller has it already.
        """
        if number is not None:
            try:
                finite = math.isfinite(float(number))
            except OverflowError:
                finite = False
            if not finite:
                raise QueueNumberError(f"queue number must be a finite 64-bit float, got {str(number)[:40]}")
        public, secret = split_sensitive(extra_data)
        workflow_id = _workflow_id(public)
        create_time = public.get("create_time")
        if not isinstance(create_time, (int, float)) or isinstance(create_time, bool):
            create_time = None
        text = dumps(prompt) if prompt_text is None else prompt_text
        outputs = tuple(outputs_to_execute)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM queue WHERE prompt_id=?", (prompt_id,)).fetchone():
                raise ValueError(f"prompt {prompt_id} is already queued")
            counter = self._next_counter(db)
            if number is None:
                number = -counter if front else counter
            db.execute(
                "INSERT INTO queue(prompt_id, number, prompt, extra_data, outputs, create_time, workflow_id)"
                " VALUES(?, ?, ?, ?, ?, ?, ?)",
                (
                    prompt_id,
                    float(number),
                    text,
                    dumps(public),
                    dumps(list(outputs)),
                    None if create_time is None else int(create_time),
                    workflow_id,
                ),
            )
            remaining = int(db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])
            if secret:
                self._sensitive[prompt_id] = secret
            self._live[prompt_id] = QueueItem(
                plain_number(number), prompt_id, dict(prompt), public, outputs, secret, text
            )
            self._ready.notify_all()
        return Queued(plain_number(number), remaining)

    def _item(self, row: tuple[Any, ...]) -> QueueItem:
        number, prompt_id, prompt, extra, outputs = row
        return QueueItem(
            plain_number(number),
            prompt_id,
            json.loads(prompt),
            json.loads(extra),
            tuple(json.loads(outputs)),
            dict(self._sensitive.get(prompt_id, {})),
            prompt,
        )

    def get(self, timeout: float | None = None) -> QueueItem | None:
        """Take the pending prompt with the lowest number (marking it running).

        Waits up to `timeout` s (forever if None); returns None on timeout, on `wake()` or once closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            wakeups = self._wakeups
            while True:
                if self._closed:
                    return None
                with self._transaction() as db:
                    row = db.execute(
                        "SELECT prompt_id FROM queue WHERE state='pending' ORDER BY number, seq LIMIT 1"
                    ).fetchone()
                    if row is not None:
                        db.execute(
                            "UPDATE queue SET state='running', start_time=?, attempts=attempts+1"
                            " WHERE prompt_id=?",
                            (int(time.time() * 1000), row[0]),
                        )
                        live = self._live.get(row[0])
                        return live if live is not None else self._read_item(db, row[0])
                remaining = None if deadline is None else deadline - time.monotonic()
                if self._wakeups != wakeups or (remaining is not None and remaining <= 0):
                    return None
                self._ready.wait(remaining)

    def _read_item(self, db: sqlite3.Connection, prompt_id: str) -> QueueItem:
        row = db.execute(
            "SELECT number, prompt_id, prompt, extra_data, outputs FROM queue WHERE prompt_id=?", (prompt_id,)
        ).fetchone()
        return self._item(row)

    def wake(self) -> None:
        """Make a `get` that is waiting return None (so its caller can look at other work)."""
        with self._ready:
            self._wakeups += 1
            self._ready.notify_all()

    def requeue(self, prompt_id: str) -> bool:
        """Put a running prompt back to pending (the worker is stopping before it finished).

        An orderly stop is not a crash: the attempt it started is not counted.
        """
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE queue SET state='pending', start_time=NULL, attempts=MAX(attempts-1, 0)"
                " WHERE prompt_id=? AND state='running'",
                (prompt_id,),
            ).rowcount
            self._ready.notify_all()
        return bool(changed)

    def _items(self, state: str) -> list[QueueItem]:
        rows = self._query(
            "SELECT number, prompt_id, prompt, extra_data, outputs FROM queue WHERE state=?"
            " ORDER BY number, seq",
            (state,),
        )
        return [self._item(r) for r in rows]

    def _pending_or_running(self, prompt_id: str) -> QueueItem | None:
        return next((i for i in self.running() + self.pending() if i.prompt_id == prompt_id), None)

    def running(self) -> list[QueueItem]:
        return self._items("running")

    def pending(self) -> list[QueueItem]:
        return self._items("pending")

    def remaining(self) -> int:
        """Pending plus running prompts (ComfyUI's `queue_remaining`)."""
        return int(self._query("SELECT COUNT(*) FROM queue")[0][0])

    def is_queued(self, prompt_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM queue WHERE prompt_id=?", (prompt_id,)))

    def listing(self) -> dict[str, list[list[Any]]]:
        """ComfyUI's GET /queue body."""
        return {
            "queue_running": [i.as_list() for i in self.running()],
            "queue_pending": [i.as_list() for i in self.pending()],
        }

    def delete_pending(self, prompt_ids: Iterable[str]) -> int:
        ids = [str(p) for p in prompt_ids]
        with self._transaction() as db:
            deleted = sum(
                db.execute("DELETE FROM queue WHERE prompt_id=? AND state='pending'", (p,)).rowcount
                for p in ids
            )
        for p in ids:
            self._forget(p)
        return deleted

    def clear_pending(self) -> int:
        with self._transaction() as db:
            ids = [r[0] for r in db.execute("SELECT prompt_id FROM queue WHERE state='pending'")]
            db.execute("DELETE FROM queue WHERE state='pending'")
        for p in ids:
            self._forget(p)
        return len(ids)

    def _forget(self, prompt_id: str) -> None:
        self._sensitive.pop(prompt_id, None)
        self._live.pop(prompt_id, None)

    # --- history -------------------------------------------------------------------------------
    def task_done(
        self,
        prompt_id: str,
        status: Mapping[str, Any],
        outputs: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Move a running prompt to history with its `status` object, UI `outputs` and node `meta`."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT number, prompt_id, prompt, extra_data, outputs, create_time, workflow_id"
                " FROM queue WHERE prompt_id=?",
                (prompt_id,),
            ).fetchone()
            if row is None:
                raise KeyError(f"prompt {prompt_id} is not in the queue")
            db.execute("DELETE FROM queue WHERE prompt_id=?", (prompt_id,))
            self._record(
                db, row[1], row[0], _item_text(row[:5]), (row[5], row[6]), status, outputs, meta or {}
            )
        self._forget(prompt_id)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._ready:
            if not self._closed:
                self._closed = True
                self._ready.notify_all()
                self._db.close()
