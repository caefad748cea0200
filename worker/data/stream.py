"""Each replica's own, seeded, independently shuffled minibatch stream (docs/design.md,
"Data per replica and cost accounting").

Replica ``k`` of a job with seed ``s`` draws from ``SeedSequence([s, k])``:

* with ``fraction < 1`` it first picks its shard: a random ``fraction`` of the training set
  (replicas' shards are drawn independently, so they overlap like bootstrap samples);
* every pass ``e`` over its shard uses a fresh permutation from ``SeedSequence([s, k, e])``;
* minibatches are consecutive slices of that permutation; the ragged tail of a pass is dropped.

The position is a single integer (batches drawn), so a stream resumes exactly from a
checkpoint without replaying it, and a job is reproducible from its seed.
"""
from __future__ import annotations

import numpy as np


class BatchStream:
    def __init__(self, num_items: int, batch_size: int, seed: int, replica: int, fraction: float = 1.0):
        if num_items < 1:
            raise ValueError("BatchStream: the training set is empty")
        self.batch_size = batch_size
        self.seed, self.replica = int(seed), int(replica)
        if fraction < 1.0:
            size = max(batch_size, int(round(num_items * fraction)))
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.replica, 2**31]))
            self.pool = np.sort(rng.choice(num_items, size=min(size, num_items), replace=False))
        else:
            self.pool = np.arange(num_items)
        if len(self.pool) < batch_size:
            raise ValueError(f"train.batch_size: {batch_size} is larger than the {len(self.pool)} "
                             "training samples this replica sees")
        self.batches_per_pass = len(self.pool) // batch_size
        self.drawn = 0
        self._pass = -1
        self._order = self.pool

    def _permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.replica, epoch]))
        return self.pool[rng.permutation(len(self.pool))]

    def next(self) -> np.ndarray:
        """Indices of the next minibatch."""
        epoch, i = divmod(self.drawn, self.batches_per_pass)
        if epoch != self._pass:
            self._order, self._pass = self._permutation(epoch), epoch
        self.drawn += 1
        return self._order[i * self.batch_size:(i + 1) * self.batch_size]

    @property
    def passes(self) -> float:
        """Passes over this replica's data so far."""
        return self.drawn / self.batches_per_pass
