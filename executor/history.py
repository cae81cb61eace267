"""History of finished prompts and the jobs API, stored in SQLite, answered in ComfyUI's shapes.

`HistoryTables` (mixed into the PromptQueue) writes one row per finished prompt (what the run recorder
collected: `status`, `outputs`, `meta`) with the jobs-API columns summarised from it, and answers GET
/history and the jobs listing from those rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import orjson

from .messages import TERMINAL

# extra_data keys that carry credentials: kept in memory for the run, never stored or exposed.
SENSITIVE_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")

JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
# Output keys whose items are files the UI can preview (`{filename, subfolder, type}`).
MEDIA_KEYS = {"images": "images", "gifs": "video", "video": "video", "audio": "audio", "3d": "3d"}


def prompt_text(prompt: Any) -> str | None:
    """A prompt as compact JSON text (the queue's stored form and the validation memo key), or None
    if it is not JSON. orjson writes it ~15 times faster than the json module (a 10,000-node prompt
    took 15-20 ms, on the event loop); the json module takes what orjson refuses (integers beyond
    64 bits). orjson writes NaN as null: prompts from a request never hold NaN (the body parser
    refuses it), only one a node pack's on_prompt handler rewrote could."""
    try:
        return orjson.dumps(prompt).decode("utf-8")
    except TypeError:
        pass
    try:
        return json.dumps(prompt, separators=(",", ":"), check_circular=False)
    except (TypeError, ValueError, RecursionError):
        return None


def dumps(value: Any) -> str:
    # UI outputs of third-party nodes may hold non-JSON values; store their text rather than fail the run.
    return json.dumps(value, default=str, separators=(",", ":"))


def plain_number(value: float) -> float | int:
    """Queue numbers are stored as REAL; whole ones are served as ints, as ComfyUI does."""
    return int(value) if float(value).is_integer() else value


def split_sensitive(extra_data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(extra_data without credentials, the credentials)."""
    public = {k: v for k, v in extra_data.items() if k not in SENSITIVE_KEYS}
    secret = {k: v for k, v in extra_data.items() if k in SENSITIVE_KEYS}
    return public, secret


@dataclass(frozen=True)
class JobSummary:
    """The columns the jobs API lists for a finished prompt."""

    status: str  # completed | failed | cancelled
    start_time: int | None
    end_time: int | None
    outputs_count: int
    previewable_count: int
    preview_output: dict[str, Any] | None
    execution_error: dict[str, Any] | None


def job_summary(status: Mapping[str, Any], outputs: Mapping[str, Any]) -> JobSummary:
    messages = [m for m in status.get("messages", ()) if isinstance(m, (list, tuple)) and len(m) == 2]
    by_kind = {kind: data for kind, data in messages if isinstance(data, Mapping)}
    if status.get("status_str") == "success":
        state = "completed"
    elif "execution_interrupted" in by_kind:
        state = "cancelled"
    else:
        state = "failed"
    start = by_kind.get("execution_start", {}).get("timestamp")
    end = None
    for kind in TERMINAL:
        if kind in by_kind:
            end = by_kind[kind].get("timestamp")
    count, previewable, preview = summarize_outputs(outputs)
    error = by_kind.get("execution_error")
    return JobSummary(state, start, end, count, previewable, preview, dict(error) if error else None)


def summarize_outputs(outputs: Mapping[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    """(output items, previewable items, the preview item): saved media > temp media > text."""
    count = previewable = 0
    saved: dict[str, Any] | None = None
    temp: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    for node_id, ui in outputs.items():
        if not isinstance(ui, Mapping):
            continue
        for key, items in ui.items():
            if not isinstance(items, list):
                continue
            media = MEDIA_KEYS.get(key)
            for item in items:
                if media and isinstance(item, Mapping) and "filename" in item:
                    count += 1
                    previewable += 1
                    entry = {**item, "nodeId": node_id, "mediaType": media}
                    if item.get("type", "output") == "output":
                        saved = saved or entry
                    else:
                        temp = temp or entry
                elif key == "text":
                    count += 1
                    text = text or {
                        "content": item if isinstance(item, str) else str(item),
                        "nodeId": node_id,
                        "mediaType": "text",
                    }
    return count, previewable, saved or temp or text


@dataclass(frozen=True)
class JobQuery:
    """Filters of the jobs API. `sort_by`: created_at | execution_duration."""

    statuses: tuple[str, ...] = JOB_STATUSES
    limit: int | None = None
    offset: int = 0
    workflow_id: str | None = None
    sort_by: str = "created_at"
    sort_order: str = "desc"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.statuses) - set(JOB_STATUSES))
        if unknown:
            raise ValueError(f"unknown job status {unknown}; use {', '.join(JOB_STATUSES)}")
        if self.sort_by not in ("created_at", "execution_duration"):
            raise ValueError(f"sort_by must be created_at or execution_duration, got {self.sort_by!r}")
        if self.sort_order not in ("asc", "desc"):
            raise ValueError(f"sort_order must be asc or desc, got {self.sort_order!r}")
        if self.offset < 0 or (self.limit is not None and self.limit < 0):
            raise ValueError(f"limit and offset must be >= 0, got limit={self.limit} offset={self.offset}")


class HistoryTables:
    """History and jobs queries over the `history` and `queue` tables (mixed into PromptQueue)."""

    max_history: int

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _pending_or_running(self, prompt_id: str) -> Any:
        raise NotImplementedError

    def _record(
        self,
        db: sqlite3.Connection,
        prompt_id: str,
        number: float,
        item: str,
        columns: tuple[Any, Any],
        status: Mapping[str, Any],
        outputs: Mapping[str, Any],
        meta: Mapping[str, Any],
    ) -> None:
        """Insert one finished prompt (`item` = JSON text of the 5-tuple, whose second element is
        `prompt_id`; `columns` = create_time, workflow_id)."""
        summary = job_summary(status, outputs)
        db.execute("DELETE FROM history WHERE prompt_id=?", (prompt_id,))
        db.execute(
            "INSERT INTO history(prompt_id, number, item, outputs, status, meta, job_status, create_time,"
            " workflow_id, start_time, end_time, outputs_count, previewable_count, preview_output,"
            " execution_error) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                prompt_id,
                number,
                item,
                dumps(dict(outputs)),
                dumps(dict(status)),
                dumps(dict(meta)),
                summary.status,
                *columns,
                summary.start_time,
                summary.end_time,
                summary.outputs_count,
                summary.previewable_count,
                dumps(summary.preview_output) if summary.preview_output else None,
                dumps(summary.execution_error) if summary.execution_error else None,
            ),
        )
        db.execute(
            "DELETE FROM history WHERE seq IN (SELECT seq FROM history ORDER BY seq DESC LIMIT -1 OFFSET ?)",
            (self.max_history,),
        )

    def history(
        self, prompt_id: str | None = None, *, max_items: int | None = None, offset: int = -1
    ) -> dict[str, Any]:
        """`{prompt_id: {prompt, outputs, status, meta}}` oldest first, as ComfyUI's GET /history.

        A negative `offset` with `max_items` gives the newest `max_items`; otherwise `offset` skips
        that many of the oldest entries.
        """
        cols = "prompt_id, item, outputs, status, meta"
        if prompt_id is not None:
            rows = self._query(f"SELECT {cols} FROM history WHERE prompt_id=?", (prompt_id,))
        else:
            if offset < 0:
                total = int(self._query("SELECT COUNT(*) FROM history")[0][0])
                offset = max(total - max_items, 0) if max_items is not None else 0
            limit = -1 if max_items is None else max_items
            rows = self._query(f"SELECT {cols} FROM history ORDER BY seq LIMIT ? OFFSET ?", (limit, offset))
        return {
            pid: {
                "prompt": json.loads(item),
                "outputs": json.loads(outputs),
                "status": json.loads(status),
                "meta": json.loads(meta),
            }
            for pid, item, outputs, status, meta in rows
        }

    def delete_history(self, prompt_ids: Iterable[str]) -> int:
        with self._transaction() as db:
            return sum(
                db.execute("DELETE FROM history WHERE prompt_id=?", (str(p),)).rowcount for p in prompt_ids
            )

    def clear_history(self) -> int:
        with self._transaction() as db:
            return int(db.execute("DELETE FROM history").rowcount)

    # --- jobs ----------------------------------------------------------------------------------
    _JOBS = (
        "SELECT prompt_id, CASE state WHEN 'running' THEN 'in_progress' ELSE 'pending' END AS status,"
        " number, create_time, start_time, NULL AS end_time, workflow_id, 0 AS outputs_count,"
        " 0 AS previewable_count, NULL AS preview_output, NULL AS execution_error, seq AS seq, 0 AS done"
        " FROM queue UNION ALL"
        " SELECT prompt_id, job_status, number, create_time, start_time, end_time, workflow_id, outputs_count,"
        " previewable_count, preview_output, execution_error, seq, 1 FROM history"
    )

    def jobs(self, query: JobQuery) -> tuple[list[dict[str, Any]], int]:
        """(job list entries for one page, total matching), newest first by default."""
        where = [f"status IN ({', '.join('?' * len(query.statuses))})"]
        args: list[Any] = list(query.statuses)
        if query.workflow_id is not None:
            where.append("workflow_id = ?")
            args.append(query.workflow_id)
        direction = "DESC" if query.sort_order == "desc" else "ASC"
        key = (
            "create_time"
            if query.sort_by == "created_at"
            else "(CASE WHEN end_time IS NULL THEN NULL ELSE end_time - start_time END)"
        )
        sql = f"SELECT * FROM ({self._JOBS}) WHERE {' AND '.join(where)}"
        total = int(self._query(f"SELECT COUNT(*) FROM ({sql})", args)[0][0])
        order = f" ORDER BY {key} IS NULL, {key} {direction}, done {direction}, seq {direction}"
        rows = self._query(
            sql + order + " LIMIT ? OFFSET ?",
            [*args, -1 if query.limit is None else query.limit, query.offset],
        )
        return [job_entry(r) for r in rows], total

    def job(self, prompt_id: str) -> dict[str, Any] | None:
        """One job with `outputs`, `execution_status` and `workflow` (`prompt` + `extra_data`)."""
        rows = self._query(f"SELECT * FROM ({self._JOBS}) WHERE prompt_id=?", (prompt_id,))
        if not rows:
            return None
        entry = job_entry(rows[0])
        found = self.history(prompt_id)
        if prompt_id in found:
            record = found[prompt_id]
            entry.update(
                outputs=record["outputs"],
                execution_status=record["status"],
                workflow={"prompt": record["prompt"][2], "extra_data": record["prompt"][3]},
            )
        else:
            item = self._pending_or_running(prompt_id)
            if item is not None:
                entry["workflow"] = {"prompt": item.prompt, "extra_data": item.extra_data}
        return entry


_JOB_COLUMNS = tuple(
    "id status priority create_time execution_start_time execution_end_time workflow_id outputs_count"
    " previewable_outputs_count preview_output execution_error".split()
)


def job_entry(row: tuple[Any, ...]) -> dict[str, Any]:
    """A jobs-API list entry from a `_JOBS` row; keys whose value is null are left out, as ComfyUI does."""
    entry = dict(zip(_JOB_COLUMNS, row[: len(_JOB_COLUMNS)]))
    entry["priority"] = plain_number(entry["priority"])
    entry["create_time"] = entry["create_time"] or 0  # the frontend's schema requires a number
    for key in ("preview_output", "execution_error"):
        entry[key] = json.loads(entry[key]) if entry[key] else None
    return {k: v for k, v in entry.items() if v is not None}
