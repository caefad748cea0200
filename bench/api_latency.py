"""API latency: GetJob and ListJobs under 50 concurrent clients, and submit → first round.

Starts a real `esgd serve` (embedded Ray) on a loopback port and times CreateJob → the first
round's progress event for one small job on the fresh server (Ray just started). Then it fills
the server with jobs and runs 50 client threads, each with its own gRPC channel, calling GetJob
or ListJobs (page of 50) back to back for a fixed time. Client and server share this machine's
cores, so the figures include the clients' own CPU use. Then, on the now warm server, it
submits small jobs one after the other (each as soon as the previous one has finished, or
``--gap`` seconds later) and times CreateJob → first round again (runner and replica start-up,
data, first round): median of ``--submits``. For each submit it prints the server's start-up
breakdown (the ``start-up`` log line of coordinator.manager): whether the runner and replica
processes were already running (warm), and the seconds of each step.

Usage:  python bench/api_latency.py [--clients 50] [--seconds 10] [--api-nice 10] [--submits 5]
        python bench/api_latency.py --clients 0 --jobs 0     # submit → first round only
Set ESGD_WARM_WORKERS=0 in the environment to run the server without warm worker processes.
"""
from __future__ import annotations

import argparse
import json
import os
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
from tests.service_harness import ServerProcess  # noqa: E402

SPEC = {"model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "entropy-sgd", "replicas": 1,
        "inner": {"steps": 2}, "train": {"outer_steps": 3, "batch_size": 32}}


def hammer(target: str, method: str, names: list[str], seconds: float, out: list[float], errors: list[str]):
    import grpc

    with grpc.insecure_channel(target) as ch:
        stub = jobs_pb2_grpc.JobServiceStub(ch)
        stub.ListJobs(pb.ListJobsRequest(page_size=1), timeout=30)  # connect before the clock starts
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                if method == "GetJob":
                    stub.GetJob(pb.GetJobRequest(name=names[i % len(names)]), timeout=30)
                else:
                    stub.ListJobs(pb.ListJobsRequest(page_size=50), timeout=30)
            except grpc.RpcError as exc:
                errors.append(exc.code().name)
                continue
            out.append(time.perf_counter() - start)
            i += 1


def submit_to_first_round(stub, spec: dict) -> tuple[str, float]:
    """CreateJob → its first progress event, in seconds; waits for the job to end."""
    start = time.perf_counter()
    name = stub.CreateJob(pb.CreateJobRequest(job=spec_to_proto(spec)), timeout=30).name
    took = None
    for ev in stub.WatchJob(pb.WatchJobRequest(name=name), timeout=300):
        if ev.HasField("progress") and took is None:
            took = time.perf_counter() - start
    return name, took


def startup_lines(srv) -> dict:
    """job id → its start-up breakdown, from the server's log."""
    out = {}
    for line in srv.read_log().splitlines():
        if " start-up {" in line:
            job, _, payload = line.split("job ", 1)[1].partition(" start-up ")
            out[job] = json.loads(payload)
    return out


def describe(b: dict | None) -> str:
    if not b:
        return "(no start-up line)"
    data = "loaded" if not b["dataset_reused"] else "lost, loaded again" if b.get("dataset_fallback") else "reused"
    return (f"runner {'warm' if b['runner_warm'] else 'fresh'} process, replicas warm {b['replicas_warm']}/"
            f"{b['replicas_total']}, dataset {data}; runner up "
            f"{b['runner_s']:.2f}s (torch import {b['torch_import_s']:.2f}s), ready {b['runner_ready_s']:.2f}s; "
            f"build: data {b['data_s']:.2f}s model {b['model_s']:.2f}s replicas {b['replicas_s']:.2f}s "
            f"engine {b['engine_s']:.2f}s; first round stored at {b['first_round']:.2f}s (round {b['round_s']:.2f}s)")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--jobs", type=int, default=60, help="jobs in the store while measuring")
    ap.add_argument("--submits", type=int, default=5, help="warm-server submits (median)")
    ap.add_argument("--gap", type=float, default=0.0, help="seconds between a job's end and the next submit")
    ap.add_argument("--model", default=SPEC["model"], help="the submitted jobs' model (mlp)")
    ap.add_argument("--dataset", default=SPEC["dataset"]["name"], help="the submitted jobs' dataset (synthetic)")
    ap.add_argument("--api-nice", type=int, default=10, help="the server's --api-nice (default 10, as esgd serve)")
    args = ap.parse_args()
    spec = {**SPEC, "model": args.model, "dataset": {"name": args.dataset}}
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="esgd-bench-")), "--num-cpus", "2", "--api-nice", str(args.api_nice))
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            first_name, first = submit_to_first_round(stub, spec)  # Ray started moments ago
            names = [stub.CreateJob(pb.CreateJobRequest(job=spec_to_proto(SPEC)), timeout=30).name
                     for _ in range(args.jobs)] or [first_name]
            while stub.ListJobs(pb.ListJobsRequest(state=pb.QUEUED, page_size=1), timeout=30).jobs or \
                    stub.ListJobs(pb.ListJobsRequest(state=pb.RUNNING, page_size=1), timeout=30).jobs:
                time.sleep(0.5)  # let them finish: measure the API, not the API beside training
            if args.clients:
                print(f"# API latency, {args.clients} concurrent clients (threads, one channel each), "
                      f"{args.seconds:g} s per method, {args.jobs} jobs stored, server --api-nice {args.api_nice}; "
                      "server and clients on this machine")
                print("| method | calls | calls/s | p50 ms | p99 ms | errors |")
                print("|---|---|---|---|---|---|")
            for method in ("GetJob", "ListJobs") if args.clients else ():
                lat, errors = [], []
                threads = [threading.Thread(target=hammer, args=(srv.target, method, names, args.seconds, lat, errors))
                           for _ in range(args.clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                print(f"| {method} | {len(lat)} | {len(lat) / args.seconds:.0f} | {pct(lat, 0.5) * 1e3:.1f} "
                      f"| {pct(lat, 0.99) * 1e3:.1f} | {len(errors)} |", flush=True)
            times, submitted = [], []
            for _ in range(args.submits):
                time.sleep(args.gap)
                name, took = submit_to_first_round(stub, spec)
                times.append(took)
                submitted.append(name)
            load = os.getloadavg()
            steps = startup_lines(srv)
            warm = os.environ.get("ESGD_WARM_WORKERS", "default")
            print(f"\n# submit → first round ({args.model} on {args.dataset}, ESGD_WARM_WORKERS={warm}, "
                  f"gap {args.gap:g} s, load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
            print(f"fresh server (first job): {first:.2f} s — {describe(steps.get(first_name.split('/')[-1]))}")
            for name, took in zip(submitted, times):
                print(f"warm server: {took:.2f} s — {describe(steps.get(name.split('/')[-1]))}")
            print(f"\nsubmit → first round on a warm server: median {statistics.median(times):.2f} s "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times)}); fresh server: {first:.2f} s")
    finally:
        srv.terminate()


if __name__ == "__main__":
    main()
