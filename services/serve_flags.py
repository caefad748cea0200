"""``esgd serve``'s flags. The limits among them become one validated
:class:`coordinator.limits.ServiceLimits` (each error names its flag); docs/security.md lists
them with their defaults and reasons."""
from __future__ import annotations

import argparse

from services.cli_common import number


def cmd_serve(args) -> int:
    from core.spec import SpecError
    from services.server import serve_main  # imported only when serving

    if bool(args.tls_cert) != bool(args.tls_key):
        raise SpecError("--tls-cert and --tls-key go together", "--tls-cert")
    return serve_main(args) or 0


def nice_value(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..19, got {text!r}") from None
    if not 0 <= value <= 19:
        raise argparse.ArgumentTypeError(f"must be in 0..19 (0 = no change, 19 = lowest priority), got {value}")
    return value


def _count(low: int):
    return number(int, f"an integer ≥ {low}", low)


_cpus = number(float, "a number of CPUs such as 0.1", 0, 1024, low_open=True)
_seconds = number(float, "a number of seconds such as 600", 0, 30 * 86400)


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days such as 30, got {text!r}") from None
    if not 0 < value <= 36500:
        raise argparse.ArgumentTypeError(f"must be in (0, 36500] days, got {value:g}")
    return value


def _bytes(text: str) -> int:
    from worker.data.limits import parse_size

    try:
        return parse_size(text, "size")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_serve_command(sub) -> None:
    serve = sub.add_parser("serve", help="run the gRPC job server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=50051, help="port (default 50051; 0 = pick a free one)")
    serve.add_argument("--data-dir", default="./esgd-data",
                       help="job store and run directories (default ./esgd-data; one server per directory)")
    serve.add_argument("--ray-address", help="attach to an existing Ray cluster instead of starting one")
    serve.add_argument("--num-cpus", type=int, help="CPUs for the embedded Ray (default: all)")
    serve.add_argument("--max-concurrent-jobs", type=int, default=0, help="jobs run at once (0 = as many as fit)")
    serve.add_argument("--token-file", help="bearer tokens clients must send: one bare token, or lines "
                                            "'NAME TOKEN [admin|user]' (default: no auth on loopback)")
    serve.add_argument("--tls-cert", help="server certificate (PEM); with --tls-key enables TLS")
    serve.add_argument("--tls-key", help="server private key (PEM)")
    serve.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics port (default 0 = off)")
    serve.add_argument("--metrics-host", default="127.0.0.1", help="metrics address (default 127.0.0.1)")
    serve.add_argument("--metrics-retention", type=_seconds, default=600.0, metavar="SECONDS",
                       help="how long a finished job's per-job series stay exported (default 600)")
    serve.add_argument("--ray-metrics-port", type=int, default=0,
                       help="port of the embedded Ray's own metrics endpoint (default 0 = Ray picks)")
    serve.add_argument("--api-nice", type=nice_value, default=10,
                       help="nice value (0-19) of the threads answering API calls, so that clients yield "
                            "to training (default 10; 0 = same priority as the jobs; never above the process's)")
    serve.add_argument("--port-file", help="write the bound port to this file once serving")
    serve.add_argument("--data-root", action="append", default=[], metavar="DIR",
                       help="a folder jobs may read data from (repeatable; default /usr/share/datasets and "
                            "DATA_DIR/datasets): any other dataset.path is refused")
    serve.add_argument("--data-max-bytes", metavar="SIZE",
                       help="cap on one data file after decompression (default 2G, or $ESGD_DATA_MAX_BYTES)")
    serve.add_argument("--data-max-compressed-bytes", metavar="SIZE",
                       help="cap on one compressed data file on disk (default 1G)")
    serve.add_argument("--data-max-text-bytes", metavar="SIZE", help="cap on one text corpus (default 256M)")
    lim = serve.add_argument_group("limits (docs/security.md)")
    lim.add_argument("--max-spec-bytes", type=_bytes, metavar="SIZE", help="largest job spec (default 64K)")
    lim.add_argument("--min-cpus-per-replica", type=_cpus, metavar="CPUS",
                     help="smallest resources.cpus_per_replica accepted (default 0.1)")
    lim.add_argument("--max-replicas-per-node", type=_count(1), metavar="N",
                     help="replica processes a node may host (default 2 × its CPUs)")
    lim.add_argument("--max-queued-jobs", type=_count(1), metavar="N", help="queued jobs on this server (default 1000)")
    lim.add_argument("--max-queued-per-principal", type=_count(1), metavar="N",
                     help="queued jobs per principal (default 100)")
    lim.add_argument("--max-streams", type=_count(1), metavar="N",
                     help="concurrent streams: watches, downloads, health watches (default 256)")
    lim.add_argument("--max-page-bytes", type=_bytes, metavar="SIZE", help="largest ListJobs page (default 1M)")
    lim.add_argument("--max-log-bytes", type=_bytes, metavar="SIZE",
                     help="a job's stored logs (runner and replicas); the oldest lines are dropped beyond it "
                          "(default 4M, at least 4K)")
    ret = serve.add_argument_group("retention (finished jobs: rows and files; on start and hourly)")
    ret.add_argument("--retain-jobs", type=_count(0), metavar="N",
                     help="keep only the newest N finished jobs (default: all)")
    ret.add_argument("--retain-days", type=_days, metavar="D",
                     help="remove finished jobs that ended more than D days ago (default: never)")
    serve.set_defaults(func=cmd_serve)
