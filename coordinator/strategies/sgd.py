"""SGD baseline: one replica, or synchronous data-parallel SGD over K replicas.

It is the shared-anchor engine with the chain turned into plain SGD (γ = 0, ε = 0, α = 1)
and the outer step turned into adoption of the replicas' mean (η = 1, no outer momentum;
these values are pinned by its declaration, ``core.methods.SGD``)::

    x ← x − 1 · (x − mean_k x'_k)  =  mean_k x'_k

With L = 1 every round is one data-parallel SGD step with step η' on the K-fold batch
(momentum included: each replica's buffer is linear in its gradients, so the mean of the
buffers is the buffer of the mean gradient). With K = 1 any L is exactly plain SGD; with
K > 1 and L > 1 it is local SGD with periodic averaging. The LR schedule scales η'.

With ``inner.optimizer: adam`` the replicas take Adam steps (step η'), each keeping its own
moments across rounds: K = 1 is ``torch.optim.Adam`` step for step, any L (tested) — the
Entropy-SGD paper's char-LSTM baseline (examples/adam-char-lstm.yaml). With K > 1 it is local
Adam with periodic averaging of the weights, not data-parallel Adam even for L = 1 (Adam is not
linear in its gradients, so the mean of K Adam steps is not the Adam step of the mean gradient).
"""
from __future__ import annotations

from core import methods
from coordinator.strategies.entropy_sgd import EntropySGD


class SGD(EntropySGD):
    method = methods.SGD
