"""Run a sweep on Ray Tune: each trial is an ordinary engine run, its replicas in the trial's
placement group. :func:`run_sweep` is the library entry point (the service's SweepRunner
actor calls it, and a study script can too, with no server): it runs a spec's ``sweep:``
end to end and returns every trial's result.

* **Search and scheduling are Tune's.** The space maps to Tune's own distributions
  (core.sweep_spec.to_tune), the search is Tune's ``BasicVariantGenerator`` (seeded),
  early stopping Tune's ``ASHAScheduler``; nothing here samples or decides.
* **Placement.** A trial asks for a ``tune.PlacementGroupFactory``: a head bundle for the
  trial's driver (the function below, which runs the round loop like a JobRunner) holding a
  share of the ``node:<ip>`` resource of this node and no CPU — it writes the run directory,
  which lies on this node's disk, and mostly waits — then one bundle of ``cpus_per_replica``
  (and the GPU share) per replica. Tune starts the trial's actor in that placement group
  with ``placement_group_capture_child_tasks=True`` (ray.air.execution.resources.placement_group),
  so the ``RayPool``'s replica actors, created without a scheduling strategy, land in the
  trial's bundles: a trial never takes CPUs beyond its own placement group.
* **Reporting.** The trial calls ``ray.tune.report`` (Ray 2.60's reporting API for Tune
  function trainables; ``ray.train.report`` is for Train workers) once per evaluation, after
  that round's checkpoint is written, with the metric and the effective epochs
  (``data_passes_per_replica``: passes over the data per replica, the same unit for every
  method whatever its L; ASHA's time attribute), so a trial ASHA stops still has a
  checkpoint of what it reported.
  Its last report, after the run ends, carries ``final`` and the run's summary: a trial
  whose last result is not final was stopped early by the scheduler.
* **Records.** A Tune callback in the driver (this process) turns Tune's events into
  ``sink(kind, payload)`` calls, in order: ``trial_start``, ``trial_result``, ``trial_end``.
  One trial's failure is a ``trial_end`` with its error; the sweep goes on (Tune's
  ``FailureConfig(fail_fast=False)``). Each trial's end is also appended to
  ``storage/trials.jsonl``, the sweep's own record of its finished trials.
* **Resume** (``resume=True``). An interrupted sweep (Ctrl-C, a killed process) goes on with
  ``Tuner.restore``: the trials that finished are kept, not run again (their records come
  back from ``trials.jsonl``); the unfinished ones start again and each continues from the
  newest checkpoint in its run directory, as a resumed job does; the searcher hands out the
  samples it had not yet. Tune restores the run config it pickled, so the relay and the
  stop hook find this process's live ones through :data:`_LIVE`.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ray import tune

from core.events import CheckpointEvent, EvalRecord, Listener, RoundRecord, api, record
from core.sweep_spec import DRIVER_BUNDLE, apply, footprint, num_samples, to_tune

ASHA_MAX_T = 1e8  # ASHA's max_t, in effective epochs: beyond any budget, so a trial is never stopped for reaching it
RESULT_KEYS = ("round", "epoch", "total_rounds", "test_error", "test_loss", "grad_evals_total",
               "data_passes_per_replica", "wall_s", "checkpoint_round", "progress", "final", "summary")


@dataclass
class TrialResult:
    """One trial as the sweep saw it. ``state``: RUNNING, SUCCEEDED, STOPPED (early, by the
    scheduler) or FAILED; ``value``: its last reported metric."""

    trial_id: str
    dir: str
    config: dict
    spec: dict
    state: str = "RUNNING"
    value: float | None = None
    result: dict = field(default_factory=dict)
    summary: dict | None = None
    error: dict | None = None


def trial_dir(root: str | Path, prefix: str, trial_id: str) -> Path:
    """A trial's run directory: ``root/<prefix><Tune's trial id>``. The service passes its
    runs directory and ``<sweep id>-``, so the trial's directory is that of its child job."""
    return Path(root) / f"{prefix}{trial_id}"


