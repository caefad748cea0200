"""Elastic-SGD (EASGD, Zhang, Choromanska & LeCun 2015), synchronous, with period τ = L.

Parle's elastic machinery with the chain turned into τ steps of plain SGD (γ = 0, ε = 0,
α = 1, so μ_a is the last local iterate) and the outer step η = 1 without momentum (pinned
by its declaration, ``core.methods.ELASTIC_SGD``)::

    x^a ← x'^a_τ − ρ_t (x^a − x̄) ;   x̄ = mean_a x^a

i.e. each worker keeps its τ local SGD steps and is pulled back toward the centre by the
elastic force ρ. The centre is the replicas' mean, so the elastic forces sum to zero, as in
EASGD's symmetric update. The LR schedule scales the local step η'.

Replicated-SGD (Baldassi et al. 2016; Pittorino et al. 2021) is *not* this strategy with ρ
scoping, although both couple K SGD replicas elastically to their mean with a growing
coupling: here the pull ρ_t (x^a − x̄) is measured at the anchors and applied after the τ local
steps, outside the replicas' momentum and unscaled by η'; rSGD adds c_t (x^a − x̄) to the
gradient of the first step of each period, so it moves the points where the later gradients
are taken, goes through the momentum buffer and is scaled by η' and its schedule. They are
the same algorithm exactly when τ = 1, inner momentum is 0, no LR schedule is set and
ρ_t = η' c_t (tested); otherwise use strategy ``replicated-sgd``
(coordinator/strategies/replicated_sgd.py).
"""
from __future__ import annotations

from core import methods
from coordinator.strategies.parle import Parle


class ElasticSGD(Parle):
    method = methods.ELASTIC_SGD
