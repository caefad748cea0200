"""The job service end to end: a real `esgd serve` subprocess, real gRPC on loopback, real Ray."""
from __future__ import annotations

import hashlib
import io
import time

import grpc
import pytest
import torch

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from services.convert import spec_to_proto
from tests.service_harness import ServerProcess, module_server

pytestmark = pytest.mark.slow


def quick_spec(**over):
    spec = {"name": "svc", "model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "parle", "replicas": 2,
            "inner": {"steps": 3}, "train": {"outer_steps": 12, "batch_size": 32, "eval_every": 4},
            "resources": {"cpus_per_replica": 0.5}}
    for k, v in over.items():
        spec[k] = {**spec[k], **v} if isinstance(v, dict) and isinstance(spec.get(k), dict) else v
    return spec


server = module_server("svc", "--num-cpus", "2")



def create(stub, spec, request_id=""):
    return stub.CreateJob(pb.CreateJobRequest(job=spec_to_proto(spec), request_id=request_id), timeout=30)


def wait_state(stub, name, states, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stub.GetJob(pb.GetJobRequest(name=name), timeout=10)
        if job.state in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"{name} never reached {states}: {job}")


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_create_watch_download_and_load(stub):
    job = create(stub, quick_spec())
    assert job.name.startswith("jobs/") and job.state == pb.QUEUED
    events = list(stub.WatchJob(pb.WatchJobRequest(name=job.name), timeout=180))
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "state_change"
    assert events[-1].state_change.state == pb.SUCCEEDED
    assert kinds.count("evaluation") == 3 and "summary" in kinds
    seqs = [e.seq for e in events[1:]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # gap-free
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.summary.rounds == 12 and 0 < final.summary.test_error < 0.9
    assert final.progress.total_rounds == 12 and final.checkpoint_round == 12
    chunks = list(stub.DownloadCheckpoint(pb.DownloadCheckpointRequest(name=job.name), timeout=60))
    data = b"".join(c.data for c in chunks)
    assert len(data) == chunks[0].total_size and hashlib.sha256(data).hexdigest() == chunks[0].sha256
    ckpt = torch.load(io.BytesIO(data))
    assert ckpt["round"] == 12 and "1.weight" in ckpt["model"]


def test_late_watcher_gets_the_state_first_then_history_on_request(stub):
    job = create(stub, quick_spec(train={"outer_steps": 4}))
    wait_state(stub, job.name, {pb.SUCCEEDED})
    events = list(stub.WatchJob(pb.WatchJobRequest(name=job.name), timeout=30))
    assert len(events) == 1 and events[0].snapshot.state == pb.SUCCEEDED
    history = list(stub.WatchJob(pb.WatchJobRequest(name=job.name, after_seq=1), timeout=30))
    assert history[0].seq == 2 and history[-1].state_change.state == pb.SUCCEEDED
    assert sum(e.HasField("progress") for e in history) == 4


def test_create_is_idempotent_on_request_id(stub):
    a = create(stub, quick_spec(train={"outer_steps": 2}), request_id="same-request")
    b = create(stub, quick_spec(train={"outer_steps": 2}), request_id="same-request")
    assert a.id == b.id
    listed = [j for j in stub.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=10).jobs
              if j.request_id == "same-request"]
    assert len(listed) == 1


