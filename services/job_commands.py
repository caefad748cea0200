"""The ``esgd`` commands about one job's output and lifetime: ``logs`` and ``delete``.

    esgd logs ID [--follow] [--replica N|runner] [--tail N] [--json]
    esgd delete ID

``logs`` prints the job's stored runner and replica output (StreamJobLogs), one line each,
tagged with its source and round; with ``--follow`` it keeps printing new lines until the job
ends. When the server dropped older lines (the job's log cap, ``esgd serve --max-log-bytes``)
it says so on stderr. ``delete`` removes a finished job's rows and files (DeleteJob); a queued
or running job must be cancelled first.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from services.cli_common import connect, positive_int


def _replica(text: str) -> int:
    if text.strip().lower() == "runner":
        return -1
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a replica index (0, 1, …) or 'runner', got {text!r}") from None
    if value < -1:
        raise argparse.ArgumentTypeError(f"expected a replica index >= 0 or 'runner', got {value}")
    return value


def format_line(line) -> str:
    when = datetime.fromtimestamp(line.time.ToNanoseconds() / 1e9).strftime("%H:%M:%S")
    src = "runner" if line.replica < 0 else f"replica {line.replica}"
    kind = line.level or line.stream
    return f"{when} [{src} round {line.round}] {kind}: {line.text}"


def cmd_logs(args) -> int:
    dropped = 0
    with connect(args) as client:
        for chunk in client.logs(args.id, follow=args.follow, replica=args.replica, tail=args.tail or 0):
            if chunk.dropped > dropped:
                print(f"esgd: {chunk.dropped - dropped} older log lines were dropped (the job's log cap, "
                      "esgd serve --max-log-bytes)", file=sys.stderr, flush=True)
                dropped = chunk.dropped
            for line in chunk.lines:
                if args.json:
                    print(json.dumps({"n": line.n, "time": line.time.ToNanoseconds() / 1e9, "source": line.source,
                                      "replica": line.replica, "round": line.round, "stream": line.stream,
                                      "level": line.level, "text": line.text}))
                else:
                    print(format_line(line))
            sys.stdout.flush()
    return 0


def cmd_delete(args) -> int:
    with connect(args) as client:
        deleted = client.delete_job(args.id)
    print(f"deleted {deleted[0]}" + (f" and its {len(deleted) - 1} trials" if len(deleted) > 1 else ""))
    return 0


def add_job_commands(sub, conn: list) -> None:
    logs = sub.add_parser("logs", parents=conn, help="print a job's runner and replica output")
    logs.add_argument("id", help="job id or jobs/ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the job ends")
    logs.add_argument("--replica", type=_replica, metavar="N",
                      help="only replica N's lines ('runner': only the runner's)")
    logs.add_argument("--tail", type=positive_int, metavar="N", help="only the last N lines (then --follow)")
    logs.add_argument("--json", action="store_true", help="one JSON object per line")
    logs.set_defaults(func=cmd_logs)

    delete = sub.add_parser("delete", parents=conn,
                            help="delete a finished job: its records, run directory, checkpoints and logs")
    delete.add_argument("id", help="job id or jobs/ID")
    delete.set_defaults(func=cmd_delete)
