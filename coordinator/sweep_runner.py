"""Where a sweep runs in the service, and how its trials become jobs in the store.

**The SweepRunner actor.** ``Tuner.fit()`` blocks for the whole sweep and runs Tune's
controller loop (polling trial actors, placement groups, the searcher, the scheduler). In the
server process it would share the GIL with every API call — the reason the round loop moved
into :class:`coordinator.runner.JobRunner` — and could be stopped only cooperatively. So each
running sweep gets one actor, like a job's JobRunner: 0 CPUs, pinned to the server's node
(Tune's experiment directory, ``DATA_DIR/runs/<sweep>/tune``, and the trials' run directories
are on that node's disk), started by the sweep's follower thread in the manager. It calls
:func:`coordinator.sweep.run_sweep` in a thread and hands its records to the server through
the same outbox protocol as a JobRunner (``next(ack)``), so the server stays the store's only
writer. Cancel is one ``ray.kill``: the trial actors and placement groups Tune made from this
process are owned by it and go with it, and each trial's replicas go with their trial's actor
(an actor dies with its owner), so no actor is left behind and no trial can hold a cancel up.
The actor is owned by the server: it dies with the server too, and the next server start
runs the sweep again (its unfinished trials are recorded CANCELLED first).

**Trials as child jobs** (:class:`Recorder`, in the server). Trial ``T`` (Tune's trial id) of
sweep ``S`` is the job ``S-T``, owned by the sweep's owner, with ``parent = S``; its run
directory is ``DATA_DIR/runs/S-T`` (metrics.jsonl, checkpoints, summary.json), so GetJob,
WatchJob and the downloads work on it as on any job. Each Tune result is an ``evaluation``
event of the trial and a ``trial`` event of the sweep, so WatchJob on a sweep streams its
trials' results. A trial ASHA stops ends SUCCEEDED, reason "stopped early", with
``stopped_early`` in its sweep info: it did what the scheduler asked. A failed trial ends
FAILED with its error and the sweep goes on. The sweep's own ``sweep`` column holds its
standing: counts and the best trial so far, its value and config; the sweep's summary is the
best trial's, and downloading the sweep's checkpoint gives the best trial's.
"""
from __future__ import annotations

import logging
import os
import threading

import ray

log = logging.getLogger("esgd.manager")
TUNE_ENV = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # the store and metrics.jsonl hold the results
            "RAY_AIR_NEW_OUTPUT": "0"}                   # with verbose=0: no console tables in the server's log


@ray.remote(num_cpus=0, max_concurrency=4)
class SweepRunner:
    def __init__(self, sweep_id: str, spec: dict, runs_dir: str, env: dict | None = None):
        """``env``: the server's data policy, for this process and each trial's (JobRunner)."""
        from coordinator.runner import _Outbox

        os.environ.update({**TUNE_ENV, **(env or {})})
        self.sweep_id, self.spec_data, self.runs_dir, self.env = sweep_id, spec, runs_dir, env or {}
        self.outbox = _Outbox()
        self.stopping = threading.Event()

    def start(self) -> dict:
        threading.Thread(target=self._main, name="sweep", daemon=True).start()
        return {"started": True}

    def _main(self) -> None:
        from pathlib import Path

        from coordinator.runner import error_of
        from core.spec import JobSpec
        from coordinator.sweep import run_sweep

        try:
            out = run_sweep(JobSpec.parse(self.spec_data), Path(self.runs_dir) / self.sweep_id,
                            trial_root=self.runs_dir, prefix=f"{self.sweep_id}-", env=self.env, stop=self.stopping,
                            sink=lambda kind, payload: self.outbox.send(kind, payload, wait=False))
            end = {"outcome": "stopped" if out["stopped"] else "succeeded"}
        except Exception as exc:  # noqa: BLE001 - the sweep's own failure (a trial's is a record)
            end = {"outcome": "failed", "error": error_of(exc)}
        self.outbox.send("end", end, wait=False)

    def next(self, ack: int, timeout: float = 1.0) -> list:
        return self.outbox.take(ack, timeout)

    def stop(self) -> None:
        """Server shutdown: Tune stops every trial; the sweep stays RUNNING, to run again."""
        self.stopping.set()


def start_sweep_runner(sweep_id: str, spec: dict, runs_dir: str, env: dict | None = None):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return SweepRunner.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
        sweep_id, spec, runs_dir, env)


