"""Sweeps through the real service: a real `esgd serve` subprocess with embedded Ray, real gRPC
on loopback, Ray Tune running real engine trials on synthetic data.

* ASHA must stop a trial: one trial at a time, and a grid over the inner learning rate whose
  first point learns (0.5) and whose later points barely move the weights (1e-5 .. 3e-5), so
  at the first rung (1 effective epoch) each later trial is far worse than the first one's
  recorded value and ASHA (reduction factor 2) stops it.
* Cancel stops every trial, and no SweepRunner, trial or replica process is left behind.
* A trial whose config does not validate fails alone; the sweep goes on and records it.
* Bad input is INVALID_ARGUMENT naming the path; a trial that could never fit the cluster is
  RESOURCE_EXHAUSTED, while more trials than fit at once are queued, not refused.
"""
from __future__ import annotations

import io
import json

import grpc
import pytest
import torch

from services.api import jobs_pb2 as pb
from tests.security.test_cancel import actor_pids, alive
from tests.service_harness import follow, module_server, wait_for
from tests.test_service import code_of, create, wait_state

pytestmark = pytest.mark.slow
TERMINAL = {pb.SUCCEEDED, pb.FAILED, pb.CANCELLED}


def sweep_spec(space, train=None, **sweep):
    return {"name": "sw", "model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "sgd", "replicas": 1,
            "inner": {"steps": 2}, "resources": {"cpus_per_replica": 1},
            "train": {"epochs": 2, "batch_size": 256, "eval_every": 4, **(train or {})},  # 8 rounds an epoch
            "sweep": {"space": space, "trials": 4, **sweep}}


server = module_server("sweep", "--num-cpus", "2")



def get(stub, name):
    return stub.GetJob(pb.GetJobRequest(name=name), timeout=10)


def test_asha_sweep_stops_a_trial_and_the_best_is_downloadable(stub, tmp_path):
    sweep = create(stub, sweep_spec({"inner.lr": "grid(0.5, 1e-5, 2e-5, 3e-5)"}, max_concurrent=1,
                                    scheduler="asha", grace_period=2, reduction_factor=2))
    # grace 2 effective epochs = 2 data passes = engine epoch 1 (L = 2) = round 8, an evaluation
    events = follow(stub, sweep.name, timeout=300)  # the sweep's whole history, to its end
    final = get(stub, sweep.name)
    assert final.state == pb.SUCCEEDED, final
    assert len(final.children) == 4 and final.sweep.started == 4
    trials = [get(stub, c) for c in final.children]
    assert all(t.parent == sweep.name and t.state in TERMINAL for t in trials)
    by_lr = {json.loads(t.trial.config["inner.lr"]): t for t in trials}
    assert sorted(by_lr) == [1e-5, 2e-5, 3e-5, 0.5]
    good = by_lr.pop(0.5)
    assert good.state == pb.SUCCEEDED and not good.trial.stopped_early and good.summary.rounds == 16
    stopped = [t for t in by_lr.values() if t.trial.stopped_early]
    assert stopped and final.sweep.stopped_early == len(stopped) >= 1
    for t in stopped:  # stopped at a rung: before the end of its budget, with what it had reported
        assert t.state == pb.SUCCEEDED and t.summary.rounds < 16 and t.last_evaluation.epoch >= 1
        assert t.trial.value > good.trial.value
    assert final.sweep.best_trial == good.name and final.sweep.best_config["inner.lr"] == "0.5"
    assert final.summary.test_error == pytest.approx(good.summary.test_error)
    # the best trial's checkpoint and spec, through the sweep; a trial's artifacts as any job's
    chunks = list(stub.DownloadCheckpoint(pb.DownloadCheckpointRequest(name=sweep.name), timeout=60))
    ckpt = torch.load(io.BytesIO(b"".join(c.data for c in chunks)))
    assert ckpt["round"] == 16 and ckpt["spec"]["inner"]["lr"] == 0.5
    spec = b"".join(c.data for c in stub.DownloadArtifact(
        pb.DownloadArtifactRequest(name=sweep.name, artifact="spec.yaml"), timeout=30))
    assert b"lr: 0.5" in spec and b"sweep" not in spec
    lines = b"".join(c.data for c in stub.DownloadArtifact(
        pb.DownloadArtifactRequest(name=stopped[0].name, artifact="metrics.jsonl"), timeout=30)).splitlines()
    assert lines and max(json.loads(line).get("round", 0) for line in lines) < 16
    # WatchJob on the sweep streamed its trials: each started, reported, and ended
    kinds = [(e.trial.trial, e.trial.kind) for e in events if e.HasField("trial")]
    for t in trials:
        mine = [k for name, k in kinds if name == t.name]
        assert mine[0] == "started" and "result" in mine
        assert mine[-1] == ("stopped_early" if t.trial.stopped_early else "succeeded")
    assert events[-1].state_change.state == pb.SUCCEEDED
    listed = {j.name: j for j in stub.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=10).jobs}
    assert listed[sweep.name].children == final.children and all(listed[c].parent == sweep.name
                                                                 for c in final.children)


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(stub):
    # each value alone is valid, but Adam with inner.momentum 0.5 is not: one trial of four fails
    sweep = create(stub, sweep_spec({"inner.optimizer": "grid('sgd', 'adam')", "inner.momentum": "grid(0.0, 0.5)"},
                                    train={"epochs": None, "outer_steps": 2, "eval_every": 2},
                                    scheduler="none", max_concurrent=2))
    final = wait_state(stub, sweep.name, TERMINAL, timeout=300)
    assert final.state == pb.SUCCEEDED and final.sweep.failed == 1 and final.sweep.succeeded == 3
    trials = [get(stub, c) for c in final.children]
    failed = [t for t in trials if t.state == pb.FAILED]
    assert len(failed) == 1 and "inner.momentum" in failed[0].error.message
    assert failed[0].trial.config["inner.optimizer"] == '"adam"' and failed[0].trial.config["inner.momentum"] == "0.5"
    assert sum(t.state == pb.SUCCEEDED and t.summary.rounds == 2 for t in trials) == 3


