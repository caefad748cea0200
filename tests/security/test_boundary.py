"""The API as a trust boundary, against a real ``esgd serve`` with named tokens.

Auth before work (an unauthenticated call is refused before its body is parsed, for unary
calls and streams alike, with no traceback in the log); principals (a job exists only for its
owner and admins; request_ids are per principal and never silently return another spec's
job); size and resource limits at submission (spec size, request_id, lists, the gRPC message
cap, the CPU floor, replica processes per node, the memory estimate); dataset.path confined
to the data roots at submission; bounded ListJobs pages; malformed enums and page tokens.
"""
from __future__ import annotations

import os

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.api import jobs_pb2 as pb
from tests.security.util import TERMINAL, As, create, principals_server, quick, status_of, wait_state

pytestmark = pytest.mark.slow
SERVICE = pb.DESCRIPTOR.services_by_name["JobService"]
GARBAGE = b"\x0a\xff\xff\xff\xff\x0f"  # not a valid message of any of the requests


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from principals_server(tmp_path_factory, "boundary", "--max-page-bytes", "64K")


@pytest.fixture(scope="module")
def channel(server):
    with server.channel() as ch:
        yield ch


def test_no_token_is_refused_before_the_body_is_read_for_every_method(server, channel):
    for method in SERVICE.methods:
        path = f"/esgd.v1.JobService/{method.name}"
        call = channel.unary_stream(path) if method.server_streaming else channel.unary_unary(path)
        for metadata in ([], [("authorization", "Bearer wrong")], [("authorization", "Basic eA==")]):
            code, _ = status_of(lambda: call(GARBAGE, timeout=10, metadata=metadata))
            # UNAUTHENTICATED, not INVALID_ARGUMENT or INTERNAL: the garbage body was never parsed
            assert code == grpc.StatusCode.UNAUTHENTICATED, (method.name, metadata, code)
    good = [("authorization", "Bearer alice-token-0123456789abcdef")]
    code, details = status_of(lambda: channel.unary_unary("/esgd.v1.JobService/GetJob")(GARBAGE, timeout=10,
                                                                                        metadata=good))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "request" in details  # parsed only once authenticated
    log = server.read_log()
    assert "Traceback" not in log and "deserializ" not in log.lower(), log[-3000:]
    health = health_pb2_grpc.HealthStub(channel)  # open without a token
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING


