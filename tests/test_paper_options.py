"""Options the papers and their code use: per-replica initial seeds, Parle's paper form,
Replicated-SGD, Adam as the inner step, cosine LR schedules. Each against a hand-written or
hand-computed reference, and each off by default (the other test files pin today's behaviour)."""
import math

import numpy as np
import pytest
import torch

from coordinator.checkpoint import list_checkpoints
from coordinator.evaluate import init_seed, initial_model
from coordinator.local_run import run_job
from core.outer import cosine_factor
from core.spec import JobSpec, SpecError
from coordinator.strategies.base import RoundResult
from coordinator.strategies.parle import Parle
from worker.data.stream import BatchStream
from worker.flat import state_vector
from worker.langevin import langevin_step
from worker.models import task_loss
from tests.helpers import local_engine, ray_engine, spec_of, synthetic

TOL = dict(rtol=1e-5, atol=1e-6)


def _run(spec, rounds):
    eng = local_engine(spec)
    records = [eng.step() for _ in range(rounds)]
    return eng, records


def _stream(spec, k):
    ds = synthetic()
    return BatchStream(ds.num_train, spec.train.batch_size, spec.train.seed, k)


def _params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _field_of(data):
    with pytest.raises(SpecError) as err:
        JobSpec.parse(data)
    assert str(err.value).startswith(err.value.field + ":")
    return err.value.field


# ----- 1. replicas that start apart -------------------------------------------------------------

def test_per_replica_seeds_start_the_replicas_apart():
    spec = spec_of(strategy="parle", replicas=3, init={"per_replica_seeds": True})
    eng = local_engine(spec)
    rows = eng.strategy.states
    default = eng.evaluator.flat.state
    assert torch.equal(rows[0], default)  # replica 0 keeps the job's initial weights
    P = eng.strategy.num_params
    for a in range(3):
        for b in range(a + 1, 3):
            assert not torch.equal(rows[a, :P], rows[b, :P])
    expected = state_vector(initial_model(spec, synthetic(), 2))
    assert torch.equal(rows[2], expected)  # replica a built under its own seed
    torch.testing.assert_close(eng.strategy.reference()[:P], rows[:, :P].mean(dim=0))  # x̄ = their mean
    anchors = eng.strategy.anchors()  # what round 0 sends
    assert not np.array_equal(anchors[0], anchors[1])


def test_without_per_replica_seeds_all_replicas_start_equal_bit_for_bit():
    eng = local_engine(spec_of(strategy="parle", replicas=3))
    for row in eng.strategy.states:
        assert torch.equal(row, eng.evaluator.initial_state)
    assert eng.evaluator.initial_state.dim() == 1
    one = local_engine(spec_of(strategy="parle", replicas=1, init={"per_replica_seeds": True}))
    assert torch.equal(one.strategy.states[0], eng.evaluator.initial_state)  # K = 1: nothing changes


def test_per_replica_seeds_do_not_collide_across_job_seeds():
    assert init_seed(5, 0) == 5
    seeds = {init_seed(s, a) for s in range(3) for a in range(4)}
    assert len(seeds) == 12  # seed + rank would give only 6 distinct values here


def test_per_replica_seeds_need_one_anchor_per_replica():
    assert _field_of({"strategy": "entropy-sgd", "init": {"per_replica_seeds": True}}) == "init.per_replica_seeds"
    assert _field_of({"strategy": "sgd", "init": {"per_replica_seeds": True}}) == "init.per_replica_seeds"
    for strategy in ("parle", "elastic-sgd", "replicated-sgd"):
        JobSpec.parse({"train": {"outer_steps": 1}, "strategy": strategy, "init": {"per_replica_seeds": True}})


# ----- 2. Parle in the paper's form -------------------------------------------------------------

