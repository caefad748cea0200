"""Garbage data files submitted through the API: each job fails with code DATA and a message
naming the file and what is wrong with it; the server goes on serving (the next good job
succeeds). The loaders' own cases are in tests/test_datasets.py; this is the path a user
takes — CreateJob, the job's run thread, the stored error, GetJob/WatchJob."""
from __future__ import annotations

import time

import numpy as np
import pytest

from services.api import jobs_pb2 as pb
from tests.service_harness import follow, module_server, report_fault
from tests.test_datasets import IDX_NAMES, write_cifar_dir, write_idx_dir
from tests.test_service import create, quick_spec

pytestmark = pytest.mark.slow


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _garbage(path, n: int = 4000) -> None:
    path.write_bytes(np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes())


def idx_truncated(d):
    write_idx_dir(d)
    _truncate(d / IDX_NAMES["train_x"])
    return "idx", IDX_NAMES["train_x"], "truncated"


def idx_garbage(d):
    write_idx_dir(d)
    _garbage(d / IDX_NAMES["test_y"])
    return "idx", IDX_NAMES["test_y"], "magic number"


def idx_gzip_truncated(d):
    write_idx_dir(d, gz=True)
    _truncate(d / f"{IDX_NAMES['test_x']}.gz")
    return "idx", f"{IDX_NAMES['test_x']}.gz", "truncated or corrupt gzip"


def cifar_garbage(d):
    write_cifar_dir(d)
    _garbage(d / "data_batch_2")
    return "cifar10", "data_batch_2", "not a valid CIFAR-10 python batch"


def cifar_truncated(d):
    write_cifar_dir(d)
    _truncate(d / "test_batch")
    return "cifar10", "test_batch", "corrupt, truncated"


def text_not_utf8(d):
    (d / "corpus.txt").write_bytes("caf\u00e9 ".encode("latin-1") * 2000)
    return "text", "corpus.txt", "not valid UTF-8"


def text_binary_garbage(d):
    _garbage(d / "corpus.bin")
    return "text", "corpus.bin", "not valid UTF-8"


def text_too_short(d):
    (d / "corpus.txt").write_text("abc" * 10)
    return "text", "corpus.txt", "too short"


CASES = [idx_truncated, idx_garbage, idx_gzip_truncated, cifar_garbage, cifar_truncated, text_not_utf8,
         text_binary_garbage, text_too_short]


server = module_server("datafiles", "--num-cpus", "2", env={"RAY_ADDRESS": "local"})



@pytest.fixture()
def data_dir(server, request):
    """A fresh folder for this test's files under DATA_DIR/datasets: one of the server's
    default data roots, the only places a job's dataset.path may name (worker/data/roots.py)."""
    folder = server.data_dir / "datasets" / request.node.name.replace("[", "-").replace("]", "")
    folder.mkdir(parents=True)
    return folder


def spec_for(dataset: str, path) -> dict:
    if dataset == "text":
        return quick_spec(model="char-lstm", dataset={"name": "text", "path": str(path), "seq_len": 16})
    return quick_spec(dataset={"name": dataset, "path": str(path)})


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_a_garbage_data_file_fails_the_job_with_data_naming_the_file(stub, data_dir, case):
    dataset, file_name, what = case(data_dir)
    path = data_dir / file_name if dataset == "text" else data_dir
    start = time.monotonic()
    job = create(stub, spec_for(dataset, path))
    events = follow(stub, job.name)
    failed_s = time.monotonic() - start
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.state == pb.FAILED and final.error.code == "DATA", final
    assert file_name in final.error.message and what in final.error.message, final.error.message
    assert str(data_dir) in final.error.message  # the full path, not just a name
    assert [e.error.code for e in events if e.HasField("error")] == ["DATA"]
    assert not any(e.HasField("progress") for e in events)  # failed before any round
    report_fault(fault=f"garbage data file via the API: {case.__name__.replace('_', ' ')}", count=1,
                 lost="nothing (job FAILED with DATA before its first round; server kept serving)",
                 recovery_s=round(failed_s, 2), recovery="CreateJob to the job FAILED (DATA)",
                 test=f"tests/faults/test_data_files.py::test_a_garbage_data_file_fails_the_job_with_data_naming_the_file[{case.__name__}]")


def test_the_server_still_runs_good_jobs_after_bad_data(stub, data_dir):
    write_idx_dir(data_dir, n_train=64, n_test=16)
    job = create(stub, spec_for("idx", data_dir))
    follow(stub, job.name)
    final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
    assert final.state == pb.SUCCEEDED, final.error
    assert final.summary.rounds == 12
