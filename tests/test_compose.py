"""The composition root (coordinator.compose), the pools' interface, the replicas' configuration,
and a spec resolved once where it enters."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from coordinator.compose import build_engine
from coordinator.pool import LocalPool, ReplicaPool
from coordinator.scheduler import Scheduler
from core.spec import JobSpec
from tests.helpers import local_engine, spec_of, synthetic
from worker.replica import Replica, ReplicaConfig


def test_a_local_pool_is_a_replica_pool_with_one_slot_per_replica():
    pool = local_engine(spec_of(strategy="parle", replicas=3)).pool
    assert isinstance(pool, ReplicaPool)
    assert [s.id for s in pool.slots] == pool.ids == [0, 1, 2] and pool.size == 3
    assert all(isinstance(s.replica, Replica) and s.replica.index == s.id for s in pool.slots)
    pool.remove([1])
    pool.add([1], {"drawn": 0})
    assert pool.ids == [0, 2, 1]


def test_a_replica_gets_what_it_uses_of_the_spec_not_the_spec():
    spec = spec_of(comm={"dtype": "bfloat16"}, dataset={"fraction": 0.5}, train={"seed": 3}).resolved()
    assert ReplicaConfig.from_spec(spec) == ReplicaConfig(model="mlp", batch_size=32, seed=3, fraction=0.5,
                                                          comm_dtype="bfloat16")
    pool = LocalPool(spec, synthetic())
    assert pool.config == ReplicaConfig.from_spec(spec) and pool.slots[0].replica.comm_dtype == "bfloat16"


def test_the_engine_is_built_from_a_resolved_spec_only():
    spec = spec_of(strategy="sgd")
    with pytest.raises(ValueError, match="build_engine takes a resolved spec"):
        build_engine(spec, synthetic(), LocalPool)
    engine = build_engine(spec.resolved(), synthetic(), LocalPool)
    assert engine.spec.inner.gamma0 == 0.0 and engine.strategy.spec is engine.spec


def test_resolving_is_idempotent_and_a_stored_resolved_spec_needs_none():
    spec = spec_of(strategy="elastic-sgd")
    resolved = spec.resolved()
    assert not spec.is_resolved and resolved.is_resolved
    assert resolved.resolved() is resolved
    stored = JobSpec.parse(resolved.to_dict())  # as the job store and spec.yaml give it back
    assert stored.is_resolved and stored.resolved() is stored and stored == resolved
    assert spec_of(strategy="parle").is_resolved  # nothing pinned


def test_the_scheduler_parses_a_queued_spec_once_and_again_only_when_it_changed():
    scheduler = Scheduler(m=None)
    data = spec_of(replicas=2).to_dict()
    rec = SimpleNamespace(id="j1", spec=data)
    first = scheduler.spec_of(rec)
    assert scheduler.spec_of(SimpleNamespace(id="j1", spec=dict(data))) is first  # the next tick
    scaled = scheduler.spec_of(SimpleNamespace(id="j1", spec={**data, "replicas": 3}))
    assert scaled.replicas == 3 and scaled is not first
