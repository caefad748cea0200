"""Start a real `esgd serve` subprocess on a loopback port and stop it by PID."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    """``prefix``: a command the server runs under, e.g. ``("nice", "-n", "15")``."""

    def __init__(self, data_dir: Path, *extra: str, env: dict | None = None, prefix: tuple = ()):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port_file = self.data_dir / f"port-{time.monotonic_ns()}"
        self.log_path = self.data_dir / "server.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "services.cli", "serve", "--port", "0", "--port-file", str(self.port_file),
             "--data-dir", str(self.data_dir), *extra],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})
        self.port = self._wait_for_port()
        self.target = f"127.0.0.1:{self.port}"

    def _wait_for_port(self, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"esgd serve exited with {self.proc.returncode}: {self.read_log()[-3000:]}")
            if self.port_file.exists() and self.port_file.read_text().strip():
                return int(self.port_file.read_text())
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"esgd serve did not start: {self.read_log()[-3000:]}")

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the server and the Ray processes it started (its own process group members)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()


# ----- helpers for fault tests: bounded waits on events, files and rows; recovery figures ------
def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` (a file appearing, a store row changing) until it returns something
    truthy; fail naming ``what`` after ``timeout`` seconds. Returns the predicate's value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def follow(stub, name: str, until=None, after_seq: int = 0, timeout: float = 300.0) -> list:
    """A job's events after ``after_seq`` from its WatchJob stream, to the job's end or until
    ``until(event)`` is true."""
    from services.api import jobs_pb2 as pb

    seen = []
    for ev in stub.WatchJob(pb.WatchJobRequest(name=name, after_seq=after_seq), timeout=timeout):
        seen.append(ev)
        if until is not None and until(ev):
            break
    return seen


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, …), from /proc."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    below, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parent.items() if p in frontier]
        below += kids
        frontier = kids
    return below


def runner_pids(server_pid: int) -> list[int]:
    """PIDs of the JobRunner actors (the jobs' round loops) of an embedded-Ray server."""
    found = []
    for pid in descendants(server_pid):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::JobRunner"):
                found.append(pid)
        except OSError:
            pass
    return found


def report_fault(**row) -> None:
    """One row of the fault table (docs/reliability.md): printed (pytest -s) and appended as a
    JSON line to $ESGD_FAULT_REPORT when it is set."""
    import json

    line = json.dumps(row, sort_keys=True)
    print(f"\nFAULT-REPORT {line}", flush=True)
    if os.environ.get("ESGD_FAULT_REPORT"):
        with open(os.environ["ESGD_FAULT_REPORT"], "a") as f:
            f.write(line + "\n")


# ----- load: many concurrent API clients ---------------------------------------------------------
def api_clients(target: str, name: str, clients: int, seconds: float, watchers: int | None = None) -> dict:
    """``clients`` threads, one gRPC channel each, against job ``name`` for ``seconds``: a quarter
    (or ``watchers``) follow the job live with WatchJob the whole time, as dashboards do; the
    others loop GetJob, ListJobs (page of 50) and a short WatchJob replay (the first 3 stored
    events, then cancel), as pollers and reconnecting watchers do.

    Returns counts per method, every error as "Method: CODE: details", the gap-free check of
    every stream, and the live events the watchers received. Deadlines: 30 s a call."""
    import threading

    from services.api import jobs_pb2 as pb
    from services.api import jobs_pb2_grpc

    watchers = clients // 4 if watchers is None else watchers
    lock = threading.Lock()
    stats = {"calls": {"GetJob": 0, "ListJobs": 0, "WatchJob": 0}, "errors": [], "gaps": [], "live_events": 0}
    end = [0.0]
    # The clock starts as the last thread arrives, before any is released: a client must never
    # read the end time before it is set (it would stop at once, having made no call).
    ready = threading.Barrier(clients + 1, action=lambda: end.__setitem__(0, time.monotonic() + seconds))

    def record(method: str, exc: grpc.RpcError | None = None) -> None:
        with lock:
            if exc is None:
                stats["calls"][method] += 1
            else:
                stats["errors"].append(f"{method}: {exc.code().name}: {exc.details()}")

    def contiguous(seqs: list[int]) -> None:
        if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            with lock:
                stats["gaps"].append(seqs)

    def watcher(stub) -> None:
        call = stub.WatchJob(pb.WatchJobRequest(name=name), timeout=seconds + 60)
        ended = threading.Event()  # set by the timer: a CANCELLED after it is the window's end
        timer = threading.Timer(max(0.0, end[0] - time.monotonic()), lambda: (ended.set(), call.cancel()))
        timer.start()
        seqs = []
        try:
            for ev in call:
                if ev.seq:
                    seqs.append(ev.seq)
        except grpc.RpcError as exc:
            if not (exc.code() == grpc.StatusCode.CANCELLED and ended.is_set()):
                record("WatchJob", exc)
                return
        finally:
            timer.cancel()
        contiguous(seqs)
        record("WatchJob")
        with lock:
            stats["live_events"] += len(seqs)

    def poller(stub) -> None:
        i = 0
        while time.monotonic() < end[0]:
            method = ("GetJob", "ListJobs", "WatchJob")[i % 3]
            i += 1
            try:
                if method == "GetJob":
                    stub.GetJob(pb.GetJobRequest(name=name), timeout=30)
                elif method == "ListJobs":
                    stub.ListJobs(pb.ListJobsRequest(page_size=50), timeout=30)
                else:
                    call = stub.WatchJob(pb.WatchJobRequest(name=name, after_seq=0), timeout=30)
                    seqs = []
                    for ev in call:
                        seqs.append(ev.seq)
                        if len(seqs) == 3:
                            break
                    call.cancel()
                    contiguous(seqs)
            except grpc.RpcError as exc:
                record(method, exc)
            else:
                record(method)

    def client(index: int) -> None:
        with grpc.insecure_channel(target) as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            try:
                grpc.channel_ready_future(ch).result(timeout=60)  # connect before the clock starts
            finally:
                ready.wait()
            (watcher if index < watchers else poller)(stub)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    for t in threads:
        t.join(seconds + 120)
    stats["stuck_threads"] = sum(t.is_alive() for t in threads)
    return stats


def module_server(name: str, *extra: str, env: dict | None = None):
    """A module-scoped ``server`` fixture: one ``esgd serve`` for the module's tests, checked
    to exit 0 when they are done (tests/conftest.py's ``stub`` fixture talks to it)."""
    import pytest

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        srv = ServerProcess(tmp_path_factory.mktemp(name), *extra, env=env)
        yield srv
        assert srv.terminate() == 0, srv.read_log()[-3000:]

    return server


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for servers that take a fixed port, e.g. /metrics)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

