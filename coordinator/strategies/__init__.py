"""One algorithm per file; the round loop (coordinator.engine) is shared.

Each Strategy class names its method's declaration (``method``, core.methods); the registry
below is derived from those, so a method's name is written once."""
from __future__ import annotations

import torch

from core.spec import JobSpec
from coordinator.strategies.base import ReplicaFailure, RoundResult, Strategy
from coordinator.strategies.elastic_sgd import ElasticSGD
from coordinator.strategies.entropy_sgd import EntropySGD
from coordinator.strategies.parle import Parle
from coordinator.strategies.replicated_sgd import ReplicatedSGD
from coordinator.strategies.sgd import SGD

STRATEGIES: dict[str, type[Strategy]] = {
    cls.method.name: cls for cls in (EntropySGD, Parle, ElasticSGD, SGD, ReplicatedSGD)}


def make_strategy(spec: JobSpec, init_state: torch.Tensor, num_params: int) -> Strategy:
    return STRATEGIES[spec.strategy](spec, init_state, num_params)


__all__ = ["STRATEGIES", "make_strategy", "Strategy", "RoundResult", "ReplicaFailure"]
