"""Evaluation of a state vector on the test split, in eval mode (BatchNorm uses its averages)."""
from __future__ import annotations

import math

import numpy as np
import torch

from coordinator.limits import eval_batch_size
from core.spec import JobSpec
from worker.data.datasets import Dataset
from worker.flat import FlatState
from worker.models import build_model, error_count, target_count, task_loss


def init_seed(job_seed: int, replica: int) -> int:
    """The seed replica ``replica``'s initial weights are built under with ``init.per_replica_seeds``.

    Replica 0 uses the job seed itself, so it starts where every replica starts without the
    option (and K = 1 is unaffected). The others draw from a SeedSequence of (job seed, replica)
    rather than the official Parle code's ``seed + rank``: with ``seed + rank`` job seed 1's
    replica 0 would be job seed 0's replica 1, and runs over seeds 0, 1, 2 would share starts."""
    if replica == 0:
        return job_seed
    return int(np.random.SeedSequence([job_seed, replica, 13]).generate_state(1)[0])


def initial_model(spec: JobSpec, dataset: Dataset, replica: int = 0) -> torch.nn.Module:
    """The job's initial model: built under the job seed, so every run of a spec starts equal
    (``replica`` > 0: replica's own start under ``init.per_replica_seeds``, see :func:`init_seed`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(spec.train.seed, replica))
        return build_model(spec.model, dataset.input_shape, dataset.num_classes)


class Evaluator:
    def __init__(self, spec: JobSpec, dataset: Dataset, batch_size: int | None = None):
        self.dataset = dataset
        self.spec = spec
        self.model = initial_model(spec, dataset)
        self.flat = FlatState(self.model)
        # bounded: 1,000 samples, and at most 100,000 predictions (long text sequences get fewer)
        self.batch_size = batch_size or eval_batch_size(spec)

    @property
    def initial_state(self) -> torch.Tensor:
        """The job's initial ``[params | buffers]`` vector; with ``init.per_replica_seeds`` a
        ``(K, S)`` tensor instead, row ``a`` replica a's start (row 0 is the one vector), which
        the per-replica-anchor strategies take as their K anchors (their mean is x̄)."""
        if not self.spec.init.per_replica_seeds:
            return self.flat.state.clone()
        rows = [self.flat.state.clone()]
        for a in range(1, self.spec.replicas):
            rows.append(FlatState(initial_model(self.spec, self.dataset, a)).state.clone())
        return torch.stack(rows)

    def state_dict(self, vector: torch.Tensor) -> dict:
        """A plain ``state_dict`` (loads with ``model.load_state_dict``) for ``vector``."""
        self.flat.load(vector)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def evaluate(self, vector: torch.Tensor) -> dict:
        self.flat.load(vector)
        self.model.eval()
        n = self.dataset.num_test
        loss_sum, errors, items = 0.0, 0, 0
        for start in range(0, n, self.batch_size):
            idx = np.arange(start, min(n, start + self.batch_size))
            inputs, targets = self.dataset.batch(idx, "test")
            out = self.model(inputs)
            count = target_count(targets)
            loss_sum += float(task_loss(out, targets)) * count
            errors += error_count(out, targets)
            items += count
        loss = loss_sum / max(items, 1)
        result = {"test_loss": loss, "test_error": errors / max(items, 1)}
        if self.dataset.kind == "text":
            result["test_perplexity"] = math.exp(min(loss, 50.0))
        return result
