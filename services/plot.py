"""``esgd plot``: a PNG of a job's main curves, drawn with matplotlib from Prometheus.

The queries are the Grafana dashboard's own (deploy/grafana/dashboards/esgd.json; a test
keeps them identical), with ``$job_id`` and ``$__rate_interval`` filled in, so the picture
is what the dashboard shows for the job.
"""
from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request

RATE_INTERVAL = "30s"  # ≥ 4 scrape intervals of deploy/prometheus/prometheus.yml (5 s)

# (dashboard panel title, y label, log scale) → its PromQL expressions
PANELS: list[tuple[str, str, bool, list[str]]] = [
    ("Training loss", "loss", False, ['esgd_job_train_loss{job_id=~"$job_id"}',
                                      'esgd_job_test_loss{job_id=~"$job_id"}']),
    ("Test error", "error (ratio)", False, ['esgd_job_test_error_ratio{job_id=~"$job_id"}']),
    ("γ and ρ schedules", "coupling", True, ['esgd_job_gamma{job_id=~"$job_id"}', 'esgd_job_rho{job_id=~"$job_id"}']),
    ("Samples/s", "samples/s", False,
     ['sum by (job_id) (rate(esgd_job_samples_total{job_id=~"$job_id"}[$__rate_interval]))']),
    ("Round time: compute vs communication", "seconds per round", False,
     ['sum by (job_id, phase) (rate(esgd_job_round_duration_seconds_sum{job_id=~"$job_id"}[$__rate_interval])) '
      '/ sum by (job_id, phase) (rate(esgd_job_round_duration_seconds_count{job_id=~"$job_id"}[$__rate_interval]))']),
    ("Replica spread and ‖x − μ̄‖", "norm", False, ['esgd_job_replica_spread{job_id=~"$job_id"}',
                                                    'esgd_job_entropy_gradient_norm{job_id=~"$job_id"}']),
]


def fill(expr: str, job_id: str) -> str:
    return expr.replace("$job_id", re.escape(job_id)).replace("$__rate_interval", RATE_INTERVAL)


def query_range(prometheus: str, expr: str, start: float, end: float, step: float, timeout: float = 30) -> list:
    """``/api/v1/query_range`` → list of (labels, [(t, value)])."""
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus.rstrip('/')}/api/v1/query_range?{params}", timeout=timeout) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus: {body.get('error', body)}")
    return [(s["metric"], [(float(t), float(v)) for t, v in s["values"]]) for s in body["data"]["result"]]


def _label(metric: dict, expr: str) -> str:
    """A legend entry: the expression's metric, plus the labels that tell series apart."""
    name = re.search(r"esgd_[a-z_]+", expr).group(0).removeprefix("esgd_job_").removeprefix("esgd_")
    name = re.sub(r"_(sum|count|bucket|total)$", "", name)
    extra = [f"{k}={v}" for k, v in metric.items() if k not in ("__name__", "job_id", "job", "instance", "component")]
    return name + (f" [{', '.join(extra)}]" if extra else "")


def plot_job(prometheus: str, job_id: str, start: float, end: float, out: str) -> dict:
    """Draw the panels for ``job_id`` between ``start`` and ``end`` (unix seconds) into ``out``;
    return how many series each panel got."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(1.0, (end - start) / 300)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    counts = {}
    for ax, (title, ylabel, log, exprs) in zip(axes.flat, PANELS):
        n = 0
        for expr in exprs:
            for metric, values in query_range(prometheus, fill(expr, job_id), start, end, step):
                if values:
                    ax.plot([t - start for t, _ in values], [v for _, v in values], label=_label(metric, expr))
                    n += 1
        counts[title] = n
        ax.set_title(title)
        ax.set_xlabel("seconds since start")
        ax.set_ylabel(ylabel)
        if log and n:
            ax.set_yscale("log")
        if n:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    fig.suptitle(f"esgd job {job_id}")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return counts