def test_parle_paper_form_hand_computed_two_rounds():
    """Two replicas, one weight each, f_a(x) = ½ (x − c_a)², c = (2, 0), starting apart at (1, −1).

    L = 2, η' = 0.5, ε = 0, α = 0.5, γ_t = 0.5·2^t, ρ_t = 0.25·2^t, η = 1, no momentum,
    outer.lr_form gamma:  x^a ← x^a − η (γ_t (x^a − μ_a) + ρ_t (x^a − x̄)).

    Round 0 (γ = 0.5, ρ = 0.25, x̄ = 0):
      a=1: x' 1 → 1.5 → 1.625,        μ 1.25 → 1.4375;
           d = 0.5(1 − 1.4375) + 0.25(1 − 0) = 0.03125             → x = 0.96875
      a=2: x' −1 → −0.5 → −0.375,     μ −0.75 → −0.5625;
           d = 0.5(−1 + 0.5625) + 0.25(−1 − 0) = −0.46875          → x = −0.53125
      x̄ = 0.21875
    Round 1 (γ = 1, ρ = 0.5, x̄ = 0.21875):
      a=1: x' → 1.484375 → 1.484375,  μ 1.2265625 → 1.35546875;
           d = (0.96875 − 1.35546875) + 0.5(0.96875 − 0.21875) = −0.01171875 → x = 0.98046875
      a=2: x' → −0.265625 → −0.265625, μ −0.3984375 → −0.33203125;
           d = (−0.53125 + 0.33203125) + 0.5(−0.53125 − 0.21875) = −0.57421875 → x = 0.04296875
      x̄ = 0.51171875
    (The direct form, d = (x − μ) + ρ (x − x̄), would give x = 1.1875 for a=1 after round 0.)
    """
    spec = JobSpec.parse({"strategy": "parle", "replicas": 2,
                          "inner": {"steps": 2, "lr": 0.5, "noise": 0.0, "alpha": 0.5, "gamma0": 0.5, "gamma1": 1.0},
                          "elastic": {"rho0": 0.25, "rho1": 1.0}, "outer": {"lr": 1.0, "lr_form": "gamma"},
                          "train": {"outer_steps": 2}})
    c = [torch.tensor([2.0]), torch.tensor([0.0])]
    strat = Parle(spec, torch.tensor([[1.0], [-1.0]]), 1)
    expected_mu = [[1.4375, -0.5625], [1.35546875, -0.33203125]]
    expected_x = [[0.96875, -0.53125], [0.98046875, 0.04296875]]
    expected_bar = [0.21875, 0.51171875]
    for t in range(2):
        hp = strat.round_params(t)
        assert (hp.gamma, strat.rho(t)) == (0.5 * 2 ** t, 0.25 * 2 ** t)
        results = []
        for a, anchor in enumerate(strat.anchors()):
            x = torch.from_numpy(anchor.copy())
            xp, mu = [x.clone()], [x.clone()]
            for _ in range(hp.steps):
                langevin_step(xp, [xp[0] - c[a]], [x], mu, [None], lr=hp.lr, gamma=hp.gamma, noise=0.0,
                              alpha=hp.alpha)
            assert mu[0].item() == expected_mu[t][a]
            results.append(RoundResult(a, mu[0].numpy()))
        strat.aggregate(t, results)
        assert strat.x[:, 0].tolist() == expected_x[t]  # exact: every number here is dyadic
        assert strat.reference().item() == expected_bar[t]

    direct = Parle(spec.replace(outer={"lr_form": "direct"}), torch.tensor([[1.0], [-1.0]]), 1)
    direct.round_params(0)
    direct.aggregate(0, [RoundResult(0, np.array([1.4375], np.float32)),
                         RoundResult(1, np.array([-0.5625], np.float32))])
    assert direct.x[0].item() == 1.1875


def test_gamma_form_is_rejected_where_gamma_is_zero():
    for strategy in ("sgd", "elastic-sgd", "replicated-sgd"):
        assert _field_of({"strategy": strategy, "outer": {"lr_form": "gamma"}}) == "outer.lr_form"
    assert _field_of({"strategy": "parle", "inner": {"gamma0": 0.0}, "outer": {"lr_form": "gamma"}}) == "outer.lr_form"
    JobSpec.parse({"train": {"outer_steps": 1}, "strategy": "parle", "outer": {"lr_form": "gamma"}})


# ----- 3. Replicated-SGD ------------------------------------------------------------------------

