"""The ``esgd`` commands that read a job's history: plot."""
from __future__ import annotations

import os
import sys
import time


def cmd_plot(args) -> int:
    """Draw the job's dashboard curves from Prometheus into a PNG."""
    from services.commands import _client
    from services.plot import plot_job

    with _client(args) as client:
        job = client.get_job(args.id)
    if not job.start_time.seconds:
        print(f"esgd: error: {job.name} has not started yet: nothing to plot", file=sys.stderr)
        return 2
    start = job.start_time.ToNanoseconds() / 1e9 - 10
    end = (job.end_time.ToNanoseconds() / 1e9 if job.end_time.seconds else time.time()) + 10
    counts = plot_job(args.prometheus, job.id, start, end, args.output)
    print(f"wrote {args.output} ({', '.join(f'{k}: {v}' for k, v in counts.items())} series)")
    return 0


def add_history_commands(sub, conn) -> None:
    plot = sub.add_parser("plot", parents=conn, help="PNG of a job's main curves from Prometheus")
    plot.add_argument("id", help="job id or jobs/ID")
    plot.add_argument("-o", "--output", required=True, metavar="FILE.png", help="where to write the PNG")
    plot.add_argument("--prometheus", default=os.environ.get("ESGD_PROMETHEUS") or "http://127.0.0.1:9090",
                      help="Prometheus URL (default $ESGD_PROMETHEUS or http://127.0.0.1:9090)")
    plot.set_defaults(func=cmd_plot)
