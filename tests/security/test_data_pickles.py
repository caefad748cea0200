"""The data loaders never unpickle: CIFAR batches are parsed by a restricted reader.

A client of the job service names ``dataset.path``; a pickled data file there is parsed, never
unpickled: forbidden globals, pickles that would allocate without bound and shared references
are refused or cost nothing, while what numpy, Python 3 and CIFAR's Python 2 batches hold still
reads. Confinement is tests/security/test_data_confinement.py; size caps, test_data_caps.py.
"""
from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from tests.test_datasets import _Evil, write_cifar_dir
from worker.data import DataError, load_dataset
from worker.data.safepickle import PickleRefused, loads


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
