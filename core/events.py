"""What the round loop reports, as typed events named as the API names them, and the one
dispatch that hands an event to its listeners.

Why: a round's numbers used to change shape on their way from the engine to a client. The
engine built dicts with its own names (``round_s``, ``wall_s``), three renaming tables turned
them into the API's (``round_seconds``, ``wall_seconds``), and if/elif chains on a record's
kind handed them on. Here each event's fields carry the names of its message in
``proto/esgd/v1/jobs.proto``; the store keeps :func:`api` of an event and services.convert fills
the message by field name. Adding a metric to the API: a field here (marked :func:`_api`) and
the same field in the message; the runner, the store, WatchJob and ``metrics.jsonl`` carry it
without a change.

* :class:`RoundRecord`: one completed round (``Progress``).
* :class:`EvalRecord`: an evaluation of the reference model (``Evaluation``).
* :class:`CheckpointEvent`: a checkpoint was written (``Job.checkpoint_round``).
* :class:`CheckpointFailed`: the disk refused a checkpoint (a ``JobError`` with code STORAGE,
  unless it was fatal: then the job's own error says it).
* :class:`ReplicaEvent`: a replica failed, was restarted, added or removed (``ReplicaEvent``).
* :class:`Summary`: what ``JobSummary`` carries of a run's summary. Not an event: ``Engine.run``
  returns the summary, as ``summary.json`` holds it.

A listener subclasses :class:`Listener` and overrides the handlers it needs; :func:`emit` calls
the handler :data:`KINDS` names for the event's type. The engine and the runner's outbox emit;
the server's follower emits what the outbox forwarded to its own listeners.

The run directory keeps its names. ``metrics.jsonl`` and ``summary.json`` (and the dicts
``Engine.step``, ``evaluate`` and ``run`` return) are read by ``esgd plot``/``export``, the
reproduce scripts and the benches, and old run directories must still load: a few durations
and rates are written there under their older names (:data:`RUN_DIR_NAMES`). That table is the
one place the two vocabularies meet; a new field has one name everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

RUN_DIR_NAMES = {"round_seconds": "round_s", "compute_seconds": "compute_s", "comm_seconds": "comm_s",
                 "aggregate_seconds": "aggregate_s", "samples_per_second": "samples_per_s",
                 "wall_seconds": "wall_s"}
_FROM_RUN_DIR = {old: new for new, old in RUN_DIR_NAMES.items()}


def _api(**kw):
    """A field its API message carries under the same name (the store keeps these)."""
    return field(metadata={"api": True}, **kw)


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """One completed round (``Engine.step``). The unmarked fields are kept in ``metrics.jsonl``
    and read by the Prometheus listener, not stored with the job."""

    round: int = _api()                # rounds completed: 1 after the first
    total_rounds: int = _api()
    epoch: float = _api()              # effective epochs: round / batches per pass
    loss: float = _api()               # mean over the replicas whose results came back
    train_error: float = _api()
    gamma: float = _api()
    rho: float | None = _api(default=None)  # the elastic coupling: Parle's family only
    lr: float = _api()                 # the outer learning rate, schedule applied
    inner_lr: float
    grad_norm: float = _api()          # ‖x − μ̄‖
    spread: float = _api()
    samples_per_second: float = _api()
    round_seconds: float = _api()
    compute_seconds: float = _api()    # the slowest replica's
    comm_seconds: float                # the rest of the round: communication and waiting
    aggregate_seconds: float           # the outer step
    samples: int
    grad_evals: int
    bytes_sent: int
    bytes_received: int
    replica_failures: int
    replicas: list                     # per replica: {"replica", "loss", "compute_s", "grad_evals"}


@dataclass(frozen=True, kw_only=True)
class EvalRecord:
    """An evaluation of the reference model, with the run's cost so far (``Engine.evaluate``)."""

    round: int = _api()
    epoch: float = _api()
    test_error: float = _api()
    test_loss: float = _api()
    test_perplexity: float | None = None  # language models
    grad_evals_total: int = _api()
    grad_evals_per_replica: float
    samples_total: int
    data_passes_per_replica: float = _api()
    data_passes_total: float
    wall_seconds: float = _api()


