"""Helpers of the trust-boundary tests: principals' tokens, authenticated stubs, status codes."""
from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from services.convert import spec_to_proto

TOKENS = {"alice": ("alice-token-0123456789abcdef", "user"), "bob": ("bob-token-0123456789abcdef", "user"),
          "root": ("root-token-0123456789abcdef", "admin")}


def write_tokens(path: Path, tokens: dict = TOKENS) -> Path:
    path.write_text("# name token role\n" + "".join(f"{n} {t} {r}\n" for n, (t, r) in tokens.items()))
    return path


def principals_server(tmp_path_factory, name: str, *extra: str):
    """A module fixture's body: an ``esgd serve`` with the TOKENS file and one empty data root
    (``server.root``), 2 CPUs; yields it and checks it exits 0 at the end."""
    from tests.service_harness import ServerProcess

    base = tmp_path_factory.mktemp(name)
    root = base / "roots"
    root.mkdir()
    srv = ServerProcess(base / "data", "--num-cpus", "2", "--token-file", str(write_tokens(base / "tokens")),
                        "--data-root", str(root), *extra)
    srv.root = root
    yield srv
    assert srv.terminate() == 0, srv.read_log()[-3000:]


def bearer(who: str) -> list:
    return [("authorization", f"Bearer {TOKENS[who][0]}")]


class As:
    """A JobService stub whose calls carry ``who``'s token."""

    def __init__(self, channel, who: str | None):
        self.stub, self.md = jobs_pb2_grpc.JobServiceStub(channel), bearer(who) if who else []

    def __getattr__(self, method):
        rpc = getattr(self.stub, method)
        return lambda request, timeout=30, **kw: rpc(request, timeout=timeout, metadata=self.md, **kw)


def quick(**over) -> dict:
    spec = {"name": "sec", "model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "parle", "replicas": 2,
            "inner": {"steps": 2}, "train": {"outer_steps": 2, "batch_size": 32, "eval_every": 2},
            "resources": {"cpus_per_replica": 0.5}}
    for k, v in over.items():
        spec[k] = {**spec[k], **v} if isinstance(v, dict) and isinstance(spec.get(k), dict) else v
    return spec


def create(stub, spec: dict, request_id: str = "", timeout: float = 30):
    return stub.CreateJob(pb.CreateJobRequest(job=spec_to_proto(spec), request_id=request_id), timeout=timeout)


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "SerializeToString"):
            list(result)
    return err.value.code(), err.value.details() or ""


def wait_state(stub, name: str, states, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while True:
        job = stub.GetJob(pb.GetJobRequest(name=name), timeout=10)
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never reached {states}: {job.state}")
        time.sleep(0.1)


TERMINAL = {pb.SUCCEEDED, pb.FAILED, pb.CANCELLED}
