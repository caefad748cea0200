"""Each method is declared once (core.methods); the tables of methods are derived from it."""
from __future__ import annotations

from core import methods, spec
from coordinator.manager import SCALABLE
from coordinator.strategies import STRATEGIES
from coordinator.strategies.parle import Parle

BASELINE = {"inner": {"gamma0": 0.0, "noise": 0.0, "alpha": 1.0}, "outer": {"lr": 1.0, "momentum": 0.0}}


def test_the_tables_are_what_they_were_when_written_by_hand():
    assert spec.STRATEGIES == ("entropy-sgd", "parle", "elastic-sgd", "sgd", "replicated-sgd")
    assert spec.FORCED == {"sgd": BASELINE, "elastic-sgd": BASELINE, "replicated-sgd": BASELINE}
    assert set(spec.PER_REPLICA_ANCHORS) == {"parle", "elastic-sgd", "replicated-sgd"}
    assert set(spec.PLAIN_INNER_LOOP) == {"sgd", "elastic-sgd", "replicated-sgd"}
    assert set(SCALABLE) == {"parle", "elastic-sgd", "entropy-sgd"}


def test_every_method_has_one_strategy_class_that_points_at_it():
    assert list(STRATEGIES) == [m.name for m in methods.METHODS]
    for m in methods.METHODS:
        cls = STRATEGIES[m.name]
        assert cls.method is m
        # one anchor per replica is Parle's machinery; a shared anchor is Entropy-SGD's
        assert issubclass(cls, Parle) == m.per_replica_anchors

