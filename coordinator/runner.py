"""One job's round loop in a process of its own: a Ray actor beside the server.

Why: the round loop — aggregating the replicas' running means, the outer step, evaluation,
checkpoints, the flatness report — used to be a thread of the gRPC server, sharing one GIL with
every API call. A hundred clients then slowed the coordinator's turn-around between rounds
(the replicas wait for it), and a long evaluation slowed the API. As an actor it has its own
interpreter; the server only stores what it reports.

The actor runs on the server's node (the run directory is on its disk) with 0 CPUs: it mostly
waits on the replicas, and between rounds, when it computes, they are idle. Ray starts it in
an idle pooled worker process that has already imported torch and our modules, when there is
one (:mod:`coordinator.warm`). Protocol:

* It is created with the job's resolved spec (the one CreateJob resolved and stored).
* ``start(data=[ref])`` builds the engine (coordinator.compose; replicas as Ray actors,
  resuming from the newest checkpoint) on the dataset the server already put in the object
  store (or loads it itself without ``data``) and starts the loop in a thread; it answers the
  round budget, where the replicas run and when each start-up step ended (``timings``), or
  the error that stopped it.
* ``next(ack)`` returns the engine's events in order (core.events: round, evaluation,
  checkpoint, replica change), and last the end of the run. The loop waits at each record until the server has
  acknowledged storing it, so a checkpoint is never written ahead of the rounds before it —
  after a server crash, no completed round is missing from the job's history.
* Its output and its replicas' (stdout, stderr, logging) go to ``logs.jsonl`` in the run
  directory, tagged with replica and round, at most ``log_bytes`` (coordinator.joblogs).
* ``stop()`` (server shutdown: checkpoint after this round), ``cancel()`` (kill the replicas
  now), ``resize(n)`` (at the next round boundary).

The actor is owned by the server process: if the server dies, Ray ends the actor and its
replicas with it, and the next server start resumes the job from its checkpoint.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import os
import queue
import threading
import time
import traceback

import ray

from core.events import KINDS, Listener, ReplicaEvent


def root_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task error wraps (the runner's own failure), else ``exc``."""
    from ray.exceptions import RayTaskError

    while isinstance(exc, RayTaskError) and exc.cause is not None:
        exc = exc.cause
    return exc


def error_of(exc: BaseException) -> dict:
    """The job's structured error (code, message, replica, round, root cause) for ``exc``."""
    from coordinator.checkpoint import CheckpointError
    from coordinator.membership import DivergenceError, PlacementFailed, ReplicaError
    from coordinator.pool import PlacementError
    from coordinator.store import StoreError
    from core.errors import SpecError
    from worker.data.datasets import DataError

    if isinstance(exc, DivergenceError):
        code = "DIVERGED"
    elif isinstance(exc, (PlacementFailed, PlacementError)):
        code = "PLACEMENT"
    elif isinstance(exc, ReplicaError):
        code = "REPLICA_FAILED"
    elif isinstance(exc, DataError):
        code = "DATA"
    elif isinstance(exc, SpecError):  # e.g. an init_from checkpoint whose model does not match
        code = "SPEC"
    elif isinstance(exc, (CheckpointError, StoreError)) or (  # a write the disk refused: full, too large, I/O
            isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EDQUOT, errno.EROFS)):
        code = "STORAGE"
    else:
        code = "INTERNAL"
    lines = traceback.format_exception_only(type(exc), exc)
    return {"code": code, "message": str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            "replica": getattr(exc, "replica", -1), "round": getattr(exc, "round", -1),
            "root_cause": "".join(lines).strip()[-2000:]}


def placement(engine) -> list[dict]:
    """Where each replica runs; ``index`` is its position, as in replica events."""
    return [{**{k: s.info[k] for k in ("node_id", "node_ip", "pid", "device")}, "index": p}
            for p, s in enumerate(engine.pool.slots) if s.info]


