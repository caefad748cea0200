"""The job store as a trust boundary: final terminal states, per-principal idempotency,
queue caps counted atomically, old stores migrated, private files. Pure SQLite, no server."""
from __future__ import annotations

import json
import sqlite3
import stat
import threading

import pytest

from coordinator.store import TERMINAL, JobStore, QueueFull, RequestConflict


def terminal_events(store, job_id):
    return [e for e in store.events(job_id) if e.kind == "state" and e.payload["state"] in TERMINAL]


def test_a_cancel_racing_completion_leaves_exactly_one_terminal_event(tmp_path):
    """Two threads end the same RUNNING job at once, 200 times: one wins, the other writes
    nothing; the winner's state, summary and event are what the store holds."""
    store = JobStore(tmp_path / "jobs.sqlite")
    for i in range(200):
        jid = f"j{i}"
        store.create(jid, {"i": i})
        store.set_state(jid, "RUNNING", "started")
        go, results = threading.Barrier(2), {}

        def succeed():
            go.wait()
            results["SUCCEEDED"] = store.finish(jid, "SUCCEEDED", "finished", summary={"rounds": 3})

        def cancel():
            go.wait()
            results["CANCELLED"] = store.set_state(jid, "CANCELLED", "cancelled by user", cancel_requested=1)

        threads = [threading.Thread(target=succeed), threading.Thread(target=cancel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [s for s, seq in results.items() if seq is not None]
        assert len(winners) == 1, results
        rec = store.get(jid)
        assert rec.state == winners[0]
        assert [e.payload["state"] for e in terminal_events(store, jid)] == winners
        assert (rec.summary is not None) == (winners[0] == "SUCCEEDED")
    store.close()


def test_a_terminal_job_is_never_rewritten(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    store.create("a", {})
    store.set_state("a", "RUNNING")
    assert store.finish("a", "SUCCEEDED", "finished", summary={"rounds": 1}) is not None
    before = (store.get("a"), store.last_seq("a"))
    assert store.set_state("a", "CANCELLED", "late cancel") is None
    assert store.set_state("a", "QUEUED", "requeue") is None
    assert store.finish("a", "FAILED", "late failure", error={"code": "X"}) is None
    assert store.update("a", progress={"round": 9}, event=("progress", {"round": 9})) is None
    assert (store.get("a"), store.last_seq("a")) == before
    store.close()


def test_request_ids_are_per_principal_and_a_different_spec_conflicts(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    a, created = store.create("a", {"x": 1}, "req", owner="alice", digest="d1")
    assert created
    again, created = store.create("a2", {"x": 1}, "req", owner="alice", digest="d1")
    assert not created and again.id == "a"
    with pytest.raises(RequestConflict, match="request_id"):
        store.create("a3", {"x": 2}, "req", owner="alice", digest="d2")
    b, created = store.create("b", {"x": 2}, "req", owner="bob", digest="d2")  # bob's own key
    assert created and b.owner == "bob"
    assert [r.id for r in store.list(owner="alice")] == ["a"] and [r.id for r in store.list()] == ["a", "b"]
    store.close()


def test_queue_caps_are_counted_in_the_insert_transaction(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    outcomes, lock = [], threading.Lock()

    def submit(i):
        try:
            store.create(f"j{i}", {}, owner=f"p{i % 2}", max_queued=5, max_queued_per_owner=3)
            result = "ok"
        except QueueFull as exc:
            result = exc.scope
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 5 and store.counts()["QUEUED"] == 5
    per_owner = [len(store.list(owner=f"p{k}")) for k in (0, 1)]
    assert max(per_owner) <= 3
    store.close()


def test_a_store_from_before_principals_is_migrated(tmp_path):
    path = tmp_path / "jobs.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, ordinal INTEGER NOT NULL UNIQUE, request_id TEXT UNIQUE,
            spec TEXT NOT NULL, state TEXT NOT NULL, create_time REAL NOT NULL, start_time REAL, end_time REAL,
            progress TEXT, last_eval TEXT, summary TEXT, error TEXT, checkpoint_round INTEGER NOT NULL DEFAULT 0,
            restarts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0, replicas TEXT);
        CREATE TABLE events (job_id TEXT NOT NULL REFERENCES jobs(id), seq INTEGER NOT NULL, time REAL NOT NULL,
            kind TEXT NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (job_id, seq));
    """)
    db.execute("INSERT INTO jobs (id, ordinal, request_id, spec, state, create_time) VALUES ('old', 1, 'r', ?, "
               "'SUCCEEDED', 1.0)", (json.dumps({"model": "mlp"}),))
    db.execute("INSERT INTO events VALUES ('old', 1, 1.0, 'state', ?)", (json.dumps({"state": "QUEUED"}),))
    db.commit()
    db.close()
    store = JobStore(path)
    old = store.get("old")
    assert old.owner == "default" and old.state == "SUCCEEDED" and old.request_id == "r"
    assert [e.seq for e in store.events("old")] == [1]
    again, created = store.create("x", {}, "r")  # the old key, the default principal: the old job
    assert not created and again.id == "old"
    other, created = store.create("y", {}, "r", owner="alice")  # no longer a global key
    assert created
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3
    store.close()
    JobStore(path).close()  # opening a migrated store again changes nothing


def test_the_store_file_is_private(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        store = JobStore(tmp_path / "jobs.sqlite")
        store.create("a", {})
    finally:
        os.umask(old)
    for name in ("jobs.sqlite", "jobs.sqlite-wal", "jobs.sqlite-shm"):
        p = tmp_path / name
        if p.exists():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, name
    store.close()
