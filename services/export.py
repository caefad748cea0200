"""``esgd export --tensorboard``: a job's history as TensorBoard event files (tensorboardX).

Experiment trackers read TensorBoard's format, so writing it from ``metrics.jsonl`` lets a job
be compared with anything else logged that way, without the service knowing about a tracker.
tensorboardX writes the files: it needs only numpy and protobuf (TensorBoard itself is not
needed to write them). Each job is one TensorBoard run (a subdirectory), so ``tensorboard
--logdir DIR`` shows exported jobs side by side.

TensorBoard steps are integers, so the step is the round or the cumulative gradient
evaluations; effective epochs are exported as a scalar of their own (``progress/epoch``).
"""
from __future__ import annotations

import re
from pathlib import Path

from services.history import History, HistoryError

STEP_AXES = ("rounds", "grad-evals")
# tag → round-record key (the engine's names, as in metrics.jsonl)
ROUND_TAGS = {"train/loss": "loss", "train/error": "train_error", "schedule/gamma": "gamma", "schedule/rho": "rho",
              "schedule/lr": "lr", "schedule/inner_lr": "inner_lr", "throughput/samples_per_s": "samples_per_s",
              "time/round_s": "round_s", "time/compute_s": "compute_s", "time/comm_s": "comm_s",
              "replicas/spread": "spread", "replicas/grad_norm": "grad_norm", "replicas/count": "replicas",
              "replicas/failures": "replica_failures", "progress/epoch": "epoch"}
# tag → eval-record key
EVAL_TAGS = {"test/loss": "test_loss", "test/error": "test_error", "test/perplexity": "test_perplexity",
             "cost/grad_evals_total": "grad_evals_total", "cost/data_passes_per_replica": "data_passes_per_replica"}


def run_name(job_id: str, spec_name: str = "") -> str:
    """A TensorBoard run (subdirectory) name: the job id, then the spec name, as safe characters."""
    name = f"{job_id}-{spec_name}" if spec_name else job_id
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "job"


def check_step_axis(step_axis: str) -> None:
    """TensorBoard steps are integers: rounds or gradient evaluations, not epochs."""
    if step_axis not in STEP_AXES:
        raise HistoryError(f"--x: TensorBoard steps are integers, so export takes --x {' or --x '.join(STEP_AXES)}"
                           f" (epochs are exported as the progress/epoch scalar); got {step_axis!r}", "--x")


def scalars(history: History, step_axis: str = "rounds") -> list[tuple[str, int, float]]:
    """Every (tag, step, value) to write: round scalars, evaluation scalars. Pure, for tests."""
    check_step_axis(step_axis)
    out = []
    for tags in (ROUND_TAGS, EVAL_TAGS):
        for tag, key in tags.items():
            xs, ys = history.series(key, step_axis)
            out += [(tag, int(x), y) for x, y in zip(xs, ys)]
    return out


def write_tensorboard(history: History, logdir: str | Path, step_axis: str = "rounds",
                      start_time: float | None = None, spec_text: str = "") -> dict:
    """Write ``history`` as one TensorBoard run in ``logdir`` (created; refused if it already
    holds event files, which TensorBoard would merge with these). Wall times are ``start_time``
    plus the rounds' cumulative ``round_s`` when the start is known. Events (failures,
    membership changes, resumes) become text entries under ``events``; the spec under ``spec``.
    Returns {"dir", "scalars", "tags", "events"}."""
    from tensorboardX import SummaryWriter

    values = scalars(history, step_axis)
    logdir = Path(logdir)
    if logdir.is_dir() and any(p.name.startswith("events.out.tfevents") for p in logdir.iterdir()):
        raise HistoryError(f"--tensorboard: {logdir} already holds event files; TensorBoard would mix the two "
                           "exports: remove it or choose another directory", "--tensorboard")
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HistoryError(f"--tensorboard: cannot create {logdir}: {exc.strerror or exc}", "--tensorboard") from None
    wall = _wall_times(history, start_time)
    step_of = {rnd: int(history.x_of(rnd, step_axis)) for rnd in wall}
    round_at = {}
    for rnd, step in step_of.items():
        round_at.setdefault(step, rnd)
    writer = SummaryWriter(logdir=str(logdir), flush_secs=3600, max_queue=1000)
    try:
        for tag, step, value in values:
            writer.add_scalar(tag, value, global_step=step, walltime=wall.get(round_at.get(step)))
        for x, kind, text in history.markers(step_axis):
            if x == x:  # not NaN: the event's round is in the history
                writer.add_text("events", f"{kind}: {text}", global_step=int(x))
        if spec_text:
            writer.add_text("spec", "```\n" + spec_text + "\n```", global_step=0)
    finally:
        writer.close()
    return {"dir": str(logdir), "scalars": len(values), "tags": len({t for t, _, _ in values}),
            "events": len(history.events)}


def _wall_times(history: History, start_time: float | None) -> dict[int, float | None]:
    """Round → the wall time it ended (start + cumulative round seconds), or None if unknown."""
    out, total = {0: start_time}, 0.0
    for r in history.rounds:
        total += float(r.get("round_s") or 0.0)
        out[r["round"]] = None if start_time is None else start_time + total
    return out
