"""PromptQueue: order, history paging, persistence across reopen, credentials, threads, jobs listing."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from executor.history import JobQuery, job_summary, summarize_outputs
from executor.queue import PromptQueue, QueueStoreError

PROMPT = {"1": {"class_type": "Number", "inputs": {"value": 1}}}


def status(kind: str = "execution_success", prompt_id: str = "p") -> dict:
    done = kind == "execution_success"
    return {
        "status_str": "success" if done else "error",
        "completed": done,
        "messages": [
            ["execution_start", {"prompt_id": prompt_id, "timestamp": 1000}],
            [kind, {"prompt_id": prompt_id, "timestamp": 1500}],
        ],
    }


@pytest.fixture
def queue(tmp_path):
    q = PromptQueue.in_user_dir(tmp_path)
    yield q
    q.close()


def run_one(queue: PromptQueue, outputs: dict | None = None, kind: str = "execution_success") -> str:
    item = queue.get(timeout=0)
    assert item is not None
    queue.task_done(item.prompt_id, status(kind, item.prompt_id), outputs or {}, {})
    return item.prompt_id


def test_file_is_wal_sqlite_in_user_dir(tmp_path, queue):
    assert (tmp_path / "queue.sqlite3").is_file()
    with sqlite3.connect(tmp_path / "queue.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_order_counter_front_and_explicit_numbers(queue):
    assert queue.put("a", None, PROMPT, {}, ["1"]).number == 1
    assert queue.put("b", None, PROMPT, {}, ["1"]).number == 2
    assert queue.put("c", None, PROMPT, {}, ["1"], front=True).number == -3
    assert queue.put("d", 1.5, PROMPT, {}, ["1"]).number == 1.5
    queued = queue.put("e", 1, PROMPT, {}, ["1"])
    assert queued.remaining == 5
    # lowest number first; equal numbers in arrival order
    order = [queue.get(timeout=0).prompt_id for _ in range(5)]
    assert order == ["c", "a", "e", "d", "b"]
    assert queue.get(timeout=0) is None


def test_duplicate_queued_id_is_refused(queue):
    queue.put("a", None, PROMPT, {}, ["1"])
    with pytest.raises(ValueError, match="already queued"):
        queue.put("a", None, PROMPT, {}, ["1"])


def test_listing_running_and_pending_shapes(queue):
    queue.put("a", None, PROMPT, {"client_id": "c1"}, ["1"])
    queue.put("b", None, PROMPT, {}, ["1"])
    queue.get(timeout=0)
    listing = queue.listing()
    assert listing["queue_running"] == [[1, "a", PROMPT, {"client_id": "c1"}, ["1"]]]
    assert listing["queue_pending"] == [[2, "b", PROMPT, {}, ["1"]]]
    assert queue.remaining() == 2


def test_delete_and_clear_pending_never_touch_running(queue):
    for pid in "abcd":
        queue.put(pid, None, PROMPT, {}, ["1"])
    queue.get(timeout=0)  # a runs
    assert queue.delete_pending(["a", "b", "zz"]) == 1
    assert [i.prompt_id for i in queue.pending()] == ["c", "d"]
    assert queue.clear_pending() == 2
    assert [i.prompt_id for i in queue.running()] == ["a"]
    assert queue.remaining() == 1


def test_task_done_moves_to_history_with_comfy_shape(queue):
    queue.put("a", None, PROMPT, {"client_id": "x"}, ["1"])
    item = queue.get(timeout=0)
    queue.task_done("a", status(), {"1": {"text": ["1"]}}, {"1": {"node_id": "1"}})
    assert queue.remaining() == 0
    assert queue.history("a") == {
        "a": {
            "prompt": item.as_list(),
            "outputs": {"1": {"text": ["1"]}},
            "status": status(),
            "meta": {"1": {"node_id": "1"}},
        }
    }
    assert queue.history("nope") == {}
    with pytest.raises(KeyError):
        queue.task_done("a", status(), {}, {})


def reference_history(ids: list[str], max_items: int | None, offset: int) -> list[str]:
    """ComfyUI's paging rule, written out independently: negative offset + max_items -> newest max_items."""
    if offset < 0 and max_items is not None:
        offset = len(ids) - max_items
    offset = max(offset, 0)
    selected = ids[offset:]
    return selected if max_items is None else selected[:max_items]


