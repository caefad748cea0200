"""Core types shared by every loader: :class:`DataError`, :class:`Dataset` and helpers.

A :class:`Dataset` keeps its data compactly in numpy (uint8 images, small integer token
ids) and converts it to torch tensors per batch in :meth:`Dataset.batch`.  The helper
:func:`_channel_stats` is used by more than one loader family; files are read through
:mod:`.bounded`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch


class DataError(ValueError):
    """A dataset is missing, malformed or misconfigured; the message says how to fix it."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """An in-memory dataset with train and test splits.

    Images: ``*_x`` uint8 ``(N, C, H, W)``, ``*_y`` int64 ``(N,)``, normalised per channel
    by ``mean``/``std`` in :meth:`batch`.  Text: ``*_x`` integer token ids of shape
    ``(N, seq_len + 1)`` (non-overlapping chunks of the corpus), ``*_y`` dummy zeros.
    """

    name: str
    kind: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    vocab: str = ""
    # x_float = x_uint8 * _scale + _shift, per channel; derived in __post_init__.
    _scale: torch.Tensor | None = field(default=None, init=False, repr=False)
    _shift: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("image", "text"):
            raise DataError(f"dataset {self.name!r}: kind must be 'image' or 'text', got {self.kind!r}")
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if len(x) != len(y):
                raise DataError(f"dataset {self.name!r}: {split}_x has {len(x)} rows but "
                                f"{split}_y has {len(y)}")
        if self.kind == "image":
            if len(self.mean) != self.input_shape[0] or len(self.std) != self.input_shape[0]:
                raise DataError(f"dataset {self.name!r}: mean/std need one value per channel "
                                f"({self.input_shape[0]}), got {self.mean} / {self.std}")
            std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
            mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
            object.__setattr__(self, "_scale", 1.0 / (255.0 * std))
            object.__setattr__(self, "_shift", -mean / std)

    @property
    def num_train(self) -> int:
        return len(self.train_x)

    @property
    def num_test(self) -> int:
        return len(self.test_x)

    @property
    def nbytes(self) -> int:
        """Memory held by the four arrays."""
        return sum(a.nbytes for a in (self.train_x, self.train_y, self.test_x, self.test_y))

    def batch(self, indices: np.ndarray, split: str = "train",
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Gather samples ``indices`` of ``split`` as model-ready tensors on ``device``.

        Images -> float32 ``(B, C, H, W)`` normalised, int64 labels ``(B,)``.
        Text -> int64 inputs ``chunk[:, :-1]`` and targets ``chunk[:, 1:]``, both ``(B, T)``.
        The uint8 data is moved to ``device`` before conversion to keep transfers small.
        """
        if split == "train":
            xs, ys = self.train_x, self.train_y
        elif split == "test":
            xs, ys = self.test_x, self.test_y
        else:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        idx = np.asarray(indices, dtype=np.int64)
        x = torch.from_numpy(xs[idx]).to(device)
        if self.kind == "text":
            x = x.long()
            return x[:, :-1], x[:, 1:]
        y = torch.from_numpy(ys[idx]).to(device)
        assert self._scale is not None and self._shift is not None
        x = x.float().mul_(self._scale.to(x.device)).add_(self._shift.to(x.device))
        return x, y

    def subset(self, train: int = 0, test: int = 0, seed: int = 0) -> Dataset:
        """A deterministic random subset with ``train``/``test`` samples (0 keeps all).

        Sizes larger than the split are clamped; chosen indices are kept in original order.
        """
        rng = np.random.default_rng(seed)

        def pick(n_total: int, n: int) -> np.ndarray | None:
            if n <= 0 or n >= n_total:
                return None
            return np.sort(rng.choice(n_total, size=n, replace=False))

        changes: dict[str, np.ndarray] = {}
        for split, n in (("train", train), ("test", test)):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            idx = pick(len(x), n)
            if idx is not None:
                changes[f"{split}_x"], changes[f"{split}_y"] = x[idx], y[idx]
        return dataclasses.replace(self, **changes)

    def with_label_noise(self, fraction: float, seed: int = 0) -> Dataset:
        """The same data with ``fraction`` of the *training* labels replaced by a different
        class drawn uniformly (the test set stays clean).

        The noisy-label regime of the flat-minima literature: a model that fits the flipped
        labels memorises, and flat minima are expected to generalise better there. Which
        labels flip, and to what, depends only on ``seed`` and the data, so every method and
        replica of a comparison sees the same corrupted set. Text has no labels: an error.
        """
        if not 0.0 <= fraction < 1.0:
            raise DataError(f"dataset.label_noise: must be in [0, 1), got {fraction!r}")
        if fraction == 0.0:
            return self
        if self.kind != "image" or self.num_classes < 2:
            raise DataError(f"dataset.label_noise: only labelled image data has labels to flip "
                            f"({self.name!r} is {self.kind})")
        rng = np.random.default_rng([seed, 0x1abe1])  # its own stream: independent of subset()
        n = len(self.train_y)
        flip = np.sort(rng.choice(n, size=int(round(fraction * n)), replace=False))
        y = self.train_y.copy()
        # adding 1..C-1 modulo C always lands on another class, each equally likely
        y[flip] = (y[flip] + rng.integers(1, self.num_classes, size=len(flip))) % self.num_classes
        return dataclasses.replace(self, train_y=y)


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``(N, C, H, W)`` images scaled to [0, 1]."""
    means, stds = [], []
    for c in range(images.shape[1]):
        channel = images[:, c].astype(np.float32) / 255.0
        means.append(float(channel.mean()))
        stds.append(max(float(channel.std()), 1e-3))
    return tuple(means), tuple(stds)