def test_cancel_stops_every_trial_and_leaves_no_actor(stub):
    names = (b"SweepRunner", b"ImplicitFunc", b"ReplicaActor")
    before = {n: actor_pids(n) for n in names}
    # no scheduler: ASHA would stop one of the two trials at its first rung, before the cancel
    sweep = create(stub, sweep_spec({"inner.lr": "uniform(0.05, 0.5)"}, max_concurrent=2, scheduler="none",
                                    train={"epochs": None, "outer_steps": 100000, "eval_every": 2}))
    # both trials are running once each has reported a result
    seen = set()
    follow(stub, sweep.name, until=lambda e: e.HasField("trial") and e.trial.kind == "result"
           and (seen.add(e.trial.trial) or len(seen) == 2), timeout=180)
    # meanwhile another sweep (and a job) cannot start: queued, not failed
    queued = create(stub, sweep_spec({"inner.lr": "uniform(0.05, 0.5)"}))
    assert get(stub, queued.name).state == pb.QUEUED
    procs = {n: actor_pids(n) - before[n] for n in names}
    assert len(procs[b"SweepRunner"]) == 1 and len(procs[b"ImplicitFunc"]) >= 2 and len(procs[b"ReplicaActor"]) >= 2
    stub.CancelJob(pb.CancelJobRequest(name=sweep.name), timeout=10)
    final = wait_state(stub, sweep.name, TERMINAL, timeout=30)
    assert final.state == pb.CANCELLED and len(final.children) >= 2
    children = [get(stub, c) for c in final.children]
    assert all(t.state == pb.CANCELLED for t in children), [(t.name, pb.State.Name(t.state), t.error.message,
                                                              t.state_reason if hasattr(t, "state_reason") else "")
                                                             for t in children]
    everything = set().union(*procs.values())
    wait_for(lambda: not alive(everything), 30, f"the sweep's processes {sorted(everything)} to exit")
    assert get(stub, queued.name).state in (pb.QUEUED, pb.RUNNING)  # its turn came, or is coming
    assert stub.CancelJob(pb.CancelJobRequest(name=queued.name), timeout=10).state in (pb.CANCELLED, pb.RUNNING)
    assert wait_state(stub, queued.name, TERMINAL, timeout=60).state == pb.CANCELLED


@pytest.mark.parametrize("sweep, path", [
    ({"space": {"inner.gamma": "loguniform(1e-4, 1e-1)"}}, "sweep.space.inner.gamma"),   # unknown field
    ({"space": {"inner.steps": "uniform(5, 20)"}}, "sweep.space.inner.steps"),          # floats for an int
    ({"space": {"inner.lr": "uniform(-1, 1)"}}, "sweep.space.inner.lr"),                # past the field's range
    ({"space": {"outer.lr": "uniform(0.1, 1)"}}, "sweep.space.outer.lr"),               # pinned by strategy sgd
    ({"space": {"inner.lr": "normal(0, 1)"}}, "sweep.space.inner.lr"),                  # no such distribution
    ({"space": {}}, "sweep.space"),                                                     # empty space
    ({"space": {"inner.lr": "uniform(0.1, 1)"}, "trials": 0}, "sweep.trials"),
    ({"space": {"inner.lr": "uniform(0.1, 1)"}, "trials": -3}, "sweep.trials"),
    ({"space": {"sweep.trials": "choice(1, 2)"}}, "sweep.space.sweep.trials"),          # the sweep itself
    ({"space": {"inner.lr": "grid(0.1, 0.2, 0.3)"}, "trials": 4}, "sweep.trials"),      # not a multiple of the grid
    ({"space": {"inner.lr": "uniform(0.1, 1)"}, "scheduler": "hyperband"}, "sweep.scheduler"),
])
def test_bad_sweeps_are_invalid_argument_naming_the_path(stub, sweep, path):
    spec = sweep_spec({})
    spec["sweep"] = sweep
    code, details = code_of(lambda: create(stub, spec))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(path + ":"), details


def test_a_space_value_that_is_not_an_expression_is_refused_by_the_client():
    from core.spec import SpecError
    from services.convert import spec_to_proto

    with pytest.raises(SpecError) as err:  # the wire format carries expressions as strings only
        spec_to_proto(sweep_spec({"inner.lr": 0.1}))
    assert err.value.field == "sweep.space.inner.lr"


def test_a_trial_that_could_never_fit_is_refused(stub):
    code, details = code_of(lambda: create(stub, sweep_spec({"replicas": "choice(1, 8)"})))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith("replicas:"), details
