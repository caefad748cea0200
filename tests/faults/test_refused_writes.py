"""Durability under a disk that refuses writes, at unit level: checkpoint files, the engine's
checkpoints, the metrics log and the job store.

Write errors are real: RLIMIT_FSIZE, lowered in a child process (CPython ignores SIGXFSZ, so
an over-limit write fails with EFBIG — what a full disk does with ENOSPC), or a checkpoint
directory replaced by a file. A real server starved of disk is tests/faults/test_disk_full.py.
"""
from __future__ import annotations

import concurrent.futures
import errno
import json
import multiprocessing
import resource
from pathlib import Path

import pytest
import torch

from coordinator.checkpoint import CheckpointError, list_checkpoints, load_latest, save_checkpoint, step_of, verify
from coordinator.rundir import MetricsLog, RunDir
from coordinator.store import JobStore, StoreError
from core.events import Listener, record
from tests.faults.durability import MiB
from tests.helpers import local_engine, round_record, spec_of


def in_child(fn, *args, timeout: float = 120.0):
    """Run ``fn(*args)`` in a fresh (spawned) process: a file-size limit set there leaves
    pytest's own files alone."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result(timeout=timeout)


def _set_fsize(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _unlimited() -> None:
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


# ----- unit level: checkpoint files, the metrics log, the store ---------------------------------
def _checkpoint_over_limit(directory: str) -> dict:
    d = Path(directory)
    big = {"model": {"w": torch.zeros(MiB // 4)}}  # 1 MiB of weights
    for step in (1, 2):
        save_checkpoint(d, step, big, keep_last=2)
    (d / ".ckpt-00000003.pt.tmp-999999").write_bytes(b"left by a killed writer")
    _set_fsize(MiB // 2)
    try:
        save_checkpoint(d, 3, big, keep_last=2)
    except CheckpointError as exc:
        return {"message": str(exc), "errno": exc.errno, "path": str(exc.path)}
    finally:
        _unlimited()
    return {}


def test_a_refused_checkpoint_write_leaves_the_directory_as_it_was(tmp_path):
    got = in_child(_checkpoint_over_limit, str(tmp_path))
    assert got["errno"] == errno.EFBIG, got
    assert got["path"].endswith("ckpt-00000003.pt") and "EFBIG" in got["message"] and str(tmp_path) in got["message"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt-00000001.pt", "ckpt-00000001.pt.sha256", "ckpt-00000002.pt", "ckpt-00000002.pt.sha256"], \
        names  # no temporary file (the stale one removed too), nothing pruned, no checkpoint without checksum
    assert all(verify(p) for p in list_checkpoints(tmp_path)) and load_latest(tmp_path)[1]["step"] == 2


def _engine_with_faults(directory: str, broken: set, total: int = 8):
    """A local engine whose checkpoint directory is replaced by a plain file after the rounds in
    ``broken`` (the kernel then refuses the write: EEXIST) and put back after the others."""
    spec = spec_of(inner={"steps": 2}, train={"outer_steps": total, "batch_size": 32, "eval_every": 100},
                   checkpoint={"every": 1, "keep_last": 3})
    eng = local_engine(spec)
    eng.checkpoint_dir = Path(directory)
    log = Recorder(eng.checkpoint_dir, broken)
    eng.listeners.append(log)
    return eng, log


class Recorder(Listener):
    """Engine listener: breaks the checkpoint directory for the rounds in ``broken`` (moved
    aside, a plain file in its place) and records what the engine reports."""

    def __init__(self, directory: Path, broken: set):
        self.dir, self.aside, self.broken = directory, directory.with_name("aside"), broken
        self.ok, self.failed = [], []

    def on_round(self, event) -> None:
        if event.round in self.broken and not self.aside.exists():
            self.dir.mkdir(exist_ok=True)
            self.dir.rename(self.aside)
            self.dir.write_text("not a directory")
        elif event.round not in self.broken and self.aside.exists():
            self.dir.unlink()
            self.aside.rename(self.dir)

    def on_checkpoint(self, event): self.ok.append(event.round)
    def on_checkpoint_failed(self, event): self.failed.append(record(event))


def test_failed_checkpoints_are_reported_training_goes_on_and_a_success_resets_the_count(tmp_path):
    eng, log = _engine_with_faults(str(tmp_path / "ckpt"), broken={3, 4})
    summary = eng.run()
    assert summary["rounds"] == 8
    assert [(f["round"], f["consecutive"], f["fatal"]) for f in log.failed] == [(3, 1, False), (4, 2, False)]
    assert "EEXIST" in log.failed[0]["message"] and "ckpt-00000003.pt" in log.failed[0]["message"]
    assert log.ok == [1, 2, 5, 6, 7, 8]
    assert [step_of(p) for p in list_checkpoints(tmp_path / "ckpt")] == [6, 7, 8]


@pytest.mark.parametrize("broken, fails_at, why", [({3, 4, 5, 6, 7, 8}, 5, "3 consecutive checkpoint writes failed"),
                                                   ({8}, 8, "the final checkpoint could not be written")])
def test_the_job_gives_up_after_three_failures_in_a_row_or_at_the_final_checkpoint(tmp_path, broken, fails_at, why):
    eng, log = _engine_with_faults(str(tmp_path / "ckpt"), broken=broken)
    with pytest.raises(CheckpointError) as err:
        eng.run()
    assert eng.t == fails_at and err.value.round == fails_at
    assert why in str(err.value) and f"ckpt-{fails_at:08d}.pt" in str(err.value) and "EEXIST" in str(err.value)
    assert log.failed[-1]["fatal"] and not any(f["fatal"] for f in log.failed[:-1])
    (tmp_path / "ckpt").unlink()
    (tmp_path / "aside").rename(tmp_path / "ckpt")
    good = [step_of(p) for p in list_checkpoints(tmp_path / "ckpt")]
    assert good == [r for r in range(1, fails_at) if r not in broken][-3:]  # nothing older was pruned
    assert all(verify(p) for p in list_checkpoints(tmp_path / "ckpt"))


def _metrics_log_over_limit(run_dir: str) -> dict:
    rd = RunDir(run_dir)
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.metrics_path.write_bytes(b'{"kind": "round", "round": 1}\n{"kind": "round", "ro')  # torn by a crash
    log = MetricsLog(rd)
    log.on_round(round_record(2))
    size = rd.metrics_path.stat().st_size
    _set_fsize(size + 40)
    log.on_round(round_record(3))  # longer than 40 bytes, so refused: kept in memory, the file cut back
    refused_size = rd.metrics_path.stat().st_size
    _unlimited()
    log.on_round(round_record(4))
    log.close()
    return {"size": size, "refused_size": refused_size}


def test_metrics_log_drops_a_torn_line_and_never_loses_or_tears_one_on_a_refused_write(tmp_path):
    got = in_child(_metrics_log_over_limit, str(tmp_path))
    assert got["refused_size"] == got["size"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2, 3, 4]


def _store_over_limit(path: str) -> dict:
    store = JobStore(path)
    store.create("a", {"model": "mlp"})
    for i in range(20):
        store.update("a", progress={"round": i}, event=("progress", {"round": i}))
    files = [Path(path), Path(path + "-wal")]
    _set_fsize(max(f.stat().st_size for f in files))
    out = {}
    try:
        store.update("a", event=("progress", {"blob": "x" * (4 * MiB)}))  # must extend the WAL
    except StoreError as exc:
        out["error"] = str(exc)
    out["readable"] = store.get("a").progress == {"round": 19} and store.last_seq("a") == 21
    _unlimited()
    out["seq_after"] = store.update("a", progress={"round": 20}, event=("progress", {"round": 20}))
    out["integrity"] = store.integrity_check()
    store.close()
    return out


def test_a_refused_store_write_fails_that_call_only_and_never_damages_the_file(tmp_path):
    got = in_child(_store_over_limit, str(tmp_path / "jobs.sqlite"))
    assert "write failed" in got.get("error", ""), got
    assert any(s in got["error"] for s in ("database or disk is full", "disk I/O error")), got
    assert got["readable"] and got["seq_after"] == 22 and got["integrity"] == ["ok"]  # the failed event took no seq
    again = JobStore(tmp_path / "jobs.sqlite")
    assert [e.seq for e in again.events("a")] == list(range(1, 23)) and again.get("a").progress == {"round": 20}
    again.close()
