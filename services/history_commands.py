"""The ``esgd`` commands that read a job's history: plot and export.

Both download the job's own ``metrics.jsonl`` through the API (DownloadArtifact), so they work
for any job the server holds, finished or running, with no Prometheus; ``esgd plot
--prometheus URL`` draws the live server-level panels instead. A run directory of ``esgd run``
(or its ``metrics.jsonl``) may stand in for a job id. Errors name what failed: the job id, the
``--server`` address, the ``--prometheus`` URL, or the file and line.
"""
from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

from services.cli_common import reaching as _reaching
from services.history import X_AXES, History, HistoryError, describe_spec, read_metrics


def _local(target: str) -> History | None:
    """A run directory or metrics.jsonl given instead of a job id, else None."""
    path = Path(target)
    if not path.exists():
        if "/" in target.removeprefix("jobs/"):
            raise HistoryError(f"ID: {target} is neither a job id nor an existing run directory", "ID")
        return None
    metrics = path / "metrics.jsonl" if path.is_dir() else path
    if not metrics.is_file():
        raise HistoryError(f"{path}: a directory without metrics.jsonl (give a job id or a run directory)", "ID")
    h = read_metrics(metrics)
    spec_file = metrics.parent / "spec.yaml"
    if spec_file.is_file():
        import yaml

        try:
            h.meta = describe_spec(yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {})
        except (yaml.YAMLError, OSError, AttributeError):
            h.meta = {}
    h.label = f"{metrics.parent.name} · {h.meta.get('name') or metrics.name}" + (
        f" ({h.meta['strategy']})" if h.meta.get("strategy") else "")
    return h


def load_history(client, target: str, workdir: Path) -> tuple[History, object]:
    """A job's history, downloaded through the API (or read from a local run directory), and
    its Job message (None for a local one)."""
    from services.client import ApiError
    from services.cli_common import spec_of, state_name

    if (h := _local(target)) is not None:
        return h, None
    job = client.get_job(target)
    dest = workdir / f"{job.id}.metrics.jsonl"
    none_yet = HistoryError(f"job {job.id} has no metrics yet (state {state_name(job.state)}, no round recorded): "
                            "nothing to draw", "ID")
    try:
        client.download_artifact(job.id, "metrics.jsonl", dest)
    except ApiError as exc:
        if exc.code.name != "NOT_FOUND":
            raise
        raise none_yet from None
    h = read_metrics(dest, source=f"job {job.id}: metrics.jsonl", require_rounds=False)
    if not h.rounds:
        raise none_yet
    h.meta = {**describe_spec(spec_of(job)), "id": job.id}
    h.label = f"{job.id} · {h.meta['name']}" + (f" ({h.meta['strategy']})" if h.meta["strategy"] else "")
    return h, job


def _default_output(ids: list[str]) -> str:
    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", Path(i.removeprefix("jobs/")).name) for i in ids]
    return "plot-" + "-".join(names[:3]) + ("-etc" if len(names) > 3 else "") + ".png"


def _check_output(out: str) -> None:
    """Refuse an output the figure cannot be saved as, before anything is downloaded."""
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    ext = Path(out).suffix.lower().lstrip(".")
    if ext not in formats:
        raise HistoryError(f"-o: {out}: the extension must be .png, .pdf or .svg "
                           f"(or {', '.join(sorted(formats))})", "-o")
    if not Path(out).resolve().parent.is_dir():
        raise HistoryError(f"-o: {out}: the directory {Path(out).parent} does not exist", "-o")


def cmd_plot(args) -> int:
    """Draw jobs' curves from their metrics.jsonl (or, with --prometheus, one job's live panels)."""
    if args.prometheus:
        return _plot_prometheus(args)
    from services.plot import plot_histories

    out = args.output or _default_output(args.ids)
    _check_output(out)
    with tempfile.TemporaryDirectory(prefix="esgd-plot-") as tmp, _reaching(args) as client:
        histories = [load_history(client, target, Path(tmp))[0] for target in args.ids]
    info = plot_histories(histories, args.x, out, title=args.title)
    panels = ", ".join(f"{k} {v}" for k, v in info["panels"].items())
    print(f"wrote {out}: {len(histories)} job(s) against {X_AXES[args.x]}; series per panel: {panels}; "
          f"{info['events']} event(s) marked")
    return 0