def pg_factory(spec):
    """The trial's ``PlacementGroupFactory`` (module docstring): head bundle, then K replicas."""
    import ray

    from coordinator.pool import resolve_gpus

    gpus = resolve_gpus(spec, ray.cluster_resources().get("GPU", 0.0))
    replica = {"CPU": spec.resources.cpus_per_replica, **({"GPU": gpus} if gpus > 0 else {})}
    head = {f"node:{ray.util.get_node_ip_address()}": DRIVER_BUNDLE}
    return tune.PlacementGroupFactory([head] + [dict(replica) for _ in range(spec.replicas)])


def best_of(trials: list[TrialResult], mode: str) -> TrialResult | None:
    """The trial with the best last reported value (Tune's ``scope="last"``); ties: the first."""
    scored = [t for t in trials if t.value is not None]
    if not scored:
        return None
    return (min if mode == "min" else max)(scored, key=lambda t: t.value)


def can_resume(storage: str | Path) -> bool:
    """Whether ``storage`` holds a sweep that ``run_sweep(..., resume=True)`` can go on with."""
    experiment = Path(storage).resolve() / "tune"
    return experiment.is_dir() and tune.Tuner.can_restore(str(experiment))


def run_sweep(spec, storage: str | Path, *, trial_root: str | Path, prefix: str = "", sink=None,
              env: dict | None = None, stop: threading.Event | None = None, resume: bool = False) -> dict:
    """Run ``spec.sweep`` on Tune (Ray already initialized) and wait for it to end. Tune's
    experiment goes to ``storage/tune``; trial ``i`` runs in :func:`trial_dir`. ``sink(kind,
    payload)`` gets the records (module docstring); ``env`` is applied in each trial's
    process before it reads data (the server's data policy, as for a JobRunner); setting
    ``stop`` stops every trial; ``resume`` goes on with the interrupted sweep in ``storage``
    (the caller checks it is the same spec's). Returns ``{"trials": [TrialResult] (in trial
    id order, which is Tune's creation order), "best": TrialResult|None, "stopped": bool}``."""
    import ray
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    s = spec.sweep
    concurrency, _, _ = footprint(spec, ray.cluster_resources().get("CPU", 0.0))
    # the fields as given, not every default: a default a strategy pins (sgd's γ) must stay unset
    spec_data = spec.model_dump(mode="json", exclude_unset=True)
    experiment = Path(storage).resolve() / "tune"
    key = str(experiment)
    stop = stop or threading.Event()
    relay = _Relay(key, spec_data, s.metric, trial_root, prefix, sink or (lambda kind, payload: None),
                   Path(storage) / "trials.jsonl", kept=resume)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, spec_data=spec_data, root=str(trial_root), prefix=prefix,
                             env=dict(env or {}), cwd=os.getcwd()), pg_factory(spec))
    _LIVE[key] = (relay, stop)
    try:
        if resume:
            tuner = tune.Tuner.restore(key, trainable, resume_unfinished=True, param_space=to_tune(s))
        else:
            scheduler = (ASHAScheduler(time_attr="data_passes_per_replica", max_t=ASHA_MAX_T,
                                       grace_period=s.grace_period, reduction_factor=s.reduction_factor)
                         if s.scheduler == "asha" else FIFOScheduler())
            tuner = tune.Tuner(
                trainable, param_space=to_tune(s),
                tune_config=tune.TuneConfig(
                    metric=s.metric, mode=s.mode, num_samples=num_samples(s), max_concurrent_trials=concurrency,
                    scheduler=scheduler, reuse_actors=False,
                    # Tune applies max_concurrent_trials only to a searcher it makes itself
                    search_alg=BasicVariantGenerator(random_state=s.seed, max_concurrent=concurrency)),
                run_config=tune.RunConfig(storage_path=str(experiment.parent), name=experiment.name, verbose=0,
                                          callbacks=[relay], stop=_StopAll(key, stop),
                                          failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)))
        tuner.fit()
    finally:
        _LIVE.pop(key, None)
    trials = [relay.trials[k] for k in sorted(relay.trials)]
    return {"trials": trials, "best": best_of(trials, s.mode), "stopped": stop.is_set()}


