"""The job spec's ``init_from`` section: start a job from a checkpoint (core.spec.JobSpec holds
it; coordinator.init_from checks and loads it)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InitFromSpec(BaseModel):
    """Start from another job's checkpoint (``job``, ``round``: default its latest) or from a
    checkpoint file (``path``; in the service, inside the data roots like ``dataset.path``).

    Carried over: the reference model's weights (the checkpoint's ``model`` state_dict,
    BatchNorm statistics included). Not carried over: the strategy's anchors and outer
    momentum, the replicas' inner momentum/Adam state, RNG and stream positions, and the
    counters (round, epochs, gradient evaluations): the new job runs its own whole budget
    from round 0 under its own seed. The model must match (architecture and shapes)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    job: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                            description="the job id whose checkpoint to start from (one of your own jobs)")
    round: int | None = Field(None, ge=1, description="its checkpoint's round (None = its latest)")
    path: str | None = Field(None, min_length=1, max_length=4096, description="a checkpoint file instead of a job")

    @model_validator(mode="before")
    @classmethod
    def _job_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("job"), str):
            data = {**data, "job": data["job"].removeprefix("jobs/")}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> "InitFromSpec":
        if (self.job is None) == (self.path is None):
            raise ValueError("init_from: give exactly one of init_from.job or init_from.path")
        if self.round is not None and self.job is None:
            raise ValueError("init_from.round: goes with init_from.job (a path names one checkpoint)")
        return self
