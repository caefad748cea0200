"""API latency: GetJob and ListJobs under 50 concurrent clients, and submit → first round.

Starts a real `esgd serve` (embedded Ray) on a loopback port, fills it with jobs, then runs
50 client threads, each with its own gRPC channel, calling GetJob or ListJobs (page of 50)
back to back for a fixed time. Client and server share this machine's cores, so the figures
include the clients' own CPU use. Then, on the now warm server, it submits small jobs and
times CreateJob → the first round's progress event (actor start-up, data, first round).

Usage:  python bench/api_latency.py [--clients 50] [--seconds 10] [--api-nice 10]
"""
from __future__ import annotations

import argparse
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


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--jobs", type=int, default=60, help="jobs in the store while measuring")
    ap.add_argument("--submits", type=int, default=3)
    ap.add_argument("--api-nice", type=int, default=10, help="the server's --api-nice (default 10, as esgd serve)")
    args = ap.parse_args()
    srv = ServerProcess(Path(tempfile.mkdtemp(prefix="esgd-bench-")), "--num-cpus", "2", "--api-nice", str(args.api_nice))
    try:
        with srv.channel() as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            names = [stub.CreateJob(pb.CreateJobRequest(job=spec_to_proto(SPEC)), timeout=30).name
                     for _ in range(args.jobs)]
            while stub.ListJobs(pb.ListJobsRequest(state=pb.QUEUED, page_size=1), timeout=30).jobs or \
                    stub.ListJobs(pb.ListJobsRequest(state=pb.RUNNING, page_size=1), timeout=30).jobs:
                time.sleep(0.5)  # let them finish: measure the API, not the API beside training
            print(f"# API latency, {args.clients} concurrent clients (threads, one channel each), "
                  f"{args.seconds:g} s per method, {args.jobs} jobs stored, server --api-nice {args.api_nice}; "
                  "server and clients on this machine")
            print("| method | calls | calls/s | p50 ms | p99 ms | errors |")
            print("|---|---|---|---|---|---|")
            for method in ("GetJob", "ListJobs"):
                lat, errors = [], []
                threads = [threading.Thread(target=hammer, args=(srv.target, method, names, args.seconds, lat, errors))
                           for _ in range(args.clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                print(f"| {method} | {len(lat)} | {len(lat) / args.seconds:.0f} | {pct(lat, 0.5) * 1e3:.1f} "
                      f"| {pct(lat, 0.99) * 1e3:.1f} | {len(errors)} |", flush=True)
            times = []
            for _ in range(args.submits):
                start = time.perf_counter()
                name = stub.CreateJob(pb.CreateJobRequest(job=spec_to_proto(SPEC)), timeout=30).name
                for ev in stub.WatchJob(pb.WatchJobRequest(name=name), timeout=120):
                    if ev.HasField("progress"):
                        times.append(time.perf_counter() - start)
                        break
                for _ in stub.WatchJob(pb.WatchJobRequest(name=name), timeout=120):
                    pass  # let it finish before the next one
            print(f"\nsubmit → first round on a warm server: median {statistics.median(times):.2f} s "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times)})")
    finally:
        srv.terminate()


if __name__ == "__main__":
    main()
