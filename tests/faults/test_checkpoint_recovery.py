"""Durability under real crashes, end to end: a real server (and its job's round-loop process)
SIGKILLed mid-checkpoint, and a newest checkpoint corrupted while the server is down; the
restarted server resumes the job from the last good checkpoint, losing no round.

Every wait follows job events, files or store rows, never a bare sleep. Each test reports a row
(fault, count, lost, recovery seconds) through ``report_fault``.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from coordinator.checkpoint import list_checkpoints, step_of, verify
from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.faults.durability import LOCAL_RAY, big_spec, integrity, progress_rounds, temporaries
from tests.service_harness import ServerProcess, follow, report_fault, runner_pids, wait_for
from tests.test_service import create, quick_spec


def metrics_rounds(run_dir: Path) -> list[int]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]  # every line parses
    return [r["round"] for r in lines if r["kind"] == "round"]


def _restart_and_finish(data_dir: Path, name: str, killed_at: float, timeout: float = 300):
    """Start a server on ``data_dir`` again; the job's whole history, where it restarted, and the
    recovery times from ``killed_at``: server serving, job RUNNING again, first resumed round."""
    srv = ServerProcess(data_dir, "--num-cpus", "2", env=LOCAL_RAY)
    serving_s = time.time() - killed_at
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            events = follow(stub, name, timeout=timeout)
            final = stub.GetJob(pb.GetJobRequest(name=name), timeout=10)
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
    restart = max(i for i, e in enumerate(events) if e.HasField("state_change") and "restarted" in e.state_change.reason)
    running = next(e for e in events[restart:] if e.HasField("state_change") and e.state_change.state == pb.RUNNING)
    resumed = next(e for e in events[restart:] if e.HasField("progress"))
    recovery = {"recovery_s": round(resumed.time.ToNanoseconds() / 1e9 - killed_at, 2),
                "serving_again_s": round(serving_s, 2),
                "running_again_s": round(running.time.ToNanoseconds() / 1e9 - killed_at, 2)}
    return final, events, restart, recovery


@pytest.mark.slow
def test_sigkill_mid_checkpoint_write_resumes_from_the_previous_one_losing_no_round(tmp_path):
    total = 10
    spec = big_spec(train={"outer_steps": total, "eval_every": 5}, checkpoint={"every": 1, "keep_last": 2})
    srv, runner = ServerProcess(tmp_path, "--num-cpus", "2", env=LOCAL_RAY), None
    try:
        with srv.channel() as ch:
            job = create(jobs_pb2_grpc.JobServiceStub(ch), spec)
        ckpts = tmp_path / "runs" / job.id / "checkpoints"
        # the job's round loop (a Ray actor process) writes the checkpoints: it dies first, then the server
        runner = wait_for(lambda: (runner_pids(srv.proc.pid) or [None])[0], 600, "the job's runner process")

        def writing_round_3_or_later():  # the temporary file of a checkpoint being written
            return next((p for p in temporaries(ckpts) if ".pt.tmp-" in p.name and int(p.name[6:14]) >= 3), None)

        tmp = wait_for(writing_round_3_or_later, 600, "a checkpoint of round >= 3 being written", interval=0.002)
    finally:
        if runner:
            os.kill(runner, signal.SIGKILL)
        srv.kill()
    killed_at = time.time()
    assert tmp.exists(), "the kill should land while the checkpoint is being written"
    k = int(tmp.name[6:14])
    assert not (ckpts / f"ckpt-{k:08d}.pt.sha256").exists()
    final, events, restart, recovery = _restart_and_finish(tmp_path, job.name, killed_at)
    assert final.state == pb.SUCCEEDED and final.restarts == 1 and final.summary.rounds == total, final
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # the whole history, no gap
    rounds = progress_rounds(events)
    # Resumed from checkpoint k - 1, so round k ran again — or from k, when the job's round loop
    # (its own process) finished the write just as the server died; no round is lost either way.
    resumed_from = k - 1 if rounds.count(k) == 2 else k
    assert rounds == list(range(1, k + 1)) + list(range(resumed_from + 1, total + 1)), rounds
    assert metrics_rounds(tmp_path / "runs" / job.id) == rounds
    assert not temporaries(ckpts), "the stale temporary file is removed by the next write"
    assert [step_of(p) for p in list_checkpoints(ckpts)] == [total - 1, total]
    assert all(verify(p) for p in list_checkpoints(ckpts)) and integrity(tmp_path) == ["ok"]
    report_fault(fault="SIGKILL of the server and of the job's round-loop process while a 22 MB checkpoint is "
                       "being written", count=1,
                 lost=f"nothing (resumed from checkpoint {resumed_from}, the kill came while writing {k})",
                 **recovery, recovery="kill to the first resumed round",
                 test="tests/faults/test_checkpoint_recovery.py::test_sigkill_mid_checkpoint_write_resumes_from_the_previous_one_losing_no_round")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupted_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path, damage):
    total = 24
    spec = quick_spec(train={"outer_steps": total, "eval_every": 8}, checkpoint={"every": 3, "keep_last": 3})
    srv = ServerProcess(tmp_path, "--num-cpus", "2", env=LOCAL_RAY)
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            job = create(stub, spec)
            wait_for(lambda: stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).checkpoint_round >= 9,
                     300, "the checkpoint of round 9")
    finally:
        srv.kill()
    killed_at = time.time()
    ckpts = tmp_path / "runs" / job.id / "checkpoints"
    good = [p for p in list_checkpoints(ckpts) if verify(p)]
    newest, previous = good[-1], step_of(good[-2])
    data = newest.read_bytes()
    if damage == "flip":
        middle = len(data) // 2
        newest.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    else:
        newest.write_bytes(data[: len(data) // 2])
    assert not verify(newest)
    final, events, restart, recovery = _restart_and_finish(tmp_path, job.name, killed_at)
    assert final.state == pb.SUCCEEDED and final.summary.rounds == total, final
    after = progress_rounds(events[restart:])
    assert after == list(range(previous + 1, total + 1))  # resumed from the checkpoint before the damaged one
    assert set(progress_rounds(events)) == set(range(1, total + 1))
    assert all(verify(p) for p in list_checkpoints(ckpts)) and step_of(list_checkpoints(ckpts)[-1]) == total
    report_fault(fault=f"newest checkpoint corrupted ({damage}) while the server is down", count=1,
                 lost=f"nothing (resumed from round {previous}, the damaged round-{step_of(newest)} one skipped)",
                 **recovery, recovery="kill to the first resumed round",
                 test=f"tests/faults/test_checkpoint_recovery.py::test_a_corrupted_newest_checkpoint_is_skipped_for_the_previous_one[{damage}]")