def _plot_prometheus(args) -> int:
    """The dashboard's panels for one job, from Prometheus (live server-level metrics)."""
    import urllib.error

    from services.cli_common import state_name
    from services.plot import plot_job

    if len(args.ids) != 1:
        raise HistoryError("--prometheus: draws one job; give a single ID", "--prometheus")
    out = args.output or _default_output(args.ids)
    _check_output(out)
    with _reaching(args) as client:
        job = client.get_job(args.ids[0])
    if not job.start_time.seconds:
        raise HistoryError(f"job {job.id} has not started yet (state {state_name(job.state)}): nothing to plot", "ID")
    start = job.start_time.ToNanoseconds() / 1e9 - 10
    end = (job.end_time.ToNanoseconds() / 1e9 if job.end_time.seconds else time.time()) + 10
    try:
        counts = plot_job(args.prometheus, job.id, start, end, out)
    except (urllib.error.URLError, ValueError, RuntimeError) as exc:  # unreachable, or not a Prometheus: exit 1
        import grpc

        from services.client import ApiError

        unreachable = isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError)
        reason = getattr(exc, "reason", None) or exc
        raise ApiError(grpc.StatusCode.UNAVAILABLE if unreachable else grpc.StatusCode.INTERNAL,
                       f"--prometheus {args.prometheus}: cannot query Prometheus: {reason}") from None
    print(f"wrote {out} ({', '.join(f'{k}: {v}' for k, v in counts.items())} series)")
    return 0


def cmd_export(args) -> int:
    """Write each job's metrics.jsonl as a TensorBoard run under --tensorboard DIR."""
    import yaml

    from services.cli_common import spec_of
    from services.export import check_step_axis, run_name, write_tensorboard

    check_step_axis(args.x)  # before any download or directory
    root = Path(args.tensorboard)
    with tempfile.TemporaryDirectory(prefix="esgd-export-") as tmp, _reaching(args) as client:
        loaded = [(t, *load_history(client, t, Path(tmp))) for t in args.ids]
    for target, h, job in loaded:
        if job is not None:
            name, start = run_name(job.id, h.meta.get("name", "")), (
                job.start_time.ToNanoseconds() / 1e9 if job.start_time.seconds else None)
            spec_text = yaml.safe_dump(spec_of(job), sort_keys=False)
        else:
            run_dir = Path(target).resolve() if Path(target).is_dir() else Path(target).resolve().parent
            name, start, spec_text = run_name(run_dir.name, h.meta.get("name", "")), None, ""
        info = write_tensorboard(h, root / name, args.x, start_time=start, spec_text=spec_text)
        print(f"wrote {info['dir']}: {info['scalars']} scalars in {info['tags']} tags by {args.x}, "
              f"{info['events']} event(s)")
    print(f"view with: tensorboard --logdir {root}")
    return 0


def add_history_commands(sub, conn) -> None:
    plot = sub.add_parser("plot", parents=conn,
                          help="figure of jobs' curves from their own metrics.jsonl (several jobs: compared)")
    plot.add_argument("ids", nargs="+", metavar="ID",
                      help="job id(s) or jobs/ID (or a run directory of esgd run); several are drawn on one figure")
    plot.add_argument("-o", "--output", metavar="FILE",
                      help="where to write it: .png, .pdf or .svg (default plot-ID[-ID…].png)")
    plot.add_argument("--x", choices=tuple(X_AXES), default="rounds",
                      help="x axis: outer rounds, effective epochs or gradient evaluations (default rounds)")
    plot.add_argument("--title", help="figure title (default: the spec name(s) and setup)")
    plot.add_argument("--prometheus", metavar="URL",
                      help="instead, draw one job's live server-level panels (the Grafana dashboard's) from "
                           "this Prometheus")
    plot.set_defaults(func=cmd_plot)

    export = sub.add_parser("export", parents=conn, help="write jobs' metrics.jsonl as TensorBoard event files")
    export.add_argument("ids", nargs="+", metavar="ID", help="job id(s) or jobs/ID (or a run directory of esgd run)")
    export.add_argument("--tensorboard", required=True, metavar="DIR",
                        help="log directory: each job becomes the run DIR/<id>-<spec name>")
    export.add_argument("--x", choices=tuple(X_AXES), default="rounds",
                        help="TensorBoard step: rounds or grad-evals (integers; default rounds)")
    export.set_defaults(func=cmd_export)
