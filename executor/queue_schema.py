"""The prompt queue's SQLite layout: tables, migrations from older files, and the crash record.

`PromptQueue` (executor/queue.py) owns the connection; this module only knows what the file holds.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from .history import dumps

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT UNIQUE NOT NULL,
    number REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs TEXT NOT NULL,
    create_time INTEGER,
    workflow_id TEXT,
    start_time INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT UNIQUE NOT NULL,
    number REAL NOT NULL,
    item TEXT NOT NULL,
    outputs TEXT NOT NULL,
    status TEXT NOT NULL,
    meta TEXT NOT NULL,
    job_status TEXT NOT NULL,
    create_time INTEGER,
    workflow_id TEXT,
    start_time INTEGER,
    end_time INTEGER,
    outputs_count INTEGER NOT NULL DEFAULT 0,
    previewable_count INTEGER NOT NULL DEFAULT 0,
    preview_output TEXT,
    execution_error TEXT
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def create_or_migrate(db: sqlite3.Connection) -> None:
    """Create missing tables and bring a file written by an older version up to this schema."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    db.executescript(_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(queue)")}
    if "attempts" not in columns:
        db.execute("ALTER TABLE queue ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
    if version < 2:
        _scrub_non_finite(db)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _scrub_non_finite(db: sqlite3.Connection) -> None:
    """Version 1 stored NaN/Infinity sent by clients, which made history unreadable as JSON; they
    become null (numbers: 0)."""
    tables = (
        ("queue", ("prompt", "extra_data", "outputs")),
        ("history", ("item", "outputs", "status", "meta", "preview_output", "execution_error")),
    )
    db.execute("BEGIN IMMEDIATE")
    try:
        for table, columns in tables:
            where = " OR ".join(f"{c} LIKE '%NaN%' OR {c} LIKE '%Infinity%'" for c in columns)
            rows = db.execute(f"SELECT seq, {', '.join(columns)} FROM {table} WHERE {where}").fetchall()
            for seq, *texts in rows:
                values = [
                    None if t is None else dumps(json.loads(t, parse_constant=lambda _: None)) for t in texts
                ]
                assignments = ", ".join(f"{c}=?" for c in columns)
                db.execute(f"UPDATE {table} SET {assignments} WHERE seq=?", (*values, seq))
            db.execute(
                f"UPDATE {table} SET number=0 WHERE number > 1.7976931348623157e308 OR number < -1.7976931348623157e308"
            )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def crash_status(prompt_id: str, attempts: int, start_time: int | None) -> dict[str, Any]:
    """The history `status` of a prompt that was running during `attempts` crashes in a row."""
    message = (
        f"The server stopped unexpectedly (crashed or was killed, e.g. out of memory) while "
        f"this prompt was running, {attempts} times in a row; it was not run again."
    )
    now = int(time.time() * 1000)
    return {
        "status_str": "error",
        "completed": False,
        "messages": [
            ["execution_start", {"prompt_id": prompt_id, "timestamp": start_time or now}],
            [
                "execution_error",
                {
                    "prompt_id": prompt_id,
                    "node_id": None,
                    "node_type": None,
                    "executed": [],
                    "exception_message": message,
                    "exception_type": "ServerCrashedWhileRunning",
                    "traceback": [],
                    "current_inputs": {},
                    "current_outputs": [],
                    "timestamp": now,
                },
            ],
        ],
    }
