"""The Ray actor: a thin host for one :class:`worker.replica.Replica`.

It owns nothing but the process: it pins torch's thread count (so K replicas on C cores do
not oversubscribe them) and forwards calls. It is given a :class:`worker.replica.ReplicaConfig`
(the few values a replica takes from its job), never the job spec. Weights arrive as numpy
arrays from the object store (zero-copy reads) and leave as one numpy array per round, both in
``comm.dtype``'s wire format: the Replica decodes and encodes them (worker.comm), the actor
never looks inside.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from worker.data.datasets import Dataset
from worker.langevin import InnerParams
from worker.logcapture import Capture, LineBuffer
from worker.replica import Replica, ReplicaConfig


class ReplicaActor:
    def __init__(self, config: ReplicaConfig, index: int, dataset: Dataset, threads: int, device: str):
        torch.set_num_threads(max(1, threads))
        self.output = LineBuffer()
        with Capture(self.output):
            self.replica = Replica(config, index, dataset, device)

    def ready(self) -> dict:
        """Where this replica lives (shown to users as the job's placement)."""
        import ray

        ctx = ray.get_runtime_context()
        return {"index": self.replica.index, "pid": os.getpid(), "device": str(self.replica.device),
                "threads": torch.get_num_threads(), "node_id": ctx.get_node_id(),
                "node_ip": ray.util.get_node_ip_address()}

    def run(self, anchor: np.ndarray, hp: InnerParams) -> tuple[np.ndarray, dict]:
        with Capture(self.output):
            wire, stats = self.replica.run(anchor, hp)
        lines = self.output.drain()
        if lines:
            stats["log"] = lines
        return wire, stats

    def get_state(self) -> dict:
        return self.replica.get_state()

    def set_state(self, state: dict) -> None:
        with Capture(self.output):  # returned with the next round's lines
            self.replica.set_state(state)
