"""What the ``esgd`` commands share: reading a spec file with ``--set`` overrides, the
connection flags and the client they make, argument types, and how a job's fields print.

Its own module so that the command modules (services.commands, services.history_commands,
reproduce.cli) import it and not each other: the CLI has no import cycle.
"""
from __future__ import annotations

import argparse
import os
from contextlib import contextmanager
from pathlib import Path

import yaml

INPUT_CODES = ("INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED",
                "PERMISSION_DENIED", "OUT_OF_RANGE", "ALREADY_EXISTS")
STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")



def _override(data: dict, assignment: str) -> None:
    """Apply ``section.key=value`` (value parsed as YAML) to a spec mapping."""
    from core.spec import SpecError, _YamlLoader

    if "=" not in assignment:
        raise SpecError(f"--set: expected FIELD=VALUE (e.g. inner.lr=0.05), got {assignment!r}", "--set")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"--set: {key} is not inside a section", key)
    node[parts[-1]] = yaml.load(raw, Loader=_YamlLoader)


def load_spec(path: str, overrides: list[str]):
    from core.spec import JobSpec, SpecError, _YamlLoader

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"job file {p} does not exist", "JOB")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_YamlLoader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(f"{p}: not valid YAML/JSON: {exc}", "JOB") from None
    if not isinstance(data, dict):
        raise SpecError(f"{p}: a job file must hold a mapping of fields", "JOB")
    for assignment in overrides:
        _override(data, assignment)
    return JobSpec.parse(data)


def connect(args):
    """A JobClient from the connection flags; the token is --token, else --token-file, else $ESGD_TOKEN."""
    from services.client import JobClient

    token = args.token
    if not token and args.token_file:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    return JobClient(args.server, token=token or os.environ.get("ESGD_TOKEN") or None, tls_ca=args.tls_ca,
                     timeout=args.timeout)


@contextmanager
def reaching(args):
    """A client whose unreachable server is reported as ``--server ADDRESS``, not a bare refusal."""
    import grpc

    from services.client import ApiError

    try:
        with connect(args) as client:
            yield client
    except ApiError as exc:
        if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and \
                not exc.details.startswith("--server"):
            raise ApiError(exc.code, f"--server {args.server}: cannot reach the esgd server ({exc.details})") from None
        raise


def state_name(value: int) -> str:
    from services.api import jobs_pb2

    return jobs_pb2.State.Name(value)


def fmt_time(ts) -> str:
    from datetime import timezone

    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def spec_of(job) -> dict:
    """The job's spec with defaults filled in (as sent, if it no longer parses here)."""
    from core.spec import JobSpec, SpecError
    from services.client import proto_to_spec_dict

    data = proto_to_spec_dict(job.spec)
    try:
        return JobSpec.parse(data).to_dict()
    except SpecError:
        return data


def number(kind: type, what: str, low: float, high: float = float("inf"), *, low_open: bool = False):
    """An argparse type: ``kind`` (int or float) within [low, high] (``(low, high]`` with
    ``low_open``); the error says what was expected, e.g. "expected a number of CPUs such as
    0.1, got 'x'" or "must be in (0, 1024], got 0"."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low or (low_open and value == low) or value > high:
            bounds = (f"at least {_num(low)}" if high == float("inf") and not low_open
                      else f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}]")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {_num(value)}")
        return value
    return parse


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


positive_int = number(int, "a positive integer", 1)


def connection_flags() -> argparse.ArgumentParser:
    conn = argparse.ArgumentParser(add_help=False)
    g = conn.add_argument_group("connection")
    g.add_argument("--server", default=os.environ.get("ESGD_SERVER") or "127.0.0.1:50051",
                   help="HOST:PORT of the esgd server (default $ESGD_SERVER or 127.0.0.1:50051)")
    g.add_argument("--token", help="bearer token (default: --token-file, else $ESGD_TOKEN)")
    g.add_argument("--token-file", help="file holding the bearer token")
    g.add_argument("--tls-ca", help="CA certificate (PEM) to verify the server; enables TLS")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    return conn
