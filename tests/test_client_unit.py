"""The job API client without a server: spec <-> proto, names, CLI parsing, failing fast when unreachable."""
import socket
import time

import grpc
import pytest

from core.spec import JobSpec, SpecError
from services.api import jobs_pb2
from services.cli import build_parser, main
from services.client import ApiError, JobClient, job_name, proto_to_spec_dict, spec_to_proto

FULL = {
    "name": "full-job",
    "model": "lenet",
    "dataset": {"name": "fashion-mnist", "path": "/data/fm", "fraction": 0.5, "train_subset": 1000,
                "test_subset": 200, "seq_len": 50},
    "strategy": "parle",
    "replicas": 3,
    "inner": {"steps": 5, "lr": 0.05, "noise": 1e-5, "alpha": 0.5, "gamma0": 0.03, "gamma1": 0.001,
              "gamma_max": 1.0, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "outer": {"lr": 0.5, "momentum": 0.9, "nesterov": True, "lr_form": "gamma", "milestones": [2.0, 4.5],
              "lr_factor": 0.2},
    "elastic": {"rho0": 0.1, "rho1": 0.01, "rho_max": 5.0},
    "train": {"batch_size": 64, "epochs": 3.5, "eval_every": 7, "seed": 42},
    "resources": {"cpus_per_replica": 0.5, "threads_per_replica": 2},  # gpus_per_replica unset = auto
    "checkpoint": {"every": 10, "keep_last": 2},
}


def test_full_spec_round_trips():
    msg = spec_to_proto(FULL)
    assert list(msg.outer.milestones) == [2.0, 4.5]
    assert not msg.resources.HasField("gpus_per_replica")
    assert msg.inner.steps == 5 and msg.inner.nesterov is True and msg.dataset.path == "/data/fm"
    back = proto_to_spec_dict(jobs_pb2.JobSpec.FromString(msg.SerializeToString()))
    assert back == FULL
    spec = JobSpec.parse(back)
    assert spec == JobSpec.parse(FULL)
    assert spec.resources.gpus_per_replica == "auto"


def test_validated_spec_dicts_convert():
    """What esgd submit sends: JobSpec.to_dict() with None and 'auto' (= unset) and pinned values."""
    for data in (FULL, {"strategy": "sgd", "train": {"outer_steps": 10}},
                 {"resources": {"gpus_per_replica": 0.25}, "train": {"outer_steps": 1}}):
        spec = JobSpec.parse(data)
        for sent in (spec.resolved().to_dict(), spec):
            back = JobSpec.parse(proto_to_spec_dict(spec_to_proto(sent)))
            assert back.resolved() == spec.resolved()
    assert spec_to_proto({"resources": {"gpus_per_replica": 0.25}}).resources.gpus_per_replica == 0.25
    empty = spec_to_proto(JobSpec.parse({"train": {"outer_steps": 1}}).to_dict())
    assert not empty.dataset.HasField("path") and not empty.train.HasField("epochs")


@pytest.mark.parametrize("data,field", [
    ({"bogus": 1}, "bogus"),
    ({"inner": {"lr_typo": 1}}, "inner.lr_typo"),
    ({"inner": {"steps": 2.5}}, "inner.steps"),
    ({"replicas": 2.5}, "replicas"),
    ({"replicas": "2"}, "replicas"),
    ({"replicas": True}, "replicas"),
    ({"replicas": 2**40}, "replicas"),
    ({"inner": {"lr": "fast"}}, "inner.lr"),
    ({"inner": {"nesterov": "yes"}}, "inner.nesterov"),
    ({"inner": 5}, "inner"),
    ({"outer": {"milestones": 5}}, "outer.milestones"),
    ({"outer": {"milestones": [1, "x"]}}, "outer.milestones"),
    ({"resources": {"gpus_per_replica": "all"}}, "resources.gpus_per_replica"),
    ({"name": 5}, "name"),
])
def test_unknown_fields_and_wrong_types_are_named(data, field):
    with pytest.raises(SpecError) as err:
        spec_to_proto(data)
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")


def test_ranges_are_left_to_the_server():
    assert spec_to_proto({"inner": {"lr": -1}, "replicas": 0}).inner.lr == -1
    assert spec_to_proto({"replicas": 3.0}).replicas == 3


def test_job_names():
    assert job_name("abc") == "jobs/abc"
    assert job_name("jobs/abc") == "jobs/abc"
    assert job_name(" abc ") == "jobs/abc"
    for bad in ("", "jobs/", "a/b"):
        with pytest.raises(SpecError):
            job_name(bad)


def test_api_error_text():
    err = ApiError(grpc.StatusCode.INVALID_ARGUMENT, "inner.lr: Input should be greater than 0 (got -1)")
    assert str(err) == "INVALID_ARGUMENT: inner.lr: Input should be greater than 0 (got -1)"
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT and err.details.startswith("inner.lr")


def test_cli_parses_each_command(monkeypatch):
    monkeypatch.delenv("ESGD_SERVER", raising=False)
    p = build_parser()
    a = p.parse_args(["run", "job.yaml", "--set", "inner.lr=0.05", "--local"])
    assert (a.command, a.job, a.set, a.local) == ("run", "job.yaml", ["inner.lr=0.05"], True)

    a = p.parse_args(["serve"])
    assert (a.host, a.port, a.data_dir, a.ray_address, a.num_cpus, a.max_concurrent_jobs) == \
        ("127.0.0.1", 50051, "./esgd-data", None, None, 0)
    assert (a.token_file, a.tls_cert, a.tls_key, a.metrics_port, a.metrics_host, a.port_file) == \
        (None, None, None, 0, "127.0.0.1", None)
    a = p.parse_args(["serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", "d", "--ray-address", "r:6379",
                      "--num-cpus", "4", "--max-concurrent-jobs", "2", "--token-file", "t", "--tls-cert", "c",
                      "--tls-key", "k", "--metrics-port", "9100", "--metrics-host", "0.0.0.0", "--port-file", "pf"])
    assert (a.host, a.port, a.data_dir, a.ray_address, a.num_cpus, a.max_concurrent_jobs, a.token_file,
            a.tls_cert, a.tls_key, a.metrics_port, a.metrics_host, a.port_file) == \
        ("0.0.0.0", 0, "d", "r:6379", 4, 2, "t", "c", "k", 9100, "0.0.0.0", "pf")
    assert not hasattr(a, "server")

    a = p.parse_args(["submit", "job.yaml", "--set", "replicas=2", "--set", "inner.lr=0.1", "--request-id", "r1",
                      "--watch", "--server", "h:1", "--token", "tok", "--tls-ca", "ca.pem", "--timeout", "5"])
    assert (a.command, a.job, a.set, a.request_id, a.watch) == \
        ("submit", "job.yaml", ["replicas=2", "inner.lr=0.1"], "r1", True)
    assert (a.server, a.token, a.token_file, a.tls_ca, a.timeout) == ("h:1", "tok", None, "ca.pem", 5.0)

    a = p.parse_args(["list"])
    assert (a.state, a.page_size, a.page_token, a.all, a.server, a.timeout) == \
        (None, 50, "", False, "127.0.0.1:50051", 30.0)
    a = p.parse_args(["list", "--state", "running", "--page-size", "10", "--page-token", "x", "--all"])
    assert (a.state, a.page_size, a.page_token, a.all) == ("RUNNING", 10, "x", True)
    with pytest.raises(SystemExit):
        p.parse_args(["list", "--state", "sleeping"])

    a = p.parse_args(["get", "jobs/abc", "--json", "--token-file", "tf"])
    assert (a.command, a.id, a.json, a.token_file) == ("get", "jobs/abc", True, "tf")
    a = p.parse_args(["watch", "abc"])
    assert (a.command, a.id, a.no_progress) == ("watch", "abc", False)
    a = p.parse_args(["cancel", "abc"])
    assert (a.command, a.id) == ("cancel", "abc")
    a = p.parse_args(["download", "abc", "-o", "out.pt", "--round", "20"])
    assert (a.command, a.id, a.output, a.round) == ("download", "abc", "out.pt", 20)
    with pytest.raises(SystemExit):
        p.parse_args(["download", "abc"])  # -o is required


def test_server_default_from_env(monkeypatch):
    monkeypatch.setenv("ESGD_SERVER", "example:7")
    assert build_parser().parse_args(["list"]).server == "example:7"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast_after_retries():
    with JobClient(f"127.0.0.1:{_closed_port()}", timeout=0.5, retries=1) as client:
        t0 = time.monotonic()
        with pytest.raises(ApiError) as err:
            client.get_job("abc")
        elapsed = time.monotonic() - t0
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert elapsed < 2 * 0.5 + 0.3 + 1.0  # two attempts' deadlines, one backoff (≤ 0.3 s), slack


def test_cli_reports_an_unreachable_server_in_one_line(capsys):
    rc = main(["get", "abc", "--server", f"127.0.0.1:{_closed_port()}", "--timeout", "0.5"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("esgd: error: UNAVAILABLE") and err.count("\n") == 1


def test_cli_bad_spec_is_input_error(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("inner: {lr: -1}\ntrain: {outer_steps: 1}\n")
    rc = main(["submit", str(job), "--server", f"127.0.0.1:{_closed_port()}"])
    assert rc == 2
    assert capsys.readouterr().err.startswith("esgd: error: inner.lr:")
