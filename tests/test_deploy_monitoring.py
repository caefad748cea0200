"""The deployment's monitoring: Prometheus' configuration and the Grafana dashboard and provisioning.

Fast and offline: nothing is started. External checkers are the real tools (`promtool`, the
TypeScript compiler with Grafana's published schema); `scripts/install-test-tools.sh` installs
them. docker-compose.yml is tests/test_deploy_compose.py; the images, tests/test_deploy_images.py.
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tests.deploy_files import DASHBOARD, DEPLOY, PROMETHEUS_YML
from tests.installed import need_program

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
