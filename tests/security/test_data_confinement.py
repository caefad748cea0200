"""The data loaders' confinement to the configured data roots, in process and through the service.

A client of the job service names ``dataset.path``; these tests check that the loaders read
only inside the configured roots (one identical refusal for everything else: paths outside,
links out, swapped-in links, special files), that paths inside them still load, and that the
policy is exported to the job runners. Size caps are tests/security/test_data_caps.py; pickles,
test_data_pickles.py.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests.installed import need_path
from tests.test_datasets import IDX_NAMES, write_idx_dir
from worker.data import DataError, load_dataset
from worker.data.datasets import FASHION_MNIST_DIR
from worker.data.limits import GiB, Limits
from worker.data.roots import (ENV_ROOTS, ConfinementError, DataPolicy, configure_data_access, confine,
                               default_roots, refusal_message)


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
