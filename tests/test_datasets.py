"""Tests for worker.data.datasets: real and synthetic loaders, and clear errors on bad files."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.installed import need_path
from worker.data import DataError, Dataset, load_dataset
from worker.data import datasets
from worker.data import text as text_loader
from worker.data.datasets import DATASETS, FASHION_MNIST_DIR

IDX_NAMES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Encode a uint8 array in IDX format (magic = 0x0800 | ndim unless overridden)."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx_dir(directory: Path, n_train: int = 12, n_test: int = 5, size: int = 6,
                  gz: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """Write four small IDX files into ``directory``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "test_y": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_NAMES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)
    return arrays


def write_cifar_dir(directory: Path, per_batch: int = 4, protocol: int = 2,
                    bytes_keys: bool = True) -> None:
    """Write synthetic CIFAR-10 python batches (data_batch_1..5, test_batch)."""
    rng = np.random.default_rng(1)
    directory.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            "batch_label": name,
        }
        if bytes_keys:
            batch = {k.encode(): v for k, v in batch.items()}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=protocol))


class _Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_real() -> None:
    need_path(FASHION_MNIST_DIR, "data")
    ds = load_dataset("fashion-mnist")
    assert (ds.num_train, ds.num_test) == (60000, 10000)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y.dtype == np.int64 and set(np.unique(ds.train_y)) == set(range(10))
    assert ds.test_y.min() >= 0 and ds.test_y.max() <= 9
    assert ds.num_classes == 10 and ds.input_shape == (1, 28, 28) and ds.kind == "image"
    assert ds.mean == pytest.approx((0.2860,), abs=1e-3)
    x, y = ds.batch(np.arange(1000))
    assert abs(x.mean().item()) < 0.2 and abs(x.std().item() - 1.0) < 0.2


def test_missing_dataset_names_and_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("imagenet")
    assert all(name in str(info.value) for name in DATASETS)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="cifar"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="UTF-8"):
        load_dataset("text")


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    arrays = write_idx_dir(tmp_path, gz=gz)
    ds = load_dataset("idx", str(tmp_path))
    assert ds.train_x.shape == (12, 1, 6, 6) and ds.test_x.shape == (5, 1, 6, 6)
    np.testing.assert_array_equal(ds.train_x[:, 0], arrays["train_x"])
    np.testing.assert_array_equal(ds.test_y, arrays["test_y"].astype(np.int64))
    assert ds.input_shape == (1, 6, 6)
    assert ds.mean[0] == pytest.approx(arrays["train_x"].mean() / 255, rel=1e-4)
    mnist = load_dataset("mnist", str(tmp_path))
    assert mnist.mean == (0.1307,) and mnist.num_classes == 10


def _corrupt(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def test_idx_truncated(tmp_path: Path) -> None:
    write_idx_dir(tmp_path)
    target = tmp_path / IDX_NAMES["train_x"]
    _corrupt(target, target.read_bytes()[:-7])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        load_dataset("idx", str(tmp_path))
    _corrupt(target, target.read_bytes()[:6])
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("idx", str(tmp_path))


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, gz=True)
    target = tmp_path / (IDX_NAMES["test_y"] + ".gz")
    _corrupt(target, target.read_bytes()[:15])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("idx", str(tmp_path))


def test_idx_wrong_magic(tmp_path: Path) -> None:
    arrays = write_idx_dir(tmp_path)
    _corrupt(tmp_path / IDX_NAMES["test_x"], idx_bytes(arrays["test_x"], magic=0x00000d03))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*magic"):
        load_dataset("idx", str(tmp_path))
    # Labels file where an images file is expected.
    _corrupt(tmp_path / IDX_NAMES["test_x"], idx_bytes(arrays["test_y"]))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_dataset("idx", str(tmp_path))


def test_idx_count_mismatch(tmp_path: Path) -> None:
    arrays = write_idx_dir(tmp_path)
    _corrupt(tmp_path / IDX_NAMES["train_y"], idx_bytes(arrays["train_y"][:-1]))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_dataset("idx", str(tmp_path))


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte.gz"])
def test_idx_garbage(tmp_path: Path, name: str) -> None:
    write_idx_dir(tmp_path, gz=name.endswith(".gz"))
    garbage = np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    _corrupt(tmp_path / name, garbage)
    with pytest.raises(DataError, match=name):
        load_dataset("idx", str(tmp_path))
    _corrupt(tmp_path / name, b"\x1f\x8b" + garbage)  # looks like gzip, is not
    with pytest.raises(DataError, match=name):
        load_dataset("idx", str(tmp_path))


