"""IDX loader: Fashion-MNIST, MNIST and any other set of four IDX unsigned-byte files.

IDX is the simple big-endian format of the MNIST web site (magic number, dimensions,
raw bytes); files may be raw or gzip-compressed, as shipped by MNIST and by the Debian
package ``dataset-fashion-mnist``.  The header is read and checked first — magic, number of
dimensions, no zero dimension, and the size the dimensions promise (exact Python integers)
against the cap of :mod:`.limits` — before anything is allocated; then exactly the promised
bytes are read (a gzip file is decompressed as a stream, never beyond that promise) and the
file must end there.  Truncated, over-long or mismatched files fail with a
:class:`DataError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, _channel_stats
from .bounded import BoundedFile
from .limits import format_size
from .roots import DataPolicy

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_IDX_UBYTE = 0x08


def _parse_idx(src: BoundedFile, magic: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes from ``src``: magic, dims, exactly the data, the end."""
    what = "images" if magic == _IDX_IMAGES_MAGIC else "labels"
    head = src.read(4)
    if len(head) < 4:
        raise src.error(f"too short for an IDX {what} header ({len(head)} bytes); "
                        f"the file is truncated, replace it with a fresh copy")
    found = int.from_bytes(head, "big")
    if found != magic:
        raise src.error(f"magic number 0x{found:08x}, expected 0x{magic:08x} "
                        f"(IDX unsigned-byte {what}); it is not the right file")
    ndim = magic & 0xFF
    raw_dims = src.read_exact(4 * ndim, "IDX header")
    dims = tuple(int.from_bytes(raw_dims[4 * i:4 * i + 4], "big") for i in range(ndim))
    if any(d == 0 for d in dims):
        raise src.error(f"header declares an empty array with dims {dims}")
    header = 4 + 4 * ndim
    expected = 1
    for d in dims:  # Python integers: no overflow, whatever the header says
        expected *= d
    shape = "x".join(str(d) for d in dims)
    cap = src.cap - header
    if expected > cap:
        raise src.error(f"header promises {shape} = {format_size(expected)}, over the "
                        f"{format_size(src.cap)} cap")
    if not src.compressed and src.size_on_disk != header + expected:
        held = src.size_on_disk - header
        state = "truncated" if held < expected else "longer than its header says (corrupt)"
        raise src.error(f"{held} data bytes but its header dims {dims} need {expected}; "
                        f"the file is {state}, replace it")
    data = np.empty(expected, dtype=np.uint8)
    got = src.readinto(memoryview(data))
    if got != expected:
        raise src.error(f"{got} data bytes but its header dims {dims} need {expected}; "
                        f"the file is truncated or corrupt, replace it")
    src.expect_end(f"its header promises ({shape} = {format_size(expected)})")
    return data.reshape(dims)


def _find_idx_file(directory: Path, stem: str, policy: DataPolicy) -> Path:
    """Locate ``stem`` or ``stem.gz`` (also the ``train-images.idx3-ubyte`` spelling) in the
    resolved ``directory``; returns its real path (inside the roots, else ConfinementError)."""
    dotted = stem[::-1].replace("-", ".", 1)[::-1]
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if os.path.lexists(directory / name):  # a link out of the roots is refused, dangling or not
            return policy.child(directory, name)
    raise DataError(f"missing {stem}(.gz) in {directory}; put the four IDX files "
                    f"{', '.join(_IDX_FILES.values())} (raw or .gz) there")


def _read_idx_file(path: Path, magic: int, policy: DataPolicy) -> np.ndarray:
    fd = policy.open_file(path, "dataset.path")
    with BoundedFile(fd, str(path), policy.limits) as src:
        return _parse_idx(src, magic)


def _load_idx(name: str, directory: Path, mean: tuple[float, ...] | None,
              std: tuple[float, ...] | None, num_classes: int | None,
              policy: DataPolicy | None = None) -> Dataset:
    """Load the four IDX files from ``directory`` (already resolved by the policy); mean/std
    None = compute from train."""
    policy = policy or DataPolicy()
    if not directory.is_dir():
        raise DataError(f"{name}: {directory} is not a directory; it must contain "
                        f"{', '.join(_IDX_FILES.values())} (raw or .gz)")
    arrays: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    for key, stem in _IDX_FILES.items():
        paths[key] = _find_idx_file(directory, stem, policy)
        magic = _IDX_IMAGES_MAGIC if key.endswith("_x") else _IDX_LABELS_MAGIC
        arrays[key] = _read_idx_file(paths[key], magic, policy)
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
