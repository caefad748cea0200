"""Warm start (coordinator.warm): a job's processes and data exist before it is submitted.

The end-to-end test runs a real `esgd serve` and checks the reuse itself, never a duration:
the second job's runner and replicas run in worker processes that were already idle, with
torch loaded, before it was submitted, and its dataset is the object the first job loaded.
The unit tests pin the cache key, the cache and the top-up rules.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from coordinator import warm
from core.spec import JobSpec
from coordinator.warm import DatasetCache, WarmWorkers, dataset_key


def spec_of(**over) -> JobSpec:
    data = {"model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "entropy-sgd", "replicas": 1,
            "inner": {"steps": 2}, "train": {"outer_steps": 3, "batch_size": 32}}
    for k, v in over.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    return JobSpec.parse(data).resolved()


# ----- the dataset cache key ------------------------------------------------------------------
def test_the_key_names_what_the_loader_reads():
    assert dataset_key(spec_of()) == dataset_key(spec_of(train={"outer_steps": 9, "batch_size": 64}))
    assert dataset_key(spec_of()) != dataset_key(spec_of(train={"seed": 1}))  # synthetic data is seeded
    assert dataset_key(spec_of()) != dataset_key(spec_of(dataset={"name": "synthetic", "train_subset": 100}))


def test_the_key_changes_when_a_file_is_rewritten_and_is_none_for_a_relative_path(tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    (d / "train-images-idx3-ubyte").write_bytes(b"x" * 10)
    spec = spec_of(dataset={"name": "idx", "path": str(d)})
    first = dataset_key(spec)
    assert first is not None and dataset_key(spec) == first
    time.sleep(0.01)
    (d / "train-images-idx3-ubyte").write_bytes(b"y" * 11)
    assert dataset_key(spec) != first
    assert dataset_key(spec_of(dataset={"name": "idx", "path": "relative/dir"})) is None
    assert dataset_key(spec_of(dataset={"name": "idx", "path": str(tmp_path / "missing")})) is None


def test_the_cache_keeps_the_newest_entries_within_its_budget():
    cache = DatasetCache(budget_bytes=100)
    a, b, c = object(), object(), object()
    assert cache.get("a") is None
    cache.put("a", a)
    cache.sized("a", a, 60)
    cache.put("b", b)
    assert cache.get("a") is a  # a is now the most recently used
    cache.sized("b", b, 60)  # 120 > 100: the least recently used (b) goes
    assert cache.get("b") is None and cache.get("a") is a
    cache.put("c", c)
    cache.discard("c", object())  # another job's reference: kept
    assert cache.get("c") is c
    cache.discard("c", c)
    assert cache.get("c") is None


# ----- the top-up rules -------------------------------------------------------------------------
class FakeNode:
    """Idle worker PIDs and their CPU ticks, as /proc would show them."""

    def __init__(self):
        self.ticks: dict[int, int] = {}
        self.next_pid = 100

    def start(self, count):
        for _ in range(count):
            self.ticks[self.next_pid] = 0
            self.next_pid += 1


def fake_warm(monkeypatch, target, hold=lambda: False):
    node = FakeNode()
    w = WarmWorkers(target, hold=hold)
    monkeypatch.setattr(w, "idle", lambda: sorted(node.ticks))
    monkeypatch.setattr(warm, "cpu_ticks", lambda pid: node.ticks.get(pid))
    monkeypatch.setattr(w, "prestart", lambda count=1: node.start(count))
    return w, node


def test_workers_are_started_one_at_a_time_and_never_past_the_target(monkeypatch):
    w, node = fake_warm(monkeypatch, target=2)
    assert w.step() == w.POLL and len(node.ticks) == 1  # one asked for
    node.ticks[100] += 30  # importing torch
    assert w.step() == w.POLL and len(node.ticks) == 1  # still warming: no second one yet
    assert w.step() == w.POLL and len(node.ticks) == 2  # settled: the next one
    w.step()
    assert w.step() == w.interval and len(node.ticks) == 2  # at the target: nothing more
    del node.ticks[101]  # an actor took one
    w.step()
    assert len(node.ticks) == 2


def test_nothing_is_started_while_a_job_is_starting(monkeypatch):
    starting = [True]
    w, node = fake_warm(monkeypatch, target=3, hold=lambda: starting[0])
    assert w.step() == w.POLL and not node.ticks
    starting[0] = False
    w.step()
    assert len(node.ticks) == 1


# ----- end to end ---------------------------------------------------------------------------------
def idle_workers_below(pid: int) -> dict[int, bool]:
    """Idle Ray workers under the server process: PID -> whether torch is loaded in it."""
    from tests.service_harness import descendants

    out = {}
    for p in descendants(pid):
        try:
            if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ray::IDLE"):
                out[p] = "libtorch" in Path(f"/proc/{p}/maps").read_text()
        except OSError:
            pass
    return out


def startup_of(srv, job_id: str) -> dict:
    for line in srv.read_log().splitlines():
        if f"job {job_id} start-up " in line:
            return json.loads(line.split(" start-up ", 1)[1])
    raise AssertionError(f"no start-up line for {job_id}: {srv.read_log()[-3000:]}")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_the_next_job_runs_in_processes_that_were_idle_and_warm_before_it_and_reuses_the_dataset(tmp_path):
    from services.api import jobs_pb2 as pb
    from services.api import jobs_pb2_grpc
    from tests.service_harness import ServerProcess, wait_for
    from tests.test_service import create, quick_spec, wait_state

    spec = quick_spec(replicas=2, train={"outer_steps": 4, "eval_every": 2})
    srv = ServerProcess(tmp_path, "--num-cpus", "2", env={"RAY_ADDRESS": "local", "ESGD_WARM_WORKERS": "4"})
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            first = create(stub, spec)
            assert wait_state(stub, first.name, {pb.SUCCEEDED, pb.FAILED}).state == pb.SUCCEEDED
            # the runner and two replicas of the next job: three idle workers, torch loaded
            ready = wait_for(lambda: (lambda idle: idle if sum(idle.values()) >= 3 else None)(
                idle_workers_below(srv.proc.pid)), 300, "three idle worker processes with torch loaded")
            warm_before = {p for p, torch_loaded in ready.items() if torch_loaded}
            second = create(stub, spec)
            done = wait_state(stub, second.name, {pb.SUCCEEDED, pb.FAILED})
            assert done.state == pb.SUCCEEDED, done.error
        steps = startup_of(srv, second.id)
        replica_pids = {r.pid for r in done.replicas}
        assert len(replica_pids) == 2
        processes = {steps["runner_pid"], *replica_pids}
        assert processes <= warm_before, (processes, ready)  # none started for this job
        assert steps["runner_warm"] and steps["replicas_warm"] == 2
        assert steps["dataset_reused"] and not steps["dataset_fallback"]  # the first job's object, still there
        assert not startup_of(srv, first.id)["dataset_reused"]
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
