"""Bad input at the API: generated job specs, malformed bytes. The server must keep serving."""
from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.spec import JobSpec, SpecError
from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from services.convert import spec_to_proto
from tests.service_harness import ServerProcess

pytestmark = pytest.mark.slow
_SERVICE = pb.DESCRIPTOR.services_by_name["JobService"]  # every method, new ones included
METHODS = [m.name for m in _SERVICE.methods if not m.server_streaming]
STREAMS = [m.name for m in _SERVICE.methods if m.server_streaming]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # --num-cpus 1 and max one job at a time: accepted jobs queue instead of loading the machine
    srv = ServerProcess(tmp_path_factory.mktemp("badinput"), "--num-cpus", "1", "--max-concurrent-jobs", "1")
    yield srv
    assert srv.terminate() == 0, srv.read_log()[-3000:]


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-10**6, 10**6))
fields = {
    "inner": st.fixed_dictionaries({}, optional={"lr": numbers, "steps": st.integers(-5, 10**6), "alpha": numbers,
                                                 "noise": numbers, "gamma0": numbers, "momentum": numbers}),
    "outer": st.fixed_dictionaries({}, optional={"lr": numbers, "momentum": numbers, "nesterov": st.booleans(),
                                                 "lr_form": st.sampled_from(["direct", "gamma", "paper"])}),
    "train": st.fixed_dictionaries({}, optional={"outer_steps": st.integers(-3, 10**9), "batch_size": st.integers(-1, 10**6),
                                                 "epochs": numbers}),
    "replicas": st.integers(-2, 2000),
    "model": st.sampled_from(["mlp", "lenet", "char-lstm", "resnet", ""]),
    "strategy": st.sampled_from(["sgd", "parle", "entropy-sgd", "elastic-sgd", "adam"]),
}
specs = st.fixed_dictionaries({"dataset": st.just({"name": "synthetic"})},
                              optional=fields)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=specs)
def test_generated_specs_are_accepted_or_rejected_naming_a_field(server, spec):
    with server.channel() as ch:
        stub = jobs_pb2_grpc.JobServiceStub(ch)
        try:
            msg = spec_to_proto(spec)
        except SpecError:
            return  # not even representable on the wire: the client names the field itself
        try:
            expected = JobSpec.parse(spec)
        except SpecError as exc:
            expected = exc
        try:
            job = stub.CreateJob(pb.CreateJobRequest(job=msg), timeout=30)
        except grpc.RpcError as err:
            assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), err
            field = err.details().split(":", 1)[0]
            assert field and " " not in field, err.details()  # "inner.lr: ..." names the field
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # valid, but wider than this cluster
                # or over a service limit: replica processes, the memory estimate (docs/security.md)
                assert field in ("replicas", "resources.gpus_per_replica", "train.batch_size", "model",
                                 "dataset.name"), err.details()
            else:
                assert isinstance(expected, SpecError)
        else:
            assert not isinstance(expected, SpecError), (spec, expected)
            stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=30)  # runnable, but not now
        stub.ListJobs(pb.ListJobsRequest(page_size=1), timeout=30)  # still serving


@pytest.mark.parametrize("method", METHODS + STREAMS)
@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x03abc\x99",
                                     b"\x0a\x05\x0a\x03ab"])
def test_malformed_bytes_get_an_error_status_not_a_crash(server, method, payload):
    from google.protobuf.message import DecodeError

    request_type = getattr(pb, f"{method}Request")
    with pytest.raises(DecodeError):
        request_type.FromString(payload)  # really malformed for this method
    with server.channel() as ch:
        path = f"/esgd.v1.JobService/{method}"
        call = ch.unary_stream(path) if method in STREAMS else ch.unary_unary(path)
        with pytest.raises(grpc.RpcError) as err:
            result = call(payload, timeout=30)
            if method in STREAMS:
                list(result)
        assert err.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT,
                                    grpc.StatusCode.NOT_FOUND), err.value
        stub = jobs_pb2_grpc.JobServiceStub(ch)
        assert stub.ListJobs(pb.ListJobsRequest(page_size=1), timeout=30) is not None
