"""The SQLite job store: durable records, idempotent create, gap-free events, pagination."""
import sqlite3

from coordinator.store import JobStore


def test_create_is_idempotent_and_events_are_gap_free(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    a, created = store.create("a", {"model": "mlp"}, request_id="r")
    b, created_again = store.create("b", {"model": "mlp"}, request_id="r")
    assert created and not created_again and b.id == "a"
    store.set_state("a", "RUNNING", "started")
    store.update("a", progress={"round": 1}, event=("progress", {"round": 1}))
    store.set_state("a", "SUCCEEDED", "done", summary={"rounds": 1})
    events = store.events("a")
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.kind for e in events] == ["state", "state", "progress", "state"]
    rec = store.get("a")
    assert rec.state == "SUCCEEDED" and rec.summary == {"rounds": 1} and rec.end_time >= rec.start_time
    assert [e.seq for e in store.events("a", after_seq=2)] == [3, 4]
    store.close()


def test_records_survive_reopening_and_wal_is_on(tmp_path):
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    for i in range(5):
        store.create(f"j{i}", {"i": i})
    store.set_state("j3", "RUNNING")
    store.close()
    again = JobStore(path)
    assert [r.id for r in again.list(limit=2)] == ["j0", "j1"]
    assert [r.id for r in again.list(after_ordinal=2, limit=10)] == ["j2", "j3", "j4"]
    assert [r.id for r in again.in_states(("RUNNING",))] == ["j3"]
    assert again.counts()["QUEUED"] == 4
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()
