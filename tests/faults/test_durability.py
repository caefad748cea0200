"""Durability under real faults: SIGKILL mid-checkpoint, corrupted checkpoints, a disk that
refuses writes (for the checkpoints, the metrics log and the job store).

Write errors are real: RLIMIT_FSIZE, lowered in a child process (unit level) or on the
running server and its job's round-loop process with ``prlimit`` (CPython ignores SIGXFSZ, so an over-limit write fails with
EFBIG — what a full disk does with ENOSPC), or a checkpoint directory replaced by a file.
Every wait follows job events, files or store rows, never a bare sleep. Each server test
reports a row (fault, count, lost, recovery seconds) through ``report_fault``.
"""
from __future__ import annotations

import concurrent.futures
import errno
import json
import multiprocessing
import os
import resource
import signal
import sqlite3
import time
from pathlib import Path

import grpc
import pytest
import torch

from coordinator.checkpoint import CheckpointError, list_checkpoints, load_latest, save_checkpoint, step_of, verify
from coordinator.rundir import MetricsLog, RunDir
from coordinator.store import JobStore, StoreError
from core.events import Listener, record
from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.helpers import local_engine, round_record, spec_of
from tests.service_harness import ServerProcess, follow, report_fault, runner_pids, wait_for
from tests.test_service import create, quick_spec

MiB = 1 << 20
# an embedded Ray of its own even when another `ray start` cluster runs on this machine
LOCAL_RAY = {"RAY_ADDRESS": "local"}


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


# ----- end to end: a real server, killed or starved of disk ---------------------------------------


def integrity(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "jobs.sqlite") as db:
        return [r[0] for r in db.execute("PRAGMA integrity_check")]


def progress_rounds(events) -> list[int]:
    return [e.progress.round for e in events if e.HasField("progress")]


def metrics_rounds(run_dir: Path) -> list[int]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]  # every line parses
    return [r["round"] for r in lines if r["kind"] == "round"]


def temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if ".tmp" in p.name] if directory.is_dir() else []


def big_spec(**over) -> dict:
    """Parle on mnistfc (1.9 M weights): each checkpoint is ~22 MB, so writing one takes a
    while (a window to kill in) and is far larger than the store and logs (room for a limit)."""
    return quick_spec(model="mnistfc", **over)


def _restart_and_finish(data_dir: Path, name: str, killed_at: float, timeout: float = 300):
    """Start a server on ``data_dir`` again; the job's whole history, where it restarted, and the
    recovery times from ``killed_at``: server serving, job RUNNING again, first resumed round."""
    srv = ServerProcess(data_dir, "--num-cpus", "2", env=LOCAL_RAY)
    serving_s = time.time() - killed_at
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            events = follow(stub, name, timeout=timeout)
            final = stub.GetJob(pb.GetJobRequest(name=name), timeout=10)
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
    restart = max(i for i, e in enumerate(events) if e.HasField("state_change") and "restarted" in e.state_change.reason)
    running = next(e for e in events[restart:] if e.HasField("state_change") and e.state_change.state == pb.RUNNING)
    resumed = next(e for e in events[restart:] if e.HasField("progress"))
    recovery = {"recovery_s": round(resumed.time.ToNanoseconds() / 1e9 - killed_at, 2),
                "serving_again_s": round(serving_s, 2),
                "running_again_s": round(running.time.ToNanoseconds() / 1e9 - killed_at, 2)}
    return final, events, restart, recovery


