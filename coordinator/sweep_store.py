"""The job store's rows for sweeps: a sweep's trials are jobs with ``parent`` set.

A mixin of :class:`coordinator.store.JobStore` (kept here so store.py stays about every job;
the same connection, lock and transactions). Why a trial is a row of its own: GetJob,
ListJobs, WatchJob and the downloads then work on a trial exactly as on any job, and the
principal rules carry over (a trial is owned by its sweep's owner). Columns (schema 3):

    parent  the sweep a trial belongs to; NULL for every other job
    sweep   JSON: on a sweep its standing (best trial, counts), on a trial its config
"""
from __future__ import annotations

import json
import time

from core.errors import StoreError


class SweepRows:
    def _add_sweep_columns(self, columns: set, transaction) -> None:
        """Schema 2 → 3: the two columns, NULL for every job already stored (an older table
        is rebuilt with them; a new one is created with them)."""
        if not columns or "owner" not in columns or "parent" in columns:
            return
        with transaction(self._db):
            self._db.execute("ALTER TABLE jobs ADD COLUMN parent TEXT")
            self._db.execute("ALTER TABLE jobs ADD COLUMN sweep TEXT")

    def in_states(self, states: tuple[str, ...], trials: bool = True) -> list:
        """Jobs in ``states``; without the sweeps' trials when ``trials`` is False (the
        scheduler's view: a trial is run by its sweep, never queued or requeued itself)."""
        marks = ",".join("?" * len(states))
        only = "" if trials else " AND parent IS NULL"
        with self._reading() as db:
            rows = db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}){only} ORDER BY ordinal",
                              states).fetchall()
        return [self._row(r) for r in rows]

    def create_trial(self, job_id: str, parent: str, spec: dict, sweep: dict):
        """Record a sweep's trial as a RUNNING job owned by the sweep's owner (its principal's
        rules apply to the trial too). Idempotent: a trial already recorded (a sweep resumed
        after a restart runs its unfinished trials again) is returned as it is."""
        with self._writing():
            row = self._db.execute("SELECT owner, id FROM jobs WHERE id = ?", (parent,)).fetchone()
            if row is None:
                raise StoreError(f"job store {self.path}: sweep {parent} not found")
            if self._db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                ordinal = self._db.execute("SELECT COALESCE(MAX(ordinal), 0) + 1 FROM jobs").fetchone()[0]
                now = time.time()
                self._db.execute(
                    "INSERT INTO jobs (id, ordinal, spec, state, create_time, start_time, owner, parent, sweep) "
                    "VALUES (?, ?, ?, 'RUNNING', ?, ?, ?, ?, ?)",
                    (job_id, ordinal, json.dumps(spec), now, now, row["owner"], parent, json.dumps(sweep)))
                self._append(job_id, "state", {"state": "RUNNING", "reason": f"trial of sweep {parent}"}, now)
        return self.get(job_id)

    def children(self, job_id: str) -> list:
        """A sweep's trials, in creation order."""
        with self._reading() as db:
            rows = db.execute("SELECT * FROM jobs WHERE parent = ? ORDER BY ordinal", (job_id,)).fetchall()
        return [self._row(r) for r in rows]

    @staticmethod
    def _with_children(db, recs: list) -> list:
        for rec in recs:
            if rec.spec.get("sweep"):  # one indexed query per sweep; plain jobs pay nothing
                rec.children = [r[0] for r in db.execute(
                    "SELECT id FROM jobs WHERE parent = ? ORDER BY ordinal", (rec.id,)).fetchall()]
        return recs

