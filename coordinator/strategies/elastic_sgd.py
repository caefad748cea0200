"""Elastic-SGD (EASGD, Zhang, Choromanska & LeCun 2015), synchronous, with period τ = L.

Parle's elastic machinery with the chain turned into τ steps of plain SGD (γ = 0, ε = 0,
α = 1, so μ_a is the last local iterate) and the outer step η = 1 without momentum (pinned
by ``coordinator.spec.FORCED``)::

    x^a ← x'^a_τ − ρ_t (x^a − x̄) ;   x̄ = mean_a x^a

i.e. each worker keeps its τ local SGD steps and is pulled back toward the centre by the
elastic force ρ. The centre is the replicas' mean, so the elastic forces sum to zero, as in
EASGD's symmetric update. The LR schedule scales the local step η'.
"""
from __future__ import annotations

from coordinator.strategies.parle import Parle


class ElasticSGD(Parle):
    name = "elastic-sgd"
    schedule_scales = "inner"
