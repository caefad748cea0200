"""Replicated-SGD (Baldassi et al., PNAS 2016; Pittorino et al., ICLR 2021): K SGD replicas,
each pulled toward their centre by an elastic term in its *gradient*, with a coupling that grows.

Every replica ``a`` keeps its own weights ``x^a``; the centre is their mean ``x̄ = mean_a x^a``
(the trained model). One round is one coupling period of L minibatches: at the first step the
replica's gradient gets the elastic term, the other L − 1 steps are plain minibatch steps::

    x̄ = mean_a x^a                                   (round start: every replica at its x^a)
    step 1:        g = ∇f(x^a) + λ x^a + c_t (x^a − x̄) ;  x' ← Opt_a(x^a, g)
    steps 2..L:    g = ∇f(x') + λ x'                   ;  x' ← Opt_a(x', g)
    x^a ← x'_L                                         c_t = ρ0 (1 + ρ1)^t, capped at ρ_max

``Opt_a`` is replica a's own inner optimizer with state kept across rounds: SGD with
``inner.momentum``/``nesterov`` and step η' (the LR schedule scales η'), or Adam
(``inner.optimizer``). L = 1 couples at every step, as in Baldassi et al. (2016); L = K
couples every K minibatches like the authors' robust-ensemble training code (``RobustNet``,
option ``gtime``): there a coupling loss ``γ·mean_a‖x^a − x̄‖²`` on the detached mean is added
to the minibatch loss every gtime-th step, the first of each period, and stepped by the same
optimizer as the data loss (their γ is c/2 here, their loss being averaged over the replicas
and their LR multiplied by K). The coupling c_t is the elastic section's ρ schedule
(``elastic.rho0/rho1/rho_max``); γ, ε, α, η and outer momentum are pinned (γ = 0, ε = 0, α = 1,
η = 1, no outer momentum), so the outer step is adoption of x'_L.

Why a strategy of its own and not ``elastic-sgd``: there the elastic pull is measured at the
anchors and applied by the coordinator *after* the L local steps, outside the replicas'
momentum and not scaled by η' (``x^a ← x'^a_L − ρ_t (x^a − x̄)``). Here it is part of the
gradient: it shifts every later step of the period, enters the momentum (or Adam's moments),
and is scaled by η' and its schedule. The two coincide only for L = 1, no inner momentum, no
LR schedule, ρ_elastic = η'·c (tested).

Cost: x̄ travels with the round's hyperparameters (float32, parameters only), put into the
object store once per round like a shared anchor and counted in ``bytes_sent``, beside each
replica's anchor x^a.
Failures, membership changes and checkpoints follow Parle: a failed replica keeps its x^a for
the round, a new one starts at x̄.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from core import methods
from coordinator.strategies.base import RoundResult, mean_state
from coordinator.strategies.parle import Parle
from worker.langevin import InnerParams


class ReplicatedSGD(Parle):
    method = methods.REPLICATED_SGD

    def round_params(self, t: int, lr_factor: float = 1.0) -> InnerParams:
        hp = super().round_params(t, lr_factor)
        center = self.x.mean(dim=0).numpy()  # a new tensor: the replicas' centre x̄
        return dataclasses.replace(hp, coupling=self.rho(t), center=center)

    def aggregate(self, t: int, results: list[RoundResult]) -> dict:
        P = self.num_params
        if not results:
            raise ValueError("no replica results to aggregate")
        norms = []
        for r in results:  # x^a ← x'_L (α = 1: μ is the last iterate); a failed replica keeps x^a
            x_new = r.tensor()[:P]
            norms.append(float(torch.linalg.vector_norm(self.x[r.index] - x_new)))
            self.x[r.index].copy_(x_new)
        self.states[:, P:] = mean_state(results)[P:]
        new_bar = self.x.mean(dim=0)
        spread = float(torch.linalg.vector_norm(self.x - new_bar, dim=1).pow(2).mean().sqrt())
        return {"grad_norm": float(np.mean(norms)), "spread": spread}
