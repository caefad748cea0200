"""What 100 concurrent API clients cost a training job: throughput with and without them.

Starts a real `esgd serve` (embedded Ray) on loopback and one job; follows its progress events
and measures the job's training throughput in three windows (samples/s: each round's samples,
samples_per_second × round_seconds, credited to the window in proportion to the part of the
round, [event time − round_seconds, event time], that falls inside it; divided by the window):
quiet, loaded (``--clients`` threads, one gRPC channel each, running GetJob, ListJobs and
WatchJob — tests.service_harness.api_clients), quiet again. The clients run in this process,
on the same cores as the server and the replicas, so their CPU time is taken from the job:
the drop in throughput is compared with the clients' CPU share (this process's CPU seconds
from getrusage / (window × cores)) and with that share plus the server's extra CPU share
(answering the calls, from /proc/PID/stat); and the CPU the job lost (its replicas and its
round-loop process, coordinator.runner) with the CPU the API load took.

The job is Parle with 2 replicas and L = 20, by default LeNet on Fashion-MNIST (rounds of about
a second: the quickstart's workload); ``--model mlp`` uses a tiny MLP on synthetic data, whose
rounds are so short that the coordinator's per-round turn-around dominates — the worst case
for this comparison.

Usage:  python bench/load.py [--clients 100] [--seconds 30] [--model lenet|mlp] [--replicas 2] [--api-nice 10]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.api import jobs_pb2 as pb  # noqa: E402
from services.api import jobs_pb2_grpc  # noqa: E402
from services.convert import spec_to_proto  # noqa: E402
from tests.service_harness import ServerProcess, api_clients, runner_pids  # noqa: E402

SPEC = {"name": "load", "model": "lenet", "dataset": {"name": "fashion-mnist"}, "strategy": "parle", "replicas": 2,
        "inner": {"steps": 20}, "train": {"outer_steps": 1_000_000, "batch_size": 128, "eval_every": 1_000_000},
        "checkpoint": {"every": 1_000_000}, "resources": {"cpus_per_replica": 1.0}}
TINY = {**SPEC, "model": "mlp", "dataset": {"name": "synthetic"}, "train": {**SPEC["train"], "batch_size": 64}}
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15 of stat)


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def throughput(rounds: list[tuple[float, float, float]], t0: float, t1: float) -> tuple[float, float]:
    """Samples/s in [t0, t1) and how many rounds fell inside, both counting a round that straddles
    an edge by the fraction of its duration inside — whole-round counting would be off by up to a
    round per edge, a third of the figure when a loaded window holds three slow rounds."""
    samples = rounds_in = 0.0
    for end, seconds, n in rounds:
        start = end - seconds
        inside = max(0.0, min(end, t1) - max(start, t0)) / seconds if seconds > 0 else float(t0 <= end < t1)
        samples += n * inside
        rounds_in += inside
    return samples / (t1 - t0), rounds_in


def follow_rounds(target: str, name: str, out: list, stop: threading.Event) -> None:
    import grpc

    with grpc.insecure_channel(target) as ch:
        stub = jobs_pb2_grpc.JobServiceStub(ch)
        call = stub.WatchJob(pb.WatchJobRequest(name=name, after_seq=0), timeout=3600)
        threading.Thread(target=lambda: (stop.wait(), call.cancel()), daemon=True).start()
        try:
            for ev in call:
                if ev.HasField("progress"):
                    p = ev.progress
                    out.append((ev.time.ToNanoseconds() / 1e9, p.round_seconds, p.samples_per_second * p.round_seconds))
        except grpc.RpcError:
            if not stop.is_set():
                raise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each of the three windows")
    ap.add_argument("--model", choices=("lenet", "mlp"), default="lenet", help="the training job (see above)")
    ap.add_argument("--replicas", type=int, default=2, help="the job's replicas, 1 CPU each (default 2: every core here)")
    ap.add_argument("--api-nice", type=int, default=10, help="the server's --api-nice (default 10, as esgd serve)")
    args = ap.parse_args()
    spec = {**(SPEC if args.model == "lenet" else TINY), "replicas": args.replicas}
    cores = len(os.sched_getaffinity(0))
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="esgd-load-")), "--num-cpus", "2", "--api-nice", str(args.api_nice), env={"RAY_ADDRESS": "local"})
    rounds: list[tuple[float, float, float]] = []
    stop = threading.Event()
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            job = stub.CreateJob(pb.CreateJobRequest(job=spec_to_proto(spec)), timeout=30)
            watcher = threading.Thread(target=follow_rounds, args=(srv.target, job.name, rounds, stop), daemon=True)
            watcher.start()
            while len(rounds) < 5:  # warm: actors up, first rounds done
                time.sleep(0.2)
            replicas = [r.pid for r in stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10).replicas]
            runner = runner_pids(srv.proc.pid)  # the job's round loop, a process of its own
            rows, stats = [], None
            for phase in ("quiet", "loaded", "quiet again"):
                t0, me0, srv0 = time.time(), self_cpu_s(), proc_cpu_s(srv.proc.pid)
                rep0, run0 = sum(proc_cpu_s(p) for p in replicas), sum(proc_cpu_s(p) for p in runner)
                if phase == "loaded":
                    stats = api_clients(srv.target, job.name, args.clients, args.seconds)
                else:
                    time.sleep(args.seconds)  # a measurement window, not a synchronisation
                t1 = time.time()
                wall = t1 - t0
                sps, n = throughput(rounds, t0, t1)
                rows.append({"phase": phase, "wall": wall, "rounds": n, "sps": sps,
                             "me": (self_cpu_s() - me0) / (wall * cores),
                             "server": (proc_cpu_s(srv.proc.pid) - srv0) / (wall * cores),
                             "replicas": (sum(proc_cpu_s(p) for p in replicas) - rep0) / (wall * cores),
                             "runner": (sum(proc_cpu_s(p) for p in runner) - run0) / (wall * cores)})
            stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=30)
    finally:
        stop.set()
        srv.terminate()
    load1, _, _ = os.getloadavg()
    print(f"# training throughput of a Parle {spec['model']} job (K = {args.replicas}) with and without {args.clients} API clients; {cores} cores, "
          f"{args.seconds:g} s windows, server --api-nice {args.api_nice}, load average {load1:.1f} at the end; shares are of {cores} cores")
    print("| window | rounds | samples/s | bench process (clients) CPU | server CPU | round loop CPU | replicas CPU |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['phase']} | {r['rounds']:.1f} | {r['sps']:.0f} | {r['me']:.1%} | {r['server']:.1%} | "
              f"{r['runner']:.1%} | {r['replicas']:.1%} |")
    quiet = statistics.mean(r["sps"] for r in rows if r["phase"] != "loaded")
    loaded = rows[1]
    drop = 1 - loaded["sps"] / quiet if quiet else float("nan")
    clients = loaded["me"] - statistics.mean(r["me"] for r in rows if r["phase"] != "loaded")
    server_extra = loaded["server"] - statistics.mean(r["server"] for r in rows if r["phase"] != "loaded")
    calls = sum(stats["calls"].values())
    print(f"\nclients: {calls} calls ({calls / args.seconds:.0f}/s) {stats['calls']}, {len(stats['errors'])} errors")
    for err in sorted(set(stats["errors"]))[:5]:
        print(f"  error: {err}")
    print(f"throughput drop under load: {drop:.1%} (quiet mean {quiet:.0f} samples/s, loaded {loaded['sps']:.0f})")
    print(f"clients' CPU share: {clients:.1%}; with the server's extra CPU to answer them: {clients + server_extra:.1%}")
    job_quiet = statistics.mean(r["replicas"] + r["runner"] for r in rows if r["phase"] != "loaded")
    job_loaded = loaded["replicas"] + loaded["runner"]
    lost = job_quiet - job_loaded
    print(f"the job's CPU (replicas + round loop): {job_quiet:.1%} of the machine quiet, {job_loaded:.1%} loaded: it lost "
          f"{lost:.1%} of the machine ({lost / job_quiet:.1%} of its CPU); the API load took "
          f"{clients + server_extra:.1%}")
    print(f"job lost no more CPU than the API load took: {'yes' if lost <= clients + server_extra else 'no'}; "
          f"throughput drop / the job's CPU drop: {drop / (lost / job_quiet):.2f} (1 = only CPU was lost)")
    print(f"drop <= clients' CPU share: {'yes' if drop <= clients else 'no'}; "
          f"drop <= clients' + server's extra share: {'yes' if drop <= clients + server_extra else 'no'}")


if __name__ == "__main__":
    main()
