"""init_from and esgd retry (issue 17 item 5), through the real `esgd` command and a real
`esgd serve` (tokens, a data root), plus `esgd run` from a checkpoint file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from services.api import jobs_pb2 as pb
from tests.security.util import TOKENS, As, principals_server, quick, wait_state
from tests.service_harness import ROOT

ESGD = [sys.executable, "-m", "services.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from principals_server(tmp_path_factory, "init-from")


@pytest.fixture(scope="module")
def channel(server):
    with server.channel() as ch:
        yield ch


def esgd(server, who, *args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ESGD_TOKEN": TOKENS[who][0], "ESGD_SERVER": server.target}
    return subprocess.run(ESGD + list(args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def submit(server, who, tmp_path, spec, *flags):
    path = tmp_path / f"job-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    return esgd(server, who, "submit", str(path), *flags)


@pytest.fixture(scope="module")
def source(server, channel, tmp_path_factory):
    """alice's finished job with checkpoints at rounds 2 and 4."""
    out = submit(server, "alice", tmp_path_factory.mktemp("src"), quick(train={"outer_steps": 4, "eval_every": 2}),
                 "--watch", "--no-progress")
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()[0]


def test_start_from_own_job_pins_the_round_and_runs(server, channel, source, tmp_path):
    out = submit(server, "alice", tmp_path, quick(init_from={"job": source}), "--watch", "--no-progress")
    assert out.returncode == 0, out.stderr
    job = As(channel, "alice").GetJob(pb.GetJobRequest(name=out.stdout.splitlines()[0]))
    assert job.state == pb.SUCCEEDED
    assert (job.spec.init_from.job, job.spec.init_from.round) == (source.removeprefix("jobs/"), 4)
    out = submit(server, "alice", tmp_path, quick(init_from={"job": source, "round": 3}))
    assert out.returncode == 2 and "init_from.round" in out.stderr and "round 3" in out.stderr, out.stderr


def test_another_principals_job_is_not_found_and_the_model_must_match(server, source, tmp_path):
    out = submit(server, "bob", tmp_path, quick(init_from={"job": source}))
    assert out.returncode == 2 and "NOT_FOUND" in out.stderr and "init_from.job" in out.stderr, out.stderr
    out = submit(server, "alice", tmp_path, quick(model="mnistfc", init_from={"job": source}))
    assert out.returncode == 2 and "INVALID_ARGUMENT: init_from.job" in out.stderr and "model" in out.stderr


def test_a_path_is_confined_to_the_data_roots_and_checked_for_shape(server, channel, tmp_path):
    outside = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(2)}, outside)
    refused = [submit(server, "alice", tmp_path, quick(init_from={"path": str(p)})).stderr
               for p in (outside, tmp_path / "missing.pt")]
    assert all("init_from.path: refused" in r for r in refused) and refused[0] == refused[1], refused
    (server.root / "other.pt").write_bytes(outside.read_bytes())  # inside the root, a different model
    out = submit(server, "alice", tmp_path, quick(init_from={"path": "other.pt"}), "--watch", "--no-progress")
    assert out.returncode == 1 and "SPEC" in out.stderr and "init_from" in out.stderr, out.stderr
    assert "the architecture and input shape must match" in out.stderr


def test_retry_a_cancelled_job_from_its_checkpoint_but_not_a_succeeded_one(server, channel, source, tmp_path):
    alice = As(channel, "alice")
    out = submit(server, "alice", tmp_path, quick(train={"outer_steps": 100000, "eval_every": 100000},
                                                  checkpoint={"every": 1}))
    name = out.stdout.splitlines()[0]
    deadline = time.monotonic() + 120
    while alice.GetJob(pb.GetJobRequest(name=name)).checkpoint_round < 1:
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.2)
    assert esgd(server, "alice", "cancel", name).returncode == 0
    wait_state(alice, name, (pb.CANCELLED,))
    ckpt_round = alice.GetJob(pb.GetJobRequest(name=name)).checkpoint_round
    out = esgd(server, "alice", "retry", name)
    assert out.returncode == 0, out.stderr
    new = alice.GetJob(pb.GetJobRequest(name=out.stdout.splitlines()[0]))
    assert new.spec.init_from.job == name.removeprefix("jobs/") and new.spec.init_from.round == ckpt_round
    assert f"round {ckpt_round}" in out.stdout
    alice.CancelJob(pb.CancelJobRequest(name=new.name))
    out = esgd(server, "alice", "retry", source)
    assert out.returncode == 2 and "FAILED_PRECONDITION" in out.stderr and "SUCCEEDED" in out.stderr, out.stderr
    assert esgd(server, "bob", "retry", name).returncode == 2  # not bob's: NOT_FOUND
    wait_state(alice, new.name, (pb.CANCELLED,))


def test_esgd_run_starts_from_a_checkpoint_file(tmp_path):
    """The final weights equal the file's when the steps are ~0 (another seed): they were the start."""
    spec = {"name": "src", "model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "sgd",
            "inner": {"steps": 1, "lr": 1e-9}, "train": {"outer_steps": 1, "batch_size": 32}}
    job = tmp_path / "job.json"

    def run(run_dir, **extra):
        job.write_text(json.dumps({**spec, **extra}))
        return subprocess.run(ESGD + ["run", str(job), "--run-dir", str(run_dir), "--local", "--no-progress"],
                              capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert run(tmp_path / "a", train={"outer_steps": 1, "batch_size": 32, "seed": 1}).returncode == 0
    src = sorted((tmp_path / "a" / "checkpoints").glob("ckpt-*.pt"))[-1]
    out = run(tmp_path / "b", init_from={"path": str(src)})
    assert out.returncode == 0, out.stderr
    a = torch.load(src)["model"]
    b = torch.load(sorted((tmp_path / "b" / "checkpoints").glob("ckpt-*.pt"))[-1])["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a if "running" not in k)  # BN statistics move
    out = run(tmp_path / "c", model="mnistfc", init_from={"path": str(src)})
    assert out.returncode == 2 and "init_from" in out.stderr and "must match" in out.stderr, out.stderr
    out = run(tmp_path / "c", init_from={"job": "abc"})
    assert out.returncode == 2 and "init_from.job: esgd run has no job store" in out.stderr, out.stderr
