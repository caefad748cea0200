"""The data loaders' bounded input: size and decompression caps, IDX headers, text files.

A client of the job service names ``dataset.path``; these tests check that no file can make the
loaders allocate or decompress beyond what its header promises and the size caps allow (gzip
bombs, absurd IDX headers, truncated or over-long files, oversized text, a FIFO). Confinement to
the data roots is tests/security/test_data_confinement.py; pickles, test_data_pickles.py.
"""
from __future__ import annotations

import gzip
import os
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.test_datasets import IDX_NAMES, idx_bytes, write_idx_dir
from worker.data import DataError, load_dataset
from worker.data.bounded import CHUNK, STEP, BoundedFile
from worker.data.idx import _IDX_IMAGES_MAGIC, _parse_idx
from worker.data.limits import GiB, MiB, Limits, format_size, parse_size
from worker.data.roots import DataPolicy


# --------------------------------------------------------------------------- helpers
def idx_header(magic: int, dims) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims)


def write_gzip_bomb(path: Path, header: bytes, zeros_mib: int) -> int:
    """A valid gzip file: ``header`` then ``zeros_mib`` MiB of zeros, written as a stream
    (never materialised): after a full flush deflate's state is reset, so one compressed 1 MiB
    block (about 1 KB) can be repeated. Returns the decompressed size."""
    block = bytes(MiB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    piece = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH) == piece
    crc = zlib.crc32(header)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        f.write(first)
        for _ in range(zeros_mib):
            f.write(piece)
            crc = zlib.crc32(block, crc)
        f.write(deflate.flush())
        total = len(header) + zeros_mib * MiB
        f.write(struct.pack("<II", crc, total & 0xFFFFFFFF))
    return total


def open_bounded(path: Path, limits: Limits | None = None) -> BoundedFile:
    policy = DataPolicy(limits=limits or Limits())
    real = Path(os.path.realpath(path))
    return BoundedFile(policy.open_file(real, "dataset.path"), str(real), policy.limits)


def parse_images(path: Path, limits: Limits | None = None) -> tuple[np.ndarray | None, BoundedFile, str]:
    """_parse_idx on an images file: (array or None, the reader, the error message or '');
    the reader is None when opening it failed already (size on disk, gzip header)."""
    try:
        src = open_bounded(path, limits)
    except DataError as exc:
        return None, None, str(exc)
    with src:
        try:
            return _parse_idx(src, _IDX_IMAGES_MAGIC), src, ""
        except DataError as exc:
            return None, src, str(exc)


# --------------------------------------------------------------------------- gzip bomb
def test_the_bomb_writer_makes_a_valid_gzip_file(tmp_path):
    path = tmp_path / "small.gz"
    total = write_gzip_bomb(path, b"HEAD", 8)
    data = gzip.decompress(path.read_bytes())
    assert len(data) == total and data[:4] == b"HEAD" and not data[4:].strip(b"\0")
    assert path.stat().st_size < total / 500