@pytest.mark.slow
def test_sigkill_mid_checkpoint_write_resumes_from_the_previous_one_losing_no_round(tmp_path):
    total = 10
    spec = big_spec(train={"outer_steps": total, "eval_every": 5}, checkpoint={"every": 1, "keep_last": 2})
    srv, runner = ServerProcess(tmp_path, "--num-cpus", "2", env=LOCAL_RAY), None
    try:
        with srv.channel() as ch:
            job = create(jobs_pb2_grpc.JobServiceStub(ch), spec)
        ckpts = tmp_path / "runs" / job.id / "checkpoints"
        # the job's round loop (a Ray actor process) writes the checkpoints: it dies first, then the server
        runner = wait_for(lambda: (runner_pids(srv.proc.pid) or [None])[0], 600, "the job's runner process")

        def writing_round_3_or_later():  # the temporary file of a checkpoint being written
            return next((p for p in temporaries(ckpts) if ".pt.tmp-" in p.name and int(p.name[6:14]) >= 3), None)

        tmp = wait_for(writing_round_3_or_later, 600, "a checkpoint of round >= 3 being written", interval=0.002)
    finally:
        if runner:
            os.kill(runner, signal.SIGKILL)
        srv.kill()
    killed_at = time.time()
    assert tmp.exists(), "the kill should land while the checkpoint is being written"
    k = int(tmp.name[6:14])
    assert not (ckpts / f"ckpt-{k:08d}.pt.sha256").exists()
    final, events, restart, recovery = _restart_and_finish(tmp_path, job.name, killed_at)
    assert final.state == pb.SUCCEEDED and final.restarts == 1 and final.summary.rounds == total, final
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # the whole history, no gap
    rounds = progress_rounds(events)
    # Resumed from checkpoint k - 1, so round k ran again — or from k, when the job's round loop
    # (its own process) finished the write just as the server died; no round is lost either way.
    resumed_from = k - 1 if rounds.count(k) == 2 else k
    assert rounds == list(range(1, k + 1)) + list(range(resumed_from + 1, total + 1)), rounds
    assert metrics_rounds(tmp_path / "runs" / job.id) == rounds
    assert not temporaries(ckpts), "the stale temporary file is removed by the next write"
    assert [step_of(p) for p in list_checkpoints(ckpts)] == [total - 1, total]
    assert all(verify(p) for p in list_checkpoints(ckpts)) and integrity(tmp_path) == ["ok"]
    report_fault(fault="SIGKILL of the server and of the job's round-loop process while a 22 MB checkpoint is "
                       "being written", count=1,
                 lost=f"nothing (resumed from checkpoint {resumed_from}, the kill came while writing {k})",
                 **recovery, recovery="kill to the first resumed round",
                 test="tests/faults/test_durability.py::test_sigkill_mid_checkpoint_write_resumes_from_the_previous_one_losing_no_round")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupted_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path, damage):
    total = 24
    spec = quick_spec(train={"outer_steps": total, "eval_every": 8}, checkpoint={"every": 3, "keep_last": 3})
    srv = ServerProcess(tmp_path, "--num-cpus", "2", env=LOCAL_RAY)
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            job = create(stub, spec)
            wait_for(lambda: stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).checkpoint_round >= 9,
                     300, "the checkpoint of round 9")
    finally:
        srv.kill()
    killed_at = time.time()
    ckpts = tmp_path / "runs" / job.id / "checkpoints"
    good = [p for p in list_checkpoints(ckpts) if verify(p)]
    newest, previous = good[-1], step_of(good[-2])
    data = newest.read_bytes()
    if damage == "flip":
        middle = len(data) // 2
        newest.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    else:
        newest.write_bytes(data[: len(data) // 2])
    assert not verify(newest)
    final, events, restart, recovery = _restart_and_finish(tmp_path, job.name, killed_at)
    assert final.state == pb.SUCCEEDED and final.summary.rounds == total, final
    after = progress_rounds(events[restart:])
    assert after == list(range(previous + 1, total + 1))  # resumed from the checkpoint before the damaged one
    assert set(progress_rounds(events)) == set(range(1, total + 1))
    assert all(verify(p) for p in list_checkpoints(ckpts)) and step_of(list_checkpoints(ckpts)[-1]) == total
    report_fault(fault=f"newest checkpoint corrupted ({damage}) while the server is down", count=1,
                 lost=f"nothing (resumed from round {previous}, the damaged round-{step_of(newest)} one skipped)",
                 **recovery, recovery="kill to the first resumed round",
                 test=f"tests/faults/test_durability.py::test_a_corrupted_newest_checkpoint_is_skipped_for_the_previous_one[{damage}]")


def limit_file_size(pid: int, limit: int) -> None:
    """Lower RLIMIT_FSIZE of one running process only (the others keep theirs)."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]))


def unlimit_file_size(pid: int) -> None:
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


def largest_file(root: Path) -> int:
    return max((p.stat().st_size for p in root.rglob("*") if p.is_file() and "checkpoints" not in p.parts), default=0)


@pytest.mark.slow
def test_checkpoint_write_errors_are_reported_and_then_fail_the_job_with_storage(tmp_path):
    limit = 12 * MiB  # above every store and log file here, below one checkpoint (~22 MB)
    spec = big_spec(train={"outer_steps": 400, "eval_every": 1000}, checkpoint={"every": 1, "keep_last": 2})
    srv = ServerProcess(tmp_path, "--num-cpus", "2", env=LOCAL_RAY)
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            job = create(stub, spec)
            ckpts = tmp_path / "runs" / job.id / "checkpoints"
            wait_for(lambda: len([p for p in list_checkpoints(ckpts) if verify(p)]) >= 2, 600, "two checkpoints")
            assert largest_file(tmp_path) < limit // 2
            runners = runner_pids(srv.proc.pid)
            assert len(runners) == 1, runners  # the job's round loop, which writes its checkpoints
            for pid in (srv.proc.pid, *runners):
                limit_file_size(pid, limit)
            injected_at = time.time()
            events = follow(stub, job.name, after_seq=0)
            final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
            detected_s = final.end_time.ToNanoseconds() / 1e9 - injected_at
            assert final.state == pb.FAILED and final.error.code == "STORAGE", final
            msg = final.error.message
            assert "EFBIG" in msg and str(ckpts) in msg and "3 consecutive checkpoint writes failed" in msg, msg
            warnings = [e.error for e in events if e.HasField("error")][:-1]
            assert len(warnings) == 2 and all(w.code == "STORAGE" and "EFBIG" in w.message and "retries" in w.message
                                              for w in warnings), warnings
            between = [e.WhichOneof("kind") for e in events[next(i for i, e in enumerate(events) if e.HasField("error")):]]
            assert "progress" in between  # training went on between the failed writes
            rounds = progress_rounds(events)
            assert rounds == list(range(1, len(rounds) + 1))
            assert final.checkpoint_round == max(step_of(p) for p in list_checkpoints(ckpts)) < rounds[-1]
            assert not temporaries(ckpts) and len(list_checkpoints(ckpts)) == 2  # nothing partial, nothing pruned
            assert all(verify(p) for p in list_checkpoints(ckpts)) and integrity(tmp_path) == ["ok"]
            small = create(stub, quick_spec(train={"outer_steps": 6, "eval_every": 3}))  # still under the limit
            follow(stub, small.name)
            assert stub.GetJob(pb.GetJobRequest(name=small.name), timeout=10).state == pb.SUCCEEDED
            unlimit_file_size(srv.proc.pid)
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
    report_fault(fault="checkpoint writes refused (EFBIG: file-size limit on the server and the job's round loop, "
                       "as a full disk)", count=3,
                 lost="nothing (older checkpoints kept; job FAILED with STORAGE after 3 refused writes)",
                 recovery_s=round(detected_s, 2), recovery="time from the fault to the job FAILED (STORAGE)",
                 test="tests/faults/test_durability.py::test_checkpoint_write_errors_are_reported_and_then_fail_the_job_with_storage")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_a_full_job_store_fails_calls_not_the_server_or_the_file(tmp_path):
    total = 60
    srv = ServerProcess(tmp_path, "--num-cpus", "2", env=LOCAL_RAY)
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            job = create(stub, quick_spec(train={"outer_steps": total, "eval_every": 20}, checkpoint={"every": 5}))
            follow(stub, job.name, until=lambda e: e.HasField("progress") and e.progress.round >= 2)
            replicas = [r.pid for r in stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).replicas]
            limit_file_size(srv.proc.pid, 1)  # no file of the server may grow: the store cannot commit
            with pytest.raises(grpc.RpcError) as err:
                create(stub, quick_spec())
            status = err.value.code().name
            assert status == "UNAVAILABLE", status
            assert "database or disk is full" in err.value.details() or "disk I/O error" in err.value.details()
            # the job's next store write fails too: its thread stops and its replicas go
            wait_for(lambda: all(_gone(p) for p in replicas), 120, "the job's replicas to stop")
            assert stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).state == pb.RUNNING  # reads still served
            assert stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs
            unlimit_file_size(srv.proc.pid)
            lifted_at = time.time()
            # writable again, same process: the stopped job is requeued from its checkpoint and finishes
            events = follow(stub, job.name, timeout=300)
            final = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10)
            other = create(stub, quick_spec(train={"outer_steps": 6, "eval_every": 3}))
            follow(stub, other.name)
            assert stub.GetJob(pb.GetJobRequest(name=other.name), timeout=10).state == pb.SUCCEEDED
            assert integrity(tmp_path) == ["ok"]
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
    assert final.state == pb.SUCCEEDED and final.summary.rounds == total, final
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert set(progress_rounds(events)) == set(range(1, total + 1)) and integrity(tmp_path) == ["ok"]
    requeued = max(i for i, e in enumerate(events)
                   if e.HasField("state_change") and "job-store write error" in e.state_change.reason)
    resumed = next(e for e in events[requeued:] if e.HasField("progress"))
    report_fault(fault="job store writes refused (file-size limit 1 byte on the server: SQLITE_FULL / I/O error)",
                 count=1, lost="nothing (failed calls got UNAVAILABLE; the stopped job resumed from its checkpoint "
                               "in the same server once the store took writes)",
                 recovery_s=round(resumed.time.ToNanoseconds() / 1e9 - lifted_at, 2),
                 recovery="store writable again to the job's first resumed round", create_job_status_while_full=status,
                 test="tests/faults/test_durability.py::test_a_full_job_store_fails_calls_not_the_server_or_the_file")
