"""The data loaders as a trust boundary: confinement to the data roots, bounded input, no pickles.

A client of the job service names ``dataset.path``; these tests check that the loaders read
only inside the configured roots (one identical refusal for everything else), that no file can
make them allocate or decompress beyond what its header promises and the size caps allow, and
that pickled data files are parsed, never unpickled.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.installed import need_path
from tests.test_datasets import IDX_NAMES, _Evil, idx_bytes, write_cifar_dir, write_idx_dir
from worker.data import DataError, load_dataset
from worker.data.bounded import CHUNK, STEP, BoundedFile
from worker.data.datasets import FASHION_MNIST_DIR
from worker.data.idx import _IDX_IMAGES_MAGIC, _parse_idx
from worker.data.limits import GiB, MiB, Limits, format_size, parse_size
from worker.data.roots import (ENV_ROOTS, ConfinementError, DataPolicy, configure_data_access, confine,
                               default_roots, refusal_message)
from worker.data.safepickle import PickleRefused, loads


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


# --------------------------------------------------------------------------- CIFAR pickles
def test_cifar_batches_are_parsed_not_unpickled(tmp_path):
    write_cifar_dir(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=4))
    with pytest.raises(DataError, match="data_batch_1.*forbidden global posix.system"):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()


def _reduce_pickle(module: str, name: str, args: bytes) -> bytes:
    """protocol 2: GLOBAL module.name, args (already pickled as a tuple), REDUCE, STOP."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n" + args + b"R."


def test_pickles_that_allocate_without_bound_are_refused():
    shape = pickle.dumps((10**7, 3072), protocol=2)[2:-1]
    bombs = {
        # numpy.ndarray((10**7, 3072)): 30 GB of uninitialised memory from a few bytes
        "ndarray": _reduce_pickle("numpy", "ndarray", b"(" + shape + b"t"),
        # _reconstruct with a huge shape instead of (0,)
        "reconstruct": _reduce_pickle("numpy._core.multiarray", "_reconstruct",
                                      b"(cnumpy\nndarray\n" + shape + b"U\x01bt"),
        # an object dtype: arrays of arbitrary Python objects
        "object-dtype": _reduce_pickle("numpy", "dtype", b"(X\x02\x00\x00\x00O8\x89\x88t"),
    }
    for name, data in bombs.items():
        with pytest.raises(PickleRefused):
            loads(data)
    # an array whose BUILD state claims more data than the pickle holds
    arr = pickle.dumps(np.zeros(4, np.uint8), protocol=2).replace(b"K\x04\x85", b"J\x00\x00\x00\x10\x85")
    with pytest.raises(PickleRefused, match="needs"):
        loads(arr)


def test_shared_references_cost_nothing_and_cannot_explode():
    """a = [x]; b = [a, a]; c = [b, b] … 60 levels would be 2^60 objects if copied."""
    level = [b"x"]
    for _ in range(60):
        level = [level, level]
    data = pickle.dumps({b"data": level}, protocol=2)
    start = time.perf_counter()
    out = loads(data)
    assert time.perf_counter() - start < 1 and out[b"data"][0] is out[b"data"][1]


# A CIFAR-10 batch as Python 2's cPickle wrote it (byte strings, numpy.core, dtype('u1', 0, 1)):
PY2_BATCH = (b"\x80\x02}q\x01(U\x04dataq\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04"
             b"K\x00\x85U\x01b\x87Rq\x05(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07"
             b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x06\x00\x01\x02\x03\x04\x05tb"
             b"U\x06labelsq\x08]q\t(K\x01K\x02eU\x0bbatch_labelq\nU\ntraining 1q\x0bu.")


def test_the_parser_reads_python_2_pickles_as_cifar_ships_them():
    expected = pickle.loads(PY2_BATCH, encoding="bytes")
    out = loads(PY2_BATCH)
    assert out.keys() == expected.keys() and out[b"labels"] == [1, 2] and out[b"batch_label"] == b"training 1"
    assert out[b"data"].dtype == np.uint8 and np.array_equal(out[b"data"], expected[b"data"])


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_the_parser_reads_what_numpy_and_python_write(protocol):
    value = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, -3, 2**40],
             "f": np.asfortranarray(np.ones((2, 3), np.float32)), "big": np.arange(3, dtype=">i4"),
             "s": "text", "b": b"\x00\xff", "t": (None, True, 1.5), "n": np.int64(7)}
    out = loads(pickle.dumps(value, protocol=protocol))
    for key, v in value.items():
        if isinstance(v, np.ndarray):
            assert out[key].dtype == v.dtype and np.array_equal(out[key], v) and out[key].flags.writeable
        else:
            assert out[key] == v, key


# --------------------------------------------------------------------------- real data
def test_real_fashion_mnist_still_loads_and_under_the_default_roots(tmp_path):
    need_path(FASHION_MNIST_DIR, "data")
    plain = load_dataset("fashion-mnist")
    assert (plain.num_train, plain.num_test) == (60000, 10000)
    policy = DataPolicy(roots=default_roots(tmp_path / "data"))
    for path in ("fashion-mnist", FASHION_MNIST_DIR, None):
        ds = load_dataset("fashion-mnist", path, policy=policy)
        assert np.array_equal(ds.train_x, plain.train_x) and np.array_equal(ds.test_y, plain.test_y)


