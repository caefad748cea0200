"""Offline datasets for the training service.

Everything is read from local files (nothing is downloaded at run time):

* ``fashion-mnist`` / ``mnist`` / ``idx``: IDX files (raw or gzip), as shipped by the
  Debian package ``dataset-fashion-mnist`` or by the MNIST web site.
* ``cifar10``: the CIFAR-10 "python version" batches, read with a restricted unpickler.
* ``text``: any UTF-8 file (or ``path="bible-kjv"`` for the KJV via Debian's ``bible``).
* ``synthetic`` / ``synthetic-text``: small seeded tasks for fast tests.

Every data problem raises :class:`DataError` with a message naming the file or field at
fault and what to do about it.  What a load may read is a :class:`~.roots.DataPolicy`: the data
roots ``dataset.path`` must lie in (none by default; the job service sets them, see
:mod:`.roots`) and the size caps of :mod:`.limits`; files are read with bounded memory
(:mod:`.bounded`) and pickles are never unpickled (:mod:`.safepickle`).  Data is kept
compactly in numpy (uint8 images, small integer token ids) and converted to torch tensors per
batch by :meth:`Dataset.batch`.

The loaders live in one module per family (:mod:`.idx`, :mod:`.cifar`, :mod:`.text`,
:mod:`.synthetic`) on top of :mod:`.base`; this module is the public entry point.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import DataError, Dataset
from .cifar import _load_cifar10
from .idx import _IDX_FILES, FASHION_MNIST_DIR, _load_idx
from .roots import ConfinementError, DataPolicy
from .synthetic import _synthetic_images, _synthetic_text
from .text import BIBLE_PROGRAM, BIBLE_RANGE, _load_text

__all__ = ["DATASETS", "Dataset", "DataError", "ConfinementError", "DataPolicy", "load_dataset",
           "FASHION_MNIST_DIR", "BIBLE_PROGRAM", "BIBLE_RANGE"]

DATASETS: tuple[str, ...] = (
    "fashion-mnist", "mnist", "idx", "cifar10", "text", "synthetic", "synthetic-text",
)


def load_dataset(name: str, path: str | None = None, *, seq_len: int = 100,
                 synthetic_size: int = 2048, seed: int = 0, policy: DataPolicy | None = None) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`) from local files.

    ``path`` is a directory for IDX/CIFAR data and a file for ``text``; ``seq_len`` applies
    to text datasets, ``synthetic_size`` and ``seed`` to the synthetic ones. ``policy``: the
    data roots and size caps (default :meth:`DataPolicy.from_env`: no roots unless
    ``$ESGD_DATA_ROOTS`` is set, as in the job service's processes).
    """
    policy = policy if policy is not None else DataPolicy.from_env()
    if name == "fashion-mnist":
        if path is None:  # the package's own folder, and nothing it links to elsewhere
            directory = Path(FASHION_MNIST_DIR)
            if not directory.is_dir():
                raise DataError(f"Fashion-MNIST not found in {FASHION_MNIST_DIR}: run "
                                f"`apt-get install dataset-fashion-mnist`, or pass path=<dir> with "
                                f"{', '.join(_IDX_FILES.values())} (raw or .gz)")
            real = Path(os.path.realpath(directory))
            return _load_idx("fashion-mnist", real, (0.2860,), (0.3530,), 10, policy.within(real))
        return _load_idx("fashion-mnist", policy.locate(path), (0.2860,), (0.3530,), 10, policy)
    if name == "mnist":
        if path is None:
            raise DataError(f"mnist needs path=<dir> containing {', '.join(_IDX_FILES.values())} "
                            f"(raw or .gz, from the MNIST web site); no copy exists offline here")
        return _load_idx("mnist", policy.locate(path), (0.1307,), (0.3081,), 10, policy)
    if name == "idx":
        if path is None:
            raise DataError(f"idx needs path=<dir> containing {', '.join(_IDX_FILES.values())} (raw or .gz)")
        return _load_idx("idx", policy.locate(path), None, None, None, policy)
    if name == "cifar10":
        return _load_cifar10(path, policy)
    if name == "text":
        return _load_text(path, seq_len, policy)
    if name == "synthetic":
        return _synthetic_images(synthetic_size, seed)
    if name == "synthetic-text":
        return _synthetic_text(synthetic_size, seq_len, seed)
    raise DataError(f"unknown dataset {name!r}; allowed names: {', '.join(DATASETS)}")
