"""Durability under a disk that refuses writes, end to end: a real server whose checkpoint
writes (on the server and its job's round-loop process) or job-store writes are refused.

Write errors are real: RLIMIT_FSIZE lowered on the running processes with ``prlimit``
(CPython ignores SIGXFSZ, so an over-limit write fails with EFBIG — what a full disk does with
ENOSPC). Every wait follows job events, files or store rows, never a bare sleep. Each test
reports a row (fault, count, lost, recovery seconds) through ``report_fault``. The same
refusals at unit level are tests/faults/test_refused_writes.py.
"""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import grpc
import pytest

from coordinator.checkpoint import list_checkpoints, step_of, verify
from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.faults.durability import LOCAL_RAY, MiB, big_spec, integrity, progress_rounds, temporaries
from tests.service_harness import ServerProcess, follow, report_fault, runner_pids, wait_for
from tests.test_service import create, quick_spec


def limit_file_size(pid: int, limit: int) -> None:
    """Lower RLIMIT_FSIZE of one running process only (the others keep theirs)."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]))


def unlimit_file_size(pid: int) -> None:
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


def largest_file(root: Path) -> int:
    return max((p.stat().st_size for p in root.rglob("*") if p.is_file() and "checkpoints" not in p.parts), default=0)


@pytest.mark.slow
def test_checkpoint_write_errors_are_reported_and_then_fail_the_job_with_storage(tmp_path):
    limit = 12 * MiB  # above every store and log file here, below one checkpoint (~22 MB)
    spec = big_spec(train={"outer_steps": 400, "eval_every": 1000}, checkpoint={"every": 1, "keep_last": 2})
    srv = ServerProcess(tmp_path, "--num-cpus", "2", env=LOCAL_RAY)
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            job = create(stub, spec)
            ckpts = tmp_path / "runs" / job.id / "checkpoints"
            wait_for(lambda: len([p for p in list_checkpoints(ckpts) if verify(p)]) >= 2, 600, "two checkpoints")
            assert largest_file(tmp_path) < limit // 2
            runners = runner_pids(srv.proc.pid)
            assert len(runners) == 1, runners  # the job's round loop, which writes its checkpoints
            for pid in (srv.proc.pid, *runners):
                limit_file_size(pid, limit)
            injected_at = time.time()
            events = follow(stub, job.name, after_seq=0)
            final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
            detected_s = final.end_time.ToNanoseconds() / 1e9 - injected_at
            assert final.state == pb.FAILED and final.error.code == "STORAGE", final
            msg = final.error.message
            assert "EFBIG" in msg and str(ckpts) in msg and "3 consecutive checkpoint writes failed" in msg, msg
            warnings = [e.error for e in events if e.HasField("error")][:-1]
            assert len(warnings) == 2 and all(w.code == "STORAGE" and "EFBIG" in w.message and "retries" in w.message
                                              for w in warnings), warnings
            between = [e.WhichOneof("kind") for e in events[next(i for i, e in enumerate(events) if e.HasField("error")):]]
            assert "progress" in between  # training went on between the failed writes
            rounds = progress_rounds(events)
            assert rounds == list(range(1, len(rounds) + 1))
            assert final.checkpoint_round == max(step_of(p) for p in list_checkpoints(ckpts)) < rounds[-1]
            assert not temporaries(ckpts) and len(list_checkpoints(ckpts)) == 2  # nothing partial, nothing pruned
            assert all(verify(p) for p in list_checkpoints(ckpts)) and integrity(tmp_path) == ["ok"]
            small = create(stub, quick_spec(train={"outer_steps": 6, "eval_every": 3}))  # still under the limit
            follow(stub, small.name)
            assert stub.GetJob(pb.GetJobRequest(name=small.name), timeout=10).state == pb.SUCCEEDED
            unlimit_file_size(srv.proc.pid)
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
    report_fault(fault="checkpoint writes refused (EFBIG: file-size limit on the server and the job's round loop, "
                       "as a full disk)", count=3,
                 lost="nothing (older checkpoints kept; job FAILED with STORAGE after 3 refused writes)",
                 recovery_s=round(detected_s, 2), recovery="time from the fault to the job FAILED (STORAGE)",
                 test="tests/faults/test_disk_full.py::test_checkpoint_write_errors_are_reported_and_then_fail_the_job_with_storage")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_a_full_job_store_fails_calls_not_the_server_or_the_file(tmp_path):
    total = 60
    srv = ServerProcess(tmp_path, "--num-cpus", "2", env=LOCAL_RAY)
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            job = create(stub, quick_spec(train={"outer_steps": total, "eval_every": 20}, checkpoint={"every": 5}))
            follow(stub, job.name, until=lambda e: e.HasField("progress") and e.progress.round >= 2)
            replicas = [r.pid for r in stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).replicas]
            limit_file_size(srv.proc.pid, 1)  # no file of the server may grow: the store cannot commit
            with pytest.raises(grpc.RpcError) as err:
                create(stub, quick_spec())
            status = err.value.code().name
            assert status == "UNAVAILABLE", status
            assert "database or disk is full" in err.value.details() or "disk I/O error" in err.value.details()
            # the job's next store write fails too: its thread stops and its replicas go
            wait_for(lambda: all(_gone(p) for p in replicas), 120, "the job's replicas to stop")
            assert stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).state == pb.RUNNING  # reads still served
            assert stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs
            unlimit_file_size(srv.proc.pid)
            lifted_at = time.time()
            # writable again, same process: the stopped job is requeued from its checkpoint and finishes
            events = follow(stub, job.name, timeout=300)
            final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
            other = create(stub, quick_spec(train={"outer_steps": 6, "eval_every": 3}))
            follow(stub, other.name)
            assert stub.GetJob(pb.GetJobRequest(name=other.name), timeout=10).state == pb.SUCCEEDED
            assert integrity(tmp_path) == ["ok"]
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
    assert final.state == pb.SUCCEEDED and final.summary.rounds == total, final
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert set(progress_rounds(events)) == set(range(1, total + 1)) and integrity(tmp_path) == ["ok"]
    requeued = max(i for i, e in enumerate(events)
                   if e.HasField("state_change") and "job-store write error" in e.state_change.reason)
    resumed = next(e for e in events[requeued:] if e.HasField("progress"))
    report_fault(fault="job store writes refused (file-size limit 1 byte on the server: SQLITE_FULL / I/O error)",
                 count=1, lost="nothing (failed calls got UNAVAILABLE; the stopped job resumed from its checkpoint "
                               "in the same server once the store took writes)",
                 recovery_s=round(resumed.time.ToNanoseconds() / 1e9 - lifted_at, 2),
                 recovery="store writable again to the job's first resumed round", create_job_status_while_full=status,
                 test="tests/faults/test_disk_full.py::test_a_full_job_store_fails_calls_not_the_server_or_the_file")
