"""Entropy-SGD with a shared anchor and K ≥ 1 Langevin chains (parallel local entropy).

All K replicas start their chains from the same ``x``; the coordinator averages their
running means and takes one outer step::

    μ̄ = mean_k μ_k ;   d = s · (x − μ̄) ;   x ← SGD(x, d)      (s = 1, or γ_t in paper form)

K chains give a K-times larger sample of the local Gibbs measure, so ``x − μ̄`` is a
lower-variance estimate of the local-entropy gradient for the same wall time.
"""
from __future__ import annotations

import numpy as np
import torch

from core import methods
from core.outer import entropy_pseudo_grad, make_outer_optimizer, outer_step
from coordinator.strategies.base import RoundResult, Strategy, mean_state


class EntropySGD(Strategy):
    method = methods.ENTROPY_SGD

    def __init__(self, spec, init_state: torch.Tensor, num_params: int):
        super().__init__(spec, init_state, num_params)
        self.state = init_state.detach().clone().float().contiguous()
        self.x = self.state[:num_params]
        o = self.spec.outer
        self.opt = make_outer_optimizer([self.x], lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)

    def anchors(self) -> list[np.ndarray]:
        return [self.state.numpy()]

    def aggregate(self, t: int, results: list[RoundResult]) -> dict:
        P = self.num_params
        mean = mean_state(results)
        mu_bar = mean[:P]
        (d,) = entropy_pseudo_grad([self.x], [mu_bar], self.outer_scale(t))
        grad_norm = float(torch.linalg.vector_norm(self.x - mu_bar))
        spread = float(np.mean([float(torch.linalg.vector_norm(r.tensor()[:P] - mu_bar)) for r in results]))
        outer_step(self.opt, [self.x], [d])
        self.state[P:] = mean[P:]
        return {"grad_norm": grad_norm, "spread": spread}

    def reference(self) -> torch.Tensor:
        return self.state

    def state_dict(self) -> dict:
        return {"state": self.state.clone(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.state.copy_(state["state"])
        self.opt.load_state_dict(state["optimizer"])
