"""The durable job store: every job's record and its event history in one SQLite file.

WAL mode with ``synchronous=FULL``: a committed transaction survives SIGKILL of the server
(and power loss), readers never block the writer. One connection guarded by a lock is
plenty for a control plane that writes a few rows per training round.

    jobs    one row per job: spec, state, times, latest progress/evaluation, summary, error
    events  (job_id, seq) -> kind + JSON payload; seq is gap-free per job, so a watcher that
            reconnects asks for "everything after seq N" and misses nothing

A write the disk refuses ("database or disk is full", "disk I/O error") raises
:class:`StoreError` for that call only: the transaction is rolled back (SQLite keeps the file
consistent; WAL frames of an uncommitted transaction are never read), the connection stays
usable, and the next call succeeds once there is room again.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    ordinal INTEGER NOT NULL UNIQUE,
    request_id TEXT UNIQUE,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    create_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    progress TEXT,
    last_eval TEXT,
    summary TEXT,
    error TEXT,
    checkpoint_round INTEGER NOT NULL DEFAULT 0,
    restarts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    replicas TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, ordinal);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""

_JSON_COLUMNS = ("spec", "progress", "last_eval", "summary", "error", "replicas")


class StoreError(RuntimeError):
    """The job store could not be read or written (full disk, I/O error); nothing was changed."""


@dataclass
class JobRecord:
    id: str
    ordinal: int
    request_id: str | None
    spec: dict
    state: str
    create_time: float
    start_time: float | None = None
    end_time: float | None = None
    progress: dict | None = None
    last_eval: dict | None = None
    summary: dict | None = None
    error: dict | None = None
    checkpoint_round: int = 0
    restarts: int = 0
    cancel_requested: bool = False
    replicas: list | None = None


@dataclass
class Event:
    job_id: str
    seq: int
    time: float
    kind: str
    payload: dict = field(default_factory=dict)


class JobStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    def close(self) -> None:
        with self._lock:
            self._db.close()
            for reader in self._readers:
                reader.close()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection. With WAL, readers see the last commit and never wait
        for the writer (or for each other): 100 API clients polling jobs do not queue behind
        a training job's per-round writes, and the writer does not queue behind them."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
            db.row_factory = sqlite3.Row
            self._local.db = db
            with self._lock:
                self._readers.append(db)
        return db

    # ----- jobs ----------------------------------------------------------------------------
    def create(self, job_id: str, spec: dict, request_id: str | None = None) -> tuple[JobRecord, bool]:
        """Insert a QUEUED job; with a known ``request_id`` return the existing one instead.
        Returns ``(record, created)``."""
        with self._writing():
            if request_id:
                row = self._db.execute("SELECT * FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
                if row:
                    return _record(row), False
            ordinal = self._db.execute("SELECT COALESCE(MAX(ordinal), 0) + 1 FROM jobs").fetchone()[0]
            now = time.time()
            self._db.execute(
                "INSERT INTO jobs (id, ordinal, request_id, spec, state, create_time) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, ordinal, request_id or None, json.dumps(spec), "QUEUED", now))
            self._append(job_id, "state", {"state": "QUEUED", "reason": "submitted"}, now)
        return self.get(job_id), True

    def get(self, job_id: str) -> JobRecord | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _record(row) if row else None

    def list(self, state: str | None = None, after_ordinal: int = 0, limit: int = 50) -> list[JobRecord]:
        """Jobs in creation order, after ``after_ordinal`` (the page cursor)."""
        q, args = "SELECT * FROM jobs WHERE ordinal > ?", [after_ordinal]
        if state:
            q += " AND state = ?"
            args.append(state)
        q += " ORDER BY ordinal LIMIT ?"
        args.append(limit)
        with self._reading() as db:
            return [_record(r) for r in db.execute(q, args).fetchall()]

    def in_states(self, states: tuple[str, ...]) -> list[JobRecord]:
        marks = ",".join("?" * len(states))
        with self._reading() as db:
            rows = db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY ordinal", states).fetchall()
        return [_record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._reading() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {s: 0 for s in STATES} | {r[0]: r[1] for r in rows}

    def update(self, job_id: str, *, event: tuple[str, dict] | None = None, **columns) -> int | None:
        """Update columns and, in the same transaction, append an event; return its seq."""
        sets = [f"{k} = ?" for k in columns]
        values = [json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in columns.items()]
        seq = None
        with self._writing():
            if sets:
                self._db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*values, job_id))
            if event:
                seq = self._append(job_id, event[0], event[1], time.time())
        return seq

    def set_state(self, job_id: str, state: str, reason: str = "", **columns) -> int:
        now = time.time()
        if state == "RUNNING":
            columns.setdefault("start_time", now)
        if state in TERMINAL:
            columns.setdefault("end_time", now)
        return self.update(job_id, state=state, event=("state", {"state": state, "reason": reason}), **columns)

    # ----- events --------------------------------------------------------------------------
    def events(self, job_id: str, after_seq: int = 0, limit: int = 10_000) -> list[Event]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after_seq, limit)).fetchall()
        return [Event(r["job_id"], r["seq"], r["time"], r["kind"], json.loads(r["payload"])) for r in rows]

    def last_seq(self, job_id: str) -> int:
        with self._reading() as db:
            return db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?",
                                    (job_id,)).fetchone()[0]

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check``: ``["ok"]`` for a sound file, else what is wrong."""
        with self._reading() as db:
            return [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]

    # ----- internals -----------------------------------------------------------------------
    @contextmanager
    def _writing(self):
        """One transaction under the lock; any SQLite failure becomes a StoreError after a
        rollback, so a full disk fails this call and leaves the connection usable."""
        with self._lock:
            try:
                with _Transaction(self._db):
                    yield
            except sqlite3.Error as exc:
                raise StoreError(f"job store {self.path}: write failed: {exc}") from exc

    @contextmanager
    def _reading(self):
        """A read on this thread's own connection (see :meth:`_reader`); yields it."""
        try:
            yield self._reader()
        except sqlite3.Error as exc:
            raise StoreError(f"job store {self.path}: read failed: {exc}") from exc

    def _append(self, job_id: str, kind: str, payload: dict, now: float) -> int:
        seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?",
                               (job_id,)).fetchone()[0]
        self._db.execute("INSERT INTO events (job_id, seq, time, kind, payload) VALUES (?, ?, ?, ?, ?)",
                         (job_id, seq, now, kind, json.dumps(payload)))
        return seq


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error, the COMMIT's own included."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()
        return False

    def _rollback(self) -> None:
        """After SQLITE_FULL or an I/O error SQLite may already have rolled back; a ROLLBACK
        then fails harmlessly. What matters is that no transaction stays open: it would make
        every later call fail with "cannot start a transaction within a transaction"."""
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass


def _record(row: sqlite3.Row) -> JobRecord:
    data = dict(row)
    for k in _JSON_COLUMNS:
        if data.get(k) is not None:
            data[k] = json.loads(data[k])
    data["cancel_requested"] = bool(data["cancel_requested"])
    return JobRecord(**data)
