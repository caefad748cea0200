"""Checkpoints: atomic, checksummed, pruned, and loadable with a plain ``torch.load``.

A checkpoint holds only tensors and plain Python values, so ``torch.load(path)`` (which
defaults to ``weights_only=True``) opens it; ``ckpt["model"]`` is a ``state_dict`` for the
job's model. Writes go to a temporary file in the same directory, are fsynced, then renamed
over the final name (rename is atomic on POSIX), and the directory is fsynced; a SHA-256 of
the bytes is stored beside it, so a torn or corrupted file is detected and skipped in favour
of the previous one. ``keep_last`` bounds how many are kept.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import torch

FORMAT = "esgd-checkpoint/1"
_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(directory: Path, step: int, payload: dict, keep_last: int) -> Path:
    """Write ``ckpt-{step}.pt`` atomically with its checksum; prune to ``keep_last``."""
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "step": step, **payload}, buf)
    data = buf.getvalue()
    path = directory / f"ckpt-{step:08d}.pt"
    try:
        _write_atomic(path, data)
        _write_atomic(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest().encode())
        _fsync_dir(directory)
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {path}: {exc}") from exc
    for old in list_checkpoints(directory)[:-keep_last]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
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


def load_latest(directory: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint whose checksum verifies and that loads, or None."""
    for path in reversed(list_checkpoints(directory)):
        if not verify(path):
            continue
        try:
            ckpt = torch.load(path, map_location="cpu")
        except Exception:  # unreadable despite a matching checksum: try the previous one
            continue
        if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
            return path, ckpt
    return None