# The relay and stop event of each sweep running in this process, by experiment path: Tune
# pickles the run config into the experiment and a restored Tuner unpickles it, so the copies
# it makes of the callback and the stopper look their live originals up here.
_LIVE: dict[str, tuple] = {}


class _StopAll(tune.Stopper):
    """Tune's own stop hook: ``stop_all`` is asked after every result and between trials."""

    def __init__(self, key: str, event: threading.Event):
        self.key, self.event = key, event

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.event.is_set()

    def __getstate__(self):  # Tune saves its run config; the event is this process's only
        return {"key": self.key}

    def __setstate__(self, state):
        live = _LIVE.get(state.get("key", ""))
        self.key, self.event = state.get("key", ""), live[1] if live else threading.Event()


class _Relay(tune.Callback):
    """Tune's trial events as sink records (module docstring), and the trials' bookkeeping."""

    def __init__(self, key: str, spec_data: dict, metric: str, root, prefix: str, sink, record: Path,
                 kept: bool = False):
        """``record``: the sweep's trials.jsonl; ``kept``: load the trials it already holds."""
        self.key, self.spec_data, self.metric, self.root, self.prefix = key, spec_data, metric, root, prefix
        self.sink = sink
        self.record = Path(record)
        self.trials: dict[str, TrialResult] = {}
        if kept and self.record.exists():
            for line in self.record.read_text().splitlines():
                try:
                    t = TrialResult(**json.loads(line))
                except (ValueError, TypeError):  # a line cut short by the interruption
                    continue
                self.trials[t.trial_id] = t
        elif self.record.exists():
            self.record.unlink()

    def __getstate__(self):  # Tune pickles its run config into the experiment; the sink stays here
        return {"key": self.key}

    def __setstate__(self, state):  # restored by Tuner.restore: be this process's live relay
        live = _LIVE.get(state.get("key", ""))
        if live is None:
            raise RuntimeError("a sweep's relay was unpickled outside run_sweep")
        self.__dict__ = live[0].__dict__

    def _keep(self, t: TrialResult) -> None:
        with self.record.open("a") as f:
            f.write(json.dumps(t.__dict__, default=str) + "\n")

    def _trial(self, trial) -> TrialResult:
        t = self.trials.get(trial.trial_id)
        if t is None:
            config = {k: (v.item() if hasattr(v, "item") else v) for k, v in dict(trial.config).items()}
            t = self.trials[trial.trial_id] = TrialResult(
                trial.trial_id, str(trial_dir(self.root, self.prefix, trial.trial_id)), config,
                apply(self.spec_data, config))
        return t

    def on_trial_start(self, iteration, trials, trial, **info):
        t = self._trial(trial)
        self.sink("trial_start", {"trial_id": t.trial_id, "config": t.config, "spec": t.spec, "dir": t.dir})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        t = self._trial(trial)
        t.result = {k: result[k] for k in RESULT_KEYS if k in result}
        t.value = float(result[self.metric]) if result.get(self.metric) is not None else t.value
        self.sink("trial_result", {"trial_id": t.trial_id, "result": t.result, "value": t.value})

    def on_trial_complete(self, iteration, trials, trial, **info):
        t = self._trial(trial)
        if t.result.get("final"):
            t.state, t.summary = "SUCCEEDED", t.result.get("summary")
        else:
            t.state = "STOPPED"
        self._keep(t)
        self.sink("trial_end", {"trial_id": t.trial_id, "state": t.state, "summary": t.summary,
                                "result": t.result, "value": t.value})

    def on_trial_error(self, iteration, trials, trial, **info):
        t = self._trial(trial)
        path = Path(t.dir) / "error.json"
        try:
            t.error = json.loads(path.read_text())
        except (OSError, ValueError):  # the trial's process died before it could say why
            t.error = {"code": "INTERNAL", "message": f"trial {t.trial_id} failed",
                       "replica": -1, "round": -1, "root_cause": str(getattr(trial, "error_file", "") or "")}
        t.state = "FAILED"
        self._keep(t)
        self.sink("trial_end", {"trial_id": t.trial_id, "state": "FAILED", "error": t.error, "value": t.value})


