"""IDX loader: Fashion-MNIST, MNIST and any other set of four IDX unsigned-byte files.

IDX is the simple big-endian format of the MNIST web site (magic number, dimensions,
raw bytes); files may be raw or gzip-compressed, as shipped by MNIST and by the Debian
package ``dataset-fashion-mnist``.  Headers, dimensions and data lengths are checked so
that truncated or mismatched files fail with a :class:`DataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError, Dataset, _channel_stats, _read_file

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


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

