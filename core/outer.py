"""The outer loop's math, as pure functions over lists of tensors (docs/design.md, "Equations").

Shared anchor (Entropy-SGD, K ≥ 1 chains)::

    μ̄ = mean_k μ_k ;   d = s · (x − μ̄) ;   x ← OuterOpt(x, d)

Parle (elastic, each replica a has its own anchor x^a, reference x̄ = mean_a x^a)::

    d_a = s · (x^a − μ_a) + ρ_t (x^a − x̄) ;   x^a ← OuterOpt_a(x^a, d_a) ;   x̄ ← mean_a x^a

``OuterOpt`` is a stock ``torch.optim.SGD`` (lr η, optional Nesterov momentum) stepping on the
pseudo-gradient written into ``p.grad`` — the DiLoCo pattern: no hand-written optimizer, and
momentum buffers start from the first pseudo-gradient, never from a raw minibatch gradient.

``s`` is the learning-rate convention: ``1`` in the common code form (η stands for the paper's
η·γ) and ``γ_t`` in the paper form ``x ← x − η γ (x − μ)``. Scoping grows the couplings with
``t``, the number of outer steps already completed::

    γ_t = γ0 (1 + γ1)^t   (optionally capped) ;   ρ_t = ρ0 (1 + ρ1)^t   (optionally capped)

The research code never advanced ``t``; here the caller passes it explicitly.

Learning-rate schedules multiply one learning rate (η, or η' for the strategies whose outer
step is pinned to plain adoption): the step schedule by ``lr_factor`` after each milestone
(the engine counts them), the cosine schedule by :func:`cosine_factor` over the job's budget.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


def scoped(value0: float, rate: float, t: int, cap: float | None = None) -> float:
    """``value0 · (1 + rate)^t``, capped at ``cap`` when given. ``t`` counts completed outer steps."""
    if t < 0:
        raise ValueError(f"scoped: t must be >= 0, got {t}")
    value = value0 * (1.0 + rate) ** t
    return min(value, cap) if cap is not None else value


def cosine_factor(t: int, total: int, floor: float = 0.0) -> float:
    """Cosine annealing of the LR multiplier over ``total`` outer steps (SGDR without restarts)::

        f(t) = floor + (1 − floor) · ½ (1 + cos(π t / total))

    ``f(0) = 1``, ``f(total/2) = (1 + floor)/2``, ``f(total) = floor``; round ``t`` (0-based)
    trains with ``f(t)``, so the last round, ``t = total − 1``, is just above ``floor``. This is
    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total, eta_min=floor·lr)`` in closed form
    (tested). From ``t = total`` on (never reached within a budget) it stays at ``floor``."""
    if total < 1:
        raise ValueError(f"cosine_factor: total must be >= 1, got {total}")
    if t < 0:
        raise ValueError(f"cosine_factor: t must be >= 0, got {t}")
    if t >= total:
        return floor
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t / total))


def mean_of(tensor_lists: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """Elementwise mean of K lists of tensors: ``μ̄`` from the μ_k, or ``x̄`` from the x^a."""
    if not tensor_lists:
        raise ValueError("mean_of: no tensors to average")
    out = [t.detach().clone() for t in tensor_lists[0]]
    for others in tensor_lists[1:]:
        torch._foreach_add_(out, list(others))
    if len(tensor_lists) > 1:
        torch._foreach_div_(out, float(len(tensor_lists)))
    return out


def entropy_pseudo_grad(anchors: Sequence[Tensor], mu_bar: Sequence[Tensor], scale: float = 1.0) -> list[Tensor]:
    """``d = s · (x − μ̄)``: the local-entropy gradient at the shared anchor."""
    d = torch._foreach_sub(list(anchors), list(mu_bar))
    if scale != 1.0:
        torch._foreach_mul_(d, scale)
    return d


def elastic_pseudo_grad(anchors: Sequence[Tensor], mus: Sequence[Tensor], reference: Sequence[Tensor],
                        rho: float, scale: float = 1.0) -> list[Tensor]:
    """``d_a = s · (x^a − μ_a) + ρ (x^a − x̄)``: Parle's step for one replica."""
    d = entropy_pseudo_grad(anchors, mus, scale)
    if rho:
        torch._foreach_add_(d, torch._foreach_sub(list(anchors), list(reference)), alpha=rho)
    return d


def outer_step(optimizer: torch.optim.Optimizer, params: Sequence[Tensor], pseudo_grads: Sequence[Tensor]) -> None:
    """Write ``pseudo_grads`` into ``p.grad`` and let the stock optimizer step."""
    for p, d in zip(params, pseudo_grads, strict=True):
        p.grad = d
    optimizer.step()
    for p in params:
        p.grad = None


def make_outer_optimizer(params: Sequence[Tensor], *, lr: float, momentum: float, nesterov: bool) -> torch.optim.SGD:
    """The stock ``torch.optim.SGD`` used as OuterOpt (no weight decay: λ lives in the inner loop)."""
    return torch.optim.SGD(list(params), lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=0.0)


def outer_sgd(params: list[Tensor], pseudo_grads: list[Tensor], momentum_buffers: list[Tensor | None], *,
              lr: float, momentum: float, nesterov: bool) -> None:
    """The same stock SGD kernel that ``torch.optim.SGD.step`` runs, for callers that keep their
    own state (the standalone :class:`worker.optim.EntropySGD`). Fills ``momentum_buffers``."""
    from torch.optim.sgd import sgd

    sgd(params, pseudo_grads, momentum_buffers, weight_decay=0.0, momentum=momentum, lr=lr,
        dampening=0.0, nesterov=nesterov, maximize=False)
