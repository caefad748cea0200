"""Translation between the domain (the store's JobRecord and Event, spec dicts) and esgd.v1
messages, for the server; the spec codec itself is services.codec."""
from __future__ import annotations

import base64
import functools
import json

from google.protobuf.timestamp_pb2 import Timestamp

from core.spec import SpecError
from services.api import jobs_pb2 as pb
from services.codec import proto_to_spec_dict, spec_to_proto  # noqa: F401  (re-exported for the server)


def _ts(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


@functools.lru_cache(maxsize=4096)
def _spec_bytes(spec_json: str) -> bytes:
    """Serialized JobSpec for a stored spec: specs never change, and ListJobs converts many."""
    return spec_to_proto(json.loads(spec_json)).SerializeToString()


def job_to_proto(rec) -> pb.Job:  # rec: coordinator.store.JobRecord
    job = pb.Job(name=f"jobs/{rec.id}", id=rec.id, state=pb.State.Value(rec.state),
                 checkpoint_round=rec.checkpoint_round, request_id=rec.request_id or "", restarts=rec.restarts)
    job.spec.MergeFromString(_spec_bytes(json.dumps(rec.spec, sort_keys=True)))
    for attr, value in (("create_time", rec.create_time), ("start_time", rec.start_time),
                        ("end_time", rec.end_time)):
        if value is not None:
            getattr(job, attr).CopyFrom(_ts(value))
    for attr, value, cls in (("progress", rec.progress, pb.Progress), ("last_evaluation", rec.last_eval, pb.Evaluation),
                             ("summary", rec.summary, pb.JobSummary), ("error", rec.error, pb.JobError)):
        if value:
            getattr(job, attr).CopyFrom(_message(cls, value))
    job.replicas.extend(_message(pb.ReplicaPlacement, r) for r in rec.replicas or [])
    job.parent = f"jobs/{rec.parent}" if rec.parent else ""
    job.children.extend(f"jobs/{c}" for c in rec.children)
    if rec.sweep and rec.parent:
        job.trial.CopyFrom(_message(pb.TrialInfo, {**rec.sweep, "config": _json_map(rec.sweep.get("config"))}))
    elif rec.sweep:
        status = {k: v for k, v in rec.sweep.items() if k not in ("best_trial", "best_config")}
        job.sweep.CopyFrom(_message(pb.SweepStatus, status))
        if rec.sweep.get("best_trial"):
            job.sweep.best_trial = f"jobs/{rec.sweep['best_trial']}"
        job.sweep.best_config.update(_json_map(rec.sweep.get("best_config")))
    return job


def _json_map(config: dict | None) -> dict:
    """A trial config as the API carries it: dotted field → the value as JSON text."""
    return {k: json.dumps(v) for k, v in (config or {}).items()}


def _message(cls, data: dict):
    """A flat message from a stored mapping (our own keys; unknown ones, e.g. from a newer
    server version, are ignored)."""
    fields = cls.DESCRIPTOR.fields_by_name
    return cls(**{k: v for k, v in data.items() if k in fields and v is not None})


def _state_change(payload: dict) -> pb.StateChange:
    return pb.StateChange(state=pb.State.Value(payload["state"]), reason=payload.get("reason", ""))


def _trial(payload: dict) -> pb.TrialEvent:
    """A sweep's: the trial's id becomes its name, the config stays JSON text."""
    return _message(pb.TrialEvent, {**payload, "trial": f"jobs/{payload['trial']}"})


# stored event kind → (JobEvent field, payload → message). The engine's events are stored with
# the API's names (core.events.api), so they fill their message by name.
_EVENTS = {"state": ("state_change", _state_change), "trial": ("trial", _trial),
           **{kind: (kind, functools.partial(_message, cls)) for kind, cls in (
               ("progress", pb.Progress), ("evaluation", pb.Evaluation), ("summary", pb.JobSummary),
               ("error", pb.JobError), ("replica", pb.ReplicaEvent))}}


def event_to_proto(ev) -> pb.JobEvent:  # ev: coordinator.store.Event
    msg = pb.JobEvent(seq=ev.seq, time=_ts(ev.time))
    field, to_message = _EVENTS[ev.kind]
    getattr(msg, field).CopyFrom(to_message(ev.payload))
    return msg


def encode_page_token(ordinal: int, state: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": ordinal, "state": state}).encode()).decode()


MAX_PAGE_TOKEN = 512


def decode_page_token(token: str, state: str) -> int:
    """The cursor in ``token``; it must come from a List with the same filter. Anything else
    — not base64, not JSON, not a mapping, a cursor that is not a small non-negative
    integer — is INVALID_ARGUMENT naming ``page_token``, never an internal error."""
    bad = SpecError("page_token: not a token returned by ListJobs", "page_token")
    if len(token) > MAX_PAGE_TOKEN:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, TypeError, UnicodeError):
        raise bad from None
    after = data.get("after") if isinstance(data, dict) else None
    if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after < 2**62:
        raise bad
    if data.get("state") != state:
        raise SpecError("page_token: was issued for a different state filter", "page_token")
    return after