def _hand_rsgd(spec, rounds, *, start_apart):
    """rSGD as the reference implementation runs it: one model and one torch optimizer per
    replica; every L-th minibatch (the first of each period) the loss gets the coupling, whose
    gradient c_t (x^a − x̄) on the detached mean x̄ is added to the minibatch gradient."""
    ds, i, e = synthetic(), spec.inner, spec.elastic
    K, L = spec.replicas, i.steps
    models = [initial_model(spec, ds, a if start_apart else 0) for a in range(K)]
    for m in models:
        m.train()
    opts = [torch.optim.SGD(m.parameters(), lr=i.lr, momentum=i.momentum, nesterov=i.nesterov,
                            weight_decay=i.weight_decay) for m in models]
    streams = [_stream(spec, a) for a in range(K)]
    for step in range(rounds * L):
        coupling = step % L == 0
        if coupling:
            c = e.rho0 * (1 + e.rho1) ** (step // L)
            center = [torch.stack(ps).mean(dim=0) for ps in zip(*[[p.detach().clone() for p in m.parameters()]
                                                                   for m in models])]
        for m, opt, s in zip(models, opts, streams):
            x, y = ds.batch(s.next())
            opt.zero_grad()
            task_loss(m(x), y).backward()
            if coupling:
                for p, pc in zip(m.parameters(), center):
                    p.grad.add_(p.detach() - pc, alpha=c)
            opt.step()
    return models


@pytest.mark.parametrize("start_apart", [True, False])
def test_replicated_sgd_is_hand_written_rsgd(start_apart):
    spec = spec_of(strategy="replicated-sgd", replicas=3, init={"per_replica_seeds": start_apart},
                   inner={"steps": 3, "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
                   elastic={"rho0": 0.5, "rho1": 0.3})
    eng, records = _run(spec, 4)
    models = _hand_rsgd(spec.resolved(), 4, start_apart=start_apart)
    P = eng.strategy.num_params
    for a, m in enumerate(models):
        torch.testing.assert_close(eng.strategy.x[a], _params(m), **TOL)
    torch.testing.assert_close(eng.strategy.reference()[:P], sum(_params(m) for m in models) / 3, **TOL)
    assert records[-1]["rho"] == pytest.approx(0.5 * 1.3 ** 3)
    assert records[-1]["spread"] > 0


def test_elastic_sgd_is_replicated_sgd_only_with_one_plain_step_per_round():
    """L = 1, no momentum, no schedule, ρ_elastic = η' c: the same algorithm; L = 3: not."""
    lr, c = 0.05, 4.0
    common = dict(replicas=2, init={"per_replica_seeds": True})
    easgd, _ = _run(spec_of(strategy="elastic-sgd", inner={"steps": 1, "lr": lr}, elastic={"rho0": lr * c},
                            **common), 6)
    rsgd, _ = _run(spec_of(strategy="replicated-sgd", inner={"steps": 1, "lr": lr}, elastic={"rho0": c},
                           **common), 6)
    torch.testing.assert_close(easgd.strategy.x, rsgd.strategy.x, **TOL)
    easgd3, _ = _run(spec_of(strategy="elastic-sgd", inner={"steps": 3, "lr": lr}, elastic={"rho0": lr * c},
                             **common), 2)
    rsgd3, _ = _run(spec_of(strategy="replicated-sgd", inner={"steps": 3, "lr": lr}, elastic={"rho0": c},
                            **common), 2)
    assert (easgd3.strategy.x - rsgd3.strategy.x).abs().max() > 1e-4


def test_replicated_sgd_pins_like_the_other_baselines():
    spec = JobSpec.parse({"train": {"outer_steps": 1}, "strategy": "replicated-sgd", "replicas": 2}).resolved()
    assert (spec.inner.gamma0, spec.inner.noise, spec.inner.alpha, spec.outer.lr, spec.outer.momentum) == (0, 0, 1, 1, 0)
    assert _field_of({"strategy": "replicated-sgd", "inner": {"noise": 1e-3}}) == "inner.noise"


# ----- 4. Adam as the inner step ----------------------------------------------------------------

ADAM = {"optimizer": "adam", "lr": 0.01, "adam_beta1": 0.8, "adam_beta2": 0.99, "adam_eps": 1e-7,
        "weight_decay": 1e-3}


@pytest.mark.parametrize("steps", [1, 3])
def test_sgd_strategy_with_adam_is_torch_adam_step_for_step(steps):
    spec = spec_of(strategy="sgd", replicas=1, inner={**ADAM, "steps": steps})
    eng = local_engine(spec)
    ds, stream = synthetic(), _stream(spec, 0)
    model = initial_model(spec, ds)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-3)
    model.train()
    for _ in range(6):
        eng.step()
        for _ in range(steps):
            x, y = ds.batch(stream.next())
            opt.zero_grad()
            task_loss(model(x), y).backward()
            opt.step()
        torch.testing.assert_close(eng.strategy.reference(), state_vector(model))  # float32 round-off
    assert int(eng.pool.slots[0].replica.adam_state["step"]) == 6 * steps


def test_adam_state_is_checkpointed_and_a_resume_continues_exactly(tmp_path):
    spec = spec_of(strategy="sgd", replicas=2, inner={**ADAM, "steps": 2}, train={"outer_steps": 6, "eval_every": 3})
    run_job(spec, tmp_path / "a", local=True, progress=False)
    run_job(spec.replace(train={"outer_steps": 3}), tmp_path / "b", local=True, progress=False)
    half = torch.load(list_checkpoints(tmp_path / "b" / "checkpoints")[-1])
    assert half["replicas"][0]["adam"]["step"].item() == 6 and half["replicas"][0]["momentum_buffer"] is None
    run_job(spec, tmp_path / "b", resume=True, local=True, progress=False)
    a = torch.load(list_checkpoints(tmp_path / "a" / "checkpoints")[-1])
    b = torch.load(list_checkpoints(tmp_path / "b" / "checkpoints")[-1])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for ra, rb in zip(a["replicas"], b["replicas"]):
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(ra["adam"][k], rb["adam"][k])


def test_adam_goes_only_where_the_inner_loop_is_plain_descent():
    for strategy in ("entropy-sgd", "parle"):
        assert _field_of({"strategy": strategy, "inner": {"optimizer": "adam"}}) == "inner.optimizer"
    assert _field_of({"strategy": "sgd", "inner": {"optimizer": "adam", "momentum": 0.9}}) == "inner.momentum"
    assert _field_of({"strategy": "sgd", "inner": {"adam_beta2": 0.9}}) == "inner.adam_beta2"
    assert _field_of({"strategy": "sgd", "inner": {"optimizer": "adamw"}}) == "inner.optimizer"
    for strategy in ("sgd", "elastic-sgd", "replicated-sgd"):
        JobSpec.parse({"train": {"outer_steps": 1}, "strategy": strategy, "inner": {"optimizer": "adam", "adam_beta1": 0.5}})


def test_replicated_sgd_couples_through_adam():
    """The coupling is part of the gradient, so it enters Adam's moments (one round, L = 1)."""
    spec = spec_of(strategy="replicated-sgd", replicas=2, init={"per_replica_seeds": True},
                   inner={**ADAM, "steps": 1}, elastic={"rho0": 2.0})
    eng, _ = _run(spec, 2)
    ds = synthetic()
    models = [initial_model(spec, ds, a) for a in range(2)]
    opts = [torch.optim.Adam(m.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-3) for m in models]
    streams = [_stream(spec, a) for a in range(2)]
    for _ in range(2):
        center = [torch.stack(ps).mean(dim=0) for ps in zip(*[[p.detach().clone() for p in m.parameters()]
                                                               for m in models])]
        for m, opt, s in zip(models, opts, streams):
            m.train()
            x, y = ds.batch(s.next())
            opt.zero_grad()
            task_loss(m(x), y).backward()
            for p, pc in zip(m.parameters(), center):
                p.grad.add_(p.detach() - pc, alpha=2.0)
            opt.step()
    for a, m in enumerate(models):
        torch.testing.assert_close(eng.strategy.x[a], _params(m), **TOL)


# ----- 5. cosine schedules ----------------------------------------------------------------------

def test_cosine_factor_formula_and_torch_closed_form():
    T, m = 10, 0.1
    assert cosine_factor(0, T, m) == 1.0
    assert cosine_factor(5, T, m) == pytest.approx((1 + m) / 2)
    assert cosine_factor(T - 1, T, m) == pytest.approx(m + (1 - m) * 0.5 * (1 + math.cos(math.pi * 9 / 10)))
    assert cosine_factor(T, T, m) == m
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T, eta_min=0.5 * m)
    for t in range(T + 1):
        assert 0.5 * cosine_factor(t, T, m) == pytest.approx(sched._get_closed_form_lr()[0])
        opt.step()
        sched.step()
    with pytest.raises(ValueError):
        cosine_factor(-1, T)


