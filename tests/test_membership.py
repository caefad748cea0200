"""Elastic membership on in-process replicas: resize at a round boundary, new replicas at the
reference, and a checkpoint taken after a resize resumes the new membership exactly."""
import pytest
import torch

from coordinator.pool import free_ids
from coordinator.strategies.parle import Parle
from core.events import Listener, record
from tests.helpers import local_engine, spec_of


class Events(Listener):
    def __init__(self):
        self.replica = []

    def on_replica(self, event):
        self.replica.append(record(event))


def parle_spec(**over):
    return spec_of(strategy="parle", replicas=3, inner={"steps": 2}, outer={"momentum": 0.9},
                   elastic={"rho0": 0.1}, train={"outer_steps": 20}, **over)


def test_free_ids_fill_the_smallest_gaps():
    assert free_ids([0, 2, 3], 2) == [1, 4]
    assert free_ids([], 3) == [0, 1, 2]


def test_parle_resize_keeps_rows_and_momentum_and_new_rows_start_at_the_reference():
    P = 4
    spec = spec_of(strategy="parle", replicas=3, outer={"momentum": 0.9})
    strat = Parle(spec, torch.arange(P + 1, dtype=torch.float32), P)
    strat.states[:, :P] += torch.tensor([[0.0], [1.0], [2.0]])
    strat.opt.state[strat.x]["momentum_buffer"] = torch.ones(3, P) * torch.tensor([[1.0], [2.0], [3.0]])
    ref = strat.reference().clone()
    strat.resize([0, 2], 2)
    assert strat.replicas == 4 and strat.states.shape == (4, P + 1)
    assert torch.equal(strat.states[1, :P], torch.arange(P, dtype=torch.float32) + 2.0)  # old row 2
    assert torch.equal(strat.states[2], ref) and torch.equal(strat.states[3], ref)
    buf = strat.opt.state[strat.x]["momentum_buffer"]
    assert buf[:, 0].tolist() == [1.0, 3.0, 0.0, 0.0]
    assert strat.x.data_ptr() == strat.states.data_ptr()  # x is still a view the optimizer steps
    with pytest.raises(ValueError, match="at least one"):
        strat.resize([], 1)


def test_scale_down_and_up_at_round_boundaries():
    events = Events()
    engine = local_engine(parle_spec())
    engine.listeners.append(events)
    engine.step()
    engine.request_resize(2)
    assert engine.pool.size == 3  # nothing changes until the next round begins
    record = engine.step()
    assert engine.pool.size == 2 and len(record["replicas"]) == 2 and engine.spec.replicas == 2
    assert [(e["replica"], e["kind"], e["replicas"]) for e in events.replica] == [(2, "removed", 2)]
    ref = engine.strategy.reference().clone()
    engine.request_resize(4)
    record = engine.step()
    assert engine.pool.size == 4 and engine.pool.ids == [0, 1, 2, 3]
    assert [(e["replica"], e["kind"]) for e in events.replica[1:]] == [(2, "added"), (3, "added")]
    assert all(e["round"] == 3 for e in events.replica[1:])
    # the new replicas' streams continue at the common position, not from the start
    assert {s.replica.stream.drawn for s in engine.pool.slots} == {3 * 2}
    assert record["replica_failures"] == 0 and torch.isfinite(engine.strategy.reference()).all()
    assert not torch.equal(engine.strategy.reference(), ref)


def test_a_checkpoint_after_a_resize_resumes_the_new_membership_exactly(tmp_path):
    engine = local_engine(parle_spec())
    engine.checkpoint_dir = tmp_path
    engine.step()
    engine.request_resize(2)
    engine.step()
    engine.request_resize(4)
    engine.step()
    ckpt = torch.load(engine.checkpoint(), weights_only=False)
    assert ckpt["replica_ids"] == [0, 1, 2, 3] and ckpt["spec"]["replicas"] == 4

    resumed = local_engine(parle_spec())  # built from the original 3-replica spec
    resumed.restore(ckpt)
    assert resumed.pool.size == 4 and resumed.pool.ids == [0, 1, 2, 3] and resumed.spec.replicas == 4
    a, b = engine.step(), resumed.step()
    assert a["loss"] == b["loss"]
    assert torch.equal(engine.strategy.reference(), resumed.strategy.reference())


def test_shared_anchor_strategies_only_change_the_count():
    engine = local_engine(spec_of(strategy="entropy-sgd", replicas=2, inner={"steps": 2}))
    engine.step()
    engine.request_resize(3)
    record = engine.step()
    assert engine.pool.size == 3 and engine.strategy.replicas == 3 and len(record["replicas"]) == 3


def test_replica_errors_survive_pickling_across_ray():
    """A trial's DivergenceError travels to Tune's driver by pickle; it must come back whole
    (it once failed to unpickle, and the trial's error became a TypeError)."""
    import pickle

    from coordinator.membership import DivergenceError, PlacementFailed

    for exc in (DivergenceError("diverged in round 3", 1, 3), PlacementFailed("no room", 0, 7)):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and (back.replica, back.round) == (exc.replica,
                                                                                                   exc.round)
