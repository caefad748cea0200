"""Capture a process's output as lines: stdout, stderr and Python logging, into a bounded buffer.

Used by the replicas (worker.actor) around each round and by a job's runner for its whole
life (coordinator.joblogs), so that a job's output is stored with the job instead of staying
in Ray's session folder. Why a bounded in-memory buffer: writing to it never blocks (no pipe,
no disk, no lock held across I/O), and a chatty replica costs at most ``max_lines`` lines of at
most ``max_chars`` characters per round; the excess is counted and reported as one line
("N lines dropped"), so training never waits on its own output.

Each line is ``(stream, level, text)``: stream ``stdout``, ``stderr`` or ``log`` (a logging
record, ``level`` its level name; "" otherwise).
"""
from __future__ import annotations

import io
import logging
import sys
import threading

MAX_LINES = 500      # lines kept per drain (a replica: per round)
MAX_CHARS = 2000     # characters kept of one line
# lines Ray itself writes to a worker's streams (actor and task markers for log_to_driver)
RAY_MARKERS = (":actor_name:", ":task_name:", ":job_id:")


class LineBuffer:
    """Lines in arrival order, at most ``max_lines`` until the next :meth:`drain`."""

    def __init__(self, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS, on_line=None):
        self.max_lines, self.max_chars = max_lines, max_chars
        self.lines: list[tuple[str, str, str]] = []
        self.dropped = 0
        self.on_line = on_line  # instead of buffering: called with each line (the runner writes at once)
        self._lock = threading.Lock()

    def add(self, stream: str, level: str, text: str) -> None:
        text = text.rstrip("\r\n")
        if not text.strip() or text.startswith(RAY_MARKERS):
            return
        if len(text) > self.max_chars:
            text = text[: self.max_chars] + f"… [{len(text) - self.max_chars} characters cut]"
        if self.on_line is not None:
            self.on_line(stream, level, text)
            return
        with self._lock:
            if len(self.lines) >= self.max_lines:
                self.dropped += 1
            else:
                self.lines.append((stream, level, text))

    def drain(self) -> list[tuple[str, str, str]]:
        """The lines so far (and one that counts the dropped ones), emptying the buffer."""
        with self._lock:
            out, self.lines = self.lines, []
            if self.dropped:
                out.append(("stderr", "WARNING", f"[{self.dropped} lines dropped: more than {self.max_lines} "
                                                 "lines of output in one round]"))
                self.dropped = 0
        return out


class _Stream(io.TextIOBase):
    """A text stream that hands each complete line to the buffer."""

    def __init__(self, buffer: LineBuffer, name: str):
        self.buffer_, self.name, self._part = buffer, name, ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        text = self._part + str(s)
        *lines, self._part = text.split("\n")
        if len(self._part) > MAX_CHARS * 4:  # a line with no end: keep it bounded
            lines.append(self._part)
            self._part = ""
        for line in lines:
            self.buffer_.add(self.name, "", line)
        return len(s)

    def flush(self) -> None:
        if self._part:
            self.buffer_.add(self.name, "", self._part)
            self._part = ""


class _Handler(logging.Handler):
    def __init__(self, buffer: LineBuffer):
        super().__init__(logging.INFO)
        self.buffer_ = buffer
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a bad format string must not stop training
            text = f"{record.name}: {record.msg!r}"
        for line in text.splitlines() or [""]:
            self.buffer_.add("log", record.levelname, line)


class Capture:
    """While active (``with``, or ``start``/``stop``), this process's ``sys.stdout``,
    ``sys.stderr`` and root-logger output go to ``buffer`` (the root logger's other handlers
    are set aside meanwhile, so that no record is captured twice). ``esgd.*`` loggers log at
    INFO; other libraries' at their own level (WARNING by default)."""

    def __init__(self, buffer: LineBuffer):
        self.buffer = buffer
        self.handler = _Handler(buffer)
        self._saved = None

    def start(self) -> "Capture":
        root = logging.getLogger()
        self._saved = (sys.stdout, sys.stderr, root.handlers[:])
        sys.stdout, sys.stderr = _Stream(self.buffer, "stdout"), _Stream(self.buffer, "stderr")
        root.handlers = [self.handler]
        logging.getLogger("esgd").setLevel(logging.INFO)
        return self

    def stop(self) -> None:
        if self._saved is None:
            return
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except Exception:  # noqa: BLE001
                pass
        sys.stdout, sys.stderr, handlers = self._saved
        logging.getLogger().handlers = handlers
        self._saved = None

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
