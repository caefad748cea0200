"""Flatness of a minimum, measured without forming the Hessian (Entropy-SGD, §2 and Fig. 1).

The paper's central observation: minima that generalise are *wide* — the Hessian ``H = ∇²f(x)``
of the training loss has a few large eigenvalues and a bulk piled up near zero. Everything here
touches ``H`` only through Hessian-vector products (Pearlmutter's trick, double backprop)::

    H v = ∇_x (∇f(x) · v)          one extra backward pass, never the n × n matrix

on a fixed evaluation subset, in eval mode (BatchNorm on running statistics, dropout off, so
``f`` is one deterministic function). On top:

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


def lanczos(matvec: Matvec, n: int, k: int, *, seed: int = 0, v0: Tensor | None = None,
            full_reorth: bool = True, return_vectors: bool = False
            ) -> tuple[np.ndarray, np.ndarray, Tensor | None]:
    """``k`` Lanczos steps from ``v0`` (default: a seeded Gaussian), giving ``Qᵀ H Q = T``::

        w = H q_j − β_{j−1} q_{j−1};  α_j = q_jᵀ w;  w −= α_j q_j;  β_j = ‖w‖;  q_{j+1} = w / β_j

    T is tridiagonal with diagonal ``alphas`` and off-diagonal ``betas``. In floating point the
    q_j lose orthogonality as Ritz values converge, which creates spurious copies ("ghosts") of
    the top eigenvalues; ``full_reorth`` projects w against every earlier q twice (classical
    Gram–Schmidt, "twice is enough"), at O(n k) memory. Stops early when β_j ≈ 0 (an invariant
    subspace was found: T's eigenvalues are then exact eigenvalues of H). Returns
    ``(alphas, betas, Q)`` with Q of shape (m, n) only when ``return_vectors``.
    """
    k = min(int(k), n)
    if v0 is None:
        v0 = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q = v0.detach().to(torch.float64).reshape(-1).cpu()
    Q = torch.zeros(k, n, dtype=torch.float64)
    Q[0] = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    for j in range(k):
        w = matvec(Q[j]).detach().to(torch.float64).reshape(-1).cpu()
        alpha = float(torch.dot(w, Q[j]))
        if full_reorth:
            for _ in range(2):
                w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
        else:
            w -= alpha * Q[j] + (betas[-1] * Q[j - 1] if j > 0 else 0.0)
        alphas.append(alpha)
        beta = float(w.norm())
        scale = max(scale, abs(alpha) + beta)
        if j == k - 1 or beta <= 1e-12 * max(scale, 1e-300):
            break
        betas.append(beta)
        Q[j + 1] = w / beta
    m = len(alphas)
    return np.array(alphas), np.array(betas), (Q[:m] if return_vectors else None)


def ritz(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-pairs of T: nodes θ_j (ascending) and Gauss weights τ_j = (first component of s_j)².

    For a unit start vector v, ``vᵀ g(H) v ≈ Σ_j τ_j g(θ_j)``, exact for polynomials of degree
    ``≤ 2m − 1``; the τ_j sum to 1.
    """
    T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    theta, S = np.linalg.eigh(T)
    return theta, S[0] ** 2


def top_eigenvalues(matvec: Matvec, n: int, k: int, iters: int = 30, seed: int = 0) -> np.ndarray:
    """The ``k`` largest (algebraic) eigenvalues, descending: the top Ritz values after ``iters``
    Lanczos steps with full reorthogonalisation. Extreme, well-separated eigenvalues converge
    first (Kaniel–Paige), so ``iters`` of a few times ``k`` usually suffices."""
    alphas, betas, _ = lanczos(matvec, n, max(iters, k), seed=seed)
    return ritz(alphas, betas)[0][::-1][:k].copy()


def top_from_runs(ritz_values: Sequence[np.ndarray], k: int) -> np.ndarray:
    """The ``k`` largest eigenvalues from several Lanczos runs (e.g. the SLQ probes), descending.

    With an orthonormal Lanczos basis Q (full reorthogonalisation), ``T = Qᵀ H Q`` and Cauchy
    interlacing gives ``θ_j ≤ λ_j`` for the j-th largest Ritz value of *every* run. Each run is a
    lower bound, so the best estimate of λ_j is the largest j-th Ritz value over the runs (still
    descending in j). A run shorter than j steps says nothing about λ_j.
    """
    desc = [np.sort(np.asarray(t, dtype=np.float64))[::-1] for t in ritz_values]
    out = []
    for j in range(int(k)):
        cands = [t[j] for t in desc if len(t) > j]
        if not cands:
            break
        out.append(max(cands))
    return np.array(out)


def _probe(kind: str, n: int, gen: torch.Generator) -> Tensor:
    if kind == "rademacher":
        return torch.randint(0, 2, (n,), generator=gen).to(torch.float64).mul_(2).sub_(1)
    if kind == "gaussian":
        return torch.randn(n, generator=gen, dtype=torch.float64)
    raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {kind!r}")


def lanczos_runs(matvec: Matvec, n: int, *, iters: int, probes: int, seed: int = 0,
                 probe: str = "rademacher", keep_basis: bool = False) -> list[dict]:
    """``probes`` Lanczos runs of ``iters`` steps (full reorthogonalisation) from seeded random
    starts z_p, one Hessian-vector product per step. Each run is a dict with ``alphas``, ``betas``,
    the start ``z``, and ``Hz = ‖z‖ · H q₁``, the first product rescaled (free: it is the first step);
    with ``keep_basis`` the first run also keeps its basis ``Q`` (m × n, float64)."""
    gen = torch.Generator().manual_seed(seed)
    runs = []
    for p in range(probes):
        z = _probe(probe, n, gen)
        first: list[Tensor] = []

        def recorded(v: Tensor) -> Tensor:
            out = matvec(v)
            if not first:  # a copy: lanczos orthogonalises the product in place
                first.append(out.detach().to(torch.float64).reshape(-1).cpu().clone())
            return out

        alphas, betas, Q = lanczos(recorded, n, iters, v0=z, return_vectors=keep_basis and p == 0)
        runs.append({"alphas": alphas, "betas": betas, "z": z, "Hz": first[0] * z.norm(), "Q": Q})
    return runs


def _density(runs: Sequence[dict], grid: int | np.ndarray, sigma: float | None) -> dict:
    nodes, weights = [], []
    for run in runs:
        theta, tau = ritz(run["alphas"], run["betas"])
        nodes.append(theta)
        weights.append(tau / len(runs))
    nodes_a, weights_a = np.concatenate(nodes), np.concatenate(weights)
    spread = float(nodes_a.max() - nodes_a.min())
    if sigma is None:
        sigma = 0.01 * spread if spread > 0 else 1e-3 * max(abs(float(nodes_a.max())), 1.0)
    if np.isscalar(grid):
        grid_a = np.linspace(nodes_a.min() - 5 * sigma, nodes_a.max() + 5 * sigma, int(grid))
    else:
        grid_a = np.asarray(grid, dtype=np.float64)
    gauss = np.exp(-0.5 * ((grid_a[:, None] - nodes_a[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return {"grid": grid_a, "density": gauss @ weights_a, "nodes": nodes_a, "weights": weights_a,
            "sigma": float(sigma), "ritz": nodes,
            "quadratic_forms": np.array([float(torch.dot(r["z"], r["Hz"])) for r in runs])}


def spectral_density(matvec: Matvec, n: int, *, iters: int = 30, probes: int = 3, seed: int = 0,
                     grid: int | np.ndarray = 200, sigma: float | None = None,
                     probe: str = "rademacher") -> dict:
    """Stochastic Lanczos quadrature of ``φ(λ) = (1/n) Σ_i δ(λ − λ_i)``.

    Since ``(1/n) tr g(H) = E[vᵀ g(H) v]`` for ``v = z/‖z‖`` (z Rademacher or Gaussian), and each
    ``vᵀ g(H) v`` is a Gauss quadrature on the Ritz nodes of a Lanczos run started at v::

        φ(λ) ≈ (1/P) Σ_p Σ_j τ_j^(p) · N(λ; θ_j^(p), σ²)

    The smoothing σ (default 1% of the Ritz-value spread) trades resolution for variance; SLQ
    cannot resolve structure finer than the node spacing, ≈ spread / iters. ``grid`` is a number
    of points (spanning the nodes ± 5σ, so the density integrates to ≈ 1) or explicit points.
    Returns ``{"grid", "density", "nodes", "weights", "sigma"}``; ``weights`` are τ/P and sum to 1.

    The runs are reusable, so nothing needs a second pass over the data: ``"ritz"`` holds each
    run's Ritz values (for :func:`top_from_runs`), and ``"quadratic_forms"`` each probe's
    ``zᵀ H z = ‖z‖² α₁`` (the first Lanczos step computes ``H z/‖z‖``), which are Hutchinson
    samples of ``tr H`` when z is Rademacher.
    """
    runs = lanczos_runs(matvec, n, iters=iters, probes=probes, seed=seed, probe=probe)
    return _density(runs, grid, sigma)


def hutchinson_samples(matvec: Matvec, n: int, *, probes: int, seed: int = 0,
                       basis: Tensor | None = None) -> np.ndarray:
    """``z_pᵀ H z_p`` for ``probes`` seeded Rademacher vectors: one Hessian-vector product each.

    With ``basis`` (rows orthonormal, m × n) each z is first projected off it, ``y = (I − QᵀQ) z``,
    and the sample is ``yᵀ H y``: the Hutchinson estimator of ``tr(P⊥ H P⊥)`` (see
    :func:`deflated_trace`)."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(probes):
        z = _probe("rademacher", n, gen)
        if basis is not None:
            z = z - basis.T @ (basis @ z)
        samples.append(float(torch.dot(z, matvec(z).detach().to(torch.float64).reshape(-1).cpu())))
    return np.array(samples, dtype=np.float64)


def trace_estimate(samples: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error ``s / √P`` of i.i.d. Hutchinson samples (P ≥ 2)."""
    s = np.asarray(samples, dtype=np.float64)
    if s.size < 2:
        raise ValueError(f"a trace standard error needs at least 2 probes, got {s.size}")
    return float(s.mean()), float(s.std(ddof=1) / math.sqrt(s.size))


def hutchinson_trace(matvec: Matvec, n: int, *, probes: int = 20, seed: int = 0) -> tuple[float, float]:
    """``tr H ≈ (1/P) Σ_p z_pᵀ H z_p`` with Rademacher z (unbiased; among all i.i.d. probes the
    smallest variance, ``2 Σ_{i≠j} H_ij²``). Returns ``(mean, standard error)``, SE = s / √P."""
    if probes < 2:
        raise ValueError(f"hutchinson_trace needs probes >= 2 for a standard error, got {probes}")
    return trace_estimate(hutchinson_samples(matvec, n, probes=probes, seed=seed))


def deflated_trace(matvec: Matvec, n: int, runs: Sequence[dict], *, probes: int, seed: int = 0
                   ) -> tuple[float, float, np.ndarray]:
    """Hutchinson's trace with the first Lanczos run's Krylov space taken out exactly.

    For any orthonormal Q (m × n) and ``P⊥ = I − QᵀQ``, ``tr H = tr(Q H Qᵀ) + tr(P⊥ H P⊥)``, and
    for the Lanczos basis ``Q H Qᵀ = T``, so the first term is ``Σ_j α_j``, exact. Only the second
    is sampled, with ``y = P⊥ z`` (z Rademacher, independent of Q): ``yᵀ H y``. The Krylov space
    holds the dominant eigen-directions — on a network's Hessian the few large outliers, whose
    ``λ_i (u_iᵀ z)²`` terms make plain Hutchinson samples heavy-tailed — so the samples vary far
    less (Hutch++, Meyer et al. 2021, with the Krylov space for the sketch). Unbiased given Q.

    Samples come first, free, from the other runs' starts: with ``c = Q z``, ``h = Q (H z)`` (H z
    is the run's first product) and ``Q H Qᵀ = T``, ``yᵀ H y = zᵀ H z − 2 cᵀ h + cᵀ T c``; then
    ``probes`` more, one product each. ``runs[0]`` must carry its basis ``Q``. Returns
    ``(trace, standard error, samples)``; the error is that of the sampled part.
    """
    Q, alphas, betas = runs[0]["Q"], runs[0]["alphas"], runs[0]["betas"]
    if Q is None:
        raise ValueError("deflated_trace needs the first run's basis (lanczos_runs(..., keep_basis=True))")
    T = torch.from_numpy(np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1))
    free = []
    for run in runs[1:]:
        c, h = Q @ run["z"], Q @ run["Hz"]
        free.append(float(torch.dot(run["z"], run["Hz"]) - 2 * torch.dot(c, h) + c @ T @ c))
    samples = np.concatenate([np.array(free, dtype=np.float64),
                              hutchinson_samples(matvec, n, probes=probes, seed=seed, basis=Q)])
    mean, se = trace_estimate(samples)
    return float(np.sum(alphas)) + mean, se, samples


def near_zero_fraction(nodes: np.ndarray, weights: np.ndarray, threshold: float) -> float:
    """SLQ estimate of ``#{i : |λ_i| < threshold} / n``: the quadrature weight on nodes inside
    the band. Only as sharp as the nodes: a band narrower than the node spacing near zero
    counts whole nodes (each stands for the mass of eigenvalues around it)."""
    nodes, weights = np.asarray(nodes), np.asarray(weights)
    return float(weights[np.abs(nodes) < threshold].sum() / weights.sum())


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
        slq = _density(runs, density_points, sigma)
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
