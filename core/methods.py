"""Each training method's fixed facts, declared once: what it pins in the spec, whether its
replicas share one anchor, whether a running job may change its replica count, and which
learning rate its LR schedule scales.

Why the declarations live here and not on the Strategy classes: the spec (core.spec) needs a
method's pinned values to validate and resolve a job, and core imports nothing above it, while
the Strategy classes (coordinator/strategies/, one algorithm per file) live a layer up. So each
method is one frozen :class:`Method` below, and its Strategy class points at it
(``method = methods.PARLE``): everything about a method is one attribute away from its class,
and every table of methods is derived from these declarations, never written by hand:

* ``core.spec``: ``STRATEGIES`` (the names, in the order of :data:`METHODS`), ``FORCED`` (name →
  pinned values), ``PER_REPLICA_ANCHORS`` and ``PLAIN_INNER_LOOP``;
* ``coordinator.strategies``: ``STRATEGIES`` (name → Strategy class), from each class's ``method``;
* ``coordinator.manager``: ``SCALABLE``, the methods whose classes say ``method.scalable``.

A new method is one declaration here, added to :data:`METHODS`, and one strategy file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# The baselines' pins (docs/design.md, "Outer steps"): the chain becomes plain minibatch
# descent (γ = 0, ε = 0, α = 1, so μ is the last iterate) and the outer step adopts it
# (η = 1, no outer momentum).
PLAIN_DESCENT: dict[str, dict[str, float]] = {"inner": {"gamma0": 0.0, "noise": 0.0, "alpha": 1.0},
                                              "outer": {"lr": 1.0, "momentum": 0.0}}


@dataclass(frozen=True, eq=False)
class Method:
    """One method's declaration (read only: ``pinned`` is never changed after import)."""

    name: str
    #: section → field → value the method runs with. Setting one of these explicitly to another
    #: value is an error; leaving it out takes the pinned value (``JobSpec.resolved``).
    pinned: dict[str, dict[str, float]] = field(default_factory=dict)
    #: each replica keeps its own anchor x^a (else all replicas share one anchor x)
    per_replica_anchors: bool = False
    #: a running job's replica count may change (``esgd scale``); not where K is part of the method
    scalable: bool = True
    #: which learning rate the LR schedule scales: "outer" (η) or, for the methods whose outer
    #: step is a plain average (η pinned to 1), "inner" (η')
    schedule_scales: Literal["outer", "inner"] = "outer"


ENTROPY_SGD = Method("entropy-sgd")
PARLE = Method("parle", per_replica_anchors=True)
ELASTIC_SGD = Method("elastic-sgd", PLAIN_DESCENT, per_replica_anchors=True, schedule_scales="inner")
# sgd's K is its batch: scaling it would change the method
SGD = Method("sgd", PLAIN_DESCENT, scalable=False, schedule_scales="inner")
REPLICATED_SGD = Method("replicated-sgd", PLAIN_DESCENT, per_replica_anchors=True, scalable=False,
                        schedule_scales="inner")

METHODS: tuple[Method, ...] = (ENTROPY_SGD, PARLE, ELASTIC_SGD, SGD, REPLICATED_SGD)
