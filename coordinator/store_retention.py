"""The job store's deletes: a mixin of :class:`coordinator.store.JobStore` (the same
connection, lock and transactions; kept here so store.py stays about writing jobs).

Only finished jobs are ever deleted: the DELETE is conditional on a terminal state inside the
transaction, so a job that is (or becomes) active is never removed under its runner. A sweep's
trials go with it. Policy — who may delete, when retention runs — is coordinator.retention's.
"""
from __future__ import annotations

_FINISHED = "('SUCCEEDED', 'FAILED', 'CANCELLED')"


class RetentionRows:
    def delete_finished(self, job_id: str) -> list[str]:
        """Delete a finished job, its trials and all their events in one transaction; the ids
        deleted (the job first), or [] when it is missing or not finished."""
        with self._writing():
            row = self._db.execute(f"SELECT id FROM jobs WHERE id = ? AND state IN {_FINISHED}", (job_id,)).fetchone()
            if row is None:
                return []
            ids = [job_id] + [r[0] for r in self._db.execute(
                "SELECT id FROM jobs WHERE parent = ? ORDER BY ordinal", (job_id,)).fetchall()]
            marks = ",".join("?" * len(ids))
            self._db.execute(f"DELETE FROM events WHERE job_id IN ({marks})", ids)
            self._db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", ids)
        return ids

    def expired(self, keep: int | None, ended_before: float | None) -> list[str]:
        """Finished jobs (not trials: they go with their sweep) beyond the newest ``keep`` (by
        end time), or that ended before ``ended_before``; oldest first."""
        with self._reading() as db:
            rows = db.execute(f"SELECT id, end_time FROM jobs WHERE parent IS NULL AND state IN {_FINISHED} "
                              "ORDER BY COALESCE(end_time, create_time) DESC, ordinal DESC").fetchall()
        out = [r[0] for i, r in enumerate(rows)
               if (keep is not None and i >= keep) or (ended_before is not None and (r[1] or 0) < ended_before)]
        return out[::-1]
