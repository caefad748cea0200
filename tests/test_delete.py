"""DeleteJob and retention (issue 17 item 2) through a real server with named tokens: an active
job is FAILED_PRECONDITION naming its state, a finished one loses its rows and files, another
principal's job is NOT_FOUND, and ``--retain-jobs`` removes the oldest finished jobs on restart."""
from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from services.api import jobs_pb2 as pb
from tests.security.util import TERMINAL, TOKENS, As, create, quick, status_of, wait_state, write_tokens
from tests.service_harness import ROOT, ServerProcess, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("delete")
    return base / "data", write_tokens(base / "tokens")


@pytest.fixture(scope="module")
def server(data):
    srv = ServerProcess(data[0], "--num-cpus", "2", "--token-file", str(data[1]))
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def channel(server):
    with server.channel() as ch:
        yield ch


def run_dir(server, job) -> object:
    return server.data_dir / "runs" / job.id


def test_an_active_job_must_be_cancelled_first(server, channel):
    alice = As(channel, "alice")
    long = quick(train={"outer_steps": 100000, "eval_every": 100000}, resources={"cpus_per_replica": 1.0})
    running = create(alice, long)
    wait_for(lambda: alice.GetJob(pb.GetJobRequest(name=running.name)).progress.round >= 1, 120, "a first round")
    queued = create(alice, long)  # the first holds both CPUs
    for job, state in ((running, "RUNNING"), (queued, "QUEUED")):
        code, details = status_of(lambda: alice.DeleteJob(pb.DeleteJobRequest(name=job.name)))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and state in details and "cancel" in details, details
    for job in (queued, running):
        alice.CancelJob(pb.CancelJobRequest(name=job.name))
    wait_state(alice, running.name, TERMINAL)
    assert run_dir(server, running).is_dir()
    deleted = wait_for(lambda: _try_delete(alice, running), 30, "the cancelled job's delete")
    assert list(deleted.deleted) == [running.name]
    assert status_of(lambda: alice.GetJob(pb.GetJobRequest(name=running.name)))[0] == grpc.StatusCode.NOT_FOUND
    assert not run_dir(server, running).exists()
    alice.DeleteJob(pb.DeleteJobRequest(name=queued.name))  # cancelled before it started: no files at all


def _try_delete(stub, job):
    """DeleteJob, retried while the runner of a job that has just ended is still being stopped."""
    try:
        return stub.DeleteJob(pb.DeleteJobRequest(name=job.name))
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "still stopping" in (exc.details() or ""):
            return None
        raise


def test_delete_of_a_finished_job_removes_rows_and_files_and_only_for_its_owner(server, channel):
    alice, bob = As(channel, "alice"), As(channel, "bob")
    job = create(alice, quick())
    wait_state(alice, job.name, TERMINAL)
    assert (run_dir(server, job) / "checkpoints").is_dir() and (run_dir(server, job) / "logs.jsonl").is_file()
    code, details = status_of(lambda: bob.DeleteJob(pb.DeleteJobRequest(name=job.name)))
    assert code == grpc.StatusCode.NOT_FOUND and run_dir(server, job).is_dir()
    out = wait_for(lambda: _cli_delete(server, job), 30, "esgd delete")
    assert out.returncode == 0 and f"deleted {job.name}" in out.stdout, out.stderr
    assert status_of(lambda: alice.GetJob(pb.GetJobRequest(name=job.name)))[0] == grpc.StatusCode.NOT_FOUND
    code, _ = status_of(lambda: alice.WatchJob(pb.WatchJobRequest(name=job.name, after_seq=0)))
    assert code == grpc.StatusCode.NOT_FOUND  # its events went too
    assert not run_dir(server, job).exists()
    again = _cli_delete(server, job)
    assert again.returncode == 2 and "NOT_FOUND" in again.stderr


def _exists(stub, job) -> bool:
    try:
        stub.GetJob(pb.GetJobRequest(name=job.name))
        return True
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False


def _cli_delete(server, job):
    out = subprocess.run([sys.executable, "-m", "services.cli", "delete", job.id, "--server", server.target,
                          "--token", TOKENS["alice"][0]], capture_output=True, text=True, cwd=ROOT, timeout=60)
    return None if "still stopping" in out.stderr else out


def test_retention_removes_the_oldest_finished_jobs_on_restart(server, channel, data):
    alice = As(channel, "alice")
    jobs = []
    for _ in range(3):  # one after the other: their end times are in this order
        jobs.append(create(alice, quick()))
        wait_state(alice, jobs[-1].name, TERMINAL)
    assert all(run_dir(server, j).is_dir() for j in jobs)
    assert server.terminate() == 0
    again = ServerProcess(data[0], "--num-cpus", "2", "--token-file", str(data[1]), "--retain-jobs", "1")
    try:
        with again.channel() as ch:
            alice = As(ch, "alice")
            wait_for(lambda: not any(_exists(alice, j) for j in jobs[:2]), 60, "retention")
            assert alice.GetJob(pb.GetJobRequest(name=jobs[2].name)).state in TERMINAL
            assert not any(run_dir(again, j).exists() for j in jobs[:2]) and run_dir(again, jobs[2]).is_dir()
        assert "retention: deleted 2 finished jobs" in again.read_log()
    finally:
        assert again.terminate() == 0, again.read_log()[-3000:]