def test_malformed_enums_and_page_tokens_are_invalid_argument(channel):
    alice = As(channel, "alice")
    code, details = status_of(lambda: alice.ListJobs(pb.ListJobsRequest(state=99)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("state"), details
    for token in ("garbage", "é" * 10, "W10=", "eyJhZnRlciI6IDFlNDAwfQ==", "eyJhZnRlciI6IDk5OTk5OTk5OTk5OTk5OTk5OTk5fQ==",
                  "x" * 4000):
        code, details = status_of(lambda: alice.ListJobs(pb.ListJobsRequest(page_token=token)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("page_token"), (token, details)


def test_a_job_exists_only_for_its_owner_and_admins(channel):
    alice, bob, root = As(channel, "alice"), As(channel, "bob"), As(channel, "root")
    a = create(alice, quick(), request_id="shared-key")
    b = create(bob, quick(), request_id="shared-key")  # the same key, another principal: another job
    assert a.id != b.id
    wait_state(alice, a.name, TERMINAL)
    calls = {"GetJob": lambda: bob.GetJob(pb.GetJobRequest(name=a.name)),
             "WatchJob": lambda: bob.WatchJob(pb.WatchJobRequest(name=a.name)),
             "WatchJob history": lambda: bob.WatchJob(pb.WatchJobRequest(name=a.name, after_seq=0)),
             "CancelJob": lambda: bob.CancelJob(pb.CancelJobRequest(name=a.name)),
             "ScaleJob": lambda: bob.ScaleJob(pb.ScaleJobRequest(name=a.name, replicas=1)),
             "DownloadCheckpoint": lambda: bob.DownloadCheckpoint(pb.DownloadCheckpointRequest(name=a.name)),
             "DownloadArtifact": lambda: bob.DownloadArtifact(pb.DownloadArtifactRequest(name=a.name,
                                                                                          artifact="spec.yaml"))}
    missing = status_of(lambda: bob.GetJob(pb.GetJobRequest(name="jobs/doesnotexist")))[1]
    for what, call in calls.items():
        code, details = status_of(call)
        assert code == grpc.StatusCode.NOT_FOUND, (what, code, details)
        assert details == missing.replace("doesnotexist", a.id), (what, details)  # indistinguishable
    assert a.id not in [j.id for j in bob.ListJobs(pb.ListJobsRequest(page_size=1000)).jobs]
    assert b.id in [j.id for j in bob.ListJobs(pb.ListJobsRequest(page_size=1000)).jobs]
    assert {a.id, b.id} <= {j.id for j in root.ListJobs(pb.ListJobsRequest(page_size=1000)).jobs}
    assert root.GetJob(pb.GetJobRequest(name=a.name)).state in TERMINAL
    assert list(alice.DownloadArtifact(pb.DownloadArtifactRequest(name=a.name, artifact="spec.yaml")))
    # the same key and spec: the same job; the same key and another spec: ALREADY_EXISTS
    assert create(alice, quick(), request_id="shared-key").id == a.id
    code, details = status_of(lambda: create(alice, quick(train={"outer_steps": 3}), request_id="shared-key"))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "request_id" in details
    wait_state(bob, b.name, TERMINAL)


def test_size_and_resource_limits_at_submission_name_the_field(channel):
    alice = As(channel, "alice")
    cases = [  # (spec, request_id, code, field the message starts with)
        (quick(dataset={"name": "synthetic", "path": "p" * 70_000}), "", grpc.StatusCode.RESOURCE_EXHAUSTED, "job"),
        (quick(), "r" * 129, grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
        (quick(outer={"milestones": [float(i) for i in range(1, 1002)]}), "", grpc.StatusCode.INVALID_ARGUMENT,
         "outer.milestones"),
        (quick(replicas=1000, resources={"cpus_per_replica": 0.001}), "", grpc.StatusCode.INVALID_ARGUMENT,
         "resources.cpus_per_replica"),
        (quick(replicas=20, resources={"cpus_per_replica": 0.1}), "", grpc.StatusCode.RESOURCE_EXHAUSTED, "replicas"),
        (quick(model="allcnn-bn", train={"batch_size": 65536}), "", grpc.StatusCode.RESOURCE_EXHAUSTED,
         "train.batch_size"),
    ]
    for spec, rid, want, field in cases:
        code, details = status_of(lambda: create(alice, spec, request_id=rid))
        assert code == want and details.startswith(field + ":"), (field, code, details[:300])
    # the message cap: a request far over the spec cap is refused before it is read
    code, _ = status_of(lambda: create(alice, quick(dataset={"name": "synthetic", "path": "p" * 400_000})))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # scaling is checked like a new job: 8 × 0.25 CPU fits 2 CPUs, 8 processes do not fit the node
    job = create(alice, quick(replicas=2, resources={"cpus_per_replica": 0.25},
                              train={"outer_steps": 100000, "eval_every": 100000}))
    code, details = status_of(lambda: alice.ScaleJob(pb.ScaleJobRequest(name=job.name, replicas=8)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith("replicas:"), details
    alice.CancelJob(pb.CancelJobRequest(name=job.name))
    wait_state(alice, job.name, TERMINAL)


def test_dataset_path_is_confined_at_submission(server, channel):
    alice = As(channel, "alice")
    outside = server.root.parent / "secret"
    outside.mkdir()
    (server.root / "escape").symlink_to(outside)
    refusals = set()
    for path in ("/etc", "/etc/passwd", "/nonexistent/x", "../secret", "escape", str(outside), "/proc/self/environ"):
        code, details = status_of(lambda: create(alice, quick(dataset={"name": "idx", "path": path})))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("dataset.path"), (path, details)
        refusals.add(details)
    assert len(refusals) == 1, refusals  # one message, whatever the path names: nothing is revealed
    (server.root / "mine").mkdir()
    job = create(alice, quick(dataset={"name": "idx", "path": "mine"}))  # inside a root: accepted
    try:
        alice.CancelJob(pb.CancelJobRequest(name=job.name))
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # it already failed: the folder is empty


def test_list_pages_are_bounded_in_bytes(channel):
    bob = As(channel, "bob")
    big = quick(outer={"milestones": [float(i) for i in range(1, 1001)]}, train={"outer_steps": 1})
    ids = []
    for _ in range(10):  # ~9 KB each as a Job message
        job = create(bob, big)
        ids.append(job.id)
        if bob.GetJob(pb.GetJobRequest(name=job.name)).state not in TERMINAL:
            try:
                bob.CancelJob(pb.CancelJobRequest(name=job.name))
            except grpc.RpcError:
                pass  # it ended meanwhile
    seen, token, pages = [], "", 0
    while True:
        page = bob.ListJobs(pb.ListJobsRequest(page_size=1000, page_token=token))
        assert page.ByteSize() <= 64 * 1024 + 16 * 1024, page.ByteSize()
        seen += [j.id for j in page.jobs]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages >= 2 and set(ids) <= set(seen) and len(seen) == len(set(seen))


def test_the_server_still_serves_and_logged_no_traceback(server, channel):
    assert As(channel, "root").ListJobs(pb.ListJobsRequest(page_size=1)) is not None
    log = server.read_log()
    assert "Traceback" not in log, log[-3000:]
    assert os.stat(server.data_dir).st_mode & 0o777 == 0o700
