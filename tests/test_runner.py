"""The runner's outbox (the round loop may not run ahead of what the server has stored), and the
dataset a runner loads for the server's cache."""
from __future__ import annotations

import threading
import time

import pytest

from coordinator.runner import _Outbox
from core.events import CheckpointEvent
from tests.helpers import round_record


def drain(box: _Outbox) -> list:
    out = []
    while not box.queue.empty():
        out.append(box.queue.get_nowait())
    return out


def test_each_record_waits_for_its_acknowledgement_and_records_keep_their_order():
    box = _Outbox()
    done = []
    rnd, ckpt = round_record(1), CheckpointEvent(round=1, path="/x/ckpt-00000001.pt")

    def loop():  # the engine's thread: a round, then a checkpoint
        box.on_round(rnd)
        done.append("round")
        box.on_checkpoint(ckpt)
        done.append("checkpoint")

    t = threading.Thread(target=loop)
    t.start()
    first = box.queue.get(timeout=10)
    assert first == (1, "round", rnd)
    t.join(0.2)
    assert done == [] and t.is_alive()  # not stored yet: the loop may not checkpoint
    box.ack(1)
    second = box.queue.get(timeout=10)
    assert second == (2, "checkpoint", ckpt)
    assert done == ["round"]
    box.ack(2)
    t.join(10)
    assert done == ["round", "checkpoint"] and not t.is_alive()


def test_the_end_record_does_not_wait():
    box = _Outbox()
    box.send("end", {"outcome": "succeeded"}, wait=False)
    assert drain(box) == [(1, "end", {"outcome": "succeeded"})]


# ----- the dataset a runner loads for the server (coordinator.warm.DatasetCache) -----------------
SPEC = {"model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "entropy-sgd", "replicas": 1,
        "inner": {"steps": 2}, "train": {"outer_steps": 3, "batch_size": 32}}


def test_a_dataset_a_runner_loaded_outlives_the_runner(local_ray, tmp_path):
    """The server keeps the reference of ``load_data``'s result for the next job on the same
    data: the caller owns a call's result, so killing the runner must not lose the object."""
    from coordinator.runner import JobRunner

    from coordinator.local_run import dataset_for
    from core.spec import JobSpec

    runner = JobRunner.remote(JobSpec.parse(SPEC).resolved(), str(tmp_path))
    ref = runner.load_data.remote()
    local_ray.wait([ref], timeout=120)  # loaded and stored, not read here
    local_ray.kill(runner)
    deadline = time.monotonic() + 120
    while True:  # until the runner is gone (ray.kill is asynchronous: a call may still get through)...
        try:
            local_ray.get(runner.dataset_key.remote(), timeout=60)
        except local_ray.exceptions.RayActorError:
            break
        assert time.monotonic() < deadline, "the runner did not die"
        time.sleep(0.1)
    data = local_ray.get(ref, timeout=60)  # ...its dataset is not
    expected = dataset_for(JobSpec.parse(SPEC))
    assert data.num_train == expected.num_train == 2048 and (data.train_x == expected.train_x).all()


def test_a_failed_load_raises_the_loaders_own_error(local_ray):
    from coordinator.runner import _get, error_of
    from worker.data.datasets import DataError

    @local_ray.remote(num_cpus=0)
    def load():
        raise DataError("dataset.path: /nowhere: not found")

    with pytest.raises(DataError) as err:
        _get(load.remote())
    assert str(err.value) == "dataset.path: /nowhere: not found"
    assert error_of(err.value)["code"] == "DATA"
