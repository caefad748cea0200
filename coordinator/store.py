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

Trust boundary (docs/security.md):

* Every job belongs to a principal (``owner``, the name of the token that created it;
  ``default`` on a server with one bare token or none). Idempotency keys are per principal:
  ``(owner, request_id)`` is unique, and the digest of the submitted spec is kept beside it,
  so a retry with the same key and the same spec returns the first job while the same key
  with another spec is a :class:`RequestConflict` (ALREADY_EXISTS), never the old job.
* Terminal states are final. Every write to a job (columns, events, state) is a conditional
  ``UPDATE … WHERE state NOT IN (terminal)`` inside one ``BEGIN IMMEDIATE`` transaction, so
  when a cancel races the end of a run exactly one of them lands: a job has one terminal
  event, and a SUCCEEDED job is never rewritten. :meth:`JobStore.finish` writes a run's
  summary or error together with its final state, all or nothing.
* Queue caps are counted in the same transaction as the insert (:class:`QueueFull`), so
  concurrent CreateJobs cannot overshoot them.
* The file and its WAL/SHM companions are mode 0600.

Older stores are migrated when opened (``PRAGMA user_version`` 0 → 2: ``owner`` =
``default`` for every old job; 2 → 3: the sweep columns ``parent`` and ``sweep``).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import RequestConflict, StoreError  # noqa: F401  (raised here; re-exported)
from coordinator.store_retention import RetentionRows
from coordinator.sweep_store import SweepRows

log = logging.getLogger("esgd.jobs")

STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})

SCHEMA_VERSION = 3
DEFAULT_OWNER = "default"
_TERMINAL_SQL = "('SUCCEEDED', 'FAILED', 'CANCELLED')"

_JOBS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id TEXT PRIMARY KEY,
    ordinal INTEGER NOT NULL UNIQUE,
    request_id TEXT,
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
    replicas TEXT,
    owner TEXT NOT NULL DEFAULT 'default',
    request_digest TEXT,
    parent TEXT, sweep TEXT,
    UNIQUE (owner, request_id)
);
"""
_OLD_COLUMNS = ("id, ordinal, request_id, spec, state, create_time, start_time, end_time, progress, last_eval, "
                "summary, error, checkpoint_round, restarts, cancel_requested, replicas")
_SCHEMA = _JOBS_TABLE.format(name="jobs") + """
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, ordinal);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, state, ordinal);
CREATE INDEX IF NOT EXISTS jobs_parent ON jobs(parent, ordinal);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""

_JSON_COLUMNS = ("spec", "progress", "last_eval", "summary", "error", "replicas", "sweep")


class QueueFull(RuntimeError):
    """RESOURCE_EXHAUSTED: the queue (of the server, or of this principal) is at its cap.
    ``scope`` is ``server`` or ``principal``; ``limit`` the cap that was reached."""

    def __init__(self, scope: str, queued: int, limit: int):
        super().__init__(f"{queued} jobs queued ({scope} cap {limit})")
        self.scope, self.queued, self.limit = scope, queued, limit


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
    owner: str = DEFAULT_OWNER
    request_digest: str | None = None
    parent: str | None = None  # the sweep of a trial; ``sweep`` and ``children``: coordinator.sweep_store
    sweep: dict | None = None
    children: list = field(default_factory=list)


@dataclass
class Event:
    job_id: str
    seq: int
    time: float
    kind: str
    payload: dict = field(default_factory=dict)


