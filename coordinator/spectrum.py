"""Spectra of a symmetric operator known only through matrix-vector products.

The numerical half of the flatness report (coordinator.flatness builds the Hessian-vector
product of a model and calls these): pure functions of a ``matvec`` and the dimension ``n``,
float64 whatever the model's dtype, all randomness from explicit seeds.

* Lanczos with full reorthogonalisation → the largest eigenvalues (Ritz values of T_m);
* stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani et al. 2019) → the spectral
  density ``φ(λ) = (1/n) Σ_i δ(λ − λ_i)`` and the fraction of eigenvalues near zero;
* Hutchinson's estimator ``tr H = E[zᵀ H z]`` (Rademacher z) with its standard error, and the
  deflated form that samples only what the first SLQ run's Krylov space left out.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

Matvec = Callable[[Tensor], Tensor]


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


def density_from_runs(runs: Sequence[dict], grid: int | np.ndarray, sigma: float | None) -> dict:
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
    return density_from_runs(runs, grid, sigma)


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