def run_sweep_job(m, job_id: str, running) -> None:
    """The follower thread of a running sweep (``m``: the JobManager): start its SweepRunner,
    store what it reports until it ends, then end the sweep. Mirrors ``JobManager._run``."""
    from coordinator.records import drain
    from coordinator.runner import error_of, root_cause

    runner, rec = None, Recorder(m, job_id, running.spec, cancel=running.cancel)
    try:
        with m.lock:  # a cancel from now on sees the runner and kills it
            if running.cancel.is_set():
                raise _Cancelled()
            runner = running.runner = start_sweep_runner(job_id, running.spec.to_dict(), str(m.runs.resolve()),
                                                         m.data_policy.env())
        rec.close_leftovers("CANCELLED", "its sweep was restarted (server restart); the sweep runs again")
        ray.get(runner.start.remote())
        running.started = True
        rec.end(drain(runner, rec.handle, m.stopping_event), running)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the sweep
        if running.cancel.is_set():
            rec.cancelled()
        elif not m.stopping_event.is_set():
            rec.fail(error_of(root_cause(exc)))
    finally:
        if runner is not None:
            _kill(runner)  # its trials, their placement groups and replicas go with it
        with m.lock:
            m.running.pop(job_id, None)
        m.notify()


class _Cancelled(Exception):
    """The sweep was cancelled before its runner was created."""


