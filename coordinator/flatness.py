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


def _probe(kind: str, n: int, gen: torch.Generator) -> Tensor:
    if kind == "rademacher":
        return torch.randint(0, 2, (n,), generator=gen).to(torch.float64).mul_(2).sub_(1)
    if kind == "gaussian":
        return torch.randn(n, generator=gen, dtype=torch.float64)
    raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {kind!r}")


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
    """
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in range(probes):
        alphas, betas, _ = lanczos(matvec, n, iters, v0=_probe(probe, n, gen))
        theta, tau = ritz(alphas, betas)
        nodes.append(theta)
        weights.append(tau / probes)
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
            "sigma": float(sigma)}


def hutchinson_trace(matvec: Matvec, n: int, *, probes: int = 20, seed: int = 0) -> tuple[float, float]:
    """``tr H ≈ (1/P) Σ_p z_pᵀ H z_p`` with Rademacher z (unbiased; among all i.i.d. probes the
    smallest variance, ``2 Σ_{i≠j} H_ij²``). Returns ``(mean, standard error)``, SE = s / √P."""
    if probes < 2:
        raise ValueError(f"hutchinson_trace needs probes >= 2 for a standard error, got {probes}")
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(probes):
        z = _probe("rademacher", n, gen)
        samples.append(float(torch.dot(z, matvec(z).detach().to(torch.float64).reshape(-1).cpu())))
    s = np.array(samples)
    return float(s.mean()), float(s.std(ddof=1) / math.sqrt(probes))


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


def flatness_report(model: nn.Module, dataset, *, eval_samples: int = 1000, batch: int = 250,
                    split: str = "train", top_k: int = 5, lanczos_iters: int = 30, slq_probes: int = 3,
                    hutchinson_probes: int = 20, threshold: float = 1e-2, density_points: int = 200,
                    sigma: float | None = None, gamma: float = 0.03, langevin_steps: int = 20,
                    langevin_lr: float = 0.1, langevin_noise: float = 1e-4, seed: int = 0,
                    loss_fn: LossFn = task_loss) -> dict:
    """All of the above for ``model`` at its current weights, on a fixed seeded subset of
    ``eval_samples`` samples of ``split`` (the training loss by default: flatness is a property
    of the minimum the optimiser found), cut into batches of ``batch``.

    ``threshold`` is *relative*: an eigenvalue counts as near zero when ``|λ| < threshold · λ_max``
    (λ_max: the largest |Ritz value|), since Hessian scales change with the loss, parametrisation
    and training time; the absolute cut-off used is ``near_zero_threshold``. The default 1e-2
    (not 1e-3) respects SLQ's resolution: with 30 nodes the bulk near 0 lands on nodes about
    0.3–0.7% of λ_max away from 0 (LeNet at init), so a narrower band reads 0 by construction.
    Compare with ``slq_min_abs_node``: a threshold below it always gives 0.

    The model runs in eval mode (BatchNorm on running statistics, dropout off); its mode, weights
    and buffers are restored. Deterministic given ``seed`` (up to floating-point reduction order).
    Cost: ``lanczos_iters · (1 + slq_probes) + hutchinson_probes`` Hessian-vector products (each
    ≈ 2–3 forward/backward passes over the subset) plus ``langevin_steps`` minibatch gradients.
    """
    start = time.perf_counter()
    modes = {m: m.training for m in model.modules()}
    saved = _snapshot(model)
    p0 = _params(model)[0]
    pool = dataset.num_train if split == "train" else dataset.num_test
    size = min(eval_samples, pool)
    idx = np.sort(np.random.default_rng(seed).choice(pool, size=size, replace=False))
    batches = []
    for i in range(0, size, batch):
        x, y = dataset.batch(idx[i:i + batch], split, device=p0.device)
        batches.append((x.to(p0.dtype) if x.is_floating_point() else x, y))
    calls = [0]
    try:
        model.eval()
        hvp, n = hvp_operator(model, loss_fn, batches)

        def matvec(v: Tensor) -> Tensor:
            calls[0] += 1
            return hvp(v)

        alphas, betas, _ = lanczos(matvec, n, max(lanczos_iters, top_k), seed=seed)
        theta = ritz(alphas, betas)[0]
        top = theta[::-1][:top_k]
        slq = spectral_density(matvec, n, iters=lanczos_iters, probes=slq_probes, seed=seed + 1,
                               grid=density_points, sigma=sigma)
        trace, stderr = hutchinson_trace(matvec, n, probes=hutchinson_probes, seed=seed + 2)
        abs_threshold = threshold * float(np.abs(theta).max())
        del hvp, matvec  # free the cached graphs before the chain moves the weights
        chain = local_entropy(model, loss_fn, batches, gamma=gamma, steps=langevin_steps,
                              lr=langevin_lr, noise=langevin_noise, seed=seed + 3)
    finally:
        _restore(model, saved)
        for m, training in modes.items():
            m.train(training)
    return {
        "num_params": n, "eval_samples": size, "split": split, "seed": seed, "loss": chain["anchor_loss"],
        "top_eigenvalues": [float(v) for v in top], "min_ritz_value": float(theta[0]),
        "trace": trace, "trace_stderr": stderr,
        "near_zero_fraction": near_zero_fraction(slq["nodes"], slq["weights"], abs_threshold),
        "near_zero_threshold": abs_threshold, "near_zero_relative_threshold": threshold,
        "slq_min_abs_node": float(np.abs(slq["nodes"]).min()),
        "density": {"grid": slq["grid"].tolist(), "density": slq["density"].tolist(), "sigma": slq["sigma"]},
        "slq": {"nodes": slq["nodes"].tolist(), "weights": slq["weights"].tolist()},
        "local_entropy": chain, "hvp_calls": calls[0], "seconds": time.perf_counter() - start,
    }