def test_idx_missing_file(tmp_path: Path) -> None:
    write_idx_dir(tmp_path)
    (tmp_path / IDX_NAMES["test_y"]).unlink()
    with pytest.raises(DataError) as info:
        load_dataset("idx", str(tmp_path))
    assert "t10k-labels-idx1-ubyte" in str(info.value) and str(tmp_path) in str(info.value)
    with pytest.raises(DataError, match="not a directory"):
        load_dataset("fashion-mnist", str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("protocol,bytes_keys", [(2, True), (4, False), (5, True)])
def test_cifar_loads(tmp_path: Path, protocol: int, bytes_keys: bool) -> None:
    write_cifar_dir(tmp_path / "cifar-10-batches-py", protocol=protocol, bytes_keys=bytes_keys)
    for path in (tmp_path, tmp_path / "cifar-10-batches-py"):
        ds = load_dataset("cifar10", str(path))
        assert ds.train_x.shape == (20, 3, 32, 32) and ds.train_x.dtype == np.uint8
        assert ds.test_x.shape == (4, 3, 32, 32)
        assert ds.train_y.shape == (20,) and ds.train_y.dtype == np.int64
        assert ds.input_shape == (3, 32, 32) and len(ds.mean) == 3
        x, y = ds.batch(np.arange(3), "test")
        assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32


def test_cifar_missing_batch(tmp_path: Path) -> None:
    write_cifar_dir(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", str(tmp_path))


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "not-a-dict", "bad-shape"])
def test_cifar_corrupt(tmp_path: Path, how: str) -> None:
    write_cifar_dir(tmp_path)
    target = tmp_path / "data_batch_2"
    if how == "truncated":
        target.write_bytes(target.read_bytes()[:1000])
    elif how == "garbage":
        target.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif how == "empty":
        target.write_bytes(b"")
    elif how == "not-a-dict":
        target.write_bytes(pickle.dumps([1, 2, 3]))
    else:
        target.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataError, match="data_batch_2"):
        load_dataset("cifar10", str(tmp_path))


def test_cifar_malicious_pickle(tmp_path: Path) -> None:
    write_cifar_dir(tmp_path)
    marker = tmp_path / "pwned"
    payload = {b"data": _Evil(marker), b"labels": [0]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match="test_batch.*forbidden"):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()


# --------------------------------------------------------------------------- text


def test_text_file(tmp_path: Path) -> None:
    text = "hello wörld, the quick brown fox jumps over the lazy dog. " * 40
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    ds = load_dataset("text", str(path), seq_len=20)
    assert ds.kind == "text" and ds.vocab == "".join(sorted(set(text)))
    assert ds.num_classes == len(ds.vocab) and ds.input_shape == (20,)
    assert ds.train_x.shape[1] == 21 and ds.num_test >= 1
    split = round(len(text) * 0.9)
    assert ds.num_train == split // 21 and ds.num_test == (len(text) - split) // 21
    decoded = "".join(ds.vocab[i] for i in ds.train_x[0])
    assert decoded == text[:21]
    x, y = ds.batch(np.array([1, 0]))
    assert x.shape == y.shape == (2, 20) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_text_errors(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 ".encode("latin-1") * 500)
    with pytest.raises(DataError, match="latin1.txt.*UTF-8"):
        load_dataset("text", str(bad))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.txt"):
        load_dataset("text", str(empty))
    short = tmp_path / "short.txt"
    short.write_text("abc" * 10)
    with pytest.raises(DataError, match="short.txt.*too short"):
        load_dataset("text", str(short), seq_len=20)
    with pytest.raises(DataError, match="nope.txt"):
        load_dataset("text", str(tmp_path / "nope.txt"))


def test_bible_kjv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_path(datasets.BIBLE_PROGRAM, "data")
    monkeypatch.setenv("ESGD_CACHE_DIR", str(tmp_path / "cache"))
    ds = load_dataset("text", "bible-kjv", seq_len=100)
    assert ds.name == "bible-kjv" and ds.num_train > 30000 and ds.num_test > 3000
    assert "".join(ds.vocab[i] for i in ds.train_x[0]).startswith("In the beginning God created")
    assert (tmp_path / "cache" / "bible-kjv.txt").is_file()
    again = load_dataset("text", "bible-kjv", seq_len=100)  # from the cache
    np.testing.assert_array_equal(again.test_x, ds.test_x)


def test_bible_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESGD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(text_loader, "BIBLE_PROGRAM", str(tmp_path / "no-bible"))
    with pytest.raises(DataError, match="apt-get install bible-kjv"):
        load_dataset("text", "bible-kjv")


def test_synthetic_text() -> None:
    a = load_dataset("synthetic-text", synthetic_size=64, seq_len=16, seed=1)
    b = load_dataset("synthetic-text", synthetic_size=64, seq_len=16, seed=1)
    c = load_dataset("synthetic-text", synthetic_size=64, seq_len=16, seed=2)
    assert a.train_x.shape == (64, 17) and a.test_x.shape == (16, 17)
    assert a.num_classes == len(a.vocab) == 20
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert not np.array_equal(a.train_x, c.train_x)
    # Bigram structure: the empirical next-char entropy is well below uniform.
    ids = a.train_x.reshape(-1).astype(np.int64)
    counts = np.zeros((20, 20))
    np.add.at(counts, (ids[:-1], ids[1:]), 1)
    p = counts / counts.sum(1, keepdims=True).clip(1)
    rows = counts.sum(1) / counts.sum()
    entropy = -(rows[:, None] * p * np.log(np.where(p > 0, p, 1.0))).sum()
    assert entropy < 0.75 * np.log(20)


# --------------------------------------------------------------------------- synthetic images


def test_synthetic_determinism_and_shape() -> None:
    a = load_dataset("synthetic", synthetic_size=256, seed=3)
    b = load_dataset("synthetic", synthetic_size=256, seed=3)
    c = load_dataset("synthetic", synthetic_size=256, seed=4)
    assert a.train_x.shape == (256, 1, 28, 28) and a.test_x.shape == (64, 1, 28, 28)
    assert a.train_x.dtype == np.uint8 and a.train_y.dtype == np.int64
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.test_y, b.test_y)
    assert not np.array_equal(a.train_x, c.train_x)


