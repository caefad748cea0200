"""1,000 concurrent WatchJob streams against a real `esgd serve`: does GetJob stay fast?

Starts a server (embedded Ray, ``--max-streams`` above the watcher count) and one training job
(Parle, K = 2 on both cores, L = ``--inner-steps``: by default LeNet on Fashion-MNIST with
L = 20, bench/load.py's and the quickstart's workload, a round — an event for every watcher
— every ~0.3 s; L = 5 makes it ~0.2 s; ``--model mlp``, a tiny MLP on synthetic data, ~30 ms).
The watchers run on the same two cores as the server and the job. Then, per variant:

1. quiet: a prober in this process calls GetJob every 50 ms for ``--seconds`` and records
   each call's latency;
2. loaded: ``--watchers`` WatchJob streams, opened by a separate process (grpc.aio, one event
   loop, spread over 16 channels) and following the job live, while the prober runs again.

Reports GetJob latency (p50, p95, p99, max) in both windows, the events the watchers received
per second, how many were connected, and the server's threads, resident memory and CPU share.
Variants: ``open`` (no auth, the loopback default) and ``token`` (named tokens, every call
authenticated).

Usage:  python bench/streams.py [--watchers 1000] [--seconds 30] [--variants open,token] [--model lenet|mlp]
        [--inner-steps 20] [--api-nice 10]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.api import jobs_pb2 as pb  # noqa: E402
from services.api import jobs_pb2_grpc  # noqa: E402
from services.convert import spec_to_proto  # noqa: E402
from tests.service_harness import ServerProcess, wait_for  # noqa: E402

SPEC = {"name": "streams", "model": "lenet", "dataset": {"name": "fashion-mnist"}, "strategy": "parle", "replicas": 2,
        "inner": {"steps": 20}, "train": {"outer_steps": 1_000_000, "batch_size": 128, "eval_every": 1_000_000},
        "checkpoint": {"every": 1_000_000}, "resources": {"cpus_per_replica": 1.0}}
TOKEN = "bench-token-0123456789abcdef"
TICK = os.sysconf("SC_CLK_TCK")


def proc_stats(pid: int) -> dict:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / TICK, "threads": int(fields[17]), "rss_mb": rss / 2**20}


def probe(stub, name: str, seconds: float, metadata) -> list[float]:
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        stub.GetJob(pb.GetJobRequest(name=name), timeout=30, metadata=metadata)
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    return out


def summary(ms: list[float]) -> dict:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"calls": len(ms), "p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2), "p99_ms": round(q[98], 2),
            "max_ms": round(max(ms), 2)}


# ----- the watchers' process --------------------------------------------------------------------
async def _watchers(target: str, name: str, count: int, seconds: float, token: str | None) -> dict:
    import grpc

    md = (("authorization", f"Bearer {token}"),) if token else None
    channels = [grpc.aio.insecure_channel(target) for _ in range(16)]
    connected, events, errors = [0], [0], []

    async def one(i: int) -> None:
        stub = jobs_pb2_grpc.JobServiceStub(channels[i % len(channels)])
        try:
            async for ev in stub.WatchJob(pb.WatchJobRequest(name=name), metadata=md, timeout=seconds + 300):
                if ev.HasField("snapshot"):
                    connected[0] += 1
                else:
                    events[0] += 1
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                errors.append(exc.code().name)
        except asyncio.CancelledError:
            pass

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    t0 = time.monotonic()
    while connected[0] < count and time.monotonic() - t0 < 120 and len(errors) < count:
        await asyncio.sleep(0.2)
    connect_s = time.monotonic() - t0
    print(json.dumps({"ready": connected[0]}), flush=True)  # the prober starts now
    start_events = events[0]
    await asyncio.sleep(seconds)
    got = events[0] - start_events
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()
    return {"connected": connected[0], "connect_s": round(connect_s, 1), "events_per_s": round(got / seconds, 1),
            "errors": len(errors), "error_codes": sorted(set(errors))}


def watchers_main(argv: list[str]) -> None:
    target, name, count, seconds, token = argv[0], argv[1], int(argv[2]), float(argv[3]), argv[4] or None
    print(json.dumps(asyncio.run(_watchers(target, name, count, seconds, token))), flush=True)


# ----- one variant --------------------------------------------------------------------------------
def run_variant(variant: str, args) -> dict:
    import grpc

    data = Path(tempfile.mkdtemp(prefix=f"esgd-streams-{variant}-"))
    extra = ["--num-cpus", "2", "--max-streams", str(args.watchers + 100), "--api-nice", str(args.api_nice)]
    token = TOKEN if variant == "token" else None
    if token:
        (data.parent / f"{data.name}.tokens").write_text(f"bench {token} admin\n")
        extra += ["--token-file", str(data.parent / f"{data.name}.tokens")]
    srv = ServerProcess(data / "srv", *extra)
    md = (("authorization", f"Bearer {token}"),) if token else None
    try:
        with grpc.insecure_channel(srv.target) as ch:
            stub = jobs_pb2_grpc.JobServiceStub(ch)
            spec = {**SPEC, "model": args.model, "inner": {"steps": args.inner_steps},
                    "dataset": {"name": "fashion-mnist" if args.model == "lenet" else "synthetic"}}
            job = stub.CreateJob(pb.CreateJobRequest(job=spec_to_proto(spec)), timeout=60, metadata=md)
            wait_for(lambda: stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10, metadata=md).progress.round >= 3,
                     300, "the job's third round")
            s0, t0 = proc_stats(srv.proc.pid), time.monotonic()
            quiet = probe(stub, job.name, args.seconds, md)
            s1, t1 = proc_stats(srv.proc.pid), time.monotonic()
            watchers = subprocess.Popen([sys.executable, __file__, "--watchers-process", srv.target, job.name,
                                         str(args.watchers), str(args.seconds), token or ""],
                                        stdout=subprocess.PIPE, text=True)
            ready = json.loads(watchers.stdout.readline())
            s2, t2 = proc_stats(srv.proc.pid), time.monotonic()
            loaded = probe(stub, job.name, args.seconds, md)
            s3, t3 = proc_stats(srv.proc.pid), time.monotonic()
            result = json.loads(watchers.stdout.readline())
            watchers.wait(120)
            rounds = stub.GetJob(pb.GetJobRequest(name=job.name), timeout=10, metadata=md).progress.round
            stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=30, metadata=md)
    finally:
        srv.terminate()
    cores = os.cpu_count() or 1
    return {"variant": variant, "watchers": args.watchers, "ready": ready["ready"], **result,
            "rounds": rounds,
            "quiet": {**summary(quiet), "server_cpu_share": round((s1["cpu_s"] - s0["cpu_s"]) / ((t1 - t0) * cores), 3),
                      "server_threads": s1["threads"], "server_rss_mb": round(s1["rss_mb"])},
            "loaded": {**summary(loaded), "server_cpu_share": round((s3["cpu_s"] - s2["cpu_s"]) / ((t3 - t2) * cores), 3),
                       "server_threads": s3["threads"], "server_rss_mb": round(s3["rss_mb"])}}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--watchers-process":
        watchers_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--variants", default="open,token")
    ap.add_argument("--model", choices=("mlp", "lenet"), default="lenet")
    ap.add_argument("--inner-steps", type=int, default=20, help="L: gradient steps per round (fewer: more events)")
    ap.add_argument("--api-nice", type=int, default=10, help="the server's --api-nice (default 10, its own default)")
    args = ap.parse_args()
    for variant in args.variants.split(","):
        print(json.dumps(run_variant(variant, args)), flush=True)


if __name__ == "__main__":
    main()
