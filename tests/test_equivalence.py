"""The special cases of docs/design.md ("Special cases the tests pin down"), on real tensors,
noise off, to floating-point tolerance."""
import copy

import torch

from coordinator.evaluate import initial_model
from worker.data.stream import BatchStream
from worker.flat import state_vector
from worker.models import task_loss
from worker.optim import EntropySGD
from tests.helpers import local_engine, spec_of, synthetic

TOL = dict(rtol=1e-5, atol=1e-6)


def _run(spec, rounds):
    eng = local_engine(spec)
    for _ in range(rounds):
        eng.step()
    return eng


def _stream(spec, k):
    ds = synthetic()
    return BatchStream(ds.num_train, spec.train.batch_size, spec.train.seed, k)


def test_parle_with_one_replica_and_no_coupling_is_entropy_sgd():
    common = dict(replicas=1, inner={"steps": 4, "noise": 0.0, "gamma0": 0.03, "gamma1": 0.1, "momentum": 0.5},
                  outer={"lr": 0.5, "momentum": 0.9, "nesterov": True}, elastic={"rho0": 0.0})
    parle = _run(spec_of(strategy="parle", **common), 6)
    esgd = _run(spec_of(strategy="entropy-sgd", **common), 6)
    torch.testing.assert_close(parle.strategy.reference(), esgd.strategy.reference(), **TOL)
    assert not torch.equal(esgd.strategy.reference(), esgd.evaluator.initial_state)  # it did move


def test_sgd_strategy_with_one_replica_is_plain_torch_sgd():
    spec = spec_of(strategy="sgd", replicas=1, inner={"steps": 3, "lr": 0.05, "momentum": 0.9, "nesterov": True,
                                                       "weight_decay": 1e-3})
    eng = _run(spec, 4)
    ds, stream = synthetic(), _stream(spec, 0)
    model = initial_model(spec, ds)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    model.train()
    for _ in range(12):
        x, y = ds.batch(stream.next())
        opt.zero_grad()
        task_loss(model(x), y).backward()
        opt.step()
    torch.testing.assert_close(eng.strategy.reference(), state_vector(model), **TOL)


def test_sgd_strategy_with_k_replicas_and_one_step_is_data_parallel_sgd():
    spec = spec_of(strategy="sgd", replicas=3, inner={"steps": 1, "lr": 0.05, "momentum": 0.9})
    eng = _run(spec, 5)
    ds = synthetic()
    streams = [_stream(spec, k) for k in range(3)]
    model = initial_model(spec, ds)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(5):
        grads = []
        for s in streams:
            x, y = ds.batch(s.next())
            m = copy.deepcopy(model)  # every replica starts the step from the same weights
            task_loss(m(x), y).backward()
            grads.append([p.grad for p in m.parameters()])
        for i, p in enumerate(model.parameters()):
            p.grad = sum(g[i] for g in grads) / len(grads)
        opt.step()
    P = eng.strategy.num_params
    ref = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(eng.strategy.reference()[:P], ref, **TOL)


def test_elastic_sgd_is_easgd_with_period_tau():
    tau, rho, lr = 3, 0.2, 0.05
    spec = spec_of(strategy="elastic-sgd", replicas=2, inner={"steps": tau, "lr": lr}, elastic={"rho0": rho})
    eng = _run(spec, 4)
    ds = synthetic()
    streams = [_stream(spec, k) for k in range(2)]
    base = initial_model(spec, ds)
    workers = [copy.deepcopy(base), copy.deepcopy(base)]
    P = eng.strategy.num_params
    for _ in range(4):
        anchors = [torch.cat([p.detach().reshape(-1) for p in w.parameters()]) for w in workers]
        center = sum(anchors) / 2
        for w, s, anchor in zip(workers, streams, anchors):
            opt = torch.optim.SGD(w.parameters(), lr=lr)
            for _ in range(tau):
                x, y = ds.batch(s.next())
                opt.zero_grad()
                task_loss(w(x), y).backward()
                opt.step()
            local = torch.cat([p.detach().reshape(-1) for p in w.parameters()])
            new = local - rho * (anchor - center)  # x^a ← x'^a_τ − ρ (x^a − x̄)
            torch.nn.utils.vector_to_parameters(new, w.parameters())
    torch.testing.assert_close(eng.strategy.x[0], torch.cat([p.detach().reshape(-1) for p in workers[0].parameters()]), **TOL)
    torch.testing.assert_close(eng.strategy.reference()[:P],
                               sum(torch.cat([p.detach().reshape(-1) for p in w.parameters()]) for w in workers) / 2,
                               **TOL)


def test_standalone_optimizer_matches_the_engine():
    """EntropySGD (torch.optim) and the engine share kernels: one chain gives the same x."""
    spec = spec_of(strategy="entropy-sgd", replicas=1,
                   inner={"steps": 5, "lr": 0.1, "noise": 0.0, "gamma0": 0.03, "gamma1": 0.5, "alpha": 0.75,
                          "weight_decay": 1e-3},
                   outer={"lr": 0.7, "momentum": 0.5})
    eng = _run(spec, 3)
    ds, stream = synthetic(), _stream(spec, 0)
    model = initial_model(spec, ds)
    opt = EntropySGD(model.parameters(), lr=0.7, momentum=0.5, inner_lr=0.1, inner_steps=5, gamma0=0.03,
                     gamma1=0.5, noise=0.0, alpha=0.75, weight_decay=1e-3)
    model.train()

    def closure():
        x, y = ds.batch(stream.next())
        opt.zero_grad()
        loss = task_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    torch.testing.assert_close(eng.strategy.reference(), state_vector(model), **TOL)