def test_synthetic_is_learnable() -> None:
    ds = load_dataset("synthetic", synthetic_size=2048, seed=0)
    train = ds.train_x.reshape(ds.num_train, -1).astype(np.float32)
    test = ds.test_x.reshape(ds.num_test, -1).astype(np.float32)
    centroids = np.stack([train[ds.train_y == c].mean(0) for c in range(10)])
    pred = ((test[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    error = float((pred != ds.test_y).mean())
    assert error < 0.45, error  # chance is 0.9
    assert error > 0.02, error  # but not trivial


# --------------------------------------------------------------------------- Dataset API


def test_batch_normalisation_and_dtype() -> None:
    ds = load_dataset("synthetic", synthetic_size=64)
    idx = np.array([5, 0, 7])
    x, y = ds.batch(idx)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (3, 1, 28, 28)
    expected = (ds.train_x[idx].astype(np.float32) / 255 - ds.mean[0]) / ds.std[0]
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), ds.train_y[idx])
    xt, _ = ds.batch(np.arange(4), split="test")
    assert xt.shape == (4, 1, 28, 28)
    with pytest.raises(ValueError):
        ds.batch(idx, split="valid")


def test_batch_per_channel(tmp_path: Path) -> None:
    write_cifar_dir(tmp_path)
    ds = load_dataset("cifar10", str(tmp_path))
    x, _ = ds.batch(np.arange(2))
    for c in range(3):
        expected = (ds.train_x[:2, c].astype(np.float32) / 255 - ds.mean[c]) / ds.std[c]
        np.testing.assert_allclose(x[:, c].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_subset_determinism() -> None:
    ds = load_dataset("synthetic", synthetic_size=200)
    a = ds.subset(train=50, test=10, seed=7)
    b = ds.subset(train=50, test=10, seed=7)
    c = ds.subset(train=50, test=10, seed=8)
    assert isinstance(a, Dataset) and (a.num_train, a.num_test) == (50, 10)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    np.testing.assert_array_equal(a.test_y, b.test_y)
    assert not np.array_equal(a.train_x, c.train_x)
    full = ds.subset()
    assert (full.num_train, full.num_test) == (ds.num_train, ds.num_test)
    assert a.nbytes < ds.nbytes
    assert a.mean == ds.mean and a.batch(np.arange(2))[0].shape == (2, 1, 28, 28)


def test_label_noise_flips_exactly_the_fraction_to_other_classes_reproducibly() -> None:
    data = load_dataset("synthetic", seed=0)
    noisy = data.with_label_noise(0.2, seed=3)
    changed = noisy.train_y != data.train_y
    assert changed.sum() == round(0.2 * len(data.train_y))   # every chosen label really changed
    assert noisy.train_y.min() >= 0 and noisy.train_y.max() < data.num_classes
    assert np.array_equal(noisy.test_y, data.test_y) and np.array_equal(noisy.train_x, data.train_x)
    assert np.array_equal(data.with_label_noise(0.2, seed=3).train_y, noisy.train_y)  # same seed, same set
    assert not np.array_equal(data.with_label_noise(0.2, seed=4).train_y, noisy.train_y)
    assert data.with_label_noise(0.0) is data
    with pytest.raises(DataError, match=r"dataset.label_noise: must be in \[0, 1\)"):
        data.with_label_noise(1.0)
