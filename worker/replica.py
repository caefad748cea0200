"""A Langevin replica: a model, its own data stream and RNG, and ``run`` for one round.

Plain Python, no Ray: :class:`worker.actor.ReplicaActor` is a thin host around it, and tests
drive it directly. One round (the README's inner loop)::

    x', μ ← x                   (x: the anchor this replica was sent)
    L times: fresh minibatch → g = ∇f(x') → langevin_step(x', g, x, μ)
    return [μ | BatchNorm buffers after the chain], stats

With ``inner.optimizer: adam`` the step is :func:`worker.langevin.adam_inner_step` instead, and
the Adam state (moments, step count) stays with the replica across rounds like the momentum
buffer, and is checkpointed with it. With ``hp.coupling`` > 0 (Replicated-SGD) the first step's
gradient gets ``coupling · (x' − x̄)`` added (:func:`worker.langevin.add_coupling`), x̄ = ``hp.center``.

With ``comm.dtype`` bfloat16/float16 the anchor arrives in 16 bits and is decoded once on
arrival (x̂); the chain runs in float32 and the result leaves as the 16-bit displacement
``q(μ − x̂)``, encoded once just before it is returned (worker.comm has the why).

Exactly L gradient evaluations per round. BatchNorm running statistics are updated by the
chain's forward passes and returned with μ; the coordinator averages them with the weights
(see coordinator.strategies.base). Dropout draws from this replica's own saved RNG state, so
replicas in one process (tests, LocalPool) are as independent and reproducible as in Ray.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from worker import comm
from worker.data.datasets import Dataset
from worker.data.stream import BatchStream
from worker.flat import FlatState
from worker.langevin import InnerParams, adam_inner_step, add_coupling, langevin_step
from worker.models import build_model, error_count, target_count, task_loss


log = logging.getLogger("esgd.replica")


def replica_seed(job_seed: int, index: int) -> int:
    return int(np.random.SeedSequence([job_seed, index, 7]).generate_state(1)[0])


@dataclass(frozen=True)
class ReplicaConfig:
    """What a replica takes from its job: these values, not the whole job spec (a pool sends
    one to each of its actors). Built from the resolved spec in one place, :meth:`from_spec`.

    The inner loop's hyperparameters are not here: they come with every round
    (:class:`worker.langevin.InnerParams`), because the strategy schedules them (γ_t, the LR
    schedule). The replica's identity is its ``index`` in its job, given beside this."""

    model: str        # the architecture (worker.models); its shapes come from the dataset
    batch_size: int   # B, samples per minibatch
    seed: int         # the job seed: with the index, the replica's data stream, RNGs and dropout
    fraction: float   # dataset.fraction: the share of the training set its stream draws from
    comm_dtype: str   # comm.dtype: the wire format of anchors and results (worker.comm)

    @classmethod
    def from_spec(cls, spec) -> "ReplicaConfig":
        """The replica configuration of ``spec`` (a resolved core.spec.JobSpec)."""
        return cls(model=spec.model, batch_size=spec.train.batch_size, seed=spec.train.seed,
                   fraction=spec.dataset.fraction, comm_dtype=spec.comm.dtype)


