"""A job's logs: its runner's and its replicas' output, stored with the job, bounded in size.

**What is captured.** stdout, stderr and Python logging (``esgd.*`` at INFO, other libraries
at WARNING) of the job's runner process, for its whole life, and of each replica process while
it is built and while it runs a round (worker.logcapture). The runner also logs one line per
round, evaluation, checkpoint and membership change. Each line is tagged with its source
(``runner``, or the replica's identity) and the round it belongs to (0: before the first round).

**How replica lines travel.** A replica buffers its lines in memory (at most
``worker.logcapture.MAX_LINES`` per round; the excess is counted in one "N lines dropped"
line) and returns them with the round's result; the runner's pool hands them here
(``RayPool.on_log``). Nothing waits on a pipe or a disk in the replica, so a chatty replica can
neither block training nor grow without bound.

**Where they are stored.** ``logs.jsonl`` in the job's run directory, written by the runner,
one JSON object per line::

    {"n": 17, "time": 1712345678.9, "source": "replica", "replica": 1, "round": 3,
     "stream": "log", "level": "INFO", "text": "esgd.replica: replica 1: ..."}

``n`` counts the job's lines from 0, across rotations and server restarts. The files of a job
hold at most ``max_bytes`` (``esgd serve --max-log-bytes``, plus at most one line): when
``logs.jsonl`` would pass half of it, it becomes ``logs.1.jsonl`` (replacing the older one) and
a new ``logs.jsonl`` starts. The oldest lines are thus dropped; a reader (:class:`LogCursor`)
sees the gaps in ``n`` and reports them as ``dropped``.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from core.events import CheckpointEvent, CheckpointFailed, EvalRecord, Listener, ReplicaEvent, RoundRecord, record
from worker.logcapture import Capture, LineBuffer

LOG_FILE, OLD_FILE = "logs.jsonl", "logs.1.jsonl"
DEFAULT_MAX_BYTES = 4 << 20
MIN_MAX_BYTES = 4 << 10

log = logging.getLogger("esgd.runner")


class JobLog:
    """The writer: appends lines to the run directory's log files under the size cap.
    Thread-safe; never raises (a line the disk refuses is lost and counted in ``n``, so
    readers report it as dropped)."""

    def __init__(self, run_dir: str | Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.dir = Path(run_dir)
        self.half = max(1, int(max_bytes) // 2)
        self._lock = threading.Lock()
        self._file = None
        self._size = 0
        self.n = _last_n(self.dir) + 1

    def write(self, replica: int, rnd: int, stream: str, level: str, text: str) -> None:
        with self._lock:
            rec = {"n": self.n, "time": round(time.time(), 3), "source": "runner" if replica < 0 else "replica",
                   "replica": replica, "round": rnd, "stream": stream, "level": level, "text": text}
            self.n += 1
            data = (json.dumps(rec, ensure_ascii=False) + "\n").encode()
            try:
                self._open()
                if self._size and self._size + len(data) > self.half:  # rotate: the oldest half goes
                    self._file.close()
                    self._file = None
                    os.replace(self.dir / LOG_FILE, self.dir / OLD_FILE)
                    self._open()
                self._file.write(data)  # unbuffered: one write per line
                self._size += len(data)
            except OSError:
                if self._file is not None:
                    self._file.close()
                self._file = None  # reopened (and its size read again) at the next line

    def _open(self) -> None:
        if self._file is not None:
            return
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._file = open(self.dir / LOG_FILE, "ab", buffering=0)
        self._size = self._file.tell()
        if self._size and _last_byte(self.dir / LOG_FILE) != b"\n":  # a line torn by a crash: end it
            self._file.write(b"\n")
            self._size += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class RunnerLog(Listener):
    """The runner's side: its own output captured from now on, the replicas' lines (``replica``,
    for ``RayPool.on_log``) and an engine listener that logs each round, evaluation,
    checkpoint and membership change."""

    def __init__(self, run_dir: str | Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.file = JobLog(run_dir, max_bytes)
        self.engine = None
        self.capture = Capture(LineBuffer(on_line=self._own)).start()

    def attach(self, engine) -> None:
        self.engine = engine
        if hasattr(engine.pool, "on_log"):
            engine.pool.on_log = self.replica

    def _round(self) -> int:
        e = self.engine
        return 0 if e is None else min(e.t + 1, e.total)  # the round in flight; after the last, the last

    def _own(self, stream: str, level: str, text: str) -> None:
        self.file.write(-1, self._round(), stream, level, text)

    def replica(self, replica: int, lines: list) -> None:
        """Lines a replica returned with the round in flight."""
        rnd = 0 if self.engine is None else self.engine.t + 1
        for stream, level, text in lines:
            self.file.write(int(replica), rnd, stream, level, text)

    def close(self) -> None:
        self.capture.stop()
        self.file.close()

    # ----- engine listener ---------------------------------------------------------------------
    def _line(self, rnd: int, level: str, text: str) -> None:
        self.file.write(-1, rnd, "log", level, f"esgd.runner: {text}")

    def on_round(self, r: RoundRecord) -> None:
        self._line(r.round, "INFO", f"round {r.round}/{getattr(self.engine, 'total', '?')}: loss {r.loss:.4g}, "
                                    f"train error {r.train_error:.4f}, {r.round_seconds:.2f} s, "
                                    f"{len(r.replicas)} replicas")

    def on_eval(self, r: EvalRecord) -> None:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in record(r).items() if k.startswith(("test_", "train_"))
                          and isinstance(v, (int, float)))
        self._line(r.round, "INFO", f"evaluation at round {r.round}: {shown}")

    def on_checkpoint(self, c: CheckpointEvent) -> None:
        self._line(c.round, "INFO", f"checkpoint {Path(c.path).name}")

    def on_checkpoint_failed(self, c: CheckpointFailed) -> None:
        self._line(c.round, "WARNING", f"checkpoint failed: {c.message}")

    def on_replica(self, r: ReplicaEvent) -> None:
        self._line(r.round, "WARNING" if r.kind == "failed" else "INFO",
                   f"replica {r.replica} {r.kind}" + (f": {r.cause}" if r.cause else ""))


class LogCursor:
    """The reader: each :meth:`read` returns the lines written since the last one, across
    rotations (by inode), in order, each once; ``dropped`` counts the lines missing before and
    between them (rotated away, or refused by the disk)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.ino: int | None = None
        self.offset = 0
        self.last = -1
        self.dropped = 0

    def read(self) -> list[dict]:
        raw: list[bytes] = []
        if self.ino is None:
            raw += _read_from(self.dir / OLD_FILE, 0)[0]
            got, self.ino, self.offset = _read_from(self.dir / LOG_FILE, 0)
            raw += got
        else:
            got, ino, offset = _read_from(self.dir / LOG_FILE, self.offset, expect=self.ino)
            if ino != self.ino:  # rotated: the rest of our file is logs.1.jsonl now
                old, old_ino, _ = _read_from(self.dir / OLD_FILE, self.offset, expect=self.ino)
                raw += old if old_ino == self.ino else []
                got, ino, offset = _read_from(self.dir / LOG_FILE, 0)
            raw += got
            self.ino, self.offset = ino, offset
        out = []
        for line in raw:
            try:
                rec = json.loads(line)
                n = int(rec["n"])
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash
            if n <= self.last:
                continue
            self.dropped += n - self.last - 1
            self.last = n
            out.append(rec)
        return out


def matches(rec: dict, replica: int | None) -> bool:
    """``replica`` None: every line; -1: the runner's; N: replica N's."""
    return replica is None or rec.get("replica") == replica


def _read_from(path: Path, offset: int, expect: int | None = None) -> tuple[list[bytes], int | None, int]:
    """Complete lines of ``path`` from ``offset`` (from 0 when the file is another inode than
    ``expect``), its inode and the offset after the last complete line."""
    try:
        with open(path, "rb") as f:
            ino = os.fstat(f.fileno()).st_ino
            if expect is not None and ino != expect:
                return [], ino, 0
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], None if expect is None else expect, offset
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), ino, offset + end


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _last_n(run_dir: Path) -> int:
    """The ``n`` of the last stored line (-1: none), so that a resumed job continues counting."""
    for name in (LOG_FILE, OLD_FILE):
        try:
            with open(run_dir / name, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
                lines = f.read().splitlines()
        except FileNotFoundError:
            continue
        for line in reversed(lines):
            try:
                return int(json.loads(line)["n"])
            except (ValueError, KeyError, TypeError):
                continue
    return -1
