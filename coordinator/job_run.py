"""One running job, from the server's side: start its JobRunner, store what it reports until
its run ends, then end the job (the recorder part of the job manager).

Every round, evaluation and state change the runner reports is written to the store (and wakes
watchers) before the runner is told it was stored (coordinator.records.follow), so the history
is as complete after a crash as before. A job ends in exactly one terminal state:
:func:`finish` writes it only to a job not yet terminal (a cancel may have ended it first).
A store write error leaves the job RUNNING in the store; the scheduler requeues it once the
store takes writes again (coordinator.scheduler).
"""
from __future__ import annotations

import logging
import time

from core.errors import StoreError
from core.events import Summary, api_of
from coordinator.records import StoreListener, follow, startup_report
from coordinator.runner import error_of, root_cause, start_runner

log = logging.getLogger("esgd.manager")


class _CancelledBeforeStart(Exception):
    """The job was cancelled before its runner was created."""


def run_job(m, job_id: str, running) -> None:
    """The follower thread of one job (``m``: the JobManager; ``running``: its ledger entry)."""
    import ray

    runner = None
    try:
        t0 = time.time()
        with m.lock:  # a cancel from now on sees the runner (and kills it while it starts)
            if running.cancel.is_set():
                raise _CancelledBeforeStart()
            runner = running.runner = start_runner(running.spec, str(m.run_dir(job_id).path.resolve()),
                                                   env=m.data_policy.env(), log_bytes=m.limits.max_log_bytes)
        key, data, reused = _dataset_of(m, runner)
        try:
            info = ray.get(runner.start.remote(cancelled=running.cancel.is_set(),
                                               data=None if data is None else [data]))
        except BaseException:
            if key is not None:
                m.datasets.discard(key, data)  # e.g. the runner died loading it
            raise
        finally:
            m.poke_warm()  # the runner and the replicas took idle worker processes
        if key is not None:
            if "error" in info or info.get("timings", {}).get("data_fallback"):
                m.datasets.discard(key, data)  # the next job on this data loads it again
            else:
                m.datasets.sized(key, data, info.get("dataset_bytes", 0))
        if "timings" in info:
            running.startup = startup_report(t0, reused, info["timings"])
        if "error" in info:
            if running.cancel.is_set():
                finish(m, job_id, "CANCELLED", "cancelled by user")
            else:
                finish(m, job_id, "FAILED", "failed", error=info["error"])
            return
        running.started = True
        listeners = [StoreListener(m, job_id)]
        if m.metrics is not None:
            listeners.append(m.metrics.listener(job_id))
            m.metrics.replicas.labels(job_id).set(info["replicas"])
        m.write(job_id, replicas=info["placement"])
        _end(m, job_id, running, follow(runner, listeners, m.stopping_event))
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
        if isinstance(exc, StoreError) and not running.cancel.is_set():
            # the store cannot take the job's record: leave it RUNNING there; the scheduler
            # requeues it from its checkpoint once the store takes writes again
            log.error("job %s stopped: job store write failed (%s); it resumes when the store is writable",
                      job_id, exc)
        elif running.cancel.is_set():
            finish(m, job_id, "CANCELLED", "cancelled by user")
        else:
            finish(m, job_id, "FAILED", "failed", error=error_of(root_cause(exc)))
    finally:
        if runner is not None:
            ray.kill(runner)  # its loop has ended (or must): the replicas it owns go with it
        with m.lock:
            m.running.pop(job_id, None)
        m.notify()
        m.poke_warm()


def _dataset_of(m, runner) -> tuple:
    """(key, reference, reused): the job's dataset from the cache, or the reference of the
    runner loading it (cached from now on: a job starting meanwhile waits for the same
    load); (None, None, False) when it is not cached — the runner loads it itself."""
    import ray

    if m.datasets is None:
        return None, None, False
    key = ray.get(runner.dataset_key.remote())  # read where the data is, not here
    if key is None:
        return None, None, False
    with m.lock:
        ref = m.datasets.get(key)
        if ref is not None:
            return key, ref, True
        ref = runner.load_data.remote()  # owned by this process: it outlives the runner
        m.datasets.put(key, ref)
    return key, ref, False


def _end(m, job_id: str, running, end: dict) -> None:
    outcome, summary = end["outcome"], end.get("summary")
    if outcome == "cancelled" or (running.cancel.is_set() and outcome == "failed"):
        finish(m, job_id, "CANCELLED", "cancelled by user", summary=summary)
    elif outcome == "stopped":
        log.info("job %s checkpointed at round %s for server shutdown", job_id, summary["rounds"])
    elif outcome == "succeeded":
        if end.get("flatness") and m.metrics is not None:
            m.metrics.listener(job_id).on_flatness(end["flatness"])
        finish(m, job_id, "SUCCEEDED", "finished", summary=summary)
    else:
        finish(m, job_id, "FAILED", "failed", error=end["error"])


def finish(m, job_id: str, state: str, reason: str, summary: dict | None = None, error: dict | None = None) -> None:
    """The run's summary or error and its final state, in one transaction, and only if the
    job is not terminal yet (a cancel may have ended it first: then nothing is written)."""
    s = api_of(Summary, summary) if summary is not None else None
    if m.store.finish(job_id, state, reason, summary=s, error=error) is None:
        log.info("job %s: not %s, it had already ended", job_id, state)
        state = m.store.get(job_id).state
    if m.metrics is not None:  # its end time now, its series gone after --metrics-retention
        m.metrics.job_finished(job_id, state)
    m.notify()
