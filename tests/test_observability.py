"""Metrics end to end: a real Prometheus (Debian's) scrapes a real `esgd serve` during a job.

Every PromQL expression of the Grafana dashboard must return data for the job; promtool
checks the exposition; `esgd plot --prometheus` draws the PNG from the same queries.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.installed import need_program
from tests.service_harness import ROOT, ServerProcess, free_port
from tests.test_service import create, quick_spec, wait_state

pytestmark = [pytest.mark.slow]


@pytest.fixture(autouse=True)
def _prometheus_installed():
    """Debian's prometheus package: the server and promtool (make test-tools)."""
    need_program("prometheus")
    need_program("promtool")
DASHBOARD = ROOT / "deploy/grafana/dashboards/esgd.json"
# panels that may legitimately stay empty in a short, healthy job: none — failure and restart
# counters are created at 0 when a job starts, so their increase() is a series of zeros.
MAY_BE_EMPTY: set[str] = set()




def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def dashboard_exprs() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", []) if t.get("expr")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("obs")
    metrics_port, ray_port, prom_port = free_port(), free_port(), free_port()
    srv = ServerProcess(tmp / "data", "--num-cpus", "2", "--metrics-port", str(metrics_port),
                        "--ray-metrics-port", str(ray_port))
    config = (ROOT / "deploy/prometheus/prometheus.yml").read_text()
    config = config.replace("esgd:9464", f"127.0.0.1:{metrics_port}").replace("ray-head:8080", f"127.0.0.1:{ray_port}")
    config = config.replace("scrape_interval: 5s", "scrape_interval: 1s")  # the same targets, scraped sooner
    (tmp / "prometheus.yml").write_text(config)
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=open(tmp / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp / "prometheus.log").read_text()[-2000:]
                time.sleep(0.3)
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            job = create(stub, quick_spec(inner={"steps": 10}, train={"outer_steps": 200, "eval_every": 20},
                                          flatness={"enabled": True}))  # every panel gets data
            final = wait_state(stub, job.name, {pb.SUCCEEDED, pb.FAILED}, timeout=300)
            assert final.state == pb.SUCCEEDED, final.error
        time.sleep(3)  # two more scrapes after the end (every second here)
        yield {"url": url, "job": final, "metrics": f"http://127.0.0.1:{metrics_port}/metrics", "server": srv}
    finally:
        prom.terminate()
        prom.wait(30)
        srv.terminate()


def query_range(url: str, expr: str, job) -> list:
    start = job.start_time.ToNanoseconds() / 1e9 - 5
    end = job.end_time.ToNanoseconds() / 1e9 + 10
    expr = expr.replace("$job_id", re.escape(job.id)).replace("$__rate_interval", "30s")
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 1})
    body = get_json(f"{url}/api/v1/query_range?{q}")
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_the_service_and_ray(stack):
    targets = get_json(f"{stack['url']}/api/v1/targets")["data"]["activeTargets"]
    health = {t["labels"]["job"] + ":" + t["labels"].get("component", ""): t["health"] for t in targets}
    assert health.get("esgd:service") == "up" and health.get("ray:ray-head") == "up", health
    body = get_json(f"{stack['url']}/api/v1/query?" + urllib.parse.urlencode(
        {"query": f'esgd_job_outer_steps_total{{job_id="{stack["job"].id}"}}'}))
    assert float(body["data"]["result"][0]["value"][1]) == 200


def test_every_dashboard_query_returns_data(stack):
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    empty = [(title, expr) for title, expr in exprs
             if title not in MAY_BE_EMPTY and not query_range(stack["url"], expr, stack["job"])]
    assert not empty, empty


def test_promtool_accepts_the_exposition(stack):
    text = urllib.request.urlopen(stack["metrics"], timeout=10).read()
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()


def test_esgd_plot_draws_the_job_from_the_same_queries(stack, tmp_path):
    from services.plot import PANELS

    panels = {title: [t["expr"] for t in p.get("targets", [])]
              for p in json.loads(DASHBOARD.read_text())["panels"] for title in [p["title"]]}
    for title, _, _, exprs in PANELS:
        assert panels[title] == exprs, title  # the picture uses the dashboard's own PromQL
    png = tmp_path / "job.png"
    out = subprocess.run([sys.executable, "-m", "services.cli", "plot", stack["job"].id, "-o", str(png),
                          "--server", stack["server"].target, "--prometheus", stack["url"]],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    counts = dict(re.findall(r"([^(,]+): (\d+)", out.stdout.split("(", 1)[1]))
    assert len(counts) == len(PANELS) and all(int(n) > 0 for n in counts.values()), out.stdout