@pytest.mark.parametrize(
    "max_items,offset", [(None, -1), (3, -1), (10, -1), (2, 1), (None, 4), (0, -1), (3, 0)]
)
def test_history_paging_matches_comfy_rule(queue, max_items, offset):
    ids = [f"p{i}" for i in range(6)]
    for pid in ids:
        queue.put(pid, None, PROMPT, {}, ["1"])
        run_one(queue)
    got = list(queue.history(max_items=max_items, offset=offset))
    assert got == reference_history(ids, max_items, offset)


def test_history_delete_clear_and_cap(tmp_path):
    queue = PromptQueue(tmp_path / "q.sqlite3", max_history=3)
    for pid in "abcde":
        queue.put(pid, None, PROMPT, {}, ["1"])
        run_one(queue)
    assert list(queue.history()) == ["c", "d", "e"]  # the oldest beyond the cap are dropped
    assert queue.delete_history(["d", "zz"]) == 1
    assert list(queue.history()) == ["c", "e"]
    assert queue.clear_history() == 2
    assert queue.history() == {}
    queue.close()


def test_rerun_of_same_id_replaces_history_entry_at_the_end(queue):
    for pid in ("a", "b", "a"):
        queue.put(pid, None, PROMPT, {}, ["1"])
        run_one(queue)
    assert list(queue.history()) == ["b", "a"]


def test_restart_requeues_running_and_keeps_history(tmp_path):
    queue = PromptQueue.in_user_dir(tmp_path)
    for pid in "abc":
        queue.put(pid, None, PROMPT, {"client_id": "c"}, ["1"])
    run_one(queue)  # a finished
    assert queue.get(timeout=0).prompt_id == "b"  # b was running when the process "died"
    queue.close()

    reopened = PromptQueue.in_user_dir(tmp_path)
    assert reopened.running() == []
    assert [i.prompt_id for i in reopened.pending()] == ["b", "c"]
    assert list(reopened.history()) == ["a"]
    assert reopened.put("d", None, PROMPT, {}, ["1"]).number == 4  # the counter survives too
    assert [reopened.get(timeout=0).prompt_id for _ in range(3)] == ["b", "c", "d"]
    reopened.close()


def test_requeue_puts_running_back(queue):
    queue.put("a", None, PROMPT, {}, ["1"])
    queue.get(timeout=0)
    assert queue.requeue("a") is True
    assert queue.requeue("a") is False
    assert queue.get(timeout=0).prompt_id == "a"


def test_credentials_stay_in_memory(tmp_path):
    queue = PromptQueue.in_user_dir(tmp_path)
    extra = {"client_id": "c", "auth_token_comfy_org": "SECRET-TOKEN", "api_key_comfy_org": "SECRET-KEY"}
    queue.put("a", None, PROMPT, extra, ["1"])
    assert queue.listing()["queue_pending"][0][3] == {"client_id": "c"}
    item = queue.get(timeout=0)
    assert item.sensitive == {"auth_token_comfy_org": "SECRET-TOKEN", "api_key_comfy_org": "SECRET-KEY"}
    assert "SECRET" not in repr(item)
    queue.task_done("a", status(), {}, {})
    assert queue.history("a")["a"]["prompt"][3] == {"client_id": "c"}
    queue.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("queue.sqlite3*"))
    assert b"SECRET" not in raw


