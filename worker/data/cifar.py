"""CIFAR-10 loader for the "python version" batch files (``data_batch_1..5``, ``test_batch``).

These batches are Python pickles of dicts holding a uint8 ``data`` array and a ``labels``
list.  Unpickling can execute arbitrary code, and the files come from outside the project,
so they are never unpickled: :mod:`.safepickle` interprets the opcodes itself and builds only
plain values and numeric arrays (any other global or code-running opcode is refused).  Each
file is read whole, within the size cap of :mod:`.limits`, before it is parsed.  No copy
exists offline; the user supplies a path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import safepickle
from .base import DataError, Dataset
from .bounded import BoundedFile
from .roots import DataPolicy

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_HOWTO = ("extract cifar-10-python.tar.gz (the CIFAR-10 'python version', "
                "https://www.cs.toronto.edu/~kriz/cifar.html) on a machine with network access "
                "and pass path=<dir> containing data_batch_1..data_batch_5 and test_batch "
                "(or the cifar-10-batches-py/ folder itself)")


def _get(batch: dict, key: str):
    """Look up a CIFAR batch field stored under a bytes (Python 2) or str key."""
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def _load_cifar_batch(directory: Path, name: str, policy: DataPolicy) -> tuple[np.ndarray, np.ndarray]:
    """Load one CIFAR-10 batch file as ``(N, 3, 32, 32)`` uint8 and int64 labels."""
    if not os.path.lexists(directory / name):
        raise DataError(f"missing CIFAR-10 batch file {directory / name}; {_CIFAR_HOWTO}")
    path = policy.child(directory, name)  # a link out of the roots: the common refusal
    with BoundedFile(policy.open_file(path, "dataset.path"), str(path), policy.limits) as src:
        raw = src.read_all(policy.limits.max_bytes, "a file")
    try:
        batch = safepickle.loads(raw)
    except safepickle.PickleRefused as exc:
        raise DataError(f"{path} is not a valid CIFAR-10 python batch ({exc}); "
                        f"it is corrupt, truncated or unsafe; replace it with a fresh copy") from None
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


def _load_cifar10(path: str | None, policy: DataPolicy | None = None) -> Dataset:
    """CIFAR-10 from the python-batch files in ``path`` (or ``path/cifar-10-batches-py``)."""
    policy = policy or DataPolicy()
    if path is None:
        raise DataError(f"cifar10 needs path=<dir>; no copy exists offline here: {_CIFAR_HOWTO}")
    directory = policy.locate(path)
    if (directory / "cifar-10-batches-py").is_dir():
        directory = policy.child(directory, "cifar-10-batches-py")
    if not directory.is_dir():
        raise DataError(f"cifar10: {directory} is not a directory; {_CIFAR_HOWTO}")
    train = [_load_cifar_batch(directory, name, policy) for name in _CIFAR_TRAIN]
    test_x, test_y = _load_cifar_batch(directory, _CIFAR_TEST, policy)
    return Dataset(name="cifar10", kind="image",
                   train_x=np.concatenate([x for x, _ in train]),
                   train_y=np.concatenate([y for _, y in train]),
                   test_x=test_x, test_y=test_y, num_classes=10, input_shape=(3, 32, 32),
                   mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))

