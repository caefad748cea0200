"""`esgd plot` and `esgd export` through the real CLI against a real `esgd serve` on loopback:
two tiny jobs (Parle and Entropy-SGD) drawn alone and compared, exported to TensorBoard and
read back against the server's own metrics.jsonl; a running job, a queued one, and bad input."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from services.api import jobs_pb2 as pb
from services.cli import main
from tests.service_harness import ROOT, module_server, wait_for
from tests.test_service import create, quick_spec, wait_state

pytestmark = pytest.mark.slow
DONE = {pb.SUCCEEDED, pb.FAILED, pb.CANCELLED}


server = module_server("hist", "--num-cpus", "2")



@pytest.fixture(scope="module")
def jobs(stub):
    """Two finished jobs side by side (1 CPU each): Parle records ρ, Entropy-SGD does not."""
    small = {"outer_steps": 6, "eval_every": 3}
    parle = create(stub, quick_spec(name="parle-small", train=small))
    esgd = create(stub, quick_spec(name="esgd-small", strategy="entropy-sgd", train=small))
    for job in (parle, esgd):
        assert wait_state(stub, job.name, DONE).state == pb.SUCCEEDED
    return parle, esgd


def esgd(server, *argv):
    """``esgd ARGV --server …`` in this process (services.cli.main, the console script's entry)."""
    return main([*argv, "--server", server.target])


def metrics(server, job) -> list[dict]:
    """The server's own metrics.jsonl of the job, read from its run directory."""
    path = server.data_dir / "runs" / job.id / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_plot_one_job_as_a_subprocess(server, jobs, tmp_path):
    png = tmp_path / "job.png"
    out = subprocess.run([sys.executable, "-m", "services.cli", "plot", jobs[0].id, "-o", str(png),
                          "--server", server.target], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    assert "1 job(s) against outer round" in out.stdout
    assert "Loss 2, Error 2, Coupling γ and ρ 2, Throughput 1, Round time 2, Replica spread 2" in out.stdout


def test_plot_compares_jobs_against_epochs(server, jobs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no -o: plot-ID1-ID2.png here
    assert esgd(server, "plot", jobs[0].id, f"jobs/{jobs[1].id}", "--x", "epochs") == 0
    out = capsys.readouterr().out
    png = tmp_path / f"plot-{jobs[0].id}-{jobs[1].id}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", out
    assert "2 job(s) against effective epochs" in out
    assert "Coupling γ and ρ 3" in out and "Loss 4" in out  # ρ only from the Parle job
    pdf = tmp_path / "cmp.pdf"
    assert esgd(server, "plot", jobs[0].id, jobs[1].id, "--x", "grad-evals", "-o", str(pdf)) == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_export_to_tensorboard_reads_back_the_servers_metrics(server, jobs, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    parle = jobs[0]
    assert esgd(server, "export", parle.id, "--tensorboard", str(tmp_path / "tb")) == 0
    run = tmp_path / "tb" / f"{parle.id}-parle-small"
    assert f"wrote {run}" in capsys.readouterr().out
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    records = metrics(server, parle)
    rounds = [r for r in records if r["kind"] == "round"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["round"] for r in rounds] == list(range(1, 7)) and [e["round"] for e in evals] == [3, 6]

    def read(tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    f32 = lambda v: float(np.float32(v))  # noqa: E731  (TensorBoard stores scalars as float32)
    assert read("train/loss") == [(r["round"], f32(r["loss"])) for r in rounds]
    assert read("schedule/rho") == [(r["round"], f32(r["rho"])) for r in rounds]
    assert read("replicas/spread") == [(r["round"], f32(r["spread"])) for r in rounds]
    assert read("test/error") == [(e["round"], f32(e["test_error"])) for e in evals]
    # by gradient evaluations: each eval sits at the engine's own grad_evals_total
    assert esgd(server, "export", parle.id, "--tensorboard", str(tmp_path / "tb-ge"), "--x", "grad-evals") == 0
    acc = EventAccumulator(str(tmp_path / "tb-ge" / run.name), size_guidance={"scalars": 0})
    acc.Reload()
    assert read("test/error") == [(e["grad_evals_total"], f32(e["test_error"])) for e in evals]
    # again into the same directory: refused, naming it
    assert esgd(server, "export", parle.id, "--tensorboard", str(tmp_path / "tb")) == 2
    assert f"--tensorboard: {run} already holds event files" in capsys.readouterr().err


def test_a_running_job_plots_and_a_queued_one_has_no_metrics_yet(server, stub, jobs, tmp_path, capsys):
    """A job holding both CPUs plots while it runs (its metrics.jsonl is still being written); the
    job queued behind it has no metrics yet, and says so."""
    blocker = create(stub, quick_spec(name="blocker", train={"outer_steps": 100_000, "eval_every": 100_000},
                                      resources={"cpus_per_replica": 1}))
    waiting = None
    try:
        wait_for(lambda: stub.GetJob(pb.GetJobRequest(name=blocker.name), timeout=10).progress.round >= 2,
                 300, "two rounds of the running job")
        waiting = create(stub, quick_spec(name="waiting"))
        assert stub.GetJob(pb.GetJobRequest(name=waiting.name), timeout=10).state == pb.QUEUED
        assert esgd(server, "plot", waiting.id, "-o", str(tmp_path / "q.png")) == 2
        assert f"job {waiting.id} has no metrics yet (state QUEUED" in capsys.readouterr().err
        assert esgd(server, "plot", blocker.id, "-o", str(tmp_path / "running.png")) == 0
        assert "1 job(s)" in capsys.readouterr().out
    finally:
        for job in (waiting, blocker):
            if job is not None:
                stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=30)
        for job in (waiting, blocker):
            if job is not None:
                wait_state(stub, job.name, DONE)


def test_errors_name_the_id_flag_or_server(server, jobs, tmp_path, capsys):
    assert esgd(server, "plot", "no-such-job", "-o", str(tmp_path / "x.png")) == 2
    assert "no-such-job" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        esgd(server, "plot", jobs[0].id, "--x", "seconds")
    assert exit_.value.code == 2 and "argument --x: invalid choice: 'seconds'" in capsys.readouterr().err
    assert esgd(server, "export", jobs[0].id, "--tensorboard", str(tmp_path / "tb"), "--x", "epochs") == 2
    assert "--x: TensorBoard steps are integers" in capsys.readouterr().err
    assert not (tmp_path / "tb").exists()  # refused before anything was written
    assert esgd(server, "plot", jobs[0].id, "-o", str(tmp_path / "x.txt")) == 2
    assert "-o: " in capsys.readouterr().err
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    assert main(["plot", jobs[0].id, "-o", str(tmp_path / "x.png"), "--server", dead]) == 1
    err = capsys.readouterr().err
    assert f"--server {dead}: cannot reach the esgd server" in err and "Traceback" not in err
