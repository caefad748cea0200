"""Offline datasets for the training service (DESIGN.md section 5).

Everything is read from local files (nothing is downloaded at run time):

* ``fashion-mnist`` / ``mnist`` / ``idx``: IDX files (raw or gzip), as shipped by the
  Debian package ``dataset-fashion-mnist`` or by the MNIST web site.
* ``cifar10``: the CIFAR-10 "python version" batches, read with a restricted unpickler.
* ``text``: any UTF-8 file (or ``path="bible-kjv"`` for the KJV via Debian's ``bible``).
* ``synthetic`` / ``synthetic-text``: small seeded tasks for fast tests.

Every data problem raises :class:`DataError` with a message naming the file or field at
fault and what to do about it.  Data is kept compactly in numpy (uint8 images, small
integer token ids) and converted to torch tensors per batch by :meth:`Dataset.batch`.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import re
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

DATASETS: tuple[str, ...] = (
    "fashion-mnist", "mnist", "idx", "cifar10", "text", "synthetic", "synthetic-text",
)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
BIBLE_PROGRAM = "/usr/bin/bible"
BIBLE_RANGE = "Gen1:1-Rev22:21"

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_HOWTO = ("extract cifar-10-python.tar.gz (the CIFAR-10 'python version', "
                "https://www.cs.toronto.edu/~kriz/cifar.html) on a machine with network access "
                "and pass path=<dir> containing data_batch_1..data_batch_5 and test_batch "
                "(or the cifar-10-batches-py/ folder itself)")


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


# --------------------------------------------------------------------------- IDX files


def _read_file(path: Path) -> bytes:
    """Read a file, transparently gunzipping it (detected by the gzip magic bytes)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is a truncated or corrupt gzip file ({exc}); "
                            f"replace it with a fresh copy") from exc
    if path.suffix == ".gz":
        raise DataError(f"{path} is named .gz but is not a gzip file; replace it with a fresh copy")
    return data


