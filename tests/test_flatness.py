"""Hessian-free flatness estimators (coordinator/flatness.py, coordinator/spectrum.py) against exact answers.

Tolerances (all float64):
* quadratic ½xᵀAx, n = 50, known spectrum: Lanczos top-3 rtol 1e-6; Hutchinson (400 probes)
  within 3 standard errors and 10% of tr A; SLQ near-zero fraction within 0.1 of the truth;
  SLQ density integrates to 1 within 1e-3.
* 4→8→3 tanh MLP, Hessian from torch.autograd.functional.hessian: HVP atol 1e-10; top-3
  eigenvalues (Lanczos run to n = 67 steps) rtol 1e-8, atol 1e-10; Hutchinson within 3 SE.
  The same for the whole report (top eigenvalues from the SLQ runs, trace from their first
  moments plus extra probes), and the report is the same whether the subset is one HVP chunk or
  several (rtol 1e-10).
* quadratic: every Lanczos run's Ritz values lie below the true eigenvalues rank by rank
  (Cauchy interlacing, 1e-10 slack), so their per-rank maximum does too; SLQ's first moments
  ‖z‖²α₁ equal zᵀAz computed directly (rtol 1e-12). Deflated Hutchinson (Krylov space of the
  first run exact, the rest sampled): free samples from the other runs equal the explicit
  (P⊥z)ᵀA(P⊥z) (rtol 1e-10); 200 samples within 3 SE of tr A, with an SE under half of plain
  Hutchinson's on the same number of probes.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from coordinator.flatness import flatness_report, hvp_operator, local_entropy
from coordinator.spectrum import (_probe, deflated_trace, hutchinson_samples, hutchinson_trace, lanczos, lanczos_runs,
                                  near_zero_fraction, ritz, spectral_density, top_eigenvalues, top_from_runs,
                                  trace_estimate)
from worker.data.datasets import load_dataset
from worker.models import build_model, task_loss

# n = 50: 30 eigenvalues in [1e-5, 1e-4] ("flat"), 17 in [0.1, 1], and the top three 10, 5, 2.5.
SPECTRUM = np.concatenate([np.logspace(-5, -4, 30), np.logspace(-1, 0, 17), [2.5, 5.0, 10.0]])
THRESHOLD = 1e-3


@pytest.fixture(scope="module")
def quadratic():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((50, 50)))
    A = torch.from_numpy(q @ np.diag(SPECTRUM) @ q.T)
    return (lambda v: A @ v), A


def test_lanczos_top_eigenvalues_quadratic(quadratic):
    matvec, _ = quadratic
    top = top_eigenvalues(matvec, 50, 3, iters=30, seed=0)
    np.testing.assert_allclose(top, [10.0, 5.0, 2.5], rtol=1e-6)


def test_lanczos_is_orthonormal_and_stops_on_invariant_subspace(quadratic):
    matvec, A = quadratic
    alphas, betas, Q = lanczos(matvec, 50, 50, seed=1, return_vectors=True)
    assert len(betas) == len(alphas) - 1
    np.testing.assert_allclose((Q @ Q.T).numpy(), np.eye(len(alphas)), atol=1e-10)
    # A 3-dimensional invariant subspace: Lanczos stops after 3 steps with exact eigenvalues.
    D = torch.diag(torch.tensor([1.0, 2.0, 3.0] + [0.0] * 7, dtype=torch.float64))
    a, b, _ = lanczos(lambda v: D @ v, 10, 10, v0=torch.tensor([1.0] * 3 + [0.0] * 7))
    assert len(a) == 3
    np.testing.assert_allclose(ritz(a, b)[0], [1.0, 2.0, 3.0], rtol=1e-12)


def test_hutchinson_trace_quadratic(quadratic):
    matvec, _ = quadratic
    trace, se = hutchinson_trace(matvec, 50, probes=400, seed=0)
    exact = SPECTRUM.sum()
    assert se > 0
    assert abs(trace - exact) < 3 * se
    assert abs(trace - exact) < 0.1 * exact


def test_slq_near_zero_fraction_and_density_quadratic(quadratic):
    matvec, _ = quadratic
    slq = spectral_density(matvec, 50, iters=30, probes=10, seed=0, grid=2000)
    assert math.isclose(slq["weights"].sum(), 1.0, rel_tol=1e-12)
    assert abs(np.trapezoid(slq["density"], slq["grid"]) - 1.0) < 1e-3
    truth = float(np.mean(np.abs(SPECTRUM) < THRESHOLD))
    assert abs(near_zero_fraction(slq["nodes"], slq["weights"], THRESHOLD) - truth) < 0.1
    # Gauss quadrature is exact for degree 1: Σ τ θ = mean of vᵀAv over probes, within [λmin, λmax].
    assert SPECTRUM.min() <= float(slq["nodes"] @ slq["weights"]) <= SPECTRUM.max()


def test_slq_runs_give_hutchinson_samples_and_top_eigenvalue_bounds(quadratic):
    matvec, A = quadratic
    slq = spectral_density(matvec, 50, iters=12, probes=4, seed=5)
    gen = torch.Generator().manual_seed(5)
    direct = [float(z @ A @ z) for z in (_probe("rademacher", 50, gen) for _ in range(4))]
    np.testing.assert_allclose(slq["quadratic_forms"], direct, rtol=1e-12)
    # The first moments are Hutchinson samples: with many short runs they estimate tr A.
    many = spectral_density(matvec, 50, iters=2, probes=400, seed=0)
    trace, se = trace_estimate(many["quadratic_forms"])
    assert abs(trace - SPECTRUM.sum()) < 3 * se
    # Interlacing: rank by rank, every run's Ritz values are lower bounds, and so is their maximum.
    truth = np.sort(SPECTRUM)[::-1]
    for theta in slq["ritz"]:
        assert len(theta) == 12
        assert np.all(np.sort(theta)[::-1] <= truth[:12] + 1e-10)
    top = top_from_runs(slq["ritz"], 5)
    assert np.all(top <= truth[:5] + 1e-10) and np.all(np.diff(top) <= 0)
    for theta in slq["ritz"]:
        assert np.all(top >= np.sort(theta)[::-1][:5])
    np.testing.assert_allclose(top[:3], [10.0, 5.0, 2.5], rtol=1e-6)
    # Runs of different lengths: ranks beyond a short run come from the longer ones only.
    np.testing.assert_array_equal(top_from_runs([np.array([1.0, 3.0]), np.array([0.5, 2.0, 2.5])], 4),
                                  [3.0, 2.0, 0.5])
    with pytest.raises(ValueError, match="at least 2"):
        trace_estimate([1.0])


def test_deflated_trace_quadratic(quadratic):
    matvec, A = quadratic
    runs = lanczos_runs(matvec, 50, iters=8, probes=4, seed=2, keep_basis=True)
    Q = runs[0]["Q"]
    assert Q.shape == (8, 50) and all(r["Q"] is None for r in runs[1:])
    np.testing.assert_allclose((Q @ A @ Q.T).numpy(), np.diag(runs[0]["alphas"]) + np.diag(runs[0]["betas"], 1)
                               + np.diag(runs[0]["betas"], -1), atol=1e-10)
    trace, se, samples = deflated_trace(matvec, 50, runs, probes=2, seed=3)
    assert len(samples) == 3 + 2
    projected = [r["z"] - Q.T @ (Q @ r["z"]) for r in runs[1:]]
    np.testing.assert_allclose(samples[:3], [float(y @ A @ y) for y in projected], rtol=1e-10)
    np.testing.assert_allclose(samples[3:], hutchinson_samples(matvec, 50, probes=2, seed=3, basis=Q), rtol=1e-12)
    assert trace == pytest.approx(float(np.sum(runs[0]["alphas"])) + samples.mean(), rel=1e-12)
    # Unbiased, and the outliers (10, 5, 2.5) no longer drive the variance.
    trace, se, _ = deflated_trace(matvec, 50, runs[:1], probes=200, seed=0)
    exact = SPECTRUM.sum()
    assert abs(trace - exact) < 3 * se
    plain, plain_se = hutchinson_trace(matvec, 50, probes=200, seed=0)
    assert se < 0.5 * plain_se
    with pytest.raises(ValueError, match="basis"):
        deflated_trace(matvec, 50, runs[1:], probes=2)


@pytest.fixture(scope="module")
def tiny_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (16,), generator=gen))
               for _ in range(2)]
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of_flat(flat):
        params, off = {}, 0
        for name, shape in zip(names, shapes):
            k = math.prod(shape)
            params[name] = flat[off:off + k].view(shape)
            off += k
        return sum(task_loss(functional_call(model, params, (x,)), y) for x, y in batches) / len(batches)

    H = torch.autograd.functional.hessian(loss_of_flat, flat0)
    return model, batches, H


class _TensorDataset:
    """The part of worker.data's Dataset that flatness_report uses, over fixed tensors."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.num_train = self.num_test = int(x.shape[0])

    def batch(self, indices, split="train", device="cpu"):
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.x[idx].to(device), self.y[idx].to(device)


