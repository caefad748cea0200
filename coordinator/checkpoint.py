"""Checkpoints: atomic, checksummed, pruned, and loadable with a plain ``torch.load``.

A checkpoint holds only tensors and plain Python values, so ``torch.load(path)`` (which
defaults to ``weights_only=True``) opens it; ``ckpt["model"]`` is a ``state_dict`` for the
job's model. Writes go to a temporary file in the same directory, are fsynced, then renamed
over the final name (rename is atomic on POSIX), and the directory is fsynced; a SHA-256 of
the bytes is stored beside it, so a torn or corrupted file is detected and skipped in favour
of the previous one. ``keep_last`` bounds how many are kept.

A write that fails (full disk, file too large, I/O error) raises :class:`CheckpointError`
naming the path and the errno, and leaves the directory as it was before the write: no
temporary file, no checkpoint without its checksum, no older checkpoint pruned. Temporary
files left by a process killed mid-write are removed by the next write.
"""
from __future__ import annotations

import errno as errno_codes
import hashlib
import io
import os
import re
from pathlib import Path

import torch

FORMAT = "esgd-checkpoint/1"
# consecutive failed writes at which a job gives up: a job must not run on for hours with
# nothing durable behind it, nor fail on one transient error; a success resets the count
MAX_CONSECUTIVE_FAILURES = 3
_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")
_TMP = re.compile(r"^\.ckpt-\d{8}\.pt(\.sha256)?\.tmp-\d+$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written; ``path`` and ``errno`` say where and why."""

    def __init__(self, message: str, path: Path | None = None, errno: int | None = None, round: int = -1):
        super().__init__(message)
        self.path, self.errno, self.round = path, errno, round


def errno_name(exc: BaseException) -> str:
    """``ENOSPC``-style name of an OSError's errno (empty when there is none): the message
    names it because "[Errno 28]" alone means nothing to most readers."""
    code = getattr(exc, "errno", None)
    return errno_codes.errorcode.get(code, f"errno {code}") if code else ""


def _describe(exc: OSError) -> str:
    name = errno_name(exc)
    return f"{exc.strerror or exc} ({name})" if name else str(exc)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (the directory entry itself is data to fsync)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: temporary file, fsync, rename. The file is mode
    0600 whatever the umask: checkpoints and run files belong to the server's user only."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files a killed writer left behind (one job writes one directory, so
    any temporary file present before a write starts is stale). Returns what was removed."""
    removed = []
    for p in directory.iterdir():
        if _TMP.match(p.name):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def step_of(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


def _prune(directory: Path, step: int, keep_last: int) -> None:
    """Keep the newest ``keep_last`` checkpoints up to ``step``; drop newer ones too: after a
    resume from an older checkpoint they are the ones that failed verification, and the run
    is about to write those rounds again. Failing to unlink is harmless (the next write retries)."""
    files = list_checkpoints(directory)
    older = [p for p in files if step_of(p) <= step]
    doomed = older[:-keep_last] + [p for p in files if step_of(p) > step]
    for old in doomed:
        for p in (old, old.with_name(old.name + ".sha256")):
            try:
                p.unlink(missing_ok=True)
            except OSError:
                pass


def save_checkpoint(directory: Path, step: int, payload: dict, keep_last: int) -> Path:
    """Write ``ckpt-{step}.pt`` atomically with its checksum; prune to ``keep_last``.

    Raises :class:`CheckpointError` when the write fails; the directory is then as it was."""
    path = directory / f"ckpt-{step:08d}.pt"
    sha = path.with_name(path.name + ".sha256")
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "step": step, **payload}, buf)
    data = buf.getvalue()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_stale_temporaries(directory)
        write_atomic(path, data)
        try:
            write_atomic(sha, hashlib.sha256(data).hexdigest().encode())
        except OSError:
            path.unlink(missing_ok=True)  # a checkpoint without its checksum would only be skipped
            raise
        fsync_dir(directory)
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {path}: {_describe(exc)}", path, exc.errno) from exc
    _prune(directory, step, keep_last)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in step order (oldest first)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def verify(path: Path) -> bool:
    """True when the file's SHA-256 matches the one written with it."""
    try:
        want = path.with_name(path.name + ".sha256").read_text().strip()
        return hashlib.sha256(path.read_bytes()).hexdigest() == want
    except OSError:
        return False


def load_latest(directory: Path, skipped: list | None = None) -> tuple[Path, dict] | None:
    """The newest checkpoint whose checksum verifies and that loads, or None. Newer files that
    fail are appended to ``skipped`` as ``(path, reason)``, so a caller can report them."""
    for path in reversed(list_checkpoints(directory)):
        if not verify(path):
            if skipped is not None:
                skipped.append((path, "checksum mismatch or missing .sha256 (torn or corrupted)"))
            continue
        try:
            ckpt = torch.load(path, map_location="cpu")
        except Exception as exc:  # unreadable despite a matching checksum: try the previous one
            if skipped is not None:
                skipped.append((path, f"unreadable: {type(exc).__name__}"))
            continue
        if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
            return path, ckpt
        if skipped is not None:
            skipped.append((path, "not an esgd checkpoint"))
    return None


def failure_record(exc: CheckpointError, step: int, consecutive: int, fatal: bool) -> dict:
    """What a listener is told about a failed write: the fields of core.events.CheckpointFailed
    (plain values: it becomes a job event)."""
    what = ("giving up" if fatal else
            f"training goes on and the next checkpoint retries (failure {consecutive} in a row; "
            f"the job fails at {MAX_CONSECUTIVE_FAILURES})")
    cause = exc.__cause__ or exc
    return {"round": step, "path": str(exc.path or ""), "errno": errno_name(exc) or "",
            "consecutive": consecutive, "fatal": fatal, "message": f"{exc}; {what}",
            "cause": f"{type(cause).__name__}: {cause}"}


def give_up_error(exc: CheckpointError, step: int, consecutive: int, final: bool) -> CheckpointError:
    """The error a job fails with when checkpoints cannot be written (its code is STORAGE)."""
    why = ("the final checkpoint could not be written" if final else
           f"{consecutive} consecutive checkpoint writes failed")
    return CheckpointError(f"{exc} (round {step}); {why}", exc.path, exc.errno, step)
