"""The ``esgd`` command line.

    esgd run JOB.yaml [--run-dir DIR] [--resume] [--set inner.lr=0.05 ...] [--ray-address ADDR]
    esgd serve [--host H] [--port P] [--data-dir DIR] [--token-file F] [--tls-cert C --tls-key K] ...
    esgd submit JOB.yaml [--set FIELD=VALUE ...] [--request-id ID] [--watch]
    esgd list [--state STATE] [--page-size N] [--page-token T] [--all]
    esgd get ID [--json] | watch ID | cancel ID | download ID -o FILE [--round N]
    esgd retry ID [--watch]   (a FAILED or CANCELLED job, again from its latest checkpoint)
    esgd logs ID [--follow] [--replica N] [--tail N] | delete ID

The client commands take --server (default $ESGD_SERVER or 127.0.0.1:50051), --token (default
$ESGD_TOKEN) or --token-file, --tls-ca and --timeout.

Exit codes: 0 success, 2 bad input (spec, flag, data, or the server's INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION, RESOURCE_EXHAUSTED, UNAUTHENTICATED), 1 training failure or server unreachable,
3 a watched job was cancelled, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.cli_common import INPUT_CODES, connection_flags, load_spec


def cmd_run(args) -> int:
    from coordinator.local_run import run_job

    spec = load_spec(args.job, args.set)
    run_dir = args.run_dir or str(Path("runs") / spec.name)
    summary = run_job(spec, run_dir, resume=args.resume, ray_address=args.ray_address, local=args.local,
                      progress=not args.no_progress, num_cpus=args.num_cpus)
    err = summary.get("test_error")
    print(f"{summary['status']}: {spec.strategy} {spec.model}/{spec.dataset.name} K={summary['replicas']} "
          f"rounds={summary['rounds']} test_error={err if err is None else f'{err:.4f}'} "
          f"wall={summary['wall_s']:.1f}s grad_evals={summary['grad_evals_total']} "
          f"data_passes/replica={summary['data_passes_per_replica']:.2f}")
    print(f"results in {run_dir}/ (summary.json, metrics.jsonl, checkpoints/)")
    if args.flatness and summary["status"] == "succeeded":
        from coordinator.flatness_job import headline, load_checkpoint, report_for_checkpoint

        report = report_for_checkpoint(load_checkpoint(run_dir)[0], run_dir)
        print(f"flatness: {headline(report)}  → {run_dir}/flatness.json, flatness.png")
    if args.json:
        print(json.dumps(summary))
    return 130 if summary["status"] == "interrupted" else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esgd", description="Entropy-SGD / Parle training service")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one job locally (embedded Ray) and write a run directory")
    run.add_argument("job", help="job spec file (YAML or JSON)")
    run.add_argument("--run-dir", help="where results go (default runs/<job name>)")
    run.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --run-dir")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a spec field, e.g. --set inner.lr=0.05 (repeatable)")
    run.add_argument("--ray-address", help="attach to an existing Ray cluster instead of starting one")
    run.add_argument("--num-cpus", type=int, help="CPUs for the embedded Ray (default: all)")
    run.add_argument("--local", action="store_true", help="run replicas in this process, without Ray")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--json", action="store_true", help="also print the summary as JSON")
    run.add_argument("--flatness", action="store_true",
                     help="then write the Hessian flatness report of the final model (flatness.json, .png)")
    run.set_defaults(func=cmd_run)
    from services.commands import add_client_commands
    from services.history_commands import add_history_commands
    from services.job_commands import add_job_commands

    add_client_commands(sub)
    from services.commands import follow
    from services.retry_command import add_retry_command

    add_retry_command(sub, [connection_flags()], follow)
    add_history_commands(sub, [connection_flags()])
    add_job_commands(sub, [connection_flags()])
    from reproduce.cli import add_reproduce_commands

    add_reproduce_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.spec import SpecError

    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below, not at exit
        return code
    except KeyboardInterrupt:
        print("esgd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (esgd list | head -1): stop quietly
        _quiet_stdout()
        return 0
    except Exception as exc:
        # DataError lives with torch; look it up only if that module is loaded (it raised, or it is not the error)
        data_error = getattr(sys.modules.get("worker.data.datasets"), "DataError", SpecError)
        api_error = getattr(sys.modules.get("services.client"), "ApiError", SpecError)
        if isinstance(exc, (SpecError, data_error)):
            print(f"esgd: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, api_error):
            print(f"esgd: error: {exc}", file=sys.stderr)
            return 2 if exc.code.name in INPUT_CODES else 1
        if isinstance(exc, OSError) and args.command != "run":  # a token, CA or output file
            print(f"esgd: error: {exc}", file=sys.stderr)
            return 2
        # a training failure: say what and where, no traceback wall
        print(f"esgd: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not hit the closed pipe."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
