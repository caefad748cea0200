"""The runner's outbox: the round loop may not run ahead of what the server has stored."""
from __future__ import annotations

import threading

from coordinator.runner import _Outbox


def drain(box: _Outbox) -> list:
    out = []
    while not box.queue.empty():
        out.append(box.queue.get_nowait())
    return out


def test_each_record_waits_for_its_acknowledgement_and_records_keep_their_order():
    box = _Outbox()
    done = []

    def loop():  # the engine's thread: a round, then a checkpoint
        box.on_round({"round": 1})
        done.append("round")
        box.on_checkpoint("/x/ckpt-00000001.pt", 1)
        done.append("checkpoint")

    t = threading.Thread(target=loop)
    t.start()
    first = box.queue.get(timeout=10)
    assert first == (1, "round", {"round": 1})
    t.join(0.2)
    assert done == [] and t.is_alive()  # not stored yet: the loop may not checkpoint
    box.ack(1)
    second = box.queue.get(timeout=10)
    assert second == (2, "checkpoint", {"path": "/x/ckpt-00000001.pt", "step": 1})
    assert done == ["round"]
    box.ack(2)
    t.join(10)
    assert done == ["round", "checkpoint"] and not t.is_alive()


def test_the_end_record_does_not_wait():
    box = _Outbox()
    box.send("end", {"outcome": "succeeded"}, wait=False)
    assert drain(box) == [(1, "end", {"outcome": "succeeded"})]