def _parse_idx(data: bytes, path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, checking magic, dims and data length."""
    what = "images" if magic == _IDX_IMAGES_MAGIC else "labels"
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is too short for an IDX {what} header ({len(data)} bytes); "
                        f"the file is truncated, replace it with a fresh copy")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path} has magic number 0x{found:08x}, expected 0x{magic:08x} "
                        f"(IDX unsigned-byte {what}); it is not the right file")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if any(d == 0 for d in dims):
        raise DataError(f"{path} declares an empty array with dims {dims}")
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise DataError(f"{path} holds {len(data) - header} data bytes but its header dims {dims} "
                        f"need {expected}; the file is truncated or corrupt, replace it")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx_file(directory: Path, stem: str) -> Path:
    """Locate ``stem`` or ``stem.gz`` (also the ``train-images.idx3-ubyte`` spelling)."""
    dotted = stem[::-1].replace("-", ".", 1)[::-1]
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise DataError(f"missing {stem}(.gz) in {directory}; put the four IDX files "
                    f"{', '.join(_IDX_FILES.values())} (raw or .gz) there")


def _load_idx(name: str, directory: Path, mean: tuple[float, ...] | None,
              std: tuple[float, ...] | None, num_classes: int | None) -> Dataset:
    """Load the four IDX files from ``directory``; mean/std None = compute from train."""
    if not directory.is_dir():
        raise DataError(f"{name}: {directory} is not a directory; it must contain "
                        f"{', '.join(_IDX_FILES.values())} (raw or .gz)")
    arrays: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    for key, stem in _IDX_FILES.items():
        paths[key] = _find_idx_file(directory, stem)
        magic = _IDX_IMAGES_MAGIC if key.endswith("_x") else _IDX_LABELS_MAGIC
        arrays[key] = _parse_idx(_read_file(paths[key]), paths[key], magic)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if len(images) != len(labels):
            raise DataError(f"{paths[f'{split}_x']} has {len(images)} images but "
                            f"{paths[f'{split}_y']} has {len(labels)} labels; the files do not belong together")
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise DataError(f"image sizes differ: {paths['train_x']} is {arrays['train_x'].shape[1:]}, "
                        f"{paths['test_x']} is {arrays['test_x'].shape[1:]}")
    max_label = int(max(arrays["train_y"].max(), arrays["test_y"].max()))
    if num_classes is None:
        num_classes = max_label + 1
    elif max_label >= num_classes:
        raise DataError(f"{name}: label {max_label} found in {paths['train_y'].parent} but only "
                        f"{num_classes} classes exist; these are not {name} label files")
    train_x = arrays["train_x"].reshape(len(arrays["train_x"]), 1, *arrays["train_x"].shape[1:])
    test_x = arrays["test_x"].reshape(len(arrays["test_x"]), 1, *arrays["test_x"].shape[1:])
    if mean is None or std is None:
        mean, std = _channel_stats(train_x)
    return Dataset(name=name, kind="image",
                   train_x=train_x, train_y=arrays["train_y"].astype(np.int64),
                   test_x=test_x, test_y=arrays["test_y"].astype(np.int64),
                   num_classes=num_classes, input_shape=tuple(int(d) for d in train_x.shape[1:]),
                   mean=mean, std=std)


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``(N, C, H, W)`` images scaled to [0, 1]."""
    means, stds = [], []
    for c in range(images.shape[1]):
        channel = images[:, c].astype(np.float32) / 255.0
        means.append(float(channel.mean()))
        stds.append(max(float(channel.std()), 1e-3))
    return tuple(means), tuple(stds)


# --------------------------------------------------------------------------- CIFAR-10

_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 encode bytes this way
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays and plain containers.

    Pickles can run arbitrary code; CIFAR batches only need ndarray reconstruction, so any
    other global (``os.system``, ``builtins.eval``...) is refused.
    """

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle API
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _get(batch: dict, key: str):
    """Look up a CIFAR batch field stored under a bytes (Python 2) or str key."""
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load one CIFAR-10 batch file as ``(N, 3, 32, 32)`` uint8 and int64 labels."""
    if not path.is_file():
        raise DataError(f"missing CIFAR-10 batch file {path}; {_CIFAR_HOWTO}")
    try:
        with path.open("rb") as fh:
            batch = _RestrictedUnpickler(fh, encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # unpickling garbage can raise almost anything
        raise DataError(f"{path} is not a valid CIFAR-10 python batch ({type(exc).__name__}: {exc}); "
                        f"it is corrupt, truncated or unsafe; replace it with a fresh copy") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, expected a dict with 'data' and 'labels'")
    data, labels = _get(batch, "data"), _get(batch, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: field 'data' must be a uint8 array of shape (N, 3072), got {desc}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: field 'labels' must be a list of integers ({exc})") from exc
    if labels.shape != (len(data),):
        raise DataError(f"{path}: field 'labels' has shape {labels.shape}, expected ({len(data)},)")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: field 'labels' has values outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(path: str | None) -> Dataset:
    """CIFAR-10 from the python-batch files in ``path`` (or ``path/cifar-10-batches-py``)."""
    if path is None:
        raise DataError(f"cifar10 needs path=<dir>; no copy exists offline here: {_CIFAR_HOWTO}")
    directory = Path(path)
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    if not directory.is_dir():
        raise DataError(f"cifar10: {directory} is not a directory; {_CIFAR_HOWTO}")
    train = [_load_cifar_batch(directory / name) for name in _CIFAR_TRAIN]
    test_x, test_y = _load_cifar_batch(directory / _CIFAR_TEST)
    return Dataset(name="cifar10", kind="image",
                   train_x=np.concatenate([x for x, _ in train]),
                   train_y=np.concatenate([y for _, y in train]),
                   test_x=test_x, test_y=test_y, num_classes=10, input_shape=(3, 32, 32),
                   mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


# --------------------------------------------------------------------------- text


def _bible_text() -> str:
    """The King James Bible as plain text, one verse per line, via Debian's ``bible``.

    ``bible -f`` turns pretty-printing *off*, giving ``Ge1:1 In the beginning...`` lines;
    the verse references are stripped.  The result is cached in ~/.cache/esgd.
    """
    cache = Path.home() / ".cache" / "esgd" / "bible-kjv.txt"
    if cache.is_file():
        return _decode_text(cache.read_bytes(), cache)
    if not os.access(BIBLE_PROGRAM, os.X_OK):
        raise DataError(f"text path 'bible-kjv' needs {BIBLE_PROGRAM}: run `apt-get install bible-kjv`")
    try:
        proc = subprocess.run([BIBLE_PROGRAM, "-f", BIBLE_RANGE], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"running {BIBLE_PROGRAM} failed ({exc}); reinstall with "
                        f"`apt-get install --reinstall bible-kjv bible-kjv-text`") from exc
    raw = re.sub(rb"(?m)^[1-3]?[A-Za-z]+\d+:\d+ ", b"", proc.stdout)
    if proc.returncode != 0 or len(raw) < 1_000_000:
        raise DataError(f"{BIBLE_PROGRAM} -f {BIBLE_RANGE} returned {proc.returncode} with "
                        f"{len(raw)} bytes ({proc.stderr[:200]!r}); reinstall with "
                        f"`apt-get install --reinstall bible-kjv bible-kjv-text`")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(raw)
        os.replace(tmp, cache)
    except OSError:
        pass  # caching is only an optimisation
    return raw.decode("ascii", errors="replace")


def _decode_text(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 (byte offset {exc.start}: {exc.reason}); "
                        f"convert it, e.g. `iconv -f latin1 -t utf-8`") from exc


def _text_dataset(name: str, text: str, seq_len: int, test_fraction: float = 0.1,
                  source: str = "", vocab: str | None = None) -> Dataset:
    """Tokenise ``text`` by character and cut train/test into ``seq_len + 1`` chunks."""
    if seq_len < 1:
        raise DataError(f"seq_len must be >= 1, got {seq_len}")
    where = source or name
    window = seq_len + 1
    split = int(round(len(text) * (1.0 - test_fraction)))
    need = int(np.ceil(window / min(test_fraction, 1 - test_fraction)))
    if len(text) - split < window or split < window:
        raise DataError(f"{where} has {len(text)} characters, too short for seq_len={seq_len} "
                        f"(need at least {need}); use a longer file or a smaller seq_len")
    if vocab is None:
        vocab = "".join(sorted(set(text)))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab_codes = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
    dtype = np.uint8 if len(vocab) <= 256 else np.int16 if len(vocab) <= 32767 else np.int32
    ids = np.searchsorted(vocab_codes, codes).astype(dtype)

    def chunks(part: np.ndarray) -> np.ndarray:
        n = len(part) // window
        return np.ascontiguousarray(part[: n * window].reshape(n, window))

    train_x, test_x = chunks(ids[:split]), chunks(ids[split:])
    return Dataset(name=name, kind="text", train_x=train_x, train_y=np.zeros(len(train_x), np.int64),
                   test_x=test_x, test_y=np.zeros(len(test_x), np.int64), num_classes=len(vocab),
                   input_shape=(seq_len,), mean=(), std=(), vocab=vocab)


def _load_text(path: str | None, seq_len: int) -> Dataset:
    """Character dataset from a UTF-8 file; the last 10% of characters is the test split."""
    if path is None:
        raise DataError("text needs path=<a UTF-8 text file> (or path='bible-kjv' for the King "
                        "James Bible from Debian package bible-kjv)")
    if path == "bible-kjv" and not os.path.exists(path):
        return _text_dataset("bible-kjv", _bible_text(), seq_len, source="bible-kjv")
    file = Path(path)
    if not file.is_file():
        raise DataError(f"text file {file} does not exist or is not a regular file; pass path= "
                        f"a UTF-8 text file (or 'bible-kjv' after `apt-get install bible-kjv`)")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read text file {file}: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise DataError(f"text file {file} is empty; use a file with some text")
    return _text_dataset("text", _decode_text(raw, file), seq_len, source=str(file))


# --------------------------------------------------------------------------- synthetic


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


# --------------------------------------------------------------------------- entry point


def load_dataset(name: str, path: str | None = None, *, seq_len: int = 100,
                 synthetic_size: int = 2048, seed: int = 0) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`) from local files.

    ``path`` is a directory for IDX/CIFAR data and a file for ``text``; ``seq_len`` applies
    to text datasets, ``synthetic_size`` and ``seed`` to the synthetic ones.
    """
    if name == "fashion-mnist":
        directory = Path(path or FASHION_MNIST_DIR)
        if path is None and not directory.is_dir():
            raise DataError(f"Fashion-MNIST not found in {FASHION_MNIST_DIR}: run "
                            f"`apt-get install dataset-fashion-mnist`, or pass path=<dir> with "
                            f"{', '.join(_IDX_FILES.values())} (raw or .gz)")
        return _load_idx("fashion-mnist", directory, (0.2860,), (0.3530,), 10)
    if name == "mnist":
        if path is None:
            raise DataError(f"mnist needs path=<dir> containing {', '.join(_IDX_FILES.values())} "
                            f"(raw or .gz, from the MNIST web site); no copy exists offline here")
        return _load_idx("mnist", Path(path), (0.1307,), (0.3081,), 10)
    if name == "idx":
        if path is None:
            raise DataError(f"idx needs path=<dir> containing {', '.join(_IDX_FILES.values())} (raw or .gz)")
        return _load_idx("idx", Path(path), None, None, None)
    if name == "cifar10":
        return _load_cifar10(path)
    if name == "text":
        return _load_text(path, seq_len)
    if name == "synthetic":
        return _synthetic_images(synthetic_size, seed)
    if name == "synthetic-text":
        return _synthetic_text(synthetic_size, seq_len, seed)
    raise DataError(f"unknown dataset {name!r}; allowed names: {', '.join(DATASETS)}")