def _kill(actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already dead
        pass


def _value_str(v) -> str:
    import json

    return json.dumps(v)


class Recorder:
    """A sweep's records as store writes (module docstring): child jobs, their results and
    ends, the sweep's events and standing."""

    def __init__(self, m, job_id: str, spec, cancel=None):
        self.m, self.id, s = m, job_id, spec.sweep
        self.cancel = cancel  # set once the sweep is cancelled: trials ending from then on are CANCELLED
        self.mode = s.mode
        self.standing = {"metric": s.metric, "mode": s.mode, "trials": s.trials, "started": 0, "succeeded": 0,
                         "stopped_early": 0, "failed": 0, "best_trial": "", "best_value": None, "best_config": {}}
        self.configs: dict[str, dict] = {}
        self.results: dict[str, dict] = {}
        self.values: dict[str, float] = {}  # each trial's last reported metric

    def child(self, trial_id: str) -> str:
        return f"{self.id}-{trial_id}"

    def handle(self, kind: str, p: dict) -> None:
        handler = {"trial_start": self._start, "trial_result": self._result, "trial_end": self._trial_end}.get(kind)
        if handler is not None:
            handler(self.child(p["trial_id"]), p)

    def _start(self, cid: str, p: dict) -> None:
        self.m.store.create_trial(cid, self.id, _resolved(p["spec"]), {"trial_id": p["trial_id"],
                                                                      "config": p["config"]})
        self.configs[cid] = p["config"]
        self.standing["started"] += 1
        self._event({"trial": cid, "kind": "started", "config": _strs(p["config"])})

    def _result(self, cid: str, p: dict) -> None:
        from core.events import EvalRecord, api_of

        r, value = p["result"], p.get("value")
        self.results[cid] = r
        ev = api_of(EvalRecord, r)
        progress = {**(r.get("progress") or {}), "round": r.get("round", 0), "epoch": r.get("epoch", 0.0),
                    "total_rounds": r.get("total_rounds", 0)}
        info = {"trial_id": cid.removeprefix(self.id + "-"), "config": self.configs.get(cid, {}), "value": value}
        self.m.write(cid, progress=progress, last_eval=ev, checkpoint_round=r.get("checkpoint_round", 0),
                      sweep=info, event=("evaluation", ev))
        if value is not None:  # the best last value of any trial (Tune's scope="last"), ties: the first
            self.values[cid] = value
            best = (min if self.mode == "min" else max)(self.values, key=self.values.__getitem__)
            self.standing.update(best_trial=best, best_value=self.values[best], best_config=self.configs.get(best, {}))
        self._event({"trial": cid, "kind": "result", "round": r.get("round", 0), "epoch": r.get("epoch", 0.0),
                     "value": value if value is not None else 0.0})

    def _trial_end(self, cid: str, p: dict) -> None:
        r = self.results.get(cid, {})
        info = {"trial_id": cid.removeprefix(self.id + "-"), "config": self.configs.get(cid, {}),
                "value": p.get("value")}
        if self.cancel is not None and self.cancel.is_set():  # stopped by the cancel, whatever Tune saw
            self.m.store.finish(cid, "CANCELLED", "its sweep was cancelled", summary=_summary_of(r), sweep=info)
            event = {"kind": "cancelled", "message": "its sweep was cancelled"}
        elif p["state"] == "FAILED":
            self.standing["failed"] += 1
            self.m.store.finish(cid, "FAILED", "failed", error=p["error"], sweep=info)
            event = {"kind": "failed", "message": p["error"].get("message", "")}
        elif p["state"] == "STOPPED":
            self.standing["stopped_early"] += 1
            reason = f"stopped early by the ASHA scheduler at epoch {r.get('epoch', 0.0):.3g}"
            self.m.store.finish(cid, "SUCCEEDED", reason, summary=_summary_of(r), sweep={**info, "stopped_early": True})
            event = {"kind": "stopped_early", "message": reason}
        else:
            from core.events import Summary, api_of

            self.standing["succeeded"] += 1
            self.m.store.finish(cid, "SUCCEEDED", "finished", summary=api_of(Summary, p.get("summary") or {}),
                                sweep=info)
            event = {"kind": "succeeded", "message": ""}
        self._event({"trial": cid, **event, "round": r.get("round", 0), "epoch": r.get("epoch", 0.0),
                     "value": p.get("value") or 0.0})

    def _event(self, payload: dict) -> None:
        self.m.write(self.id, sweep=self.standing, event=("trial", payload))

    def end(self, end: dict, running) -> None:
        if running.cancel.is_set():
            return self.cancelled()
        if end["outcome"] == "stopped":  # server shutdown: stays RUNNING, runs again at the next start
            log.info("sweep %s stopped for server shutdown", self.id)
            return None
        if end["outcome"] == "failed":
            return self.fail(end["error"])
        self.close_leftovers("CANCELLED", "the sweep ended without a result for it")
        best = self.standing["best_trial"]
        if not best:
            return self.fail({"code": "INTERNAL", "message": "no trial reported a result (every trial failed)",
                              "replica": -1, "round": -1, "root_cause": ""})
        summary = (self.m.store.get(best).summary or None)
        self.m.store.finish(self.id, "SUCCEEDED", f"finished; best trial {best} ({self.standing['metric']} "
                            f"{self.standing['best_value']:.4g})", summary=summary, sweep=self.standing)
        self.m.notify()
        return None

    def fail(self, error: dict) -> None:
        self.close_leftovers("CANCELLED", "its sweep failed")
        self.m.store.finish(self.id, "FAILED", "failed", error=error, sweep=self.standing)
        self.m.notify()

    def cancelled(self) -> None:
        self.close_leftovers("CANCELLED", "its sweep was cancelled")
        self.m.store.finish(self.id, "CANCELLED", "cancelled by user", sweep=self.standing)
        self.m.notify()

    def close_leftovers(self, state: str, reason: str) -> None:
        """End every trial of this sweep that has not ended (the store keeps terminal ones)."""
        for child in self.m.store.children(self.id):
            if child.state not in ("SUCCEEDED", "FAILED", "CANCELLED"):
                self.m.store.finish(child.id, state, reason, summary=_summary_of(self.results.get(child.id, {})))
        self.m.notify()


def _summary_of(r: dict) -> dict | None:
    """A summary from a trial's last Tune result (for a trial that did not run to its end):
    its evaluation's fields, its round and epoch as the rounds and epochs run."""
    from core.events import Summary, api_of

    if not r:
        return None
    return api_of(Summary, {**r, "rounds": r.get("round"), "epochs": r.get("epoch")})


def _resolved(spec_data: dict) -> dict:
    """A trial's spec as it runs (the strategy's pinned values filled in), or as built when it
    does not validate (the trial then fails with the reason, and is recorded)."""
    from core.spec import JobSpec, SpecError

    try:
        return JobSpec.parse(spec_data).resolved().to_dict()
    except SpecError:
        return spec_data


def _strs(config: dict) -> dict:
    """A config as the API carries it: dotted field → the value as JSON text."""
    return {k: _value_str(v) for k, v in config.items()}
