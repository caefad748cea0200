"""Elastic membership through the real API and CLI: scale a running Parle job up and down.

Every wait follows the job's own event stream (WatchJob), never a sleep.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import grpc
import pytest

from services.api import jobs_pb2 as pb
from tests.faults.test_replica_failure import follow
from tests.service_harness import ROOT, module_server, report_fault
from tests.test_service import create, quick_spec

pytestmark = pytest.mark.slow


server = module_server("scale", "--num-cpus", "2")



def esgd(server, *args):
    return subprocess.run([sys.executable, "-m", "services.cli", *args, "--server", server.target],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def scale(stub, name, n):
    return stub.ScaleJob(pb.ScaleJobRequest(name=name, replicas=n), timeout=30)


def test_scale_a_running_parle_job_up_then_down(server, stub):
    job = create(stub, quick_spec(replicas=2, train={"outer_steps": 60, "eval_every": 20}))
    follow(stub, job.name, until=lambda ev: ev.HasField("progress") and ev.progress.round >= 3)
    asked = time.time()
    scale(stub, job.name, 3)
    follow(stub, job.name, until=lambda ev: ev.HasField("replica") and ev.replica.kind == "added")
    out = esgd(server, "scale", job.id, "--replicas", "1")
    assert out.returncode == 0 and "scaling to 1 replicas" in out.stdout, out.stderr
    events = follow(stub, job.name)
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.state == pb.SUCCEEDED, final.error

    changes = [(e.replica.replica, e.replica.kind, e.replica.replicas) for e in events if e.HasField("replica")]
    assert changes == [(2, "added", 3), (1, "removed", 1), (2, "removed", 1)]
    rounds = [e.progress.round for e in events if e.HasField("progress")]
    assert rounds == list(range(1, 61))  # no round lost or repeated across the changes
    added_round = next(e.replica.round for e in events if e.HasField("replica"))
    assert added_round >= 4  # applied at a round boundary after the request
    assert len(final.replicas) == 1 and final.spec.replicas == 1
    assert final.summary.rounds == 60 and final.summary.test_error < 0.9
    assert final.checkpoint_round == 60
    added = next(e for e in events if e.HasField("replica") and e.replica.kind == "added")
    report_fault(fault="esgd scale 2 → 3 → 1 on a running Parle job", count=2,
                 lost="nothing (60/60 rounds recorded)",
                 recovery_s=round(added.time.ToNanoseconds() / 1e9 - asked, 2),
                 recovery="ScaleJob to the new replica running (scale-up)",
                 test="tests/faults/test_scale.py::test_scale_a_running_parle_job_up_then_down")


def test_scale_errors_name_the_field_and_the_limit(server, stub):
    job = create(stub, quick_spec(replicas=2, train={"outer_steps": 400, "eval_every": 1000}))
    follow(stub, job.name, until=lambda ev: ev.HasField("progress"))
    cases = [(0, grpc.StatusCode.INVALID_ARGUMENT, "replicas"), (5, grpc.StatusCode.RESOURCE_EXHAUSTED, "replicas")]
    for n, code, word in cases:
        with pytest.raises(grpc.RpcError) as err:
            scale(stub, job.name, n)
        assert err.value.code() == code and word in err.value.details(), err.value.details()
    stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=30)
    follow(stub, job.name)
    with pytest.raises(grpc.RpcError) as err:
        scale(stub, job.name, 2)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        scale(stub, "jobs/nope", 2)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    sgd = create(stub, quick_spec(strategy="sgd", replicas=1, train={"outer_steps": 2}))
    with pytest.raises(grpc.RpcError) as err:
        scale(stub, sgd.name, 2)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sgd" in err.value.details()
    bad = esgd(server, "scale", sgd.id, "--replicas", "zero")
    assert bad.returncode == 2 and "--replicas" in bad.stderr
    follow(stub, sgd.name)


def test_flatness_report_is_an_artifact_with_its_headline_in_the_summary(server, stub, tmp_path):
    job = create(stub, quick_spec(train={"outer_steps": 4}, flatness={"enabled": True}))
    follow(stub, job.name)
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.state == pb.SUCCEEDED, final.error
    s = final.summary
    assert s.HasField("top_eigenvalue") and s.HasField("hessian_trace") and 0.0 <= s.near_zero_fraction <= 1.0
    out = esgd(server, "download", job.id, "--artifact", "flatness.json", "-o", str(tmp_path / "f.json"))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "f.json").read_text())
    assert report["top_eigenvalues"][0] == pytest.approx(s.top_eigenvalue)
    assert report["trace"] == pytest.approx(s.hessian_trace)
    png = b"".join(c.data for c in stub.DownloadArtifact(
        pb.DownloadArtifactRequest(name=job.name, artifact="flatness.png"), timeout=30))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    flat = esgd(server, "flatness", job.id, "-o", str(tmp_path / "report"))
    assert flat.returncode == 0 and "made by the service" in flat.stdout, flat.stderr
    with pytest.raises(grpc.RpcError) as err:
        list(stub.DownloadArtifact(pb.DownloadArtifactRequest(name=job.name, artifact="../jobs.sqlite"), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "artifact" in err.value.details()