@dataclass(frozen=True, kw_only=True)
class CheckpointEvent:
    """The checkpoint of round ``round`` was written to ``path``."""

    round: int
    path: str


@dataclass(frozen=True, kw_only=True)
class CheckpointFailed:
    """A checkpoint write the disk refused (coordinator.checkpoint.failure_record). ``fatal``:
    the job fails with it; else training goes on and the next checkpoint retries."""

    round: int
    path: str
    errno: str
    consecutive: int
    fatal: bool
    message: str
    cause: str


@dataclass(frozen=True, kw_only=True)
class ReplicaEvent:
    """A change of who takes part (coordinator.membership). ``placement`` and ``spec`` are
    added by the runner's outbox for the server (where the replicas run now, the spec that
    runs); they are not part of the API's message and not written to ``metrics.jsonl``."""

    replica: int = _api()              # its position; -1: the job as a whole
    round: int = _api()
    kind: str = _api()                 # failed | restarted | added | removed | scale_failed
    cause: str = _api()
    replicas: int | None = _api(default=None)  # the count after the change (not on "failed")
    placement: list | None = None
    spec: dict | None = None


@dataclass(frozen=True, kw_only=True)
class Summary:
    """What ``JobSummary`` carries of a run's summary (:func:`api_of`); the flatness headline is
    there when the spec asked for the report."""

    test_error: float | None = _api(default=None)
    test_loss: float | None = _api(default=None)
    rounds: int | None = _api(default=None)
    epochs: float | None = _api(default=None)
    grad_evals_total: int | None = _api(default=None)
    grad_evals_per_replica: float | None = _api(default=None)
    samples_total: int | None = _api(default=None)
    data_passes_per_replica: float | None = _api(default=None)
    data_passes_total: float | None = _api(default=None)
    wall_seconds: float | None = _api(default=None)
    top_eigenvalue: float | None = _api(default=None)
    hessian_trace: float | None = _api(default=None)
    near_zero_fraction: float | None = _api(default=None)


# event type → its kind: the "kind" of its metrics.jsonl line and of its outbox record; its
# listener handler is "on_" + kind
KINDS = {RoundRecord: "round", EvalRecord: "eval", CheckpointEvent: "checkpoint",
         CheckpointFailed: "checkpoint_failed", ReplicaEvent: "replica"}
_HANDLERS = {cls: f"on_{kind}" for cls, kind in KINDS.items()}


class Listener:
    """The engine's listener: every handler does nothing until a subclass overrides it."""

    def on_round(self, event: RoundRecord) -> None:
        pass

    def on_eval(self, event: EvalRecord) -> None:
        pass

    def on_checkpoint(self, event: CheckpointEvent) -> None:
        pass

    def on_checkpoint_failed(self, event: CheckpointFailed) -> None:
        pass

    def on_replica(self, event: ReplicaEvent) -> None:
        pass


def emit(listeners, event) -> None:
    """Hand ``event`` to each listener's handler for its type, in order."""
    handler = _HANDLERS[type(event)]
    for listener in listeners:
        getattr(listener, handler)(event)


def api(event) -> dict:
    """The fields of ``event`` its API message carries (unset ones left out): what the store
    keeps and services.convert turns into the message."""
    return {f.name: getattr(event, f.name) for f in fields(event)
            if f.metadata.get("api") and getattr(event, f.name) is not None}


def api_of(cls, values: dict) -> dict:
    """The API's fields of ``cls`` out of a run directory's dict (older names accepted): a
    run's summary, or a sweep trial's reported result."""
    names = {f.name for f in fields(cls) if f.metadata.get("api")}
    renamed = {_FROM_RUN_DIR.get(k, k): v for k, v in values.items()}
    return {k: v for k, v in renamed.items() if k in names and v is not None}


def to_run_dir(values: dict) -> dict:
    """``values`` under the run directory's names (:data:`RUN_DIR_NAMES`), unset ones left out."""
    return {RUN_DIR_NAMES.get(k, k): v for k, v in values.items() if v is not None}


def record(event) -> dict:
    """``event`` as its ``metrics.jsonl`` line holds it (without the line's ``kind``)."""
    return to_run_dir({f.name: getattr(event, f.name) for f in fields(event)})
