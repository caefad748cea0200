"""Domain errors of the job manager; the gRPC layer maps each to one status code."""
from __future__ import annotations

from coordinator.spec import CapacityError, SpecError  # noqa: F401  (re-exported)


class JobNotFound(LookupError):
    """NOT_FOUND"""


class JobFinished(RuntimeError):
    """FAILED_PRECONDITION: the job already reached a terminal state."""


class ClusterUnavailable(RuntimeError):
    """UNAVAILABLE: the Ray cluster cannot be reached."""
