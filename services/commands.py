"""The ``esgd`` commands that talk to a server: serve, submit, list, get, watch, cancel,
download, scale, flatness, health (plot: services.history_commands). Each prints tables or readable lines, never a traceback (see services.cli)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from core.errors import SpecError
from services.cli_common import (STATES, connect, connection_flags, fmt_time, load_spec, positive_int, reaching,
                                 spec_of, state_name)
from services.serve_flags import add_serve_command


def _test_error(job) -> str:
    if job.HasField("summary"):
        return f"{job.summary.test_error:.4f}"
    return f"{job.last_evaluation.test_error:.4f}" if job.HasField("last_evaluation") else "-"


def _eval_line(e) -> str:
    return (f"round {e.round} epoch {e.epoch:.3f} test_error {e.test_error:.4f} test_loss {e.test_loss:.4f} "
            f"grad_evals {e.grad_evals_total} data_passes/replica {e.data_passes_per_replica:.2f} "
            f"wall {e.wall_seconds:.1f}s")


def _summary_line(s) -> str:
    return (f"test_error {s.test_error:.4f} test_loss {s.test_loss:.4f} rounds {s.rounds} epochs {s.epochs:.3f} "
            f"grad_evals {s.grad_evals_total} data_passes/replica {s.data_passes_per_replica:.2f} "
            f"wall {s.wall_seconds:.1f}s" + (
                f"  flatness: λ_max {s.top_eigenvalue:.4g} trace {s.hessian_trace:.4g} "
                f"near-zero {s.near_zero_fraction:.3f}" if s.HasField("top_eigenvalue") else ""))


def _error_lines(err) -> list[str]:
    where = [f"replica {err.replica}"] if err.replica >= 0 else []
    where += [f"round {err.round}"] if err.round >= 0 else []
    lines = [f"{err.code}: {err.message}" + (f" ({', '.join(where)})" if where else "")]
    return lines + ([f"root cause: {err.root_cause}"] if err.root_cause else [])


def cmd_submit(args) -> int:
    spec = load_spec(args.job, args.set)  # validated here first: errors name the field
    with connect(args) as client:
        job = client.create_job(spec.resolved().to_dict(), request_id=args.request_id)
        print(job.name, flush=True)
        return follow(client, job.name, args.no_progress) if args.watch else 0


def cmd_list(args) -> int:
    with connect(args) as client:
        if args.all:
            jobs, token = list(client.iter_jobs(args.state, page_size=args.page_size)), ""
        else:
            page = client.list_jobs(args.state, page_size=args.page_size, page_token=args.page_token)
            jobs, token = list(page.jobs), page.next_page_token
    rows = [("NAME", "STATE", "STRATEGY", "MODEL", "K", "ROUND/TOTAL", "TEST_ERROR", "CREATED")]
    for job in jobs:
        spec, p = spec_of(job), job.progress
        total = str(p.total_rounds) if p.total_rounds else "-"
        rows.append((job.name, state_name(job.state), str(spec.get("strategy", "-")), str(spec.get("model", "-")),
                     str(spec.get("replicas", "-")), f"{p.round}/{total}", _test_error(job), fmt_time(job.create_time)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if token:
        print(f"(more: esgd list --page-token {token})")
    return 0


def describe(job) -> str:
    """A readable multi-line description of a job."""
    spec, p, lines = spec_of(job), job.progress, []
    ds, train = spec.get("dataset", {}), spec.get("train", {})
    budget = f"epochs {train['epochs']}" if train.get("epochs") else f"outer_steps {train.get('outer_steps')}"
    lines.append(f"name:        {job.name}")
    lines.append(f"state:       {state_name(job.state)}" + (f" (restarts {job.restarts})" if job.restarts else ""))
    lines.append(f"spec:        {spec.get('strategy')} {spec.get('model')}/{ds.get('name')} K={spec.get('replicas')} "
                 f"L={spec.get('inner', {}).get('steps')} batch {train.get('batch_size')} {budget} "
                 f"(name {spec.get('name')})")
    lines.append(f"times:       created {fmt_time(job.create_time)}, started {fmt_time(job.start_time)}, "
                 f"ended {fmt_time(job.end_time)}")
    if job.HasField("sweep"):  # a sweep: its standing, best trial and trials
        w = job.sweep
        lines.append(f"sweep:       {w.started}/{w.trials} trials started, {w.succeeded} finished, {w.stopped_early} "
                     f"stopped early, {w.failed} failed; best {w.best_trial or '-'}" + (
                         f" {w.metric} {w.best_value:.4f} {dict(w.best_config)}" if w.best_trial else ""))
        lines += [f"trial:       {c}" for c in job.children]
    if job.parent:
        lines.append(f"trial of:    {job.parent} {dict(job.trial.config)}{' (stopped early)' * job.trial.stopped_early}")
    if job.HasField("progress"):
        lines.append(f"progress:    round {p.round}/{p.total_rounds} epoch {p.epoch:.3f} loss {p.loss:.4f} "
                     f"train_error {p.train_error:.4f} gamma {p.gamma:.3g} rho {p.rho:.3g} lr {p.lr:.3g} "
                     f"samples/s {p.samples_per_second:.0f}")
    if job.HasField("last_evaluation"):
        lines.append(f"evaluation:  {_eval_line(job.last_evaluation)}")
    if job.HasField("summary"):
        lines.append(f"summary:     {_summary_line(job.summary)}")
    if job.HasField("error"):
        lines += [f"error:       {line}" for line in _error_lines(job.error)]
    if job.checkpoint_round:
        lines.append(f"checkpoint:  round {job.checkpoint_round}")
    return "\n".join(lines)


def cmd_get(args) -> int:
    from google.protobuf import json_format

    with connect(args) as client:
        job = client.get_job(args.id)
    print(json_format.MessageToJson(job, preserving_proto_field_name=True) if args.json else describe(job))
    return 0


def _watch(client, name: str, no_progress: bool = False, reconnect_s: float = 60.0) -> int:
    """Follow a job to its end: a progress bar, a line per evaluation; reconnect after a dropped stream.

    Returns 0 SUCCEEDED, 1 FAILED, 3 CANCELLED.
    """
    import grpc
    from tqdm import tqdm

    from services.client import TERMINAL, ApiError

    bar = tqdm(total=None, unit="round", dynamic_ncols=True, disable=True if no_progress else None)
    seq, state, error, summary, lost_at, delay = 0, None, None, None, None, 0.2

    def set_state(new: int, reason: str = "") -> None:
        nonlocal state
        if new != state:
            state = new
            bar.write(f"{name}: {state_name(new)}" + (f" ({reason})" if reason else ""))

    def set_progress(p) -> None:
        if p.total_rounds and bar.total != p.total_rounds:
            bar.total = p.total_rounds
        if p.round > bar.n:
            bar.update(p.round - bar.n)
        bar.set_postfix({"loss": f"{p.loss:.3f}", "γ": f"{p.gamma:.2g}", "smp/s": f"{p.samples_per_second:.0f}"})

    def on_snapshot(job) -> None:
        nonlocal error, summary
        set_progress(job.progress)
        set_state(job.state)
        error = job.error if job.HasField("error") else error
        summary = job.summary if job.HasField("summary") else summary

    def on_replica(r) -> None:
        who = f"replica {r.replica} " if r.replica >= 0 else ""
        bar.write(f"round {r.round}: {who}{r.kind}: {r.cause}")

    def on_trial(t) -> None:  # a sweep's trial started, reported or ended
        bar.write(f"{t.trial}: {t.kind} " + (str(dict(t.config)) if t.kind == "started" else
                                             f"epoch {t.epoch:.3f} value {t.value:.4f} {t.message}"))

    def on_error(e) -> None:
        nonlocal error
        error = e

    def on_summary(s) -> None:
        nonlocal summary
        summary = s

    # JobEvent's kind → what it does here (a kind this client does not know is skipped)
    handlers = {"snapshot": on_snapshot, "state_change": lambda c: set_state(c.state, c.reason),
                "progress": set_progress, "evaluation": lambda e: bar.write(_eval_line(e)),
                "replica": on_replica, "trial": on_trial, "error": on_error, "summary": on_summary}
    try:
        while True:
            try:
                for ev in client.watch(name, after_seq=seq or None):  # None: snapshot first
                    seq, lost_at, delay = max(seq, ev.seq), None, 0.2
                    kind = ev.WhichOneof("kind")
                    if kind in handlers:
                        handlers[kind](getattr(ev, kind))
                if state not in TERMINAL:  # the stream ended early (a server going down): ask, then resume
                    job = client.get_job(name)
                    set_state(job.state)
                    if state not in TERMINAL:
                        raise ApiError(grpc.StatusCode.UNAVAILABLE, "the watch stream ended early")
                break
            except ApiError as exc:
                if exc.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                if state is None:  # never connected: a wrong --server, not a dropped stream; fail now
                    raise ApiError(exc.code, f"cannot reach an esgd server at {client.target} "
                                             f"(--server): {exc.details}") from None
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                    bar.write(f"esgd: connection lost ({exc}); reconnecting for up to {reconnect_s:.0f}s",
                              file=sys.stderr)
                if now - lost_at >= reconnect_s:
                    raise
                time.sleep(min(delay, reconnect_s - (now - lost_at)))
                delay = min(delay * 2, 5.0)
    finally:
        bar.close()
    if (state == TERMINAL[1] and error is None) or (state == TERMINAL[0] and summary is None):
        job = client.get_job(name)  # the final event may have been missed across a reconnect
        error = job.error if job.HasField("error") else None
        summary = job.summary if job.HasField("summary") else None
    if state == TERMINAL[0]:
        print(f"{name} SUCCEEDED" + (f": {_summary_line(summary)}" if summary else ""))
        return 0
    if state == TERMINAL[1]:
        lines = _error_lines(error) if error else ["(no error reported)"]
        print(f"esgd: {name} FAILED: " + "\n  ".join(lines), file=sys.stderr)
        return 1
    print(f"{name} CANCELLED" + (f": {_summary_line(summary)}" if summary and summary.rounds else ""))
    return 3


def follow(client, name: str, no_progress: bool = False) -> int:
    """:func:`_watch`; Ctrl-C stops watching only, and says so: the job runs on, and how to
    watch it again or cancel it (exit 130)."""
    try:
        return _watch(client, name, no_progress)
    except KeyboardInterrupt:
        jid, server = name.removeprefix("jobs/"), f" --server {client.target}"
        print(f"\nesgd: stopped watching {name}; the job keeps running on the server.\n"
              f"  watch it again: esgd watch {jid}{server}\n  cancel it:      esgd cancel {jid}{server}",
              file=sys.stderr)
        return 130


def cmd_watch(args) -> int:
    with connect(args) as client:
        return follow(client, args.id, args.no_progress)


def cmd_cancel(args) -> int:
    from services.client import TERMINAL

    with connect(args) as client:
        job = client.cancel_job(args.id)
    print(f"{job.name}: {state_name(job.state)}" + ("" if job.state in TERMINAL else ", cancel requested"))
    return 0


def cmd_download(args) -> int:
    with connect(args) as client:
        if args.artifact:
            info = client.download_artifact(args.id, args.artifact, args.output)
            print(f"wrote {info['path']}: {args.artifact}, {info['bytes']} bytes, sha256 {info['sha256']}")
            return 0
        info = client.download_checkpoint(args.id, args.output, round=args.round)
    print(f"wrote {info['path']}: checkpoint round {info['round']}, {info['bytes']} bytes, sha256 {info['sha256']}")
    return 0


def cmd_scale(args) -> int:
    with connect(args) as client:
        job = client.scale_job(args.id, args.replicas)
    when = "at its next round boundary" if state_name(job.state) == "RUNNING" else "when it starts"
    print(f"{job.name}: {state_name(job.state)}, scaling to {args.replicas} replicas {when}")
    return 0


def cmd_health(args) -> int:
    """grpc.health.v1 Check: exit 0 when SERVING (used by docker-compose healthchecks)."""
    from services.client import ApiError

    with connect(args) as client:
        try:
            status = client.health(args.service)
        except ApiError as exc:
            print(f"esgd: {args.server}: {exc}", file=sys.stderr)
            return 1
    print(status)
    return 0 if status == "SERVING" else 1


def cmd_flatness(args) -> int:
    """The flatness report of a run directory, a checkpoint file, or a job (downloaded first)."""
    import tempfile

    from coordinator.flatness_job import headline, load_checkpoint, report_for_checkpoint
    from services.client import ApiError

    target = Path(args.target)
    if not target.exists():  # a job id: its report if the service made one, else its final checkpoint
        if "/" in args.target.removeprefix("jobs/"):
            raise SpecError(f"TARGET: {args.target}: no such run directory or checkpoint file", "TARGET")
        with reaching(args) as client:
            out = Path(args.output or f"runs/flatness-{args.target.removeprefix('jobs/')}")
            out.mkdir(parents=True, exist_ok=True)
            try:
                for name in ("flatness.json", "flatness.png"):
                    client.download_artifact(args.target, name, out / name)
                report = json.loads((out / "flatness.json").read_text())
                print(f"{headline(report)}\nwrote {out}/flatness.json and {out}/flatness.png (made by the service)")
                return 0
            except ApiError as exc:
                if exc.code.name != "NOT_FOUND" or "flatness" not in exc.details:
                    raise
            tmp = Path(tempfile.mkdtemp(prefix="esgd-flatness-")) / "ckpt.pt"
            client.download_checkpoint(args.target, tmp)
        target = tmp
    ckpt, path = load_checkpoint(target)
    out = Path(args.output) if args.output else (path.parent.parent if path.parent.name == "checkpoints"
                                                 else Path("runs") / f"flatness-{path.stem}")
    sizes = {k: v for k, v in (("eval_samples", args.eval_samples), ("lanczos_iters", args.lanczos_iters)) if v}
    report = report_for_checkpoint(ckpt, out, **sizes)
    print(f"{headline(report)}\nwrote {out}/flatness.json and {out}/flatness.png")
    return 0


def add_client_commands(sub) -> None:
    conn = [connection_flags()]
    add_serve_command(sub)

    submit = sub.add_parser("submit", parents=conn, help="submit a job to the server")
    submit.add_argument("job", help="job spec file (YAML or JSON)")
    submit.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a spec field, e.g. --set inner.lr=0.05 (repeatable)")
    submit.add_argument("--request-id", help="idempotency key: resubmitting with it returns the same job")
    submit.add_argument("--watch", action="store_true", help="then follow the job like esgd watch")
    submit.add_argument("--no-progress", action="store_true", help="no progress bar (with --watch)")
    submit.set_defaults(func=cmd_submit)

    ls = sub.add_parser("list", parents=conn, help="list jobs")
    ls.add_argument("--state", type=str.upper, choices=STATES, help="only jobs in this state")
    ls.add_argument("--page-size", type=int, default=50, help="jobs per page (default 50)")
    ls.add_argument("--page-token", default="", help="continue from a previous page")
    ls.add_argument("--all", action="store_true", help="all pages")
    ls.set_defaults(func=cmd_list)

    get = sub.add_parser("get", parents=conn, help="describe a job")
    get.add_argument("id", help="job id or jobs/ID")
    get.add_argument("--json", action="store_true", help="print the Job message as JSON")
    get.set_defaults(func=cmd_get)

    watch = sub.add_parser("watch", parents=conn, help="follow a job until it ends (exit 0/1/3)")
    watch.add_argument("id", help="job id or jobs/ID")
    watch.add_argument("--no-progress", action="store_true", help="no progress bar")
    watch.set_defaults(func=cmd_watch)

    cancel = sub.add_parser("cancel", parents=conn, help="cancel a job")
    cancel.add_argument("id", help="job id or jobs/ID")
    cancel.set_defaults(func=cmd_cancel)

    download = sub.add_parser("download", parents=conn, help="download a job's checkpoint")
    download.add_argument("id", help="job id or jobs/ID")
    download.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write it")
    download.add_argument("--round", type=int, default=0, help="checkpoint round (default 0 = latest)")
    download.add_argument("--artifact", choices=("flatness.json", "flatness.png", "metrics.jsonl", "summary.json",
                                                 "spec.yaml"), help="download this run-directory file instead")
    download.set_defaults(func=cmd_download)

    scale = sub.add_parser("scale", parents=conn, help="change a job's replica count (next round boundary)")
    scale.add_argument("id", help="job id or jobs/ID")
    scale.add_argument("--replicas", type=positive_int, required=True, metavar="N", help="the new replica count")
    scale.set_defaults(func=cmd_scale)

    flat = sub.add_parser("flatness", parents=conn,
                          help="Hessian spectrum / local entropy report of a run dir, checkpoint or job")
    flat.add_argument("target", help="run directory, checkpoint file, or job id (downloaded from --server)")
    flat.add_argument("-o", "--output", help="directory for flatness.json and flatness.png")
    flat.add_argument("--eval-samples", type=positive_int, help="training samples used (default: the report's)")
    flat.add_argument("--lanczos-iters", type=positive_int, help="Lanczos iterations (default: the report's)")
    flat.set_defaults(func=cmd_flatness)

    health = sub.add_parser("health", parents=conn, help="ask the server's health service (exit 0 = SERVING)")
    health.add_argument("--service", default="", help="service name (default: the whole server)")
    health.set_defaults(func=cmd_health)


