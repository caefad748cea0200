"""The Langevin inner loop of Entropy-SGD (Chaudhari et al. 2017, Algorithm 1), as pure kernels.

One inner step, for every tensor ``x'`` (iterate), ``x`` (anchor), ``μ`` (running mean)::

    g  ← ∇f(x'; minibatch) + λ x'                    # λ: weight decay, inner loop only
    g  ← momentum(g)                                  # optional, off by default
    x' ← x' − η' (g − γ (x − x')) + sqrt(η') · ε · N(0, I)
    μ  ← (1 − α) μ + α x'                             # α weighs the NEWEST iterate

The coupling ``γ (x − x')`` keeps the chain near the anchor so that ``μ`` estimates the mean of
the local Gibbs measure; ``x − μ`` is then the gradient of the (negative) local entropy at ``x``.
The running mean gives the newest iterate weight α (the paper's 0.75); the research code gave
it to the *old* mean instead, a quirk we do not copy.

Momentum follows ``torch.optim.SGD`` exactly (buffer initialised with the first ``g``, no
dampening, Nesterov flag), so that with ``γ = 0, ε = 0, α = 1`` the chain *is* torch SGD.

Kernels mutate ``params``, ``mus`` and ``momentum_buffers`` in place, like torch.optim's
functional kernels. There are two implementations with identical results: a per-tensor loop
(the readable reference) and a ``torch._foreach_*`` one (fewer kernel launches); a test checks
that they agree. The engine calls them with one flat tensor per list; the standalone
:class:`worker.optim.EntropySGD` calls them with one tensor per parameter.

Two further kernels serve the strategies whose inner loop is plain minibatch descent
(γ = 0, ε = 0, α = 1):

* :func:`adam_inner_step` — ``inner.optimizer: adam``: torch's own Adam kernel (the one
  ``torch.optim.Adam.step`` runs, L2 weight decay λ added to g as there), then the same μ update.
  The Entropy-SGD paper's char-LSTM baseline is Adam.
* :func:`add_coupling` — Replicated-SGD's elastic term ``g ← g + c (x' − x̄)``: the gradient of
  ``(c/2)‖x' − x̄‖²`` toward the replicas' centre, added to the minibatch gradient *before* the
  optimizer (so it passes through momentum / Adam's moments and is scaled by the step size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class InnerParams:
    """The hyperparameters of one round of inner steps (γ already scoped by the coordinator).

    ``optimizer`` "adam" replaces the Langevin/SGD kernel by Adam (``adam_*``; γ, ε and momentum
    are then 0). ``coupling`` > 0 (Replicated-SGD) adds ``coupling · (x' − center)`` to the first
    inner step's gradient; ``center`` is the replicas' mean x̄ (parameters only, float32)."""

    steps: int
    lr: float
    gamma: float
    noise: float
    alpha: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    coupling: float = 0.0
    center: np.ndarray | None = field(default=None, compare=False, repr=False)


def langevin_step(
    params: list[Tensor],
    grads: list[Tensor],
    anchors: list[Tensor],
    mus: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    gamma: float,
    noise: float,
    alpha: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    generator: torch.Generator | None = None,
    foreach: bool = True,
) -> None:
    """One SGLD step on ``params`` (x') followed by the running-mean update of ``mus`` (μ)."""
    if not (len(params) == len(grads) == len(anchors) == len(mus) == len(momentum_buffers)):
        raise ValueError("langevin_step: params, grads, anchors, mus and momentum_buffers differ in length")
    kernel = _multi_tensor if foreach else _single_tensor
    with torch.no_grad():
        kernel(params, grads, anchors, mus, momentum_buffers, lr=lr, gamma=gamma, noise=noise,
               alpha=alpha, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
               generator=generator)


def _noise_scale(lr: float, noise: float) -> float:
    return math.sqrt(lr) * noise


def _single_tensor(params, grads, anchors, mus, bufs, *, lr, gamma, noise, alpha, momentum,
                   nesterov, weight_decay, generator) -> None:
    for i, p in enumerate(params):
        g = grads[i]
        if weight_decay:
            g = g.add(p, alpha=weight_decay)
        if momentum:
            if bufs[i] is None:
                bufs[i] = g.detach().clone()
            else:
                bufs[i].mul_(momentum).add_(g)
            g = g.add(bufs[i], alpha=momentum) if nesterov else bufs[i]
        if gamma:
            g = g.add(anchors[i] - p, alpha=-gamma)
        p.add_(g, alpha=-lr)
        if noise:
            p.add_(torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype),
                   alpha=_noise_scale(lr, noise))
        mus[i].lerp_(p, alpha)


def _multi_tensor(params, grads, anchors, mus, bufs, *, lr, gamma, noise, alpha, momentum,
                  nesterov, weight_decay, generator) -> None:
    g = list(grads)
    if weight_decay:
        g = torch._foreach_add(g, params, alpha=weight_decay)
    if momentum:
        if any(b is None for b in bufs):
            for i, gi in enumerate(g):
                if bufs[i] is None:
                    bufs[i] = gi.detach().clone()
                else:
                    bufs[i].mul_(momentum).add_(gi)
        else:
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, g)
        g = torch._foreach_add(g, bufs, alpha=momentum) if nesterov else list(bufs)
    if gamma:
        g = torch._foreach_add(g, torch._foreach_sub(anchors, params), alpha=-gamma)
    torch._foreach_add_(params, g, alpha=-lr)
    if noise:
        eps = [torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype) for p in params]
        torch._foreach_add_(params, eps, alpha=_noise_scale(lr, noise))
    torch._foreach_lerp_(mus, params, alpha)


def adam_inner_step(
    params: list[Tensor],
    grads: list[Tensor],
    mus: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    alpha: float,
    weight_decay: float = 0.0,
) -> None:
    """One Adam step on ``params`` (x') followed by ``μ ← (1 − α) μ + α x'``.

    The step is torch's functional ``adam`` — the kernel ``torch.optim.Adam.step`` calls, with
    the same defaults (no AMSGrad, L2 weight decay added to g, foreach chosen by device) — so a
    replica with K = 1, L = 1 is ``torch.optim.Adam`` step for step. ``exp_avgs``,
    ``exp_avg_sqs`` and the scalar ``steps`` tensors are the optimizer state (mutated in place;
    the replica keeps them across rounds and checkpoints them)::

        g ← g + λ x' ;  m ← β1 m + (1 − β1) g ;  v ← β2 v + (1 − β2) g² ;  k ← k + 1
        x' ← x' − η' (m / (1 − β1^k)) / (sqrt(v / (1 − β2^k)) + ε_adam)
    """
    from torch.optim.adam import adam

    with torch.no_grad():
        adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, beta1=beta1, beta2=beta2,
             lr=lr, weight_decay=weight_decay, eps=eps, maximize=False)
        torch._foreach_lerp_(mus, params, alpha)


def add_coupling(grads: list[Tensor], params: list[Tensor], centers: list[Tensor], coupling: float) -> None:
    """``g ← g + c (x' − x̄)`` in place: the gradient of the elastic energy ``(c/2)‖x' − x̄‖²``
    that pulls a replica toward the replicas' centre x̄ (Replicated-SGD). x̄ is held fixed (it
    is the mean, not a variable being trained), as in the reference implementation."""
    with torch.no_grad():
        torch._foreach_add_(grads, torch._foreach_sub(params, centers), alpha=coupling)
