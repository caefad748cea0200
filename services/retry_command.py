"""``esgd retry ID``: a new job from a FAILED or CANCELLED job's spec, starting from that job's
latest checkpoint (the new spec's ``init_from``; the server's RetryJob, coordinator.init_from).
Only the model weights carry over; the new job runs its whole budget again from round 0."""
from __future__ import annotations


def cmd_retry(args) -> int:
    from services.cli_common import reaching, spec_of

    with reaching(args) as client:
        job = client.retry_job(args.id, request_id=args.request_id)
        src = spec_of(job).get("init_from") or {}
        start = (f"from job {src['job']} round {src['round']}" if src.get("job") and src.get("round") else
                 "from scratch (the job left no checkpoint)")
        print(job.name, flush=True)
        print(f"retrying {args.id.removeprefix('jobs/')} as {job.id}, starting {start}")
        return args.follow(client, job.name, args.no_progress) if args.watch else 0


def add_retry_command(sub, parents: list, follow) -> None:
    """``follow(client, name, no_progress)`` watches the new job (services.commands.follow,
    passed in by services.cli: the command modules do not import each other)."""
    retry = sub.add_parser("retry", parents=parents,
                           help="a new job from a FAILED or CANCELLED job, starting from its latest checkpoint")
    retry.add_argument("id", help="job id or jobs/ID (FAILED or CANCELLED)")
    retry.add_argument("--request-id", help="idempotency key: retrying with it returns the same new job")
    retry.add_argument("--watch", action="store_true", help="then follow the new job like esgd watch")
    retry.add_argument("--no-progress", action="store_true", help="no progress bar (with --watch)")
    retry.set_defaults(func=cmd_retry, follow=follow)