class JobStore(SweepRows, RetentionRows):
    def _row(self, row: sqlite3.Row) -> JobRecord:  # the sweep rows' mixin builds records with it
        return _record(row)

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        if not self.path.exists():  # created 0600, whatever the umask (the WAL and SHM copy its mode)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._migrate()
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        restrict_files(self.path)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    def _migrate(self) -> None:
        """Rebuild a jobs table written before principals (no ``owner``, a global UNIQUE on
        ``request_id``; SQLite cannot drop a constraint) into the new table, every old job
        owned by ``default``, in one transaction; add the sweep columns to a schema-2 table."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)").fetchall()}
        self._add_sweep_columns(columns, _Transaction)
        if not columns or "owner" in columns:
            return
        self._db.execute("PRAGMA foreign_keys=OFF")  # events reference jobs(id) while it is rebuilt
        with _Transaction(self._db):
            self._db.execute(_JOBS_TABLE.format(name="jobs_v2"))
            self._db.execute(f"INSERT INTO jobs_v2 ({_OLD_COLUMNS}, owner) SELECT {_OLD_COLUMNS}, ? FROM jobs",
                             (DEFAULT_OWNER,))
            self._db.execute("DROP TABLE jobs")
            self._db.execute("ALTER TABLE jobs_v2 RENAME TO jobs")

    def close(self) -> None:
        with self._lock:
            self._db.close()
            for reader in self._readers:
                reader.close()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection. With WAL, readers see the last commit and never wait
        for the writer or each other (100 pollers do not queue behind a job's writes)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
            db.row_factory = sqlite3.Row
            self._local.db = db
            with self._lock:
                self._readers.append(db)
        return db

    # ----- jobs ----------------------------------------------------------------------------
    def create(self, job_id: str, spec: dict, request_id: str | None = None, *, owner: str = DEFAULT_OWNER,
               digest: str | None = None, max_queued: int = 0, max_queued_per_owner: int = 0
               ) -> tuple[JobRecord, bool]:
        """Insert a QUEUED job owned by ``owner``. With a ``request_id`` this owner used before,
        return that job instead (``created`` False) — or raise :class:`RequestConflict` when
        its spec's ``digest`` differs. The queue caps (0 = none) are checked in the same
        transaction as the insert: :class:`QueueFull`. Returns ``(record, created)``."""
        with self._writing():
            if request_id:
                row = self._db.execute("SELECT * FROM jobs WHERE owner = ? AND request_id = ?",
                                       (owner, request_id)).fetchone()
                if row:
                    if digest and row["request_digest"] and row["request_digest"] != digest:
                        raise RequestConflict(
                            f"request_id: {request_id!r} was already used for job {row['id']} with a different "
                            "spec; reuse a request_id only to retry the same request")
                    return _record(row), False
            for scope, cap, where, args in (("server", max_queued, "", ()),
                                            ("principal", max_queued_per_owner, " AND owner = ?", (owner,))):
                if cap:
                    queued = self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE state = 'QUEUED'{where}",
                                              args).fetchone()[0]
                    if queued >= cap:
                        raise QueueFull(scope, queued, cap)
            ordinal = self._db.execute("SELECT COALESCE(MAX(ordinal), 0) + 1 FROM jobs").fetchone()[0]
            now = time.time()
            self._db.execute(
                "INSERT INTO jobs (id, ordinal, request_id, spec, state, create_time, owner, request_digest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, ordinal, request_id or None, json.dumps(spec), "QUEUED", now, owner, digest))
            self._append(job_id, "state", {"state": "QUEUED", "reason": "submitted"}, now)
        return self.get(job_id), True

    def get(self, job_id: str) -> JobRecord | None:
        with self._reading() as db:
            rows = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchall()
            return next(iter(self._with_children(db, [_record(r) for r in rows])), None)

    def list(self, state: str | None = None, after_ordinal: int = 0, limit: int = 50,
             owner: str | None = None) -> list[JobRecord]:
        """Jobs in creation order, after ``after_ordinal`` (the page cursor); only ``owner``'s
        when given."""
        q, args = "SELECT * FROM jobs WHERE ordinal > ?", [after_ordinal]
        if state:
            q += " AND state = ?"
            args.append(state)
        if owner is not None:
            q += " AND owner = ?"
            args.append(owner)
        q += " ORDER BY ordinal LIMIT ?"
        args.append(limit)
        with self._reading() as db:
            return self._with_children(db, [_record(r) for r in db.execute(q, args).fetchall()])

    def counts(self) -> dict[str, int]:
        with self._reading() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {s: 0 for s in STATES} | {r[0]: r[1] for r in rows}

    def update(self, job_id: str, *, event: tuple[str, dict] | None = None, **columns) -> int | None:
        """Update columns and, in the same transaction, append an event; return its seq.
        A job in a terminal state is never rewritten: nothing is written and None returned."""
        with self._writing():
            if not self._write_active(job_id, columns):
                return None
            return self._append(job_id, event[0], event[1], time.time()) if event else None

    def set_state(self, job_id: str, state: str, reason: str = "", **columns) -> int | None:
        """Move a job to ``state`` (with ``columns``) and append its ``state`` event; None and
        nothing written when the job had already reached a terminal state: the first terminal
        state wins."""
        return self._transition(job_id, state, reason, columns, {})

    def finish(self, job_id: str, state: str, reason: str = "", *, summary: dict | None = None,
               error: dict | None = None, **columns) -> int | None:
        """One transaction: the ``summary`` and ``error`` (column and event each, when given),
        then the state change; all of it only if the job is not yet terminal. Returns the state
        event's seq, or None when another transition got there first (nothing written)."""
        extra = {k: v for k, v in (("summary", summary), ("error", error)) if v is not None}
        return self._transition(job_id, state, reason, {**columns, **extra}, extra)

    def _transition(self, job_id: str, state: str, reason: str, columns: dict, events: dict) -> int | None:
        now = time.time()
        if state == "RUNNING":
            columns.setdefault("start_time", now)
        if state in TERMINAL:
            columns.setdefault("end_time", now)
        with self._writing():
            if not self._write_active(job_id, {**columns, "state": state}):
                return None
            for kind, payload in events.items():
                self._append(job_id, kind, payload, now)
            return self._append(job_id, "state", {"state": state, "reason": reason}, now)

    # ----- events --------------------------------------------------------------------------
    def events(self, job_id: str, after_seq: int = 0, limit: int = 10_000) -> list[Event]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after_seq, limit)).fetchall()
        return [Event(r["job_id"], r["seq"], r["time"], r["kind"], json.loads(r["payload"])) for r in rows]

    def last_seq(self, job_id: str) -> int:
        with self._reading() as db:
            return db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?", (job_id,)).fetchone()[0]

    def integrity_check(self) -> list[str]:  # ["ok"] for a sound file, else what is wrong
        with self._reading() as db:
            return [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]

    # ----- internals -----------------------------------------------------------------------
    @contextmanager
    def _writing(self):
        """One transaction under the lock; any SQLite failure becomes a StoreError after a
        rollback, so a full disk fails this call and leaves the connection usable."""
        with self._lock:
            self._states = []  # state events of this transaction: logged once it commits
            try:
                with _Transaction(self._db):
                    yield
            except sqlite3.Error as exc:
                raise StoreError(f"job store {self.path}: write failed: {exc}") from exc
            for job_id, payload in self._states:  # the server log: one line per change of a job's state
                log.info("job %s %s %s", job_id, payload.get("state"), payload.get("reason", ""))

    @contextmanager
    def _reading(self):
        """A read on this thread's own connection (see :meth:`_reader`); yields it."""
        try:
            yield self._reader()
        except sqlite3.Error as exc:
            raise StoreError(f"job store {self.path}: read failed: {exc}") from exc

    def _write_active(self, job_id: str, columns: dict) -> bool:
        """The conditional write under the transaction: ``UPDATE … WHERE state NOT IN
        (terminal)``; False when the job is terminal (or unknown) and nothing was changed."""
        sets = [f"{k} = ?" for k in columns] or ["id = id"]
        values = [json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in columns.items()]
        cur = self._db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND state NOT IN {_TERMINAL_SQL}",
                               (*values, job_id))
        return cur.rowcount > 0

    def _append(self, job_id: str, kind: str, payload: dict, now: float) -> int:
        seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?",
                               (job_id,)).fetchone()[0]
        self._db.execute("INSERT INTO events (job_id, seq, time, kind, payload) VALUES (?, ?, ?, ?, ?)",
                         (job_id, seq, now, kind, json.dumps(payload)))
        self._states += [(job_id, payload)] if kind == "state" else []  # logged by _writing on commit
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
        """No transaction may stay open (every later call would fail); after SQLITE_FULL or an
        I/O error SQLite may have rolled back already, and this ROLLBACK fails harmlessly."""
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass


def restrict_files(path: Path) -> None:
    """Mode 0600 for the store file and its WAL/SHM companions (those that exist)."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            os.chmod(p, 0o600)
        except FileNotFoundError:
            pass


def _record(row: sqlite3.Row) -> JobRecord:
    data = dict(row)
    for k in _JSON_COLUMNS:
        if data.get(k) is not None:
            data[k] = json.loads(data[k])
    data["cancel_requested"] = bool(data["cancel_requested"])
    return JobRecord(**data)
