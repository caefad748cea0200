"""``EntropySGD``: Entropy-SGD as a drop-in ``torch.optim.Optimizer`` for your own training loop.

Each ``step(closure)`` is one *outer* step (Chaudhari et al. 2017, Algorithm 1)::

    x', μ ← x
    repeat L times:   loss = closure()          # your closure draws a FRESH minibatch and backprops
                      x' ← x' − η'(∇f(x') + λx' − γ_t (x − x')) + sqrt(η') ε N(0, I)
                      μ  ← (1 − α) μ + α x'
    x ← SGD(x, d = s·(x − μ))                   # s = 1, or γ_t with lr_form="gamma"
    t ← t + 1                                    # γ_t = γ0 (1 + γ1)^t, capped at gamma_max

The closure is called exactly L times per step (L gradient evaluations, not L + 1), and the
model's parameters hold the updated anchor ``x`` when ``step`` returns. It runs the same
kernels as the distributed engine: :func:`worker.langevin.langevin_step` for the chain and
torch's own SGD kernel (:func:`core.outer.outer_sgd`) for the outer update.

Each step draws L minibatches, so a plain ``iter(loader)`` runs dry L times sooner than SGD's
would: :class:`BatchCycle` re-iterates the loader at the end of each pass (a shuffling loader
reshuffles) and counts the passes, which are the papers' *effective epochs*. Example::

    opt = EntropySGD(model.parameters(), lr=1.0, inner_lr=0.1, inner_steps=20)
    batches = BatchCycle(loader)
    def closure():
        x, y = next(batches)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss
    while batches.epochs < 10:         # 10 effective epochs: 10 passes over the data
        loss = opt.step(closure)       # mean loss over the L inner steps
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim import Optimizer

from core.outer import entropy_pseudo_grad, outer_sgd, scoped
from worker.langevin import langevin_step


class BatchCycle:
    """Minibatches from ``loader`` without end: each pass re-iterates it, so a ``DataLoader``
    with ``shuffle=True`` reshuffles every pass. ``epochs`` is the number of passes drawn so
    far, fractional (batches drawn / batches per pass): with Entropy-SGD, L batches a step,
    these are the papers' effective epochs. Works with any re-iterable of batches that has a
    length (a DataLoader, a list); an empty one is an error, not an endless loop."""

    def __init__(self, loader):
        self.loader = loader
        try:
            self.per_pass = len(loader)
        except TypeError:
            raise TypeError("BatchCycle needs a loader with a length (a DataLoader or a list of batches)") from None
        if self.per_pass < 1:
            raise ValueError("BatchCycle: the loader yields no batches")
        self.drawn = 0
        self._it = iter(loader)

    @property
    def epochs(self) -> float:
        return self.drawn / self.per_pass

    def __iter__(self) -> "BatchCycle":
        return self

    def __next__(self):
        try:
            batch = next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                raise ValueError("BatchCycle: the loader yielded no batches on a new pass") from None
        self.drawn += 1
        return batch


def _check(name: str, value: float, low: float, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"EntropySGD: {name} must be a finite number in {interval}, got {value!r}")


class EntropySGD(Optimizer):
    """Entropy-SGD; hyperparameters are keyword-only and can differ per ``param_group``.

    Args:
        lr: η, outer learning rate.             momentum, nesterov: outer SGD momentum.
        inner_lr: η', Langevin step size.       inner_steps: L.
        gamma0, gamma1, gamma_max: scoping.     noise: ε.      alpha: weight of newest iterate.
        inner_momentum, inner_nesterov: momentum on the inner gradient g (off by default).
        weight_decay: λ, inner loop only.       lr_form: "direct" (s = 1) or "gamma" (s = γ_t).
    """

    def __init__(self, params, *, lr: float = 1.0, momentum: float = 0.0, nesterov: bool = False,
                 inner_lr: float = 0.1, inner_steps: int = 20, gamma0: float = 1e-4, gamma1: float = 1e-3,
                 gamma_max: float | None = None, noise: float = 1e-4, alpha: float = 0.75,
                 inner_momentum: float = 0.0, inner_nesterov: bool = False, weight_decay: float = 0.0,
                 lr_form: str = "direct", foreach: bool = True):
        _check("lr", lr, 0.0, low_open=True)
        _check("momentum", momentum, 0.0, 1.0, high_open=True)
        _check("inner_lr", inner_lr, 0.0, low_open=True)
        if not isinstance(inner_steps, int) or isinstance(inner_steps, bool) or inner_steps < 1:
            raise ValueError(f"EntropySGD: inner_steps must be an integer >= 1, got {inner_steps!r}")
        _check("gamma0", gamma0, 0.0)
        _check("gamma1", gamma1, 0.0)
        if gamma_max is not None:
            _check("gamma_max", gamma_max, 0.0)
        _check("noise", noise, 0.0)
        _check("alpha", alpha, 0.0, 1.0, low_open=True)
        _check("inner_momentum", inner_momentum, 0.0, 1.0, high_open=True)
        _check("weight_decay", weight_decay, 0.0)
        if nesterov and momentum == 0:
            raise ValueError("EntropySGD: nesterov needs momentum > 0")
        if inner_nesterov and inner_momentum == 0:
            raise ValueError("EntropySGD: inner_nesterov needs inner_momentum > 0")
        if lr_form not in ("direct", "gamma"):
            raise ValueError(f"EntropySGD: lr_form must be 'direct' or 'gamma', got {lr_form!r}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, inner_lr=inner_lr, inner_steps=inner_steps,
                        gamma0=gamma0, gamma1=gamma1, gamma_max=gamma_max, noise=noise, alpha=alpha,
                        inner_momentum=inner_momentum, inner_nesterov=inner_nesterov,
                        weight_decay=weight_decay, lr_form=lr_form, foreach=foreach)
        super().__init__(params, defaults)
        if len({g["inner_steps"] for g in self.param_groups}) > 1:
            raise ValueError("EntropySGD: inner_steps must be the same in every param_group")
        self._generator: torch.Generator | None = None

    @property
    def outer_steps(self) -> int:
        """t: outer steps completed (stored in the state dict, so scoping resumes correctly)."""
        return int(self.state["__entropy_sgd__"].get("t", 0)) if "__entropy_sgd__" in self.state else 0

    def gamma(self, group: dict) -> float:
        return scoped(group["gamma0"], group["gamma1"], self.outer_steps, group["gamma_max"])

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise ValueError("EntropySGD.step needs a closure that draws a fresh minibatch and calls backward()")
        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            anchors = [p.detach().clone() for p in params]
            mus = [p.detach().clone() for p in params]
            bufs = [self.state[p].get("inner_momentum_buffer") for p in params]
            groups.append((group, params, anchors, mus, bufs, self.gamma(group)))
        total = torch.zeros(())
        steps = self.param_groups[0]["inner_steps"]
        for _ in range(steps):
            with torch.enable_grad():
                loss = closure()
            total = total + loss.detach().float().cpu()
            for group, params, anchors, mus, bufs, gamma in groups:
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                langevin_step(params, grads, anchors, mus, bufs, lr=group["inner_lr"], gamma=gamma,
                              noise=group["noise"], alpha=group["alpha"], momentum=group["inner_momentum"],
                              nesterov=group["inner_nesterov"], weight_decay=group["weight_decay"],
                              generator=self._generator, foreach=group["foreach"])
        with torch.no_grad():
            for group, params, anchors, mus, bufs, gamma in groups:
                scale = gamma if group["lr_form"] == "gamma" else 1.0
                d = entropy_pseudo_grad(anchors, mus, scale)
                torch._foreach_copy_(params, anchors)
                outer_bufs = [self.state[p].get("momentum_buffer") for p in params]
                outer_sgd(params, d, outer_bufs, lr=group["lr"], momentum=group["momentum"],
                          nesterov=group["nesterov"])
                for p, ib, ob in zip(params, bufs, outer_bufs):
                    if ib is not None:
                        self.state[p]["inner_momentum_buffer"] = ib
                    if ob is not None:
                        self.state[p]["momentum_buffer"] = ob
        self.state["__entropy_sgd__"]["t"] = self.outer_steps + 1
        return total / steps
