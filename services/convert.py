"""Translation between the domain (JobRecord, events, spec dicts) and esgd.v1 messages."""
from __future__ import annotations

import base64
import functools
import json
import re

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.spec import JobSpec, SpecError
from coordinator.store import Event, JobRecord
from services.api import jobs_pb2 as pb

_INTS = (FD.CPPTYPE_INT32, FD.CPPTYPE_INT64)


def _type_error(field, value) -> str | None:
    """Why ``value`` cannot go in scalar ``field`` (None if it can); stricter than ParseDict on bools/strings."""
    t = field.cpp_type
    if t == FD.CPPTYPE_BOOL:
        return None if isinstance(value, bool) else "true or false"
    if t == FD.CPPTYPE_STRING:
        return None if isinstance(value, str) else "a string"
    if t in _INTS:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
        return None if ok and abs(value) < 2 ** (31 if t == FD.CPPTYPE_INT32 else 63) else "an integer"
    return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"


def _clean(data, desc, prefix: str) -> dict:
    """Check keys and types against the proto, naming the field; drop None and gpus 'auto' (= unset)."""
    if not isinstance(data, dict):
        raise SpecError(f"{prefix or 'spec'}: expected a mapping (got {data!r})", prefix)
    out = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        field = desc.fields_by_name.get(key) if isinstance(key, str) else None
        if field is None:
            raise SpecError(f"{path}: unknown field", path)
        if value is None or (path == "resources.gpus_per_replica" and value == "auto"):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:  # sweep.space
            if not isinstance(value, dict):
                raise SpecError(f"{path}: expected a mapping of spec fields to distributions (got {value!r})", path)
            for k, v in value.items():
                if not isinstance(v, str):
                    raise SpecError(f"{path}.{k}: expected a distribution string such as 'uniform(0.1, 1)' "
                                    f"(got {v!r})", f"{path}.{k}")
            out[key] = {str(k): v for k, v in value.items()}
            continue
        if field.message_type is not None:
            out[key] = _clean(value, field.message_type, path)
            continue
        repeated = field.is_repeated
        if repeated and not isinstance(value, (list, tuple)):
            raise SpecError(f"{path}: expected a list (got {value!r})", path)
        for v in (value if repeated else [value]):
            if why := _type_error(field, v):
                raise SpecError(f"{path}: expected {why} (got {v!r})", path)
        out[key] = [*value] if repeated else int(value) if field.cpp_type in _INTS else value
    return out


def spec_to_proto(spec: dict | JobSpec) -> pb.JobSpec:
    """A spec mapping (or JobSpec) → ``pb.JobSpec``; an unknown key or wrong type → SpecError."""
    if isinstance(spec, JobSpec):
        spec = spec.resolved().to_dict()  # with the strategy's pinned values, which the server accepts
    data = _clean(spec, pb.JobSpec.DESCRIPTOR, "")
    try:
        return json_format.ParseDict(data, pb.JobSpec(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:  # not expected after _clean; still name the field
        m = re.search(r'at "?JobSpec\.?([\w.]*)', str(exc))
        field = m.group(1) if m else ""
        raise SpecError(f"{field or 'spec'}: {str(exc).splitlines()[0]}", field) from None


def proto_to_spec_dict(msg: pb.JobSpec) -> dict:
    """``pb.JobSpec`` → a mapping of the fields that are set (``JobSpec.parse`` fills the rest)."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


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


def job_to_proto(rec: JobRecord) -> pb.Job:
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


_EVENT_TYPES = {"progress": ("progress", pb.Progress), "evaluation": ("evaluation", pb.Evaluation),
                "summary": ("summary", pb.JobSummary), "error": ("error", pb.JobError),
                "replica": ("replica", pb.ReplicaEvent)}


def event_to_proto(ev: Event) -> pb.JobEvent:
    msg = pb.JobEvent(seq=ev.seq, time=_ts(ev.time))
    if ev.kind == "state":
        msg.state_change.CopyFrom(pb.StateChange(state=pb.State.Value(ev.payload["state"]),
                                                 reason=ev.payload.get("reason", "")))
    elif ev.kind == "trial":  # a sweep's: the trial's id becomes its name, the config stays JSON text
        msg.trial.CopyFrom(_message(pb.TrialEvent, {**ev.payload, "trial": f"jobs/{ev.payload['trial']}"}))
    else:
        field, cls = _EVENT_TYPES[ev.kind]
        getattr(msg, field).CopyFrom(_message(cls, ev.payload))
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
