"""Helpers of the durability tests (tests/faults/test_refused_writes.py, test_checkpoint_recovery.py,
test_disk_full.py): the job store's integrity, the rounds a job's events report, a checkpoint
directory's temporary files, and a job spec whose checkpoints are large.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.test_service import quick_spec

MiB = 1 << 20
# an embedded Ray of its own even when another `ray start` cluster runs on this machine
LOCAL_RAY = {"RAY_ADDRESS": "local"}


def integrity(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "jobs.sqlite") as db:
        return [r[0] for r in db.execute("PRAGMA integrity_check")]


def progress_rounds(events) -> list[int]:
    return [e.progress.round for e in events if e.HasField("progress")]


def temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if ".tmp" in p.name] if directory.is_dir() else []


def big_spec(**over) -> dict:
    """Parle on mnistfc (1.9 M weights): each checkpoint is ~22 MB, so writing one takes a
    while (a window to kill in) and is far larger than the store and logs (room for a limit)."""
    return quick_spec(model="mnistfc", **over)
