"""Synthetic datasets: small seeded image and text tasks for fast, offline tests.

Both are generated deterministically from ``seed`` and are learnable but not trivial, so
optimisers and models can be compared without any files on disk.
"""

from __future__ import annotations

import numpy as np

from .base import DataError, Dataset, _channel_stats
from .text import _text_dataset


def _synthetic_images(size: int, seed: int) -> Dataset:
    """A learnable but not trivial 10-class 1x28x28 task.

    Each class has a smooth random template (7x7 noise upsampled to 28x28, sharing a
    common background); a sample is its class template shifted by up to 2 pixels, with
    random contrast, plus strong Gaussian noise (sigma 100), clipped to uint8.  With the
    default 2048 samples a nearest-class-mean or linear classifier errs on ~20-25% of the
    test set: clearly learnable, but with room for better models and optimisers.
    """
    if size < 1:
        raise DataError(f"synthetic_size must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
    # Templates share a common background, so classes differ only in part of the image.
    base = rng.uniform(0.0, 1.0, size=(1, 7, 7))
    coarse = (0.55 * base + 0.45 * rng.uniform(0.0, 1.0, size=(10, 7, 7))).astype(np.float32)
    templates = 30.0 + 195.0 * np.kron(coarse, np.ones((4, 4), np.float32))  # (10, 28, 28)
    shifts = np.arange(-2, 3)
    shifted = np.stack([np.roll(templates, (dy, dx), axis=(1, 2)) for dy in shifts for dx in shifts],
                       axis=1)  # (10, 25, 28, 28)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, size=n)
        images = shifted[labels, rng.integers(0, len(shifts) ** 2, size=n)]
        contrast = rng.uniform(0.6, 1.2, size=(n, 1, 1)).astype(np.float32)
        images = (images - 128.0) * contrast + 128.0
        images += 100.0 * rng.standard_normal(size=images.shape, dtype=np.float32)
        return np.clip(images, 0, 255).astype(np.uint8)[:, None], labels.astype(np.int64)

    train_x, train_y = sample(size)
    test_x, test_y = sample(max(size // 4, 1))
    mean, std = _channel_stats(train_x)
    return Dataset(name="synthetic", kind="image", train_x=train_x, train_y=train_y,
                   test_x=test_x, test_y=test_y, num_classes=10, input_shape=(1, 28, 28),
                   mean=mean, std=std)


def _synthetic_text(size: int, seq_len: int, seed: int) -> Dataset:
    """A seeded first-order Markov chain over 20 characters.

    Each character has a sparse random successor distribution, so a model can learn
    much better than uniform (log 20) but not to zero loss.  ``size`` is the number of
    training sequences; the test split has ``size // 4`` more (at least one).
    """
    if size < 1:
        raise DataError(f"synthetic_size must be >= 1, got {size}")
    if seq_len < 1:
        raise DataError(f"seq_len must be >= 1, got {seq_len}")
    vocab = " abcdefghijklmnopqrs"
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(len(vocab), 0.3), size=len(vocab))
    # Quantised inverse-CDF table: next = table[state, uniform byte], for a fast loop.
    cdf = np.cumsum(probs, axis=1)
    table = [np.minimum(np.searchsorted(row, (np.arange(256) + 0.5) / 256), len(vocab) - 1).tolist()
             for row in cdf]
    n_test = max(size // 4, 1)
    length = (size + n_test) * (seq_len + 1)
    draws = rng.integers(0, 256, size=length).tolist()
    state, ids = 0, []
    for r in draws:
        state = table[state][r]
        ids.append(state)
    text = "".join(vocab[i] for i in ids)
    return _text_dataset("synthetic-text", text, seq_len, test_fraction=n_test / (size + n_test),
                         vocab=vocab)

