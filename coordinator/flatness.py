"""Flatness of a minimum, measured without forming the Hessian (Entropy-SGD, §2 and Fig. 1).

The paper's central observation: minima that generalise are *wide* — the Hessian ``H = ∇²f(x)``
of the training loss has a few large eigenvalues and a bulk piled up near zero. Everything here
touches ``H`` only through Hessian-vector products (Pearlmutter's trick, double backprop)::

    H v = ∇_x (∇f(x) · v)          one extra backward pass, never the n × n matrix

on a fixed evaluation subset, in eval mode (BatchNorm on running statistics, dropout off, so
``f`` is one deterministic function). On top:

The spectral numerics are coordinator.spectrum's (pure functions of a matvec):

* Lanczos with full reorthogonalisation → the largest eigenvalues (Ritz values of T_m);
* stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani et al. 2019) → the spectral
  density ``φ(λ) = (1/n) Σ_i δ(λ − λ_i)`` and the fraction of eigenvalues near zero;
* Hutchinson's estimator ``tr H = E[zᵀ H z]`` (Rademacher z) with its standard error;
* a short Langevin chain → the local energy around x and the local-entropy gradient ``γ(x − μ)``.

Hessian-vector products are the whole cost, so :func:`flatness_report` spends each one once: its
SLQ runs also give the top eigenvalues (Ritz values are lower bounds, rank by rank) and the exact
trace of the first run's Krylov space; Hutchinson probes only sample the rest of the trace
(:func:`deflated_trace`), which varies several times less than plain Hutchinson samples.

Spectral work is float64 whatever the model's dtype; all randomness comes from explicit seeds.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from coordinator.spectrum import deflated_trace, density_from_runs, lanczos_runs, near_zero_fraction, top_from_runs
from worker.langevin import langevin_step
from worker.models import task_loss

Matvec = Callable[[Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
Batch = tuple[Tensor, Tensor]


def _params(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _flat(tensors: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(tensors, like)])


def hvp_operator(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *,
                 cache_graph: bool = True) -> tuple[Matvec, int]:
    """``v ↦ H v`` for ``f = Σ_b (|b|/N) loss_fn(model(x_b), y_b)``, the mean loss over the batches.

    ``H v = ∇(g · v)`` with ``g = ∇f`` built with ``create_graph=True``. Vectors are flat, in
    ``model.parameters()`` order (parameters with ``requires_grad`` only); ``n`` is their length.
    With ``cache_graph`` the per-batch gradient graphs are built once and every product is one
    double-backward pass per batch (memory: the activations of all batches). The operator reads
    the weights as they are now; changing them in place afterwards invalidates a cached graph
    (autograd then raises). The model's train/eval mode is the caller's choice.
    """
    params = _params(model)
    n = sum(p.numel() for p in params)
    batches = list(batches)
    total = sum(int(x.shape[0]) for x, _ in batches)
    weights = [int(x.shape[0]) / total for x, _ in batches]
    dtype, device = params[0].dtype, params[0].device

    def grad_graph(x: Tensor, y: Tensor) -> Tensor:
        loss = loss_fn(model(x), y)
        return _flat(torch.autograd.grad(loss, params, create_graph=True, allow_unused=True), params)

    cached = [grad_graph(x, y) for x, y in batches] if cache_graph else None

    def matvec(v: Tensor) -> Tensor:
        v = v.to(device=device, dtype=dtype).reshape(-1)
        out = torch.zeros(n, dtype=dtype, device=device)
        for i, (x, y) in enumerate(batches):
            g = cached[i] if cached is not None else grad_graph(x, y)
            if g.requires_grad:
                hv = torch.autograd.grad(g, params, grad_outputs=v, retain_graph=cached is not None,
                                         allow_unused=True)
                out.add_(_flat(hv, params), alpha=weights[i])
        return out

    return matvec, n


def _snapshot(model: nn.Module) -> list[Tensor]:
    return [t.detach().clone() for t in model.state_dict(keep_vars=True).values()]


def _restore(model: nn.Module, saved: list[Tensor]) -> None:
    with torch.no_grad():
        for dst, src in zip(model.state_dict(keep_vars=True).values(), saved):
            dst.copy_(src)


def _mean_loss(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch]) -> float:
    total = sum(int(x.shape[0]) for x, _ in batches)
    with torch.no_grad():
        return sum(float(loss_fn(model(x), y)) * int(x.shape[0]) / total for x, y in batches)


def local_entropy(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *, gamma: float,
                  steps: int = 20, lr: float = 0.1, noise: float = 1e-4, seed: int = 0,
                  alpha: float | None = None) -> dict:
    """Run the Entropy-SGD inner chain from x (anchor = x, coupling γ) and summarise it.

    :func:`worker.langevin.langevin_step` with minibatches cycling through ``batches`` is SGLD on
    ``f(x') + γ/2 ‖x − x'‖²``; its stationary law is the local Gibbs measure
    ``ρ(x') ∝ exp(−(f(x') + γ/2 ‖x − x'‖²) / T)`` with temperature ``T = noise² / 2`` (T = 1 for
    noise = √2). Estimated, as chain averages over x'_1 … x'_{L−1}:

    * ``local_energy`` ``⟨f(x')⟩`` (each f on the minibatch that gave that step's gradient, so no
      extra forward passes), and ``energy_gap = ⟨f(x')⟩ − f(x)``: how the loss grows (or falls)
      within the coupling radius — small in a wide valley;
    * ``mu_distance = ‖x − μ‖`` with μ the chain mean (``alpha=None``: the uniform mean; a float:
      the engine's exponential average), and ``entropy_grad_norm = γ ‖x − μ‖``, the norm of the
      local-entropy gradient ``−∇F(x; γ) = γ (x − ⟨x'⟩)`` that Entropy-SGD steps along;
    * ``mean_distance`` ``⟨‖x' − x‖⟩`` and ``final_distance``: how far the chain wanders.

    Limits: a short chain from x is not equilibrated (burn-in bias, most for small γ), minibatch
    gradients add noise of their own, and the engine's tiny default noise makes T ≪ 1 (the chain
    is then close to gradient descent on the coupled energy). The local entropy
    ``F(x; γ) = log ∫ exp(−f(x') − γ/2 ‖x − x'‖²) dx'`` itself — a partition function — is *not*
    estimated. Weights and buffers are restored exactly; the mode is the caller's (use eval).
    """
    if steps < 2:
        raise ValueError(f"local_entropy needs steps >= 2, got {steps}")
    params = _params(model)
    saved = _snapshot(model)
    anchors = [p.detach().clone() for p in params]
    mus = [a.clone() for a in anchors]
    bufs: list[Tensor | None] = [None] * len(params)
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    batches = list(batches)

    def distance(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
        return math.sqrt(sum(float((x.detach() - y).pow(2).sum()) for x, y in zip(a, b)))

    energies, distances = [], []
    try:
        f_x = _mean_loss(model, loss_fn, batches)
        for t in range(steps):
            x, y = batches[t % len(batches)]
            loss = loss_fn(model(x), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
            if t > 0:
                energies.append(float(loss.detach()))
            langevin_step(params, grads, anchors, mus, bufs, lr=lr, gamma=gamma, noise=noise,
                          alpha=1.0 / (t + 1) if alpha is None else alpha, generator=gen)
            distances.append(distance(params, anchors))
    finally:
        _restore(model, saved)
    mu_distance = distance(mus, anchors)
    return {"gamma": gamma, "steps": steps, "anchor_loss": f_x, "local_energy": float(np.mean(energies)),
            "energy_gap": float(np.mean(energies)) - f_x, "mu_distance": mu_distance,
            "entropy_grad_norm": gamma * mu_distance, "mean_distance": float(np.mean(distances)),
            "final_distance": distances[-1]}


def flatness_report(model: nn.Module, dataset, *, eval_samples: int = 1000, batch: int | None = None,
                    split: str = "train", top_k: int = 5, lanczos_iters: int = 30, slq_probes: int = 1,
                    hutchinson_probes: int = 12, threshold: float = 1e-2, density_points: int = 200,
                    sigma: float | None = None, gamma: float = 0.03, langevin_steps: int = 20,
                    langevin_batch: int = 250, langevin_lr: float = 0.1, langevin_noise: float = 1e-4,
                    seed: int = 0, loss_fn: LossFn = task_loss) -> dict:
    """All of the above for ``model`` at its current weights, on a fixed seeded subset of
    ``eval_samples`` samples of ``split`` (the training loss by default: flatness is a property
    of the minimum the optimiser found). The Hessian-vector products run on the subset in
    chunks of ``batch`` samples (default ``None``: the whole subset as one chunk, no slower than
    a split on LeNet; the graphs of all chunks are cached either way, so smaller chunks only trim
    each product's temporaries; the result is the same up to rounding). The Langevin chain
    cycles through minibatches of ``langevin_batch``.

    One set of Lanczos runs serves every spectral estimate, so each Hessian-vector product is
    used once: ``slq_probes`` runs of ``lanczos_iters`` steps (at least ``top_k``) from Rademacher
    starts give the SLQ density and near-zero fraction; the same runs give the top eigenvalues
    (:func:`top_from_runs`: per rank, the largest Ritz value over the runs, each a lower bound)
    and the trace (:func:`deflated_trace`): the first run's Krylov space exactly, the rest by
    Hutchinson samples off it — one free from each other run's start, plus ``hutchinson_probes``
    at one product each (``trace_probes`` in all, the count behind ``trace_stderr``).

    ``threshold`` is *relative*: an eigenvalue counts as near zero when ``|λ| < threshold · λ_max``
    (λ_max: the largest |Ritz value|), since Hessian scales change with the loss, parametrisation
    and training time; the absolute cut-off used is ``near_zero_threshold``. The default 1e-2
    (not 1e-3) respects SLQ's resolution: with 30 nodes the bulk near 0 lands on nodes about
    0.3–0.7% of λ_max away from 0 (LeNet at init), so a narrower band reads 0 by construction.
    Compare with ``slq_min_abs_node``: a threshold below it always gives 0.

    The model runs in eval mode (BatchNorm on running statistics, dropout off); its mode, weights
    and buffers are restored. Deterministic given ``seed`` (up to floating-point reduction order).
    Cost: ``hvp_calls = slq_probes · max(lanczos_iters, top_k) + hutchinson_probes`` Hessian-vector
    products over the subset (fewer if a run stops on an invariant subspace), each about one
    training step's forward + backward per sample (measured on LeNet); plus one gradient graph
    over the subset and ``langevin_steps`` minibatch gradients. ``timings`` splits ``seconds`` by
    stage. The defaults — 1 × 30 + 12 = 42 products on 1000 samples — cost 0.5–0.8 of a training
    epoch for LeNet on Fashion-MNIST (``bench/flatness_cost.py``, docs/benchmarks.md). Why these
    sizes, from 60-step reference runs on a LeNet trained for 200 steps (1024 samples): the top 5
    Ritz values of one 30-step run agree with the reference to 1e-7 (relative), and its near-zero
    fraction with that of three runs to 0.001 — with n ≈ 10⁵ parameters one SLQ probe already
    has little variance (it is O(1/n)) — while plain Hutchinson samples there have a relative
    spread of about 30% (heavy-tailed: ``λ_i (u_iᵀz)²`` of the outliers) and deflated ones about
    10% (23% on a LeNet after half an epoch, against 35% plain), so 12 deflated probes give a
    smaller standard error than the 20 plain ones used before.
    """
    if slq_probes < 1 or hutchinson_probes < 0 or slq_probes - 1 + hutchinson_probes < 2:
        raise ValueError(f"need slq_probes >= 1, hutchinson_probes >= 0 and slq_probes - 1 + hutchinson_probes >= 2 "
                         f"(trace samples for a standard error), got {slq_probes} and {hutchinson_probes}")
    if (batch is not None and batch < 1) or langevin_batch < 1:
        raise ValueError(f"batch and langevin_batch must be >= 1, got {batch} and {langevin_batch}")
    start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        return now

    modes = {m: m.training for m in model.modules()}
    saved = _snapshot(model)
    p0 = _params(model)[0]
    pool = dataset.num_train if split == "train" else dataset.num_test
    size = min(eval_samples, pool)
    idx = np.sort(np.random.default_rng(seed).choice(pool, size=size, replace=False))
    x_all, y_all = dataset.batch(idx, split, device=p0.device)
    if x_all.is_floating_point():
        x_all = x_all.to(p0.dtype)
    chunk = size if batch is None else batch
    hvp_batches = [(x_all[i:i + chunk], y_all[i:i + chunk]) for i in range(0, size, chunk)]
    chain_batches = [(x_all[i:i + langevin_batch], y_all[i:i + langevin_batch]) for i in range(0, size, langevin_batch)]
    calls = [0]
    t = lap("data_s", start)
    try:
        model.eval()
        hvp, n = hvp_operator(model, loss_fn, hvp_batches)
        t = lap("graph_s", t)

        def matvec(v: Tensor, hvp: Matvec = hvp) -> Tensor:
            calls[0] += 1
            return hvp(v)

        iters = max(lanczos_iters, top_k)
        runs = lanczos_runs(matvec, n, iters=iters, probes=slq_probes, seed=seed + 1, keep_basis=True)
        slq = density_from_runs(runs, density_points, sigma)
        t = lap("lanczos_s", t)
        trace, stderr, samples = deflated_trace(matvec, n, runs, probes=hutchinson_probes, seed=seed + 2)
        krylov_part = float(np.sum(runs[0]["alphas"]))
        del runs
        t = lap("hutchinson_s", t)
        top = top_from_runs(slq["ritz"], top_k)
        min_ritz = min(float(np.min(theta)) for theta in slq["ritz"])
        abs_threshold = threshold * float(np.abs(slq["nodes"]).max())
        del hvp, matvec  # free the cached graphs before the chain moves the weights
        chain = local_entropy(model, loss_fn, chain_batches, gamma=gamma, steps=langevin_steps,
                              lr=langevin_lr, noise=langevin_noise, seed=seed + 3)
        lap("langevin_s", t)
    finally:
        _restore(model, saved)
        for m, training in modes.items():
            m.train(training)
    return {
        "num_params": n, "eval_samples": size, "split": split, "seed": seed, "loss": chain["anchor_loss"],
        "top_eigenvalues": [float(v) for v in top], "min_ritz_value": min_ritz,
        "trace": trace, "trace_stderr": stderr, "trace_probes": int(samples.size), "trace_krylov_part": krylov_part,
        "near_zero_fraction": near_zero_fraction(slq["nodes"], slq["weights"], abs_threshold),
        "near_zero_threshold": abs_threshold, "near_zero_relative_threshold": threshold,
        "slq_min_abs_node": float(np.abs(slq["nodes"]).min()),
        "density": {"grid": slq["grid"].tolist(), "density": slq["density"].tolist(), "sigma": slq["sigma"]},
        "slq": {"nodes": slq["nodes"].tolist(), "weights": slq["weights"].tolist(), "probes": slq_probes,
                "iters": iters},
        "local_entropy": chain, "hvp_calls": calls[0], "timings": timings,
        "seconds": time.perf_counter() - start,
    }