def test_cosine_schedule_scales_eta_for_entropy_sgd_and_eta_prime_for_sgd():
    T, m = 8, 0.2
    eng, recs = _run(spec_of(strategy="entropy-sgd", outer={"lr": 0.5, "schedule": "cosine", "lr_min_factor": m},
                             inner={"steps": 1}, train={"outer_steps": T}), T)
    lrs = [r["lr"] for r in recs]
    assert lrs[0] == 0.5
    assert lrs[4] == pytest.approx(0.5 * (1 + m) / 2)
    assert lrs[T - 1] == pytest.approx(0.5 * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * (T - 1) / T))))
    assert all(r["inner_lr"] == 0.1 for r in recs) and eng.strategy.opt.param_groups[0]["lr"] == lrs[-1]
    eng.strategy.set_budget(2 * T)  # the engine's total, for a budget it counts (epochs)
    assert eng.strategy.schedule_factor(T) == pytest.approx(cosine_factor(T, 2 * T, m)) == pytest.approx((1 + m) / 2)
    _, recs = _run(spec_of(strategy="sgd", outer={"schedule": "cosine"}, inner={"steps": 1, "lr": 0.05},
                           train={"outer_steps": T}), T)
    assert [r["lr"] for r in recs] == [1.0] * T  # sgd's η is pinned: the schedule scales η'
    assert [r["inner_lr"] for r in recs] == pytest.approx([0.05 * cosine_factor(t, T) for t in range(T)])