def test_hvp_matches_exact_hessian(tiny_mlp):
    model, batches, H = tiny_mlp
    matvec, n = hvp_operator(model, task_loss, batches)
    assert n == H.shape[0] == 67
    v = torch.randn(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(matvec(v), H @ v, atol=1e-10, rtol=0)
    uncached, _ = hvp_operator(model, task_loss, batches, cache_graph=False)
    torch.testing.assert_close(uncached(v), H @ v, atol=1e-10, rtol=0)


def test_top_eigenvalues_and_trace_match_exact_hessian(tiny_mlp):
    model, batches, H = tiny_mlp
    matvec, n = hvp_operator(model, task_loss, batches)
    exact = np.sort(np.linalg.eigvalsh(H.numpy()))[::-1]
    np.testing.assert_allclose(top_eigenvalues(matvec, n, 3, iters=n, seed=0), exact[:3], rtol=1e-8, atol=1e-10)
    trace, se = hutchinson_trace(matvec, n, probes=200, seed=0)
    assert abs(trace - float(torch.trace(H))) < 3 * se


def test_local_entropy_restores_weights_and_coupling_confines_chain(tiny_mlp):
    model, batches, _ = tiny_mlp
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {g: local_entropy(model, task_loss, batches, gamma=g, steps=30, lr=0.005, noise=0.3, seed=0)
            for g in (0.01, 100.0)}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for out in runs.values():
        assert all(math.isfinite(out[key]) for key in ("local_energy", "energy_gap", "mu_distance",
                                                       "entropy_grad_norm", "mean_distance"))
    assert runs[100.0]["mean_distance"] < runs[0.01]["mean_distance"]
    assert runs[100.0]["mu_distance"] < runs[0.01]["mu_distance"]
    again = local_entropy(model, task_loss, batches, gamma=0.01, steps=30, lr=0.005, noise=0.3, seed=0)
    assert again == runs[0.01]


def test_report_matches_exact_hessian_and_ignores_chunking(tiny_mlp):
    model, batches, H = tiny_mlp
    # All 32 samples (eval_samples = the pool), so the report's Hessian is the fixture's H.
    ds = _TensorDataset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))
    exact = np.sort(np.linalg.eigvalsh(H.numpy()))[::-1]
    kw = dict(eval_samples=32, top_k=3, lanczos_iters=67, slq_probes=2, hutchinson_probes=60, langevin_steps=3,
              langevin_batch=16, seed=0)
    report = flatness_report(model, ds, batch=32, **kw)
    # A run stops early once its Krylov space is invariant (here after 59 steps): one HVP per node.
    assert report["hvp_calls"] == len(report["slq"]["nodes"]) + 60 <= 2 * 67 + 60
    assert report["trace_probes"] == 61  # one free sample from the second run, 60 probes
    np.testing.assert_allclose(report["top_eigenvalues"], exact[:3], rtol=1e-8, atol=1e-10)
    assert report["min_ritz_value"] == pytest.approx(exact[-1], rel=1e-8, abs=1e-10)
    # Here the first run's Krylov space is invariant and the rest of the spectrum is tiny, so the
    # deflated trace is exact up to rounding (its SE is ~1e-17).
    assert abs(report["trace"] - float(torch.trace(H))) < 3 * report["trace_stderr"] + 1e-10
    chunked = flatness_report(model, ds, batch=16, **kw)
    for key in ("top_eigenvalues", "trace", "trace_stderr", "near_zero_fraction", "min_ritz_value"):
        np.testing.assert_allclose(chunked[key], report[key], rtol=1e-10, atol=1e-12)
    assert chunked["local_entropy"] == report["local_entropy"]
    with pytest.raises(ValueError, match="hutchinson_probes"):
        flatness_report(model, ds, slq_probes=2, hutchinson_probes=0)