def test_blocking_get_wakes_on_put_and_on_wake(queue):
    got: list = []
    waiting = threading.Thread(target=lambda: got.append(queue.get(timeout=10)))
    waiting.start()
    queue.put("a", None, PROMPT, {}, ["1"])
    waiting.join(10)
    assert got[0].prompt_id == "a"

    waiting = threading.Thread(target=lambda: got.append(queue.get(timeout=10)))
    waiting.start()
    queue.wake()
    waiting.join(10)
    assert not waiting.is_alive() and got[1] is None


def test_concurrent_producers_and_consumer_lose_nothing(queue):
    done: list[str] = []

    def consume() -> None:
        while len(done) < 200:
            item = queue.get(timeout=10)
            assert item is not None
            queue.task_done(item.prompt_id, status(), {}, {})
            done.append(item.prompt_id)

    def produce(start: int) -> None:
        for i in range(start, start + 50):
            queue.put(f"p{i}", None, PROMPT, {}, ["1"])

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(n * 50,)) for n in range(4)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    consumer.join(30)
    assert sorted(done) == sorted(f"p{i}" for i in range(200))
    assert len(queue.history()) == 200 and queue.remaining() == 0


def test_not_a_database_is_a_typed_error(tmp_path):
    (tmp_path / "queue.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(QueueStoreError, match="queue.sqlite3"):
        PromptQueue.in_user_dir(tmp_path)


def test_closed_queue_refuses_work(tmp_path):
    queue = PromptQueue.in_user_dir(tmp_path)
    queue.close()
    assert queue.get(timeout=0) is None
    with pytest.raises(QueueStoreError, match="closed"):
        queue.put("a", None, PROMPT, {}, ["1"])


# --- jobs ---------------------------------------------------------------------------------------
def fill_jobs(queue: PromptQueue) -> None:
    """done (t=1), failed (t=2), cancelled (t=3), running (t=4), pending (t=5, workflow w)."""
    for pid, created, kind in (
        ("done", 1, "execution_success"),
        ("failed", 2, "execution_error"),
        ("cancelled", 3, "execution_interrupted"),
    ):
        queue.put(pid, None, PROMPT, {"create_time": created}, ["1"])
        item = queue.get(timeout=0)
        outputs = {"9": {"images": [{"filename": f"{pid}.png", "subfolder": "", "type": "output"}]}}
        queue.task_done(item.prompt_id, status(kind, pid), outputs if pid == "done" else {}, {})
    queue.put("running", None, PROMPT, {"create_time": 4}, ["1"])
    queue.get(timeout=0)
    queue.put("pending", None, PROMPT, {"create_time": 5, "extra_pnginfo": {"workflow": {"id": "w"}}}, ["1"])


def test_jobs_status_mapping_and_default_sort(queue):
    fill_jobs(queue)
    jobs, total = queue.jobs(JobQuery())
    assert total == 5
    assert [(j["id"], j["status"]) for j in jobs] == [
        ("pending", "pending"),
        ("running", "in_progress"),
        ("cancelled", "cancelled"),
        ("failed", "failed"),
        ("done", "completed"),
    ]
    done = jobs[-1]
    assert done["create_time"] == 1 and done["outputs_count"] == 1 and done["previewable_outputs_count"] == 1
    assert done["preview_output"] == {
        "filename": "done.png",
        "subfolder": "",
        "type": "output",
        "nodeId": "9",
        "mediaType": "images",
    }
    assert done["execution_start_time"] == 1000 and done["execution_end_time"] == 1500
    assert "execution_error" in jobs[3] and "preview_output" not in jobs[3]
    assert jobs[0]["workflow_id"] == "w" and "execution_start_time" not in jobs[0]


def test_jobs_filters_pages_and_sorts(queue):
    fill_jobs(queue)
    jobs, total = queue.jobs(
        JobQuery(("completed", "failed", "cancelled"), limit=2, offset=1, sort_order="asc")
    )
    assert total == 3 and [j["id"] for j in jobs] == ["failed", "cancelled"]
    jobs, total = queue.jobs(JobQuery(("pending",), workflow_id="w"))
    assert total == 1 and jobs[0]["id"] == "pending"
    jobs, _ = queue.jobs(JobQuery(sort_by="execution_duration"))
    assert {j["id"] for j in jobs[:3]} == {"done", "failed", "cancelled"}  # unknown durations sort last


@pytest.mark.parametrize(
    "bad",
    [dict(statuses=("bogus",)), dict(sort_by="name"), dict(sort_order="up"), dict(offset=-1), dict(limit=-2)],
)
def test_job_query_invariants(bad):
    with pytest.raises(ValueError):
        JobQuery(**bad)


def test_job_detail(queue):
    fill_jobs(queue)
    detail = queue.job("done")
    assert detail["outputs"]["9"]["images"][0]["filename"] == "done.png"
    assert detail["execution_status"]["status_str"] == "success"
    assert detail["workflow"] == {"prompt": PROMPT, "extra_data": {"create_time": 1}}
    assert queue.job("pending")["workflow"]["prompt"] == PROMPT
    assert queue.job("missing") is None


def test_summary_prefers_saved_media_then_temp_then_text():
    outputs = {
        "1": {"text": ["hello"]},
        "2": {"images": [{"filename": "t.png", "subfolder": "", "type": "temp"}]},
        "3": {"images": [{"filename": "o.png", "subfolder": "s", "type": "output"}]},
    }
    count, previewable, preview = summarize_outputs(outputs)
    assert (count, previewable, preview["filename"], preview["nodeId"]) == (3, 2, "o.png", "3")
    assert summarize_outputs({"1": outputs["1"], "2": outputs["2"]})[2]["filename"] == "t.png"
    assert summarize_outputs({"1": outputs["1"]})[2] == {
        "content": "hello",
        "nodeId": "1",
        "mediaType": "text",
    }
    assert job_summary({"status_str": "error", "messages": []}, {}).status == "failed"


def test_prompt_running_during_two_crashes_is_recorded_failed_not_run_again(tmp_path):
    q = PromptQueue.in_user_dir(tmp_path)
    q.put("poison", None, PROMPT, {}, ["1"])
    q.put("next", None, PROMPT, {}, ["1"])
    assert q.get(timeout=0).prompt_id == "poison"
    q.close()  # the process dies mid-run: the item stays 'running' in the file
    q = PromptQueue.in_user_dir(tmp_path)
    assert [i.prompt_id for i in q.pending()] == ["poison", "next"]  # one crash: it runs again
    assert q.get(timeout=0).prompt_id == "poison"
    q.close()  # ... and the process dies again
    q = PromptQueue.in_user_dir(tmp_path)
    assert [i.prompt_id for i in q.pending()] == ["next"]
    entry = q.history("poison")["poison"]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    kind, data = entry["status"]["messages"][-1]
    assert kind == "execution_error" and "2 times in a row" in data["exception_message"]
    assert q.job("poison")["status"] == "failed"
    assert q.get(timeout=0).prompt_id == "next"
    q.close()


def test_orderly_stop_does_not_count_as_a_crash(tmp_path):
    q = PromptQueue.in_user_dir(tmp_path)
    q.put("a", None, PROMPT, {}, ["1"])
    for _ in range(3):  # the worker stops (re-queuing) three times, then the process dies once
        assert q.get(timeout=0).prompt_id == "a"
        assert q.requeue("a")
    assert q.get(timeout=0).prompt_id == "a"
    q.close()
    q = PromptQueue.in_user_dir(tmp_path)
    assert [i.prompt_id for i in q.pending()] == ["a"] and q.history() == {}
    q.close()


def test_queue_file_without_attempts_column_is_migrated(tmp_path):
    path = tmp_path / "queue.sqlite3"
    with sqlite3.connect(path) as db:  # the version-1 layout, one prompt left running by a crash
        db.execute(
            "CREATE TABLE queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, prompt_id TEXT UNIQUE NOT NULL,"
            " number REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending', prompt TEXT NOT NULL,"
            " extra_data TEXT NOT NULL, outputs TEXT NOT NULL, create_time INTEGER, workflow_id TEXT,"
            " start_time INTEGER)"
        )
        db.execute(
            "INSERT INTO queue(prompt_id, number, state, prompt, extra_data, outputs)"
            " VALUES('old', 1, 'running', ?, '{}', '[\"1\"]')",
            ('{"1": {"class_type": "Number", "inputs": {"value": 1}}}',),
        )
        db.execute(  # version 1 stored what clients sent, NaN and Infinity included
            "INSERT INTO queue(prompt_id, number, prompt, extra_data, outputs)"
            " VALUES('inf', 9e999, ?, '{\"a\":NaN}', '[\"1\"]')",
            ('{"1": {"class_type": "Number", "inputs": {"value": Infinity}}}',),
        )
        db.execute("PRAGMA user_version=1")
    q = PromptQueue(path)
    assert [i.prompt_id for i in q.pending()] == ["inf", "old"]  # the infinite number became 0
    listing = json.dumps(q.listing(), allow_nan=False)  # plain JSON again
    assert '"value":null' in listing.replace(" ", "") and '"a":null' in listing.replace(" ", "")
    q.delete_pending(["inf"])
    assert q.get(timeout=0).prompt_id == "old"
    q.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("SELECT attempts FROM queue WHERE prompt_id='old'").fetchone()[0] == 1


@pytest.mark.parametrize("number", [float("nan"), float("inf"), 10**400])
def test_queue_refuses_numbers_sqlite_cannot_order(queue, number):
    with pytest.raises(ValueError, match="finite"):
        queue.put("x", number, PROMPT, {}, ["1"])
    assert queue.remaining() == 0


def test_poison_prompt_after_two_real_process_deaths(tmp_path):
    """The process takes the prompt and dies (os._exit, no cleanup) twice: the third open records it failed."""
    import subprocess
    import sys

    q = PromptQueue.in_user_dir(tmp_path)
    q.put("poison", None, PROMPT, {}, ["1"])
    q.close()
    crash = (
        "import os, sys; from executor.queue import PromptQueue; "
        "q = PromptQueue.in_user_dir(sys.argv[1]); item = q.get(timeout=0); "
        "print(item.prompt_id if item else None, flush=True); os._exit(9)"
    )
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", crash, str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert done.returncode == 9 and done.stdout.strip() == "poison", done.stderr
    q = PromptQueue.in_user_dir(tmp_path)
    assert q.pending() == [] and q.running() == []
    assert q.job("poison")["status"] == "failed"
    q.close()


def test_stored_prompt_text_survives_restart_and_history_keeps_it_exact(tmp_path):
    """The route stores `prompt_text(prompt)`; after a restart the worker gets the same prompt back,
    and history serves it unchanged, integers beyond 64 bits and non-ASCII text included."""
    from executor.history import prompt_text

    prompt = {"1": {"class_type": "KSampler", "inputs": {"seed": 2**70, "text": "é ✓", "cfg": 3.5}}}
    text = prompt_text(prompt)
    assert text is not None and json.loads(text) == prompt
    assert json.loads(prompt_text({"a": [1, 2.5, None, "x"]})) == {"a": [1, 2.5, None, "x"]}
    assert prompt_text({"a": object()}) is None  # not JSON: the caller validates without a memo key
    first = PromptQueue(tmp_path / "q.sqlite3")
    first.put("p1", None, prompt, {}, ["1"], prompt_text=text)
    live = first.get(0)
    assert live is not None and live.prompt == prompt and live.prompt_text == text
    first.close()
    again = PromptQueue(tmp_path / "q.sqlite3")  # the running item is pending again, read from disk
    item = again.get(0)
    assert item is not None and item.prompt == prompt and item.prompt_text == text
    again.task_done("p1", {"status_str": "success", "completed": True, "messages": []}, {})
    assert again.history()["p1"]["prompt"] == [1, "p1", prompt, {}, ["1"]]
    again.close()
