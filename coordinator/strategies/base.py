"""What a strategy is: how one round's replica results become the next anchors.

The round loop (coordinator.engine) is written once; a strategy only answers

* ``anchors()``      — the weights to send: one shared vector, or one per replica;
* ``round_params(t)`` — the inner-loop hyperparameters for round ``t`` (γ scoped, LR scheduled here);
* ``aggregate(t, results)`` — the outer step over the replicas whose results came back (a failed
  replica has none this round; coordinator.membership recreates it before the next);
* ``reference()``    — the model this job produces (the shared anchor, or Parle's x̄).

State vectors are flat float32 ``[params | float buffers]`` (worker.flat). BatchNorm buffers
are not gradients: every round they are set to the plain mean of the buffers the surviving
replicas return, and so travel with the weights they were estimated for.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from core.methods import Method
from core.outer import cosine_factor, scoped
from core.spec import JobSpec
from worker.langevin import InnerParams


@dataclass
class RoundResult:
    """What replica ``index`` returned: ``[μ | buffers]`` and its stats."""

    index: int
    state: np.ndarray
    stats: dict = field(default_factory=dict)

    def tensor(self) -> torch.Tensor:
        with warnings.catch_warnings():  # results live read-only in the object store
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(self.state)


@dataclass
class ReplicaFailure:
    index: int
    error: str


class Strategy(ABC):
    #: the method's declaration (core.methods): its name, pinned fields, anchors, whether a
    #: running job may be scaled, and which LR its schedule scales
    method: ClassVar[Method]

    def __init__(self, spec: JobSpec, init_state: torch.Tensor, num_params: int):
        self.spec = spec.require_resolved(type(self).__name__)
        self.num_params = num_params
        self.replicas = spec.replicas
        self._lr_factor = 1.0
        self.budget: int | None = self.spec.train.outer_steps  # outer steps the cosine schedule spans

    def set_budget(self, total: int) -> None:
        """The job's budget in outer steps, for the cosine schedule. Taken from
        ``train.outer_steps`` by default; a budget in epochs (``nb`` outer steps each, known to
        the engine only) needs the engine to pass its total here."""
        self.budget = int(total)

    # ----- per round ----------------------------------------------------------------------
    def gamma(self, t: int) -> float:
        i = self.spec.inner
        return scoped(i.gamma0, i.gamma1, t, i.gamma_max)

    def outer_scale(self, t: int) -> float:
        """``s`` in ``d = s (x − μ)``: 1 (code form) or γ_t (paper form)."""
        return self.gamma(t) if self.spec.outer.lr_form == "gamma" else 1.0

    def _factors(self) -> tuple[float, float]:
        f = self._lr_factor
        return (f, 1.0) if self.method.schedule_scales == "outer" else (1.0, f)

    def schedule_factor(self, t: int, lr_factor: float = 1.0) -> float:
        """The LR multiplier for round ``t``. The step schedule's (``lr_factor``) is counted by
        the engine from the milestones and passed in; the cosine schedule has no milestones (the
        engine passes 1) and is computed here over the budget (:meth:`set_budget`)."""
        o = self.spec.outer
        if o.schedule == "cosine":
            if self.budget is None:
                raise RuntimeError("outer.schedule cosine: the budget in outer steps is unknown "
                                   "(train.epochs given and no Strategy.set_budget call)")
            return lr_factor * cosine_factor(t, self.budget, o.lr_min_factor)
        return lr_factor

    def round_params(self, t: int, lr_factor: float = 1.0) -> InnerParams:
        """Inner hyperparameters for round ``t``; ``lr_factor`` is the step schedule's multiplier."""
        self._lr_factor = self.schedule_factor(t, lr_factor)
        outer_f, inner_f = self._factors()
        self.set_outer_lr(self.spec.outer.lr * outer_f)
        i = self.spec.inner
        return InnerParams(steps=i.steps, lr=i.lr * inner_f, gamma=self.gamma(t), noise=i.noise,
                           alpha=i.alpha, momentum=i.momentum, nesterov=i.nesterov,
                           weight_decay=i.weight_decay, optimizer=i.optimizer, adam_beta1=i.adam_beta1,
                           adam_beta2=i.adam_beta2, adam_eps=i.adam_eps)

    def round_values(self, t: int) -> dict:
        """Scalars worth recording for round ``t`` (γ, learning rates)."""
        outer_f, inner_f = self._factors()
        return {"gamma": self.gamma(t), "lr": self.spec.outer.lr * outer_f,
                "inner_lr": self.spec.inner.lr * inner_f}

    # ----- the strategy proper ------------------------------------------------------------
    @abstractmethod
    def anchors(self) -> list[np.ndarray]:
        """One vector for all replicas (shared anchor), or one per replica."""

    @abstractmethod
    def aggregate(self, t: int, results: list[RoundResult]) -> dict:
        """Apply the outer step; return stats (``grad_norm`` = ‖x − μ̄‖, ``spread``)."""

    @abstractmethod
    def reference(self) -> torch.Tensor:
        """The ``[params | buffers]`` vector of the model this job produces."""

    def resize(self, keep: list[int], add: int) -> None:
        """Membership change between rounds: keep the replicas at positions ``keep`` (in
        order), then append ``add`` new ones that start from :meth:`reference`. A shared-anchor
        strategy has no per-replica state, so only the count changes."""
        self.replicas = len(keep) + add

    def set_outer_lr(self, lr: float) -> None:
        """Set η on the strategy's stock outer optimizer (``self.opt``)."""
        for g in self.opt.param_groups:
            g["lr"] = lr

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...


def mean_state(results: list[RoundResult]) -> torch.Tensor:
    """Mean of the replicas' ``[μ | buffers]`` vectors (a new tensor)."""
    if not results:
        raise ValueError("no replica results to aggregate")
    out = results[0].tensor().clone()
    for r in results[1:]:
        out += r.tensor()
    return out.div_(len(results))
