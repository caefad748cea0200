"""Queue caps: per principal and per server, RESOURCE_EXHAUSTED naming the flag and the cap;
a retried request_id is still answered with its job when the queue is full."""
from __future__ import annotations

import grpc
import pytest

from services.api import jobs_pb2 as pb
from tests.security.util import TERMINAL, As, create, quick, status_of, wait_state, write_tokens
from tests.service_harness import ServerProcess, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("queue")
    srv = ServerProcess(base / "data", "--num-cpus", "1", "--token-file", str(write_tokens(base / "tokens")),
                        "--max-queued-jobs", "3", "--max-queued-per-principal", "2")
    yield srv
    assert srv.terminate() == 0, srv.read_log()[-3000:]


def test_queue_caps_per_principal_and_per_server(server):
    one_cpu = {"replicas": 1, "resources": {"cpus_per_replica": 1}}
    with server.channel() as ch:
        alice, bob, root = As(ch, "alice"), As(ch, "bob"), As(ch, "root")
        runner = create(root, quick(**one_cpu, train={"outer_steps": 100000, "eval_every": 100000}))
        wait_for(lambda: root.GetJob(pb.GetJobRequest(name=runner.name)).state == pb.RUNNING, 120, "RUNNING")
        queued = [create(alice, quick(**one_cpu), request_id="a1"), create(alice, quick(**one_cpu))]
        code, details = status_of(lambda: create(alice, quick(**one_cpu)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith("queue:"), details
        assert "--max-queued-per-principal" in details and "2" in details
        assert create(alice, quick(**one_cpu), request_id="a1").id == queued[0].id  # a retry still answers
        queued.append(create(bob, quick(**one_cpu)))  # bob's own quota; the server's 3rd
        code, details = status_of(lambda: create(bob, quick(**one_cpu)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-queued-jobs" in details and "3" in details
        for job in queued + [runner]:
            root.CancelJob(pb.CancelJobRequest(name=job.name))
        for job in queued + [runner]:
            wait_state(root, job.name, TERMINAL)
        create(bob, quick(**one_cpu, train={"outer_steps": 1}))  # room again
