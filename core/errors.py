"""The domain errors, each with the status ``code`` the API answers it with.

Why one module with the codes on the classes: the servicer translates any of them by reading
``exc.code`` (a ``grpc.StatusCode`` name), so a new error needs no new table entry, and the
lower layers (the spec, the store, the manager) raise them without importing gRPC.

| error | code |
|---|---|
| SpecError (a bad spec or flag; ``field`` names it) | INVALID_ARGUMENT |
| CapacityError (a limit; can never be hosted) | RESOURCE_EXHAUSTED |
| JobNotFound (or another principal's job) | NOT_FOUND |
| RequestConflict (a ``request_id`` reused for another spec) | ALREADY_EXISTS |
| JobFinished (e.g. cancel a finished job) | FAILED_PRECONDITION |
| JobNotRetryable (retry a job that is not FAILED or CANCELLED) | FAILED_PRECONDITION |
| JobActive (e.g. delete a job that is queued or running) | FAILED_PRECONDITION |
| ClusterUnavailable (Ray unreachable) | UNAVAILABLE |
| StoreError (the job store unreadable or unwritable; nothing changed) | UNAVAILABLE |
"""
from __future__ import annotations


class DomainError(Exception):
    """Base of the errors the API translates; ``code`` is a ``grpc.StatusCode`` name."""

    code = "INTERNAL"


class SpecError(DomainError, ValueError):
    """A job spec that cannot run. ``field`` is the dotted path of the first bad field."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


class CapacityError(SpecError):
    """The job asks for more than the cluster can ever host, or than a limit allows."""

    code = "RESOURCE_EXHAUSTED"


class JobNotFound(DomainError, LookupError):
    code = "NOT_FOUND"


class RequestConflict(DomainError, LookupError):
    """This principal used the ``request_id`` before, for a different spec."""

    code = "ALREADY_EXISTS"


class JobFinished(DomainError, RuntimeError):
    """The job already reached a terminal state."""

    code = "FAILED_PRECONDITION"


class JobNotRetryable(DomainError, RuntimeError):
    """Only a FAILED or CANCELLED job can be retried."""

    code = "FAILED_PRECONDITION"


class JobActive(DomainError, RuntimeError):
    """The job has not finished yet (QUEUED or RUNNING) and the call needs a finished one."""

    code = "FAILED_PRECONDITION"


class ClusterUnavailable(DomainError, RuntimeError):
    """The Ray cluster cannot be reached."""

    code = "UNAVAILABLE"


class StoreError(DomainError, RuntimeError):
    """The job store could not be read or written (full disk, I/O error); nothing was changed."""

    code = "UNAVAILABLE"