def test_step_schedule_is_unchanged():
    eng = local_engine(spec_of(outer={"lr": 0.5, "milestones": [1.0, 2.0], "lr_factor": 0.5},
                               train={"epochs": 3, "outer_steps": None}))
    nb = eng.nb
    assert [eng.strategy.schedule_factor(t, eng.lr_factor(t)) for t in (0, nb - 1, nb, 2 * nb)] == [1.0, 1.0, 0.5, 0.25]
    eng.t = nb
    assert eng.step()["lr"] == 0.25 and eng.strategy.spec.outer.schedule == "step"


def test_schedule_fields_are_checked():
    assert _field_of({"outer": {"schedule": "cosine", "milestones": [1.0]}}) == "outer.milestones"
    assert _field_of({"outer": {"schedule": "cosine", "lr_factor": 0.5}}) == "outer.lr_factor"
    assert _field_of({"outer": {"lr_min_factor": 0.1}}) == "outer.lr_min_factor"
    assert _field_of({"outer": {"schedule": "linear"}}) == "outer.schedule"


def test_cosine_with_an_epochs_budget_anneals_over_the_engines_total():
    eng = local_engine(spec_of(outer={"schedule": "cosine"}, train={"epochs": 2, "outer_steps": None}))
    assert eng.strategy.budget == eng.total == 2 * eng.nb
    assert eng.strategy.schedule_factor(eng.total // 2) == pytest.approx(0.5)


# ----- the wire format carries every new field ---------------------------------------------------

def test_new_fields_round_trip_through_the_proto():
    from services.convert import proto_to_spec_dict, spec_to_proto

    spec = JobSpec.parse({"strategy": "replicated-sgd", "replicas": 2, "init": {"per_replica_seeds": True},
                          "inner": {"optimizer": "adam", "adam_beta1": 0.8, "adam_beta2": 0.99, "adam_eps": 1e-6},
                          "outer": {"schedule": "cosine", "lr_min_factor": 0.05}, "train": {"outer_steps": 10}})
    back = JobSpec.parse(proto_to_spec_dict(spec_to_proto(spec)))
    assert back == spec.resolved()
    assert JobSpec.parse(spec.resolved().to_dict()) == spec.resolved()


# ----- through real Ray actors ------------------------------------------------------------------

def test_ray_actors_run_replicated_sgd_with_adam_as_in_process_replicas(local_ray):
    """x̄ reaches the actors with the round's hyperparameters, Adam's state lives in each actor
    and comes back in the checkpoint state: the same numbers as LocalPool (one thread each)."""
    spec = spec_of(strategy="replicated-sgd", replicas=2, init={"per_replica_seeds": True},
                   inner={**ADAM, "steps": 2}, elastic={"rho0": 2.0}, resources={"cpus_per_replica": 1})
    ray_eng = ray_engine(spec)
    loc_eng, threads = local_engine(spec), torch.get_num_threads()
    try:
        for _ in range(3):
            ray_eng.step()
        torch.set_num_threads(1)
        for _ in range(3):
            loc_eng.step()
        assert torch.equal(ray_eng.strategy.states, loc_eng.strategy.states)
        ray_states, loc_states = ray_eng.pool.get_states(), loc_eng.pool.get_states()
        for r, l in zip(ray_states, loc_states):
            assert r["adam"]["step"].item() == 6 and torch.equal(r["adam"]["exp_avg"], l["adam"]["exp_avg"])
    finally:
        torch.set_num_threads(threads)
        ray_eng.pool.shutdown()
