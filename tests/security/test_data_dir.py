"""One server per data directory, and the directory private to its user: a second server on
a directory in use exits at once, saying so, having changed nothing (the running job records
each round once); DATA_DIR is 0700 and the store, token, specs and checkpoints 0600, also
when an older version left them readable."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.security.util import TERMINAL, create, quick, wait_state
from tests.service_harness import ROOT, ServerProcess, wait_for

pytestmark = pytest.mark.slow


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_second_server_on_the_same_directory_exits_and_changes_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "token").write_text("left-by-an-old-version\n")
    os.chmod(data / "token", 0o644)
    srv = ServerProcess(data, "--num-cpus", "2")
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            job = create(stub, quick(train={"outer_steps": 40, "eval_every": 10}))
            wait_for(lambda: stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).progress.round >= 3, 180,
                     "round 3")
            store = data / "jobs.sqlite"
            holder = (data / "lock").read_text()
            second = subprocess.run(
                [sys.executable, "-m", "services.cli", "serve", "--port", "0", "--data-dir", str(data),
                 "--num-cpus", "2"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert second.returncode != 0
            assert "in use by another esgd serve" in second.stderr and str(srv.proc.pid) in second.stderr, \
                second.stderr
            assert "Traceback" not in second.stderr
            assert (data / "lock").read_text() == holder  # the holder's PID, untouched
            final = wait_state(stub, job.name, TERMINAL, timeout=300)
            assert final.state == pb.SUCCEEDED
            events = list(stub.WatchJob(pb.WatchJobRequest(name=job.name, after_seq=0), timeout=30))
            rounds = [e.progress.round for e in events if e.HasField("progress")]
            assert rounds == list(range(1, 41)), rounds  # each round stored once, none re-run
            ends = [e for e in events if e.HasField("state_change") and e.state_change.state in TERMINAL]
            assert len(ends) == 1 and not any("restarted" in e.state_change.reason for e in events
                                              if e.HasField("state_change"))
            run = data / "runs" / job.id
            lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            assert [x["round"] for x in lines if x["kind"] == "round"] == list(range(1, 41))
            # modes: the directory, the store, the token, the run's files
            assert mode(data) == 0o700
            for p in [store, data / "token", data / "lock", run / "spec.yaml", run / "metrics.jsonl",
                      *(run / "checkpoints").iterdir()]:
                assert mode(p) == 0o600, (p, oct(mode(p)))
            for d in (data / "runs", run, run / "checkpoints"):
                assert mode(d) & 0o077 == 0, (d, oct(mode(d)))
            for suffix in ("-wal", "-shm"):
                if (data / f"jobs.sqlite{suffix}").exists():
                    assert mode(data / f"jobs.sqlite{suffix}") == 0o600
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
    # once the first is gone, a server starts on the directory
    again = ServerProcess(data, "--num-cpus", "1")
    assert again.terminate() == 0
