"""``esgd plot``: figures of jobs' curves, drawn with matplotlib.

:func:`plot_histories` draws one or more jobs from their own ``metrics.jsonl``
(services.history), against rounds, effective epochs or gradient evaluations, with membership
changes and failures marked: what a paper or a comparison of methods needs, with no
Prometheus. :func:`plot_job` (``esgd plot --prometheus URL``) draws the live server-level panels
instead: its queries are the Grafana dashboard's own (deploy/grafana/dashboards/esgd.json; a
test keeps them identical), with ``$job_id`` and ``$__rate_interval`` filled in, so the picture
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


# ----- a job's own history (metrics.jsonl) ---------------------------------------------------
# (title, y label, log scale, [(series, legend entry, line style, scale)]): scale turns ratios into %
HISTORY_PANELS: list[tuple[str, str, bool, list[tuple[str, str, str, float]]]] = [
    ("Loss", "cross-entropy loss (nats)", False,
     [("loss", "train (mean over replicas)", "-", 1.0), ("test_loss", "test (reference model)", "--", 1.0)]),
    ("Error", "error (%)", False,
     [("train_error", "train (mean over replicas)", "-", 100.0),
      ("test_error", "test (reference model)", "--", 100.0)]),
    ("Coupling γ and ρ", "coupling (log scale)", True,
     [("gamma", "γ (scope)", "-", 1.0), ("rho", "ρ (elastic, Parle)", "--", 1.0)]),
    ("Throughput", "samples / s (all replicas)", False, [("samples_per_s", "samples / s", "-", 1.0)]),
    ("Round time", "seconds per round", False,
     [("compute_s", "compute (slowest replica)", "-", 1.0), ("comm_s", "communication + wait", "--", 1.0)]),
    ("Replica spread", "L2 norm", False,
     [("spread", "spread of the replicas", "-", 1.0), ("grad_norm", "‖x − μ̄‖ (entropy gradient)", "--", 1.0)]),
]
EVAL_SERIES = ("test_loss", "test_error")  # sparse: drawn with dots
# event kind → (marker, vertical line style, legend entry)
EVENT_STYLES = {"failed": ("x", ":", "replica failed"), "scale_failed": ("X", ":", "scaling failed"),
                "checkpoint_failed": ("s", ":", "checkpoint write failed"),
                "restarted": ("o", ":", "replica restarted"), "added": ("^", "--", "replica added"),
                "removed": ("v", "--", "replica removed"), "resumed": ("D", "-.", "resumed from a checkpoint")}


def history_title(histories) -> str:
    """A title naming the spec(s): one job's setup in full, or the names compared."""
    if len(histories) == 1:
        h, m = histories[0], histories[0].meta
        parts = [m.get("strategy"), f"{m['model']} on {m.get('dataset')}" if m.get("model") else "",
                 f"K = {m['replicas']}" if m.get("replicas") else ""]
        setup = ", ".join(p for p in parts if p)
        job = f"  (job {m['id']})" if m.get("id") else ""
        return f"{m.get('name') or h.label}" + (f": {setup}" if setup else "") + job
    names = [h.meta.get("name") or h.label for h in histories]
    shown = " vs ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"{shown}  ({len(histories)} jobs)"


def plot_histories(histories, x: str, out: str, title: str | None = None, dpi: int = 150) -> dict:
    """Draw jobs' histories (services.history.History, each with ``label``) into ``out``; the
    format follows its extension (png, pdf, svg). Colour tells the jobs apart, line style the
    series within a panel; each event is a vertical line in every panel with its symbol on top.
    Returns {"panels": {title: series drawn}, "events": events marked}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from services.history import X_AXES

    if x not in X_AXES:
        raise ValueError(f"--x: must be one of {', '.join(X_AXES)}; got {x!r}")
    with plt.rc_context({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8}):
        fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), constrained_layout=True)
        counts, seen_events = {}, {}
        for ax, (ptitle, ylabel, log, series) in zip(axes.flat, HISTORY_PANELS):
            n, styles, positive = 0, [], False
            for j, h in enumerate(histories):
                for name, legend, ls, scale in series:
                    xs, ys = h.series(name, x)
                    if not xs:
                        continue
                    ys = [v * scale for v in ys]
                    positive = positive or any(v > 0 for v in ys)
                    sparse = name in EVAL_SERIES
                    ax.plot(xs, ys, color=f"C{j % 10}", linestyle=ls, linewidth=1.4,
                            marker="o" if sparse else None, markersize=3.5)
                    n += 1
                    if (legend, ls, sparse) not in styles:
                        styles.append((legend, ls, sparse))
            for j, h in enumerate(histories):
                for mx, kind, _ in h.markers(x):
                    marker, ls, _legend = EVENT_STYLES.get(kind, ("*", ":", kind))
                    ax.axvline(mx, color=f"C{j % 10}", linestyle=ls, linewidth=1.0, alpha=0.7)
                    ax.plot([mx], [1.0], marker=marker, color=f"C{j % 10}", markersize=8, clip_on=False,
                            markerfacecolor="none", markeredgewidth=1.5,  # open: coincident events stay visible
                            transform=ax.get_xaxis_transform(), linestyle="none")
                    seen_events[kind] = seen_events.get(kind, 0) + (ax is axes.flat[0])
            counts[ptitle] = n
            ax.set_title(ptitle, pad=10)  # room for the event symbols on the top edge
            ax.set_xlabel(X_AXES[x])
            ax.set_ylabel(ylabel)
            if log and positive:
                ax.set_yscale("log")
            if x == "grad-evals":
                ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
            if n and len(styles) > 1:
                ax.legend(handles=[Line2D([], [], color="0.3", linestyle=ls, marker="o" if sp else None, markersize=3.5,
                                          label=legend) for legend, ls, sp in styles], loc="best")
            elif not n:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.grid(alpha=0.3)
        handles = [Line2D([], [], color=f"C{j % 10}", linewidth=2.5, label=h.label) for j, h in enumerate(histories)]
        handles += [Line2D([], [], color="0.3", linestyle=EVENT_STYLES.get(k, ("*", ":", k))[1],
                           marker=EVENT_STYLES.get(k, ("*", ":", k))[0], markerfacecolor="none",
                           label=EVENT_STYLES.get(k, ("*", ":", k))[2])
                    for k in seen_events]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=9, frameon=False)
        fig.suptitle(title or history_title(histories), fontsize=13)
        fig.savefig(out, dpi=dpi)
        plt.close(fig)
    return {"panels": counts, "events": sum(seen_events.values())}
