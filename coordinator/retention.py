"""Deleting finished jobs: one on request (DeleteJob, ``esgd delete``) and old ones by policy
(``esgd serve --retain-jobs N --retain-days D``).

A delete removes the job's rows (the job, its events; a sweep's trials and theirs) in one
transaction (coordinator.store_retention), then its files: the run directory with its
checkpoints, metrics and logs (a sweep's Tune experiment lives inside it; each trial has its
own). Rows go first: a crash in between leaves an orphan directory, never a job whose files
are gone.

* Only finished jobs are deleted. A QUEUED or RUNNING job is :class:`core.errors.JobActive`
  (FAILED_PRECONDITION, naming its state): cancel it first. A job that has just ended but
  whose runner is still being stopped is refused the same way, for a moment.
* Ownership: :meth:`JobManager.get` decides; another principal's job is NOT_FOUND. A trial is
  deleted with its sweep, not alone.
* Retention keeps the newest ``keep`` finished jobs and those that ended less than ``days``
  ago (either rule, when both are given, removes a job); it runs when the server starts and
  then every :data:`PERIOD_S`, across every principal's jobs.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time

from core.errors import JobActive, JobNotFound
from coordinator.store import TERMINAL

PERIOD_S = 3600.0
log = logging.getLogger("esgd.retention")


def delete_job(manager, job_id: str, principal=None) -> list[str]:
    """Delete one finished job of ``principal``'s (module docstring); the ids deleted."""
    rec = manager.get(job_id, principal)
    if rec.parent:
        raise JobActive(f"job {job_id} is a trial of sweep {rec.parent}; delete the sweep (esgd delete "
                        f"{rec.parent}) and its trials go with it")
    if rec.state not in TERMINAL:
        raise JobActive(f"job {job_id} is {rec.state}; only a finished job can be deleted: cancel it first "
                        f"(esgd cancel {job_id}), then delete it")
    return _delete(manager, job_id)


def _delete(manager, job_id: str) -> list[str]:
    with manager.lock:  # its follower thread may still be stopping the runner that writes its files
        if job_id in manager.running:
            raise JobActive(f"job {job_id} has ended but its runner is still stopping; retry in a few seconds")
        ids = manager.store.delete_finished(job_id)
    if not ids:  # it became active again (not expected: terminal states are final) or is gone
        raise JobNotFound(f"job {job_id!r} not found")
    for jid in ids:
        remove_files(manager, jid)
    manager.notify()
    log.info("job %s deleted%s", job_id, f" with its {len(ids) - 1} trials" if len(ids) > 1 else "")
    return ids


def remove_files(manager, job_id: str) -> None:
    path = manager.run_dir(job_id).path
    if path.parent.resolve() != manager.runs.resolve() or not job_id:
        return  # never outside DATA_DIR/runs
    shutil.rmtree(path, ignore_errors=True)


def sweep_once(manager, keep: int | None, days: float | None) -> list[str]:
    """Delete the finished jobs beyond the newest ``keep`` or older than ``days``; the jobs
    deleted (with their trials)."""
    cutoff = None if days is None else time.time() - days * 86400
    deleted = []
    for job_id in manager.store.expired(keep, cutoff):
        try:
            deleted += _delete(manager, job_id)
        except (JobActive, JobNotFound):
            continue
    if deleted:
        log.info("retention: deleted %d finished jobs (keep %s, days %s)", len(deleted), keep, days)
    return deleted


class Retention:
    """The periodic retention pass, on a thread of its own (``start``: a pass now, then every
    ``period`` seconds; ``stop`` before the manager closes the store)."""

    def __init__(self, manager, keep: int | None, days: float | None, period: float = PERIOD_S):
        self.m, self.keep, self.days, self.period = manager, keep, days, period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.keep is not None or self.days is not None

    def start(self) -> "Retention":
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="esgd-retention", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sweep_once(self.m, self.keep, self.days)
            except Exception:  # noqa: BLE001 - retention must never take the server down
                log.exception("retention pass failed")
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