class _Outbox(Listener):
    """Engine listener: each event is queued for the server as ``(seq, kind, event)`` (its kind
    from core.events.KINDS), and the loop waits until the server has acknowledged it. (If the
    server dies, Ray ends this actor with it.) ``send`` queues other records too: the end of
    the run, a sweep's trial records."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self.cv = threading.Condition()
        self.sent = self.acked = 0
        self.engine = None

    def send(self, kind: str, payload, wait: bool = True) -> None:
        with self.cv:
            self.sent += 1
            seq = self.sent
        self.queue.put((seq, kind, payload))
        if wait:
            with self.cv:
                self.cv.wait_for(lambda: self.acked >= seq)

    def ack(self, seq: int) -> None:
        with self.cv:
            self.acked = max(self.acked, seq)
            self.cv.notify_all()

    def take(self, ack: int, timeout: float) -> list[tuple[int, str, object]]:
        """Acknowledge records up to ``ack``; return the next ones (waiting up to ``timeout``)."""
        self.ack(ack)
        try:
            batch = [self.queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                return batch

    def forward(self, event) -> None:
        self.send(KINDS[type(event)], event)

    on_round = on_eval = on_checkpoint = on_checkpoint_failed = forward

    def on_replica(self, event: ReplicaEvent) -> None:
        # membership may have changed: the server stores where replicas now run and the spec
        self.forward(dataclasses.replace(event, placement=placement(self.engine), spec=self.engine.spec.to_dict()))


def _process_start_time(pid="self"):
    from coordinator.warm import process_start_time

    return process_start_time(pid)


def dataset_bytes(dataset) -> int:
    return sum(getattr(v, "nbytes", 0) for v in vars(dataset).values())


def job_dataset(spec, dataset_ref=None, marks: dict | None = None) -> tuple:
    """(dataset, reference): the job's dataset, read zero-copy from the object store at
    ``dataset_ref`` when given (and shared with the replicas through that reference), else
    loaded here. A load that failed raises the loader's error; a reference whose object is gone
    (its loader's process died, the object was lost) is not the job's fault: the data is loaded
    here instead (``marks["data_fallback"]``, and the reference returned is None)."""
    from coordinator.local_run import dataset_for

    marks = {} if marks is None else marks
    dataset = None
    if dataset_ref is not None:
        try:
            dataset = _get(dataset_ref)
        except ray.exceptions.RayError:  # not the loader's own error: the object is gone
            dataset_ref, marks["data_fallback"] = None, True
    if dataset is None:
        dataset = dataset_for(spec)
    marks["data"] = time.time()
    return dataset, dataset_ref


def _get(ref):
    """``ray.get(ref)``, raising the original error of a failed call (e.g. the DataError of a
    dataset that could not be loaded), not Ray's wrapper around it."""
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = exc
        while isinstance(cause, RayTaskError) and cause.cause is not None:
            cause = cause.cause
        raise cause from None


@ray.remote(num_cpus=0, max_concurrency=4)
class JobRunner:
    def __init__(self, spec, run_dir: str, env: dict | None = None, log_bytes: int | None = None):
        """``spec``: the job's resolved core.spec.JobSpec. ``env``: the server's data policy
        (worker.data.roots.DataPolicy.env: the data roots and size caps), applied to this process
        before it reads any data. Passed explicitly rather than as a runtime_env, which would keep
        the job off the warm worker processes; on an external cluster this is how the roots reach
        the node that reads the data."""
        if env:
            os.environ.update(env)
        from coordinator.joblogs import DEFAULT_MAX_BYTES, RunnerLog

        self.marks = {"process": _process_start_time(), "init": time.time()}
        self.log = RunnerLog(run_dir, log_bytes or DEFAULT_MAX_BYTES)  # this process's output, from now on
        import torch

        self.marks["torch"] = time.time()
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))  # evaluation runs while replicas wait
        self.spec, self.run_dir = spec, run_dir
        self.outbox = _Outbox()
        self.engine = None
        self.cancelled, self.stopping = threading.Event(), threading.Event()

    def dataset_key(self) -> str | None:
        """The job's :func:`coordinator.warm.dataset_key`, computed where the data is read."""
        from coordinator.warm import dataset_key

        try:
            return dataset_key(self.spec)
        except Exception:  # noqa: BLE001 - no key: the job loads its data uncached
            return None

    def load_data(self):
        """The job's dataset, loaded here. The server calls this and keeps the result's
        reference without reading it: Ray makes the caller own a call's result, so the object
        stays in the store after this runner is gone, for the next job on the same data."""
        from coordinator.local_run import dataset_for

        self.marks["load"] = time.time()
        return dataset_for(self.spec)

    def start(self, cancelled: bool = False, data: list | None = None) -> dict:
        """Build the engine and start the loop. ``data``: ``[ref]``, the job's dataset in the
        object store (in a list, so Ray hands over the reference, not the value): a
        ``load_data`` result of this runner or of an earlier job's."""
        from coordinator.compose import build_engine
        from coordinator.pool import RayPool
        from coordinator.rundir import MetricsLog, RunDir

        self.marks["start"] = time.time()
        spec = self.spec
        try:
            rd = RunDir(self.run_dir)
            rd.prepare(spec, resume=True)
            self.metrics_log = MetricsLog(rd)
            dataset, ref = job_dataset(spec, data[0] if data else None, self.marks)
            self.engine = build_engine(spec, dataset, functools.partial(RayPool, dataset_ref=ref),
                                       checkpoint_dir=rd.checkpoints, resume=True, runs=rd.path.parent,
                                       listeners=[self.metrics_log, self.log, self.outbox], marks=self.marks)
        except Exception as exc:  # noqa: BLE001 - reported as the job's error
            self.log.file.write(-1, 0, "log", "ERROR", f"esgd.runner: the job could not start: {exc}")
            return {"error": error_of(exc)}
        self.log.attach(self.engine)
        self.log.file.write(-1, self.engine.t, "log", "INFO",
                            f"esgd.runner: started {spec.strategy} {spec.model}/{spec.dataset.name} with "
                            f"{self.engine.pool.size} replicas at round {self.engine.t} of {self.engine.total}")
        self.outbox.engine, self.rd = self.engine, rd
        if cancelled:
            self.cancelled.set()
        threading.Thread(target=self._main, name="round-loop", daemon=True).start()
        where = placement(self.engine)
        replica_starts = [_process_start_time(p["pid"]) if p.get("node_id") == ray.get_runtime_context().get_node_id()
                          else None for p in where]
        return {"total": self.engine.total, "replicas": self.engine.pool.size, "placement": where,
                "dataset_bytes": dataset_bytes(self.engine.evaluator.dataset),
                "timings": {**self.marks, "replica_processes": replica_starts, "pid": os.getpid()}}

    def _main(self) -> None:
        engine = self.engine
        try:
            if self.cancelled.is_set():
                end = {"outcome": "cancelled", "summary": engine.summary()}
            else:
                summary = engine.run(should_stop=lambda: self.cancelled.is_set() or self.stopping.is_set())
                if self.cancelled.is_set():
                    end = {"outcome": "cancelled", "summary": summary}
                elif summary.get("stopped"):
                    end = {"outcome": "stopped", "summary": summary}
                else:
                    head = self._flatness() if engine.spec.flatness.enabled else {}
                    summary = {**summary, **head}
                    self.rd.write_summary({"status": "succeeded", **summary})
                    end = {"outcome": "succeeded", "summary": summary, "flatness": head}
        except Exception as exc:  # noqa: BLE001 - every failure ends the job with its cause
            if self.cancelled.is_set():
                end = {"outcome": "cancelled", "summary": _safe_summary(engine)}
            else:
                end = {"outcome": "failed", "error": error_of(exc)}
        finally:
            engine.pool.shutdown()
            self.metrics_log.close()
        self._log_end(end, engine.t)
        self.outbox.send("end", end, wait=False)

    def _log_end(self, end: dict, rnd: int) -> None:
        """The job's last log line, written before the server hears of the end (so a follower
        that sees the job end has every line); the capture stops with it."""
        what = {"succeeded": "finished", "stopped": "checkpointed for server shutdown", "cancelled": "cancelled",
                "failed": f"failed: {end.get('error', {}).get('message', '')}"}[end["outcome"]]
        self.log.file.write(-1, rnd, "log", "ERROR" if end["outcome"] == "failed" else "INFO",
                            f"esgd.runner: {what} at round {rnd}")
        self.log.close()

    def _flatness(self) -> dict:
        """The flatness report of the final model into the run directory; its headline numbers."""
        from coordinator.flatness_job import report_for_checkpoint

        e = self.engine
        ckpt = {"spec": e.spec.to_dict(), "round": e.t, "model": e.evaluator.state_dict(e.strategy.reference())}
        report = report_for_checkpoint(ckpt, self.rd.path)
        return {"top_eigenvalue": report["top_eigenvalues"][0], "hessian_trace": report["trace"],
                "near_zero_fraction": report["near_zero_fraction"]}

    def next(self, ack: int, timeout: float = 1.0) -> list[tuple[int, str, object]]:
        """Acknowledge records up to ``ack``; return the next ones (waiting up to ``timeout``)."""
        return self.outbox.take(ack, timeout)

    def stop(self) -> None:
        self.stopping.set()

    def cancel(self) -> None:
        self.cancelled.set()
        if self.engine is not None:
            self.engine.pool.shutdown()  # stop the round in flight: kill the replicas now

    def resize(self, replicas: int) -> None:
        self.engine.request_resize(replicas)


def _safe_summary(engine) -> dict | None:
    try:
        return engine.summary()
    except Exception:  # noqa: BLE001 - a cancelled job still ends, with or without a summary
        return None


def start_runner(spec, run_dir: str, env: dict | None = None, log_bytes: int | None = None):
    """A JobRunner on this process's node (the run directory is on its disk) for the resolved
    JobSpec ``spec``; ``env``: the server's data policy for the process that reads the job's data (JobRunner)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return JobRunner.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(spec, run_dir, env, log_bytes)
