"""Parle (Chaudhari et al. 2017, arXiv 1707.00424): Entropy-SGD replicas coupled elastically.

Each replica ``a`` keeps its own anchor ``x^a`` and runs the Langevin chain from it; the
reference ``x̄ = mean_a x^a`` pulls them together with a coupling ρ that grows with t::

    d_a = s · (x^a − μ_a) + ρ_t (x^a − x̄) ;   x^a ← SGD_a(x^a, d_a) ;   x̄ ← mean_a x^a

``s`` comes from ``outer.lr_form`` and weights the entropy term only:

* ``direct`` (default, s = 1): ``x^a ← x^a − η ((x^a − μ_a) + ρ_t (x^a − x̄))`` — the official
  Parle code's update: the entropy term weighs 1 against ρ_t, whatever γ_t is (γ acts only
  inside the chain).
* ``gamma`` (s = γ_t, the paper's form): ``x^a ← x^a − η (γ_t (x^a − μ_a) + ρ_t (x^a − x̄))``,
  i.e. η times the gradient of the local entropy (γ_t (x − ⟨x'⟩)) plus that of the elastic
  energy (ρ_t/2)‖x^a − x̄‖², with γ and ρ the coupling strengths that grow with t. A
  hand-computed two-round example pins it down (tests/test_paper_options.py).

With outer momentum, ``SGD_a`` applies it to ``d_a`` (the whole pseudo-gradient).

Replicas talk once per L minibatches; the trained model is ``x̄``. The K anchors are rows of
one ``(K, P)`` tensor and ``SGD_a`` is one stock ``torch.optim.SGD`` over it: SGD acts
elementwise, so this is exactly K independent optimizers, stepped with one kernel.
With K = 1 and ρ = 0 this is Entropy-SGD (tested).

All replicas start from the job's initial weights, or, with ``init.per_replica_seeds`` (as the
official Parle code, which seeds each replica's process differently), from one ``(K, S)`` start
per replica (``coordinator.evaluate.Evaluator.initial_state``); x̄ is then their mean.

Membership changes (``resize``, between rounds) keep the surviving rows with their outer
momentum and give each new replica the reference ``x̄`` and a zero momentum buffer, so a
joining replica starts at the consensus and exerts no force on it in its first round.
"""
from __future__ import annotations

import numpy as np
import torch

from core import methods
from core.outer import elastic_pseudo_grad, make_outer_optimizer, outer_step, scoped
from coordinator.strategies.base import RoundResult, Strategy, mean_state


class Parle(Strategy):
    method = methods.PARLE

    def __init__(self, spec, init_state: torch.Tensor, num_params: int):
        super().__init__(spec, init_state, num_params)
        if init_state.dim() == 2:  # one start per replica (init.per_replica_seeds)
            if init_state.shape[0] != self.replicas:
                raise ValueError(f"{self.method.name}: {init_state.shape[0]} initial states for "
                                 f"{self.replicas} replicas")
            self.states = init_state.detach().float().clone().contiguous()
        else:
            self.states = init_state.detach().float().reshape(1, -1).repeat(self.replicas, 1).contiguous()
        self.x = self.states[:, :num_params]
        o = self.spec.outer
        self.opt = make_outer_optimizer([self.x], lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)

    def rho(self, t: int) -> float:
        e = self.spec.elastic
        return scoped(e.rho0, e.rho1, t, e.rho_max)

    def round_values(self, t: int) -> dict:
        return {**super().round_values(t), "rho": self.rho(t)}

    def anchors(self) -> list[np.ndarray]:
        return [row.numpy() for row in self.states]

    def aggregate(self, t: int, results: list[RoundResult]) -> dict:
        P = self.num_params
        if not results:
            raise ValueError("no replica results to aggregate")
        xbar = self.x.mean(dim=0)
        rho, scale = self.rho(t), self.outer_scale(t)
        d = torch.zeros_like(self.x)  # a failed replica's row stays 0: no entropy or elastic term this
        # round (with outer momentum it still moves by its decaying buffer)
        norms = []
        for r in results:
            mu_a = r.tensor()[:P]
            (d[r.index],) = elastic_pseudo_grad([self.x[r.index]], [mu_a], [xbar], rho, scale)
            norms.append(float(torch.linalg.vector_norm(self.x[r.index] - mu_a)))
        outer_step(self.opt, [self.x], [d])
        self.states[:, P:] = mean_state(results)[P:]
        new_bar = self.x.mean(dim=0)
        spread = float(torch.linalg.vector_norm(self.x - new_bar, dim=1).pow(2).mean().sqrt())
        return {"grad_norm": float(np.mean(norms)), "spread": spread}

    def reference(self) -> torch.Tensor:
        return torch.cat([self.x.mean(dim=0), self.states[0, self.num_params:]])

    def resize(self, keep: list[int], add: int) -> None:
        if not keep:
            raise ValueError("resize: at least one replica must stay (its anchor defines the reference)")
        super().resize(keep, add)
        P = self.num_params
        ref = self.reference()
        old_buf = self.opt.state.get(self.x, {}).get("momentum_buffer")
        lr = self.opt.param_groups[0]["lr"]
        self.states = torch.cat([self.states[keep], ref.reshape(1, -1).repeat(add, 1)]).contiguous()
        self.x = self.states[:, :P]
        o = self.spec.outer
        self.opt = make_outer_optimizer([self.x], lr=lr, momentum=o.momentum, nesterov=o.nesterov)
        if old_buf is not None:
            self.opt.state[self.x]["momentum_buffer"] = torch.cat([old_buf[keep], old_buf.new_zeros(add, P)])

    def state_dict(self) -> dict:
        return {"states": self.states.clone(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.states.copy_(state["states"])
        self.opt.load_state_dict(state["optimizer"])