REPORT_KEYS = {"num_params", "eval_samples", "split", "seed", "loss", "top_eigenvalues", "min_ritz_value",
               "trace", "trace_stderr", "trace_probes", "trace_krylov_part", "near_zero_fraction",
               "near_zero_threshold", "near_zero_relative_threshold", "slq_min_abs_node", "density", "slq",
               "local_entropy", "hvp_calls", "timings", "seconds"}


def test_flatness_report_on_mlp_synthetic():
    ds = load_dataset("synthetic", synthetic_size=512)
    torch.manual_seed(0)
    model = build_model("mlp", ds.input_shape, ds.num_classes)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(eval_samples=128, batch=64, top_k=3, lanczos_iters=10, slq_probes=2, hutchinson_probes=4,
              langevin_steps=4, seed=3)
    report = flatness_report(model, ds, **kw)
    assert set(report) == REPORT_KEYS
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert len(report["top_eigenvalues"]) == 3 and report["top_eigenvalues"] == sorted(report["top_eigenvalues"],
                                                                                         reverse=True)
    assert 0.0 <= report["near_zero_fraction"] <= 1.0
    assert report["hvp_calls"] == 2 * 10 + 4 and report["trace_probes"] == 1 + 4
    assert set(report["timings"]) == {"data_s", "graph_s", "lanczos_s", "hutchinson_s", "langevin_s"}
    assert abs(np.trapezoid(report["density"]["density"], report["density"]["grid"]) - 1.0) < 1e-3
    assert all(math.isfinite(x) for x in (report["trace"], report["trace_stderr"], report["loss"],
                                          report["local_entropy"]["local_energy"]))
    again = flatness_report(model, ds, **kw)
    np.testing.assert_allclose(again["top_eigenvalues"], report["top_eigenvalues"], rtol=1e-5)
    np.testing.assert_allclose(again["trace"], report["trace"], rtol=1e-5)
