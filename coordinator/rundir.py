"""A run directory: what a job leaves behind for its user.

    run_dir/spec.yaml         the resolved job spec (strategy-pinned values filled in)
    run_dir/metrics.jsonl     one JSON object per engine event: round ("kind": "round"), evaluation
                              ("eval"), checkpoint, ... (core.events.record: the run directory's names)
    run_dir/checkpoints/      ckpt-NNNNNNNN.pt (+ .sha256): torch.load-able, atomic, pruned
    run_dir/summary.json      final test error, wall time, gradient evaluations, data passes

Files are replaced atomically and durably (temporary file, fsync, rename, fsync of the
directory); ``metrics.jsonl`` is appended a line at a time and survives a crash or a full
disk without a torn or lost line (see :class:`MetricsLog`).

Everything is private to the user running the job: directories 0700, files 0600 (a job
server's run directories hold every client's checkpoints; docs/security.md).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from coordinator.checkpoint import fsync_dir, write_atomic
from core.events import KINDS, Listener, record
from core.spec import JobSpec, SpecError

# what may differ when a run is resumed: budgets and bookkeeping, the replica count
# (esgd scale; the checkpoint's replica_ids restore the membership it was taken with), and the
# wire format (checkpoints are float32 whatever comm.dtype was)
_RESUMABLE_CHANGES = {"train.epochs", "train.outer_steps", "train.eval_every", "checkpoint.every",
                      "checkpoint.keep_last", "replicas", "train.min_replicas", "resources.placement_timeout_s",
                      "flatness.enabled", "comm.dtype"}


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.metrics_path = self.path / "metrics.jsonl"
        self.spec_path = self.path / "spec.yaml"
        self.summary_path = self.path / "summary.json"

    def prepare(self, spec: JobSpec, resume: bool) -> None:
        """Create the directory and write the (resolved) spec; refuse to mix two different jobs."""
        spec.require_resolved("RunDir.prepare")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if resume and self.spec_path.exists():
            old = JobSpec.parse(yaml.safe_load(self.spec_path.read_text()))
            changed = _diff(old.to_dict(), spec.to_dict()) - _RESUMABLE_CHANGES
            if changed:
                raise SpecError(f"{sorted(changed)[0]}: differs from the run being resumed in {self.path} "
                                f"(changed: {', '.join(sorted(changed))})", sorted(changed)[0])
        elif not resume and self.holds_run():
            raise SpecError(f"run directory {self.path} already holds a run: pass --resume to continue it "
                            "or choose another --run-dir", "run_dir")
        elif not resume:  # nothing, or a failed run: start afresh, without its leftovers
            for name in ("metrics.jsonl", "summary.json", "flatness.json", "flatness.png"):
                (self.path / name).unlink(missing_ok=True)
            for p in self.checkpoints.glob("ckpt-*") if self.checkpoints.is_dir() else ():
                p.unlink(missing_ok=True)
        self.write_text(self.spec_path, yaml.safe_dump(spec.to_dict(), sort_keys=False))

    def holds_run(self) -> bool:
        """Whether a run is here that a new one must not overwrite: one with recorded rounds
        that did not fail. A run that failed (its summary says so), or that stopped before its
        first round, leaves nothing worth keeping in the way of a corrected rerun."""
        try:
            if not self.metrics_path.exists() or self.metrics_path.stat().st_size == 0:
                return False
            return json.loads(self.summary_path.read_text()).get("status") != "failed"
        except (OSError, ValueError, AttributeError):
            return True

    def mark_failed(self, exc: BaseException) -> None:
        """Record that the run here failed (summary.json), so a rerun may start afresh here."""
        try:
            self.write_summary({"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        except OSError:
            pass

    def write_text(self, path: Path, text: str) -> None:
        """Replace ``path`` whole or not at all; a failed write leaves no temporary file."""
        write_atomic(path, text.encode())
        fsync_dir(path.parent)

    def write_summary(self, summary: dict) -> None:
        self.write_text(self.summary_path, json.dumps(summary, indent=2) + "\n")


# lines a MetricsLog holds in memory while the disk refuses them (~0.5 KB each)
MAX_PENDING_LINES = 100_000


class MetricsLog(Listener):
    """Engine listener appending every event to ``metrics.jsonl``: ``{"kind", **record(event)}``
    (a replica event's own kind — failed, restarted, … — overwrites ``replica``).

    A line torn by a crash (SIGKILL mid-write) is cut off when the log is reopened, so the
    resumed run appends clean lines. A write the disk refuses (full, file too large) is undone
    — the file is truncated back to where it was — and the line is kept and retried with the
    next one: no record is lost or torn while the process lives, and a disk that stays full
    fails the job through its checkpoints (or here, past MAX_PENDING_LINES)."""

    def __init__(self, run_dir: RunDir):
        self.path = run_dir.metrics_path
        drop_torn_tail(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._pending: list[str] = []

    def _log(self, obj: dict) -> None:
        self._pending.append(json.dumps(obj) + "\n")
        try:
            append_whole(self._fd, "".join(self._pending).encode())
        except OSError:
            if len(self._pending) > MAX_PENDING_LINES:
                raise
            return
        self._pending.clear()

    def write(self, event) -> None:
        self._log({"kind": KINDS[type(event)], **record(event)})

    on_round = on_eval = on_checkpoint = on_checkpoint_failed = on_replica = write

    def close(self) -> None:
        if self._pending:  # a last try; what still does not fit is in the job store's events
            try:
                append_whole(self._fd, "".join(self._pending).encode())
            except OSError:
                pass
        os.close(self._fd)


def append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` to an O_APPEND file entirely or not at all: on a failed or short write
    the file is cut back to its old end, so no partial line is ever left behind."""
    end = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        try:
            os.ftruncate(fd, end)
        except OSError:
            pass
        raise


def drop_torn_tail(path: Path, block: int = 1 << 16) -> None:
    """Cut a JSON-lines file back to its last complete line (a crash may have torn the last)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    with open(path, "rb+") as f:
        end = size
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            end = start
        f.truncate(0)


def _diff(a: dict, b: dict, prefix: str = "") -> set[str]:
    out = set()
    for key in set(a) | set(b):
        name = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out |= _diff(va, vb, name + ".")
        elif va != vb:
            out.add(name)
    return out
