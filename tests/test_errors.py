"""Every domain error carries the gRPC status it is answered with (core.errors), so the
servicer can translate any of them without a table: a class that forgot its ``code`` would
reach clients as INTERNAL (it once did, for ``esgd retry`` of a finished job)."""
from __future__ import annotations

import grpc

import core.errors as errors


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_domain_error_names_a_real_status_of_its_own():
    found = set(_subclasses(errors.DomainError))
    assert {errors.SpecError, errors.JobNotFound, errors.StoreError} <= found and len(found) >= 9
    for cls in errors.DomainError.__subclasses__():  # a kind of its own names its status...
        assert "code" in vars(cls), f"{cls.__name__} inherits DomainError's INTERNAL instead of naming a status"
    for cls in found:  # ...and a refinement (HistoryError is a SpecError) may inherit it
        assert cls.code != "INTERNAL" and hasattr(grpc.StatusCode, cls.code), (cls.__name__, cls.code)