class _Reporter(Listener):
    """Engine listener in a trial: one ``tune.report`` per evaluation, once its round's
    checkpoint is written (or at the next round when no checkpoint follows it); the final
    evaluation is held for the final report, which :func:`_trial` makes after the run. The
    result keeps the run directory's names (core.events.record), as ``trials.jsonl`` has them."""

    def __init__(self, total: int):
        self.total, self.pending, self.last_round, self.checkpoint_round = total, None, None, 0

    def on_round(self, event: RoundRecord) -> None:
        self.flush()
        self.last_round = event

    def on_eval(self, event: EvalRecord) -> None:
        self.pending = record(event)

    def on_checkpoint(self, event: CheckpointEvent) -> None:
        self.checkpoint_round = event.round
        if self.pending is not None and self.pending["round"] == event.round:
            self.flush()

    def flush(self, final: bool = False, summary: dict | None = None) -> None:
        ev = self.pending
        if ev is None or (ev["round"] >= self.total and not final):
            return
        self.pending = None
        result = {k: ev[k] for k in ("round", "epoch", "test_error", "test_loss", "grad_evals_total",
                                     "data_passes_per_replica", "wall_s") if ev.get(k) is not None}
        progress = api(self.last_round) if self.last_round is not None else {}
        tune.report({**result, "total_rounds": self.total, "checkpoint_round": self.checkpoint_round,
                     "progress": progress, "final": final, **({"summary": summary} if summary else {})})


def _trial(config: dict, spec_data: dict, root: str, prefix: str, env: dict, cwd: str) -> None:
    """One trial: its spec is the sweep's with ``config`` applied; it runs like a JobRunner's
    job (run directory, metrics.jsonl, checkpoints, resume from the newest checkpoint, the
    flatness report if asked), reporting to Tune through :class:`_Reporter`. A failure
    writes ``error.json`` (coordinator.runner.error_of) for the driver, then raises."""
    os.environ.update(env)
    os.chdir(cwd)  # Tune starts trials in their Tune directory; data paths are relative to the server's
    from coordinator.compose import build_engine
    from coordinator.local_run import dataset_for
    from coordinator.pool import RayPool
    from coordinator.rundir import MetricsLog, RunDir
    from coordinator.runner import error_of
    from core.spec import JobSpec

    rd = RunDir(trial_dir(root, prefix, tune.get_context().get_trial_id()))
    engine = metrics = None
    try:
        spec = JobSpec.parse(apply(spec_data, config)).resolved()  # where a trial's spec enters
        rd.prepare(spec, resume=True)
        metrics = MetricsLog(rd)
        reporter = _Reporter(0)
        engine = build_engine(spec, dataset_for(spec), RayPool, checkpoint_dir=rd.checkpoints, resume=True,
                              runs=rd.path.parent, listeners=[metrics, reporter])
        reporter.total = engine.total
        summary = engine.run()
        if spec.flatness.enabled:
            summary = {**summary, **_flatness(engine, rd)}
        rd.write_summary({"status": "succeeded", **summary})
    except Exception as exc:
        rd.path.mkdir(parents=True, exist_ok=True)
        rd.write_text(rd.path / "error.json", json.dumps(error_of(exc)))
        raise
    finally:
        if engine is not None:
            engine.pool.shutdown()
        if metrics is not None:
            metrics.close()
    reporter.flush(final=True, summary=summary)


def _flatness(engine, rd) -> dict:
    """The flatness report of the final model (as coordinator.runner.JobRunner._flatness)."""
    from coordinator.flatness_job import report_for_checkpoint

    ckpt = {"spec": engine.spec.to_dict(), "round": engine.t,
            "model": engine.evaluator.state_dict(engine.strategy.reference())}
    report = report_for_checkpoint(ckpt, rd.path)
    return {"top_eigenvalue": report["top_eigenvalues"][0], "hessian_trace": report["trace"],
            "near_zero_fraction": report["near_zero_fraction"]}