def test_list_paginates_and_filters(stub):
    for _ in range(3):
        create(stub, quick_spec(train={"outer_steps": 2}))
    seen, token, pages = [], "", 0
    while True:
        page = stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=token), timeout=10)
        assert len(page.jobs) <= 2
        seen += [j.id for j in page.jobs]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) >= 3 and pages >= 2
    everything = stub.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=10).jobs
    assert [j.id for j in everything] == seen
    for j in everything:
        wait_state(stub, j.name, {pb.SUCCEEDED, pb.FAILED, pb.CANCELLED})
    done = stub.ListJobs(pb.ListJobsRequest(state=pb.SUCCEEDED, page_size=1000), timeout=10).jobs
    assert done and all(j.state == pb.SUCCEEDED for j in done)
    code, details = code_of(lambda: stub.ListJobs(pb.ListJobsRequest(page_token="garbage"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in details


def test_cancel_mid_run_releases_the_replicas(stub):
    job = create(stub, quick_spec(replicas=4, train={"outer_steps": 100000, "eval_every": 1000}))
    deadline = time.monotonic() + 120
    while stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).progress.round < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    start = time.monotonic()
    stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=10)
    final = wait_state(stub, job.name, {pb.CANCELLED, pb.FAILED, pb.SUCCEEDED}, timeout=60)
    assert final.state == pb.CANCELLED and time.monotonic() - start < 30
    # its 4 × 0.5 CPUs are free again: a job needing the whole cluster runs
    follow = create(stub, quick_spec(replicas=4, train={"outer_steps": 2}))
    assert wait_state(stub, follow.name, {pb.SUCCEEDED, pb.FAILED}).state == pb.SUCCEEDED


def test_status_codes(stub):
    code, details = code_of(lambda: create(stub, quick_spec(inner={"lr": -1.0})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("inner.lr")
    code, details = code_of(lambda: create(stub, quick_spec(model="resnet")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("model")
    code, details = code_of(lambda: create(stub, quick_spec(replicas=64)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "replicas" in details
    code, _ = code_of(lambda: stub.GetJob(pb.GetJobRequest(name="jobs/doesnotexist"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = code_of(lambda: stub.GetJob(pb.GetJobRequest(name="doesnotexist"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "name" in details
    done = create(stub, quick_spec(train={"outer_steps": 1}))
    wait_state(stub, done.name, {pb.SUCCEEDED})
    code, _ = code_of(lambda: stub.CancelJob(pb.CancelJobRequest(name=done.name), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    huge = pb.CreateJobRequest(job=spec_to_proto(quick_spec()), request_id="x" * (5 << 20))
    code, _ = code_of(lambda: stub.CreateJob(huge, timeout=30))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.GetJob(pb.GetJobRequest(name=done.name), timeout=10).state == pb.SUCCEEDED  # still serving


def test_unreachable_ray_cluster_is_unavailable(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    srv = ServerProcess(tmp_path, "--ray-address", f"127.0.0.1:{dead_port}")
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            code, details = code_of(lambda: create(stub, quick_spec()))
            assert code == grpc.StatusCode.UNAVAILABLE and "unreachable" in details
            assert stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs == []  # the API still answers
    finally:
        assert srv.terminate() == 0


def test_cli_and_python_client_against_the_server(server, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from services.client import ApiError, JobClient
    from tests.service_harness import ROOT

    job = tmp_path / "job.yaml"
    job.write_text(json.dumps(quick_spec(train={"outer_steps": 6, "eval_every": 3})))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ESGD_SERVER": server.target}

    def esgd(*args, timeout=180):
        return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=ROOT)

    out = esgd("submit", str(job), "--watch")
    assert out.returncode == 0, out.stderr
    name = out.stdout.splitlines()[0].strip()
    assert name.startswith("jobs/") and "SUCCEEDED" in out.stdout
    assert "test_error" in out.stdout + out.stderr
    listing = esgd("list", "--all")
    assert listing.returncode == 0 and name in listing.stdout and "STATE" in listing.stdout
    assert esgd("get", name).returncode == 0
    target = tmp_path / "model.pt"
    assert esgd("download", name, "-o", str(target)).returncode == 0
    assert torch.load(target)["round"] == 6
    flat = esgd("flatness", name, "-o", str(tmp_path / "flat"), "--eval-samples", "200", "--lanczos-iters", "10")
    assert flat.returncode == 0, flat.stderr
    assert json.loads((tmp_path / "flat" / "flatness.json").read_text())["round"] == 6
    bad = esgd("submit", str(job), "--set", "inner.lr=-1")
    assert bad.returncode == 2 and "inner.lr" in bad.stderr and "Traceback" not in bad.stderr
    missing = esgd("get", "jobs/nope")
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    with JobClient(server.target, timeout=10) as client:
        created = client.create_job(quick_spec(train={"outer_steps": 2}), request_id="client-req")
        assert client.create_job(quick_spec(train={"outer_steps": 2}), request_id="client-req").id == created.id
        assert any(j.id == created.id for j in client.iter_jobs(page_size=1))
        events = list(client.watch(created.id))
        assert events[-1].state_change.state == pb.SUCCEEDED or events[0].snapshot.state == pb.SUCCEEDED
        with pytest.raises(ApiError) as err:
            client.cancel_job(created.id)
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
