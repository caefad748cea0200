"""A job's logs (issue 17 item 1) through a real server: runner and replica lines tagged with
replica and round, ``esgd logs --replica/--tail/--follow``, the per-job cap, and one server-log
line per change of a job's state. The capture itself (worker.logcapture) and the log files'
rotation and reader (coordinator.joblogs) are checked in-process first."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from coordinator.joblogs import LOG_FILE, OLD_FILE, JobLog, LogCursor
from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.service_harness import ROOT, ServerProcess
from tests.test_service import create, quick_spec, wait_state
from worker.logcapture import Capture, LineBuffer

CAP = 16 << 10
TERMINAL = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)


def test_capture_takes_stdout_stderr_and_logging_bounded():
    buf = LineBuffer(max_lines=4)
    with Capture(buf):
        print("to stdout")
        print("to stderr", file=sys.stderr)
        logging.getLogger("esgd.replica").info("an info line")
        logging.getLogger("somelib").info("below the library level: not kept")
        for i in range(5):
            print(f"chatty {i}")
    lines = buf.drain()
    assert lines[:3] == [("stdout", "", "to stdout"), ("stderr", "", "to stderr"),
                         ("log", "INFO", "esgd.replica: an info line")]
    assert lines[3] == ("stdout", "", "chatty 0") and "4 lines dropped" in lines[4][2]
    assert buf.drain() == []


def test_log_files_rotate_under_the_cap_and_the_reader_counts_the_gap(tmp_path):
    log = JobLog(tmp_path, 4096)
    cursor = LogCursor(tmp_path)
    seen = []
    for i in range(100):
        log.write(i % 3 - 1, i, "stdout", "", f"line {i} " + "x" * 80)
        if i % 5 == 0:
            seen += cursor.read()
    seen += cursor.read()
    assert [r["n"] for r in seen] == list(range(100)) and cursor.dropped == 0  # a follower misses nothing
    total = sum((tmp_path / f).stat().st_size for f in (LOG_FILE, OLD_FILE))
    assert total <= 4096
    late = LogCursor(tmp_path)
    kept = late.read()
    assert kept[-1]["n"] == 99 and late.dropped == kept[0]["n"] > 0
    assert JobLog(tmp_path, 4096).n == 100  # a resumed job goes on counting


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("logs"), "--num-cpus", "2", "--max-log-bytes", str(CAP))
    yield srv
    assert srv.terminate() == 0, srv.read_log()[-3000:]


@pytest.fixture(scope="module")
def stub(server):
    channel = server.channel()
    yield jobs_pb2_grpc.JobServiceStub(channel)
    channel.close()


def esgd(server, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "services.cli", *args, "--server", server.target],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def finished(server, stub):
    """A job followed with ``esgd logs --follow`` from its start: the command ends when it does."""
    job = create(stub, quick_spec(name="logs"))
    out = esgd(server, "logs", job.id, "--follow", "--json")
    assert out.returncode == 0, out.stderr
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.state == pb.SUCCEEDED  # --follow returned because the job ended
    return job, [json.loads(line) for line in out.stdout.splitlines()]


def test_logs_hold_runner_and_replica_lines_tagged_with_replica_and_round(finished):
    job, lines = finished
    assert [r["n"] for r in lines] == list(range(len(lines)))  # every line, in order, once
    replicas = {r["replica"] for r in lines if r["source"] == "replica"}
    assert replicas == {0, 1}
    first = [r for r in lines if r["source"] == "replica"]
    assert all(r["round"] == 1 and "esgd.replica: replica" in r["text"] for r in first)
    runner = [r for r in lines if r["source"] == "runner"]
    assert all(r["replica"] == -1 for r in runner)
    rounds = [r for r in runner if r["text"].startswith("esgd.runner: round ")]
    assert [r["round"] for r in rounds] == list(range(1, 13))
    assert any("evaluation at round 12" in r["text"] for r in runner)
    assert "finished at round 12" in runner[-1]["text"] and runner[-1]["round"] == 12


def test_replica_and_tail_filter(server, finished):
    job, lines = finished
    one = esgd(server, "logs", job.id, "--replica", "1")
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() and all("[replica 1 round" in line for line in one.stdout.splitlines())
    runner = esgd(server, "logs", job.id, "--replica", "runner", "--tail", "3")
    shown = runner.stdout.splitlines()
    assert runner.returncode == 0 and len(shown) == 3 and all("[runner round" in line for line in shown)
    assert "finished at round 12" in shown[-1]
    missing = esgd(server, "logs", "nosuchjob")
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr


def test_the_server_logs_each_change_of_state(server, finished):
    job, _ = finished
    log = server.read_log()
    for state, reason in (("QUEUED", "submitted"), ("RUNNING", "started"), ("SUCCEEDED", "finished")):
        assert f"job {job.id} {state} {reason}" in log


def test_the_per_job_cap_holds_and_the_reply_says_lines_were_dropped(server, stub):
    job = create(stub, quick_spec(name="chatty", replicas=1, inner={"steps": 1},
                                  train={"outer_steps": 150, "eval_every": 1000},
                                  checkpoint={"every": 1000}))
    wait_state(stub, job.name, TERMINAL)
    run = server.data_dir / "runs" / job.id
    sizes = [(run / f).stat().st_size for f in (LOG_FILE, OLD_FILE) if (run / f).exists()]
    assert (run / OLD_FILE).exists() and sum(sizes) <= CAP
    chunks = list(stub.StreamJobLogs(pb.StreamJobLogsRequest(name=job.name), timeout=30))
    lines = [line for c in chunks for line in c.lines]
    assert chunks[-1].dropped > 0 and lines[0].n == chunks[-1].dropped  # the oldest went
    assert "finished at round 150" in lines[-1].text
    out = esgd(server, "logs", job.id, "--tail", "1")
    assert out.returncode == 0 and "older log lines were dropped" in out.stderr
