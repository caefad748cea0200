"""The spec ⇄ proto codec: a spec mapping (or JobSpec) to ``esgd.v1.JobSpec`` and back.

Shared by the client and the server, and the only part of the service the client needs
besides the generated API: a wrong type or unknown field is a SpecError naming its dotted
path before anything is sent.
"""
from __future__ import annotations

import re

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor as FD

from core.spec import JobSpec, SpecError
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