# --------------------------------------------------------------------------- confinement
@pytest.fixture()
def tree(tmp_path):
    """root/ (a data root) with an IDX set, a text file and links; outside/ beside it."""
    root, outside, other = tmp_path / "root", tmp_path / "outside", tmp_path / "other-root"
    write_idx_dir(root / "ds")
    write_idx_dir(other / "only-here")
    (root / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog. " * 20)
    write_idx_dir(outside / "ds")
    (outside / "secret.txt").write_text("top secret " * 200)
    (tmp_path / "root-evil").mkdir()                     # shares the root's name as a prefix
    (tmp_path / "root-evil" / "secret.txt").write_text("top secret " * 200)
    os.mkfifo(outside / "fifo")
    (root / "link-in.txt").symlink_to(root / "corpus.txt")
    (root / "link-in-dir").symlink_to(root / "ds")
    (root / "link-out.txt").symlink_to(outside / "secret.txt")
    (root / "link-out-dir").symlink_to(outside / "ds")
    (root / "link-dangling-out").symlink_to(outside / "missing.txt")
    (root / "link-up").symlink_to("..")
    write_idx_dir(root / "mixed")
    (root / "mixed" / IDX_NAMES["test_y"]).unlink()
    (root / "mixed" / IDX_NAMES["test_y"]).symlink_to(outside / "ds" / IDX_NAMES["test_y"])
    return root, outside, other


REFUSED = ["../outside/secret.txt", "{outside}/secret.txt", "{outside}/missing.txt", "{outside}/fifo",
           "{outside}/ds", "{outside}", "link-out.txt", "link-out-dir", "link-dangling-out",
           "link-up/outside/secret.txt",
           "{root}/link-out.txt", "{root}/../outside/secret.txt", "link-out-dir/" + IDX_NAMES["train_x"],
           "/proc/self/environ", "/etc/shadow", "/etc", "/", "/nonexistent/x", "", "a\0b", "x" * 5000,
           "{root}-evil/secret.txt", "../root-evil/secret.txt"]


@pytest.mark.parametrize("two_roots", [False, True])
def test_every_refused_path_gets_the_same_message_and_reveals_nothing(tree, two_roots):
    root, outside, other = tree
    roots = (root, other) if two_roots else (root,)
    policy = DataPolicy(roots=roots)
    expected = refusal_message(policy.roots)
    assert all(str(r) in expected for r in roots) and "dataset.path" in expected
    assert confine("ds", roots) == root / "ds"
    seen = {}
    for case in REFUSED:
        if two_roots and not case.startswith(("{", "/")) and case not in ("", "a\0b", "x" * 5000):
            # relative: a candidate that leaves the roots is skipped, and other-root/<case> is
            # a (missing) path inside a root - the loader says it is missing there
            case = "{root}/" + case
        path = case.format(root=root, outside=outside)
        for name in ("text", "idx", "cifar10"):
            with pytest.raises(ConfinementError) as info:
                load_dataset(name, path, seq_len=8, policy=policy)
            seen[(case, name)] = str(info.value)
        with pytest.raises(ConfinementError) as info:  # what the server checks at CreateJob
            policy.check("idx", path)
        seen[(case, "check")] = str(info.value)
    # a folder inside the root whose labels file links out: refused when the folder is read
    with pytest.raises(ConfinementError) as info:
        load_dataset("idx", "mixed", policy=policy)
    seen[("mixed", "idx")] = str(info.value)
    assert set(seen.values()) == {expected}, {k: v for k, v in seen.items() if v != expected}
    leaks = ("secret", "fifo", "environ", "shadow", "missing", "exist", "link", "outside")
    assert not any(word in expected for word in leaks)


def test_paths_inside_the_roots_are_read(tree):
    root, outside, other = tree
    policy = DataPolicy(roots=(root, other))
    assert load_dataset("idx", "ds", policy=policy).num_train == 12
    assert load_dataset("idx", str(root / "ds"), policy=policy).num_train == 12
    assert load_dataset("idx", "link-in-dir", policy=policy).num_train == 12          # link inside → inside
    assert load_dataset("idx", "only-here", policy=policy).num_train == 12            # found in the 2nd root
    assert load_dataset("idx", "./ds/../ds", policy=policy).num_train == 12
    assert load_dataset("text", "link-in.txt", seq_len=8, policy=policy).num_train > 0
    assert policy.check("idx", "link-in-dir") == root / "ds"
    assert policy.check("text", "bible-kjv") is None and policy.check("fashion-mnist", None) is None


def test_a_root_itself_is_a_dataset_folder(tmp_path):
    write_idx_dir(tmp_path)
    policy = DataPolicy(roots=(tmp_path,))
    for path in (str(tmp_path), ".", str(tmp_path) + "/"):
        assert load_dataset("idx", path, policy=policy).num_train == 12


def test_missing_files_inside_a_root_are_named_not_refused(tree):
    root, _, _ = tree
    policy = DataPolicy(roots=(root,))
    with pytest.raises(DataError) as info:
        load_dataset("idx", "nope", policy=policy)
    assert not isinstance(info.value, ConfinementError) and str(root / "nope") in str(info.value)
    with pytest.raises(DataError, match="ds is not a regular file"):
        load_dataset("text", "ds", seq_len=8, policy=policy)
    with pytest.raises(DataError, match="nope.txt does not exist"):
        load_dataset("text", "nope.txt", seq_len=8, policy=policy)
    two = DataPolicy(roots=(root, tree[2]))   # a relative link out of root 1 names root 2's path
    assert two.locate("link-out.txt") == tree[2] / "link-out.txt"


def test_a_link_swapped_in_after_the_check_is_not_followed(tree):
    """The check/use race: the path was checked, then its last component became a link out."""
    root, outside, _ = tree
    policy = DataPolicy(roots=(root,))
    real = policy.locate("corpus.txt")
    real.unlink()
    real.symlink_to(outside / "secret.txt")
    with pytest.raises(ConfinementError) as info:
        policy.open_file(real, "dataset.path")
    assert str(info.value) == refusal_message((root,))
    # …or a directory above it was swapped: the descriptor's real path is checked after open
    target = root / "ds" / IDX_NAMES["train_x"]
    (root / "ds").rename(root / "ds-old")
    (root / "ds").symlink_to(outside / "ds")
    with pytest.raises(ConfinementError):
        policy.open_file(target, "dataset.path")


def test_configure_data_access_exports_the_policy(tmp_path, monkeypatch):
    env: dict[str, str] = {}
    policy = configure_data_access(None, tmp_path / "data", environ=env)
    assert policy.roots == default_roots(tmp_path / "data") and (tmp_path / "data" / "datasets").is_dir()
    assert DataPolicy.from_env(env) == policy and env[ENV_ROOTS].split(os.pathsep)[0] == "/usr/share/datasets"
    policy = configure_data_access([tmp_path], tmp_path / "data", max_bytes="1G", max_text_bytes=1000, environ=env)
    assert policy.roots == (tmp_path,) and policy.limits == Limits(max_bytes=GiB, max_text=1000)
    assert DataPolicy.from_env(env) == policy
    with pytest.raises(ValueError, match="not a directory"):
        configure_data_access([tmp_path / "nowhere"], tmp_path, environ=env)
    with pytest.raises(ValueError, match="filesystem root"):
        configure_data_access(["/"], tmp_path, environ=env)
    with pytest.raises(ValueError, match="--data-max-bytes"):
        configure_data_access(None, tmp_path, max_bytes="huge", environ=env)
    # the loaders take the exported policy when none is given, as the job runners do
    write_idx_dir(tmp_path / "elsewhere")
    monkeypatch.setenv(ENV_ROOTS, str(tmp_path / "data" / "datasets"))
    with pytest.raises(ConfinementError):
        load_dataset("idx", str(tmp_path / "elsewhere"))
    monkeypatch.setenv(ENV_ROOTS, "")
    assert load_dataset("idx", str(tmp_path / "elsewhere")).num_train == 12


# --------------------------------------------------------------------------- through the service
@pytest.mark.slow
def test_the_service_never_reads_a_path_outside_its_roots(tmp_path):
    """A job naming a file outside the data roots ends with the refusal, whichever check sees it
    first: CreateJob (INVALID_ARGUMENT) or the job's own load (FAILED, code DATA); a job inside
    a root runs. ($ESGD_DATA_ROOTS stands for what `esgd serve --data-root` exports.)"""
    import grpc

    from services.api import jobs_pb2 as pb
    from services.api import jobs_pb2_grpc
    from tests.service_harness import ServerProcess, follow
    from tests.test_service import create, quick_spec

    data = tmp_path / "data"
    inside = data / "datasets"
    write_idx_dir(inside / "ok", n_train=64, n_test=16)
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("top secret words " * 500)
    srv = ServerProcess(data, "--num-cpus", "2", env={"RAY_ADDRESS": "local", ENV_ROOTS: str(inside)})
    try:
        with srv.channel() as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            refusals = []
            for path in (str(secret), "../../outside/secret.txt", "/etc/shadow", "/proc/self/environ"):
                spec = quick_spec(model="char-lstm", dataset={"name": "text", "path": path, "seq_len": 16})
                try:
                    job = create(stub, spec)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
                    refusals.append(exc.details())
                    continue
                follow(stub, job.name)
                final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
                assert final.state == pb.FAILED and final.error.code == "DATA", final
                refusals.append(final.error.message)
            assert len(set(refusals)) == 1, refusals
            assert refusals[0].startswith("dataset.path: refused:") and str(inside) in refusals[0], refusals
            assert not any(w in refusals[0] for w in ("secret", "shadow", "environ", "outside"))
            job = create(stub, quick_spec(dataset={"name": "idx", "path": "ok"}))
            follow(stub, job.name)
            assert stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).state == pb.SUCCEEDED
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