def test_a_gzip_bomb_is_refused_after_the_header_promise_with_bounded_memory(tmp_path):
    dims = (100, 28, 28)                       # promises 78 400 bytes …
    header = idx_header(_IDX_IMAGES_MAGIC, dims)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    total = write_gzip_bomb(path, header, 4096)   # … and holds 4 GiB of zeros in ~4 MB
    assert total > 4 * GiB and path.stat().st_size < 8 * MiB
    promise = len(header) + 100 * 28 * 28

    tracemalloc.start()
    start = time.perf_counter()
    try:
        array, src, message = parse_images(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert array is None
    assert str(path) in message and "more data than its header promises (100x28x28 = 78.4 kB)" in message, message
    # decompressed: the promise and one byte more; read from disk: what that needs and a chunk
    assert src.produced == promise + 1, src.produced
    assert src.consumed <= promise // 100 + 2 * CHUNK, src.consumed
    assert peak < 4 * STEP + promise, f"peak traced memory {peak} bytes"
    assert elapsed < 5, elapsed


def test_a_gzip_bomb_through_load_dataset_keeps_the_process_small(tmp_path):
    import resource

    write_idx_dir(tmp_path, gz=True)
    write_gzip_bomb(tmp_path / f"{IDX_NAMES['train_y']}.gz", idx_header(0x801, (12,)), 2048)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*more data than its header promises"):
        load_dataset("idx", str(tmp_path))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024, f"peak RSS grew by {grown_kib} KiB"


# --------------------------------------------------------------------------- IDX headers
@pytest.mark.parametrize("gz", [False, True])
def test_dims_whose_product_overflows_64_bits_are_refused_before_any_allocation(tmp_path, gz):
    dims = (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)     # product ≈ 2^96
    data = idx_header(_IDX_IMAGES_MAGIC, dims) + bytes(784)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    tracemalloc.start()
    try:
        array, src, message = parse_images(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    product = 0xFFFFFFFF ** 3
    assert array is None and product > 2 ** 64
    assert f"header promises 4294967295x4294967295x4294967295 = {format_size(product)}" in message
    assert "over the 2 GiB cap" in message and message.startswith(f"dataset.path: {path}"), message
    assert src.produced == 16 and peak < 4 * STEP


def test_a_header_just_over_the_cap_is_refused_and_the_message_says_so(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_header(_IDX_IMAGES_MAGIC, (60000, 28, 28)))  # no data at all
    _, src, message = parse_images(path, Limits(max_bytes=40 * MiB))
    assert message == f"dataset.path: {path}: header promises 60000x28x28 = 47 MB, over the 40 MiB cap", message


@pytest.mark.parametrize("dims,what", [((0, 28, 28), "empty array"), ((5, 0, 3), "empty array")])
def test_zero_dims_are_refused(tmp_path, dims, what):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_header(_IDX_IMAGES_MAGIC, dims))
    assert what in parse_images(path)[2]


def test_an_absurd_ndim_is_refused_by_the_magic_number(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes((0x08FF).to_bytes(4, "big") + bytes(4 * 255))   # 255 dimensions
    _, src, message = parse_images(path)
    assert "magic number 0x000008ff, expected 0x00000803" in message and src.produced == 4


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("how", ["truncated", "over-long"])
def test_truncated_and_over_long_files_are_refused(tmp_path, gz, how):
    images = np.arange(5 * 6 * 6, dtype=np.uint8).reshape(5, 6, 6)
    data = idx_bytes(images)
    data = data[:-7] if how == "truncated" else data + b"\x00" * 3
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    array, src, message = parse_images(path)
    assert array is None and str(path) in message
    if how == "truncated":
        assert "truncated" in message, message
    else:
        assert "more data than its header promises" in message or "longer than its header says" in message, message
    assert src.produced <= len(idx_bytes(images)) + 1


def test_a_gzip_stream_cut_short_or_followed_by_garbage_is_refused(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((4, 6, 6), np.uint8)))
    for name, data, words in [("cut.gz", good[:-12], "truncated or corrupt gzip"),
                              ("tail.gz", good + b"garbage!", "data after the end of the gzip stream"),
                              ("crc.gz", good[:-8] + b"\0" * 8, "truncated or corrupt gzip"),
                              ("method.gz", good[:2] + b"\x07" + good[3:], "compression method 7")]:
        path = tmp_path / name
        path.write_bytes(data)
        assert words in parse_images(path)[2], name
    path = tmp_path / "two-members.gz"   # concatenated members are one stream, as gzip(1) says
    raw = idx_bytes(np.arange(4 * 6 * 6, dtype=np.uint8).reshape(4, 6, 6))
    path.write_bytes(gzip.compress(raw[:50]) + gzip.compress(raw[50:]))
    array, _, message = parse_images(path)
    assert message == "" and array.tobytes() == raw[16:]


def test_caps_on_compressed_and_raw_sizes_apply_before_reading(tmp_path):
    raw = idx_bytes(np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8))
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw))
    _, src, message = parse_images(tmp_path / "a", Limits(max_bytes=10_000))
    assert message.endswith(": 31.4 kB, over the 10 kB cap") and src is None, message
    _, src, message = parse_images(tmp_path / "b.gz", Limits(max_compressed=1000))
    assert "on disk, over the 1 kB cap on compressed files" in message and src is None, message


def test_the_caps_come_from_the_environment(tmp_path, monkeypatch):
    write_idx_dir(tmp_path, n_train=40, size=28)
    monkeypatch.setenv("ESGD_DATA_MAX_BYTES", "16K")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: 31.4 kB, over the 16 KiB cap"):
        load_dataset("idx", str(tmp_path))
    monkeypatch.setenv("ESGD_DATA_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="ESGD_DATA_MAX_BYTES"):
        load_dataset("idx", str(tmp_path))
    monkeypatch.delenv("ESGD_DATA_MAX_BYTES")
    assert load_dataset("idx", str(tmp_path)).num_train == 40
    assert parse_size("2G") == 2 * GiB and parse_size("512MiB") == 512 * MiB and parse_size(7) == 7


# --------------------------------------------------------------------------- text
def test_text_over_its_cap_is_refused_and_read_in_bounded_chunks(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("abcdefgh " * 1000)
    policy = DataPolicy(limits=Limits(max_text=4096))
    with pytest.raises(DataError, match=r"big.txt: 9 kB, over the 4 KiB cap"):
        load_dataset("text", str(big), seq_len=8, policy=policy)
    assert load_dataset("text", str(big), seq_len=8, policy=DataPolicy(limits=Limits(max_text=9000))).num_train > 0


def test_a_fifo_is_not_read_and_does_not_hang(tmp_path):
    fifo = tmp_path / "corpus.txt"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(DataError, match="not a regular file"):
        load_dataset("text", str(fifo), seq_len=8, policy=DataPolicy(roots=(tmp_path,)))
    assert time.monotonic() - start < 5
