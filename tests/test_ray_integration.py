"""Real local Ray: actors, object-store broadcast, and the same numbers as in-process replicas."""
import numpy as np
import pytest
import torch

from coordinator.pool import PlacementError, RayPool
from core.events import Listener
from tests.helpers import local_engine, ray_engine, spec_of, synthetic


@pytest.mark.parametrize("strategy", ["parle", "entropy-sgd"])
def test_ray_replicas_reproduce_in_process_replicas(local_ray, strategy):
    spec = spec_of(strategy=strategy, replicas=2, inner={"steps": 3, "noise": 1e-3, "momentum": 0.5},
                   resources={"cpus_per_replica": 1})
    ray_eng, loc_eng = ray_engine(spec), local_engine(spec)
    try:
        info = [s.info for s in ray_eng.pool.slots]
        assert len({i["pid"] for i in info}) == 2  # one process per replica
        assert all(i["threads"] == 1 and i["device"] == "cpu" for i in info)
        for _ in range(3):
            rec = ray_eng.step()
            loc_eng.step()
        torch.testing.assert_close(ray_eng.strategy.reference(), loc_eng.strategy.reference())
        n = ray_eng.strategy.reference().numel() * 4
        # a shared anchor is put once per round, Parle's K anchors once each
        assert rec["bytes_sent"] == (2 * n if strategy == "parle" else n)
        assert rec["bytes_received"] == 2 * n
        assert rec["compute_s"] > 0 and rec["round_s"] >= rec["compute_s"]
    finally:
        ray_eng.pool.shutdown()


def test_checkpoint_state_round_trips_through_actors(local_ray):
    spec = spec_of(strategy="entropy-sgd", replicas=2, inner={"steps": 2, "momentum": 0.9},
                   resources={"cpus_per_replica": 0.5})
    eng = ray_engine(spec)
    try:
        eng.step()
        states = eng.pool.get_states()
        assert [s["drawn"] for s in states] == [2, 2]
        assert all(s["momentum_buffer"] is not None for s in states)
        eng.pool.set_states([{**s, "drawn": 7} for s in states])
        assert [s["drawn"] for s in eng.pool.get_states()] == [7, 7]
    finally:
        eng.pool.shutdown()


def test_unplaceable_replicas_time_out_with_a_clear_error(local_ray):
    spec = spec_of(replicas=1, resources={"cpus_per_replica": 1, "gpus_per_replica": 1})
    with pytest.raises(PlacementError, match="not placed within"):
        RayPool(spec, synthetic(), placement_timeout_s=3)
    assert np.isclose(local_ray.available_resources().get("CPU", 0), 2)  # nothing leaked


def test_a_replica_dying_between_rounds_is_recreated_when_the_engine_checkpoints(local_ray, tmp_path):
    spec = spec_of(strategy="parle", replicas=2, inner={"steps": 2}, resources={"cpus_per_replica": 0.5})
    eng = ray_engine(spec)
    eng.checkpoint_dir = tmp_path
    seen = []
    eng.listeners.append(type("L", (Listener,), {"on_replica": lambda self, r: seen.append((r.replica, r.kind))})())
    try:
        eng.step()
        local_ray.kill(eng.pool.slots[1].replica)  # dies after its round, before the checkpoint asks for its state
        ckpt = torch.load(eng.checkpoint(), weights_only=False)
        assert seen == [(1, "failed"), (1, "restarted")] and eng.counters["replica_failures"] == 1
        assert [s["drawn"] for s in ckpt["replicas"]] == [2, 2]  # the new replica continues the stream
        assert eng.step()["replica_failures"] == 0
    finally:
        eng.pool.shutdown()


def test_a_replica_that_dies_on_its_way_up_is_replaced_within_the_placement_timeout(local_ray):
    """A node lost just as Ray placed a replica there kills it before it runs; the pool starts
    a fresh one (placed where there is room) instead of failing the job with that error."""
    spec = spec_of(replicas=1, resources={"cpus_per_replica": 0.5})
    pool = RayPool(spec, synthetic(), placement_timeout_s=60)
    try:
        made, new = [], pool._new

        def dies_first(k):
            actor = new(k)
            made.append(actor)
            if len(made) == 1:
                local_ray.kill(actor)  # killed before ready() ran: a system death, not an __init__ error
            return actor

        pool._new = dies_first
        pool.restart(0, {"drawn": 3})
        assert len(made) == 2 and pool.slots[0].replica is made[1]
        assert pool.get_states()[0]["drawn"] == 3
    finally:
        pool.shutdown()


def test_a_replica_whose_constructor_raises_is_not_retried(local_ray):
    from ray.exceptions import RayActorError

    spec = spec_of(replicas=1, resources={"cpus_per_replica": 0.5})
    pool = RayPool(spec, synthetic(), placement_timeout_s=60)
    try:
        made = []
        pool._new = lambda k: made.append(k) or local_ray.remote(_BrokenReplica).remote()
        with pytest.raises(RayActorError, match="broken on purpose"):
            pool.restart(0, {"drawn": 0})
        assert made == [0]
    finally:
        pool.shutdown()


class _BrokenReplica:
    def __init__(self):
        raise ValueError("broken on purpose")

    def ready(self):
        return {}
