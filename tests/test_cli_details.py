"""The CLI details of issue 17 item 10, each through the real `esgd` command (a real server
where one is needed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.security.util import quick
from tests.service_harness import ROOT, ServerProcess

ESGD = [sys.executable, "-m", "services.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
NOWHERE = "127.0.0.1:1"  # nothing listens there


def esgd(*args, timeout=120, **kw):
    return subprocess.run(ESGD + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=ENV, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("cli-details"), "--num-cpus", "2")
    yield srv
    assert srv.terminate() == 0, srv.read_log()[-3000:]


@pytest.fixture(scope="module")
def long_job(server, tmp_path_factory):
    """A job that runs until cancelled, with a checkpoint every round; cancelled at the end."""
    spec = tmp_path_factory.mktemp("job") / "long.json"
    spec.write_text(json.dumps(quick(train={"outer_steps": 100000, "eval_every": 100000}, checkpoint={"every": 1})))
    proc = subprocess.Popen(ESGD + ["submit", str(spec), "--watch", "--no-progress", "--server", server.target],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    name = proc.stdout.readline().strip()
    with server.channel() as ch:
        stub = jobs_pb2_grpc.JobServiceStub(ch)
        deadline = time.monotonic() + 120
        while stub.GetJob(pb.GetJobRequest(name=name), timeout=10).checkpoint_round < 1:
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.2)
        yield proc, name
        stub.CancelJob(pb.CancelJobRequest(name=name), timeout=10)


def _interrupt(proc) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    return err


def test_ctrl_c_while_watching_says_the_job_runs_on_and_how_to_watch_or_cancel(server, long_job):
    proc, name = long_job
    jid = name.removeprefix("jobs/")
    err = _interrupt(proc)  # esgd submit --watch
    assert "keeps running" in err and "Traceback" not in err, err
    assert f"esgd watch {jid} --server {server.target}" in err and f"esgd cancel {jid} --server {server.target}" in err
    proc = subprocess.Popen(ESGD + ["watch", jid, "--no-progress", "--server", server.target],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    time.sleep(3)
    err = _interrupt(proc)  # esgd watch
    assert "keeps running" in err and f"esgd cancel {jid} --server {server.target}" in err, err


def test_download_errors_name_the_file_asked_for(server, long_job, tmp_path):
    dest = tmp_path / "no-such-dir" / "model.pt"
    out = esgd("download", long_job[1], "-o", dest, "--server", server.target)
    assert out.returncode == 2 and str(dest) in out.stderr and ".part" not in out.stderr, out.stderr


def test_a_broken_pipe_is_silent(server, long_job):
    cmd = " ".join(ESGD) + f" list --server {server.target} | true; exit ${{PIPESTATUS[0]}}"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60, cwd=ROOT, env=ENV)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_watch_fails_fast_when_it_never_connected():
    t0 = time.monotonic()
    out = esgd("watch", "abc", "--server", NOWHERE)
    assert out.returncode == 1 and f"{NOWHERE} (--server)" in out.stderr, out.stderr
    assert time.monotonic() - t0 < 20 and "reconnecting" not in out.stderr


def test_plot_and_flatness_errors_name_the_address_or_path(tmp_path):
    for cmd in (["plot", "abc", "-o", tmp_path / "p.png"], ["flatness", "abc"]):
        out = esgd(*cmd, "--server", NOWHERE)
        assert out.returncode == 1 and f"--server {NOWHERE}" in out.stderr, (cmd, out.stderr)
    missing = tmp_path / "runs" / "nope"
    out = esgd("flatness", missing)
    assert out.returncode == 2 and str(missing) in out.stderr, out.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    out = esgd("flatness", junk)
    assert out.returncode == 2 and f"{junk}: not a checkpoint" in out.stderr, out.stderr


def test_a_spec_without_a_budget_is_an_error(tmp_path):
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"model": "mlp", "dataset": {"name": "synthetic"}}))
    for cmd in (["submit", spec, "--server", NOWHERE], ["run", spec, "--local"]):
        out = esgd(*cmd)
        assert out.returncode == 2 and "train.epochs: a budget is required" in out.stderr, out.stderr
        assert "train.outer_steps" in out.stderr


def test_a_failed_esgd_run_does_not_block_the_corrected_rerun(tmp_path):
    spec = {"name": "fix", "model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "sgd",
            "inner": {"steps": 1}, "train": {"outer_steps": 2, "batch_size": 32}}
    job, run_dir = tmp_path / "job.json", tmp_path / "run"
    job.write_text(json.dumps({**spec, "init_from": {"path": str(tmp_path / "missing.pt")}}))
    out = esgd("run", job, "--run-dir", run_dir, "--local", "--no-progress")
    assert out.returncode == 2 and "init_from.path" in out.stderr, out.stderr
    job.write_text(json.dumps(spec))
    out = esgd("run", job, "--run-dir", run_dir, "--local", "--no-progress")
    assert out.returncode == 0 and "succeeded" in out.stdout, out.stderr
    out = esgd("run", job, "--run-dir", run_dir, "--local", "--no-progress")  # a good run still is not overwritten
    assert out.returncode == 2 and "already holds a run" in out.stderr, out.stderr