class Replica:
    def __init__(self, config: ReplicaConfig, index: int, dataset: Dataset, device: str = "cpu"):
        self.index = index
        self.comm_dtype = config.comm_dtype
        self.device = torch.device(device)
        self.dataset = dataset
        seed = replica_seed(config.seed, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = build_model(config.model, dataset.input_shape, dataset.num_classes).to(self.device)
            self.rng_state = torch.get_rng_state()
        self.flat = FlatState(self.model)
        self.stream = BatchStream(dataset.num_train, config.batch_size, config.seed, index, config.fraction)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.anchor = torch.empty(self.flat.num_params, device=self.device)
        self.mu = torch.empty(self.flat.size, device=self.device)
        self.momentum_buffer: torch.Tensor | None = None
        self._announced = False
        self.adam_state: dict | None = None  # {"step", "exp_avg", "exp_avg_sq"} once Adam has stepped

    def run(self, anchor: np.ndarray | torch.Tensor, hp: InnerParams) -> tuple[np.ndarray, dict]:
        """Run ``hp.steps`` Langevin steps from ``anchor`` (in ``comm.dtype``'s wire format);
        return ``[μ | buffers]`` in that format (a 16-bit one: the displacement) and stats."""
        start = time.perf_counter()
        if not self._announced:  # one line per replica process: where it runs, on what
            self._announced = True
            log.info("replica %d: %d parameters on %s, %d training samples, batch %d, %d inner steps per round, "
                     "stream at batch %d", self.index, self.flat.num_params, self.device, self.dataset.num_train,
                     self.stream.batch_size, hp.steps, self.stream.drawn)
        anchor = comm.decode(anchor, self.comm_dtype)
        self.flat.load(anchor)
        x_prime = self.flat.params
        self.anchor.copy_(x_prime)
        mu = self.mu[: self.flat.num_params]
        mu.copy_(x_prime)
        bufs = [self.momentum_buffer]
        adam = self._adam_state(x_prime) if hp.optimizer == "adam" else None
        center = None
        if hp.coupling:
            center = torch.from_numpy(np.array(hp.center, dtype=np.float32)).to(self.device)
        loss_sum = torch.zeros((), device=self.device)
        errors = items = 0
        self.model.train()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng_state)
            for step in range(hp.steps):
                inputs, targets = self.dataset.batch(self.stream.next(), "train", self.device)
                self.flat.grad.zero_()
                out = self.model(inputs)
                loss = task_loss(out, targets)
                loss.backward()
                loss_sum += loss.detach()
                errors += error_count(out.detach(), targets)
                items += target_count(targets)
                if center is not None and step == 0:
                    add_coupling([self.flat.grad], [x_prime], [center], hp.coupling)
                if adam is not None:
                    adam_inner_step([x_prime], [self.flat.grad], [mu], [adam["exp_avg"]], [adam["exp_avg_sq"]],
                                    [adam["step"]], lr=hp.lr, beta1=hp.adam_beta1, beta2=hp.adam_beta2,
                                    eps=hp.adam_eps, alpha=hp.alpha, weight_decay=hp.weight_decay)
                else:
                    langevin_step([x_prime], [self.flat.grad], [self.anchor], [mu], bufs, lr=hp.lr,
                                  gamma=hp.gamma, noise=hp.noise, alpha=hp.alpha, momentum=hp.momentum,
                                  nesterov=hp.nesterov, weight_decay=hp.weight_decay, generator=self.generator)
            self.rng_state = torch.get_rng_state()
        self.momentum_buffer = bufs[0]
        self.mu[self.flat.num_params:].copy_(self.flat.buffers)
        result = self.mu.detach().cpu().numpy().copy()
        loss_mean = float(loss_sum) / hp.steps
        stats = {
            "replica": self.index,
            "loss": loss_mean,
            "train_error": errors / max(items, 1),
            "grad_evals": hp.steps,
            "samples": hp.steps * self.stream.batch_size,
            "drawn": self.stream.drawn,
            "compute_s": time.perf_counter() - start,
            "finite": bool(np.isfinite(loss_mean) and np.isfinite(result).all()),
        }
        try:
            wire = comm.pack_result(result, anchor, self.comm_dtype)
        except comm.CommRangeError as exc:  # a move beyond float16's range: this replica diverged
            stats.update(finite=False, cause=str(exc))
            wire = comm.encode(np.full_like(result, np.nan), self.comm_dtype)
        return wire, stats

    def _adam_state(self, like: torch.Tensor) -> dict:
        """Adam's state, created as ``torch.optim.Adam`` does on its first step: zero moments
        and a float32 step count on the CPU."""
        if self.adam_state is None:
            self.adam_state = {"step": torch.tensor(0.0, dtype=torch.float32),
                               "exp_avg": torch.zeros_like(like), "exp_avg_sq": torch.zeros_like(like)}
        return self.adam_state

    # ----- state for checkpoints ----------------------------------------------------------
    def get_state(self) -> dict:
        """What a resumed replica needs to continue exactly: stream position, RNGs, momentum
        (and Adam's moments and step count, once it has them)."""
        state = {
            "drawn": self.stream.drawn,
            "rng_state": self.rng_state.clone(),
            "generator_state": self.generator.get_state(),
            "momentum_buffer": None if self.momentum_buffer is None else self.momentum_buffer.detach().cpu().clone(),
        }
        if self.adam_state is not None:
            state["adam"] = {k: v.detach().cpu().clone() for k, v in self.adam_state.items()}
        return state

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` saved; a replica recreated after a failure gets only
        its stream position (``drawn``) and starts its RNGs, momentum and Adam state afresh."""
        self.stream.drawn = int(state["drawn"])
        if "rng_state" in state:
            self.rng_state = state["rng_state"].clone()
        if "generator_state" in state:
            self.generator.set_state(state["generator_state"])
        buf = state.get("momentum_buffer")
        self.momentum_buffer = None if buf is None else buf.to(self.device).clone()
        adam = state.get("adam")
        self.adam_state = None if adam is None else {
            "step": adam["step"].clone(),  # stays on the CPU, as torch.optim.Adam keeps it
            "exp_avg": adam["exp_avg"].to(self.device).clone(),
            "exp_avg_sq": adam["exp_avg_sq"].to(self.device).clone()}
