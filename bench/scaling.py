"""Scaling: throughput of K replicas together against K plain-torch processes' worth of work.

For ``sgd`` (one process) and for ``entropy-sgd`` and ``parle`` with K = 1, 2, 4 replicas it
runs real engine rounds (``coordinator.engine.Engine`` over a ``RayPool`` of real Ray actors,
LeNet on Fashion-MNIST, batch 128, L inner steps per round) and reports, per configuration,

    samples/s     all replicas together: Σ samples / Σ round wall time over the measured rounds
    plain         plain torch in one process (forward, backward, ``torch.optim.SGD`` step, same
                  model, batch size, data sampler and thread count as one replica), measured in
                  this run right before and right after the rows of each K; the higher of the two
                  is used, so a load spike during the baseline cannot flatter the ratio
    ratio         samples/s ÷ (K × plain): goal ≥ 0.9 while K ≤ slots (slots = CPU cores, or
                  GPUs with ``--device cuda``); every replica should run as fast as a lone process
    ÷ best        samples/s ÷ the machine's best single process (plain torch at the best thread
                  count measured). For K > slots the replicas share slots, so the goal there is to
                  lose nothing against that best single configuration: ÷ best ≥ 0.9
    round split   per round: compute (the slowest replica's time inside its L steps) and
                  communication (everything else: ray.put, dispatch, transfer back, outer step)
    bytes/sample  (bytes sent + received) per sample, as the engine counts them: a shared anchor
                  is one ``ray.put`` read by all replicas; Parle puts K anchors

Why: a replica is a Ray actor, so its work should cost what the same work costs in a plain
torch loop; anything lost is the engine's (the Langevin update, the round trip, the actor).
Threads: on CPU each replica gets max(1, cores // K) torch threads; with ``--device cuda`` each
replica gets ``--gpu-share`` of the one GPU and 1 thread, and the plain process 1 thread.
The K actors of one pool serve every strategy with that K in turn (the strategy lives in the
coordinator), each strategy from fresh weights and after its own warm-up rounds.

Usage:  python bench/scaling.py [--device cpu|cuda] [--replicas 1,2,4] [--steps 20] [--rounds 6]
                                [--warmup 2] [--plain-steps 60] [--data DIR] [--quick]
``--quick``: a smoke run on a small synthetic dataset (L = 2, 1 measured round); its numbers
mean nothing.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
import torch  # noqa: E402

from coordinator.cluster import connect, disconnect  # noqa: E402
from coordinator.compose import build_engine  # noqa: E402
from coordinator.pool import RayPool  # noqa: E402
from core.spec import JobSpec  # noqa: E402
from worker.data.datasets import load_dataset  # noqa: E402
from worker.data.stream import BatchStream  # noqa: E402
from worker.models import build_model, task_loss  # noqa: E402

GOAL = 0.9


def configurations(replicas: list[int]) -> list[tuple[str, int]]:
    return [("sgd", 1)] + [(s, k) for s in ("entropy-sgd", "parle") for k in replicas]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load1() -> float:
    return os.getloadavg()[0]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def plain_torch(model: str, dataset, threads: int, batch: int, steps: int, device: str, warmup: int,
                max_s: float) -> float:
    """Samples/s of a plain training loop in this process: what one replica should match.
    Timing stops after ``steps`` steps, or after ``max_s`` seconds once 5 steps are done."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        net = build_model(model, dataset.input_shape, dataset.num_classes).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        stream = BatchStream(dataset.num_train, batch, seed=0, replica=0)
        net.train()

        def one() -> None:
            x, y = dataset.batch(stream.next(), "train", device)
            opt.zero_grad()
            task_loss(net(x), y).backward()
            opt.step()

        for _ in range(warmup):
            one()
        _sync(device)
        start = time.perf_counter()
        done = 0
        while done < steps and (done < 5 or time.perf_counter() - start < max_s):
            one()
            done += 1
        _sync(device)
        return done * batch / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(prev)


def make_spec(strategy: str, k: int, args, threads: int) -> JobSpec:
    res = {"threads_per_replica": threads}
    if args.device == "cuda":
        res.update(cpus_per_replica=1.0, gpus_per_replica=args.gpu_share)
    else:
        res.update(cpus_per_replica=args.slots / k if k > args.slots else float(threads), gpus_per_replica=0.0)
    return JobSpec.parse({"model": args.model, "strategy": strategy, "replicas": k,
                          "dataset": {"name": args.dataset, **({"path": args.data} if args.data else {})},
                          "inner": {"steps": args.steps},
                          "train": {"batch_size": args.batch, "outer_steps": args.warmup + args.rounds},
                          "resources": res}).resolved()


def measure(spec: JobSpec, pool: RayPool, dataset, args) -> dict:
    """Warm-up + measured rounds of the real engine on ``pool``; sums and means of the records."""
    eng = build_engine(spec, dataset, lambda *_: pool)  # the K group's pool, shared by its strategies
    for _ in range(args.warmup):
        eng.step()
    recs = [eng.step() for _ in range(args.rounds)]
    total = lambda key: sum(r[key] for r in recs)  # noqa: E731
    n = len(recs)
    return {"samples_s": total("samples") / total("round_s"), "round": total("round_s") / n,
            "compute": total("compute_s") / n, "comm": total("comm_s") / n,
            "bytes_sample": (total("bytes_sent") + total("bytes_received")) / total("samples")}


def run_engine(configs: list[tuple[str, int]], args, dataset, per_replica: dict, plain) -> dict:
    """One RayPool per K, shared by the strategies with that K: an actor holds a Replica (model,
    data stream, Langevin loop) and knows nothing of the strategy, which lives in the coordinator;
    each strategy starts from fresh initial weights and its own warm-up rounds. Each K group is
    bracketed by plain-torch runs at its thread count; the higher of the two is its baseline."""
    out = {}
    for k in sorted({k for _, k in configs}):
        t = per_replica[k]
        before = plain(t)
        specs = {s: make_spec(s, k, args, t) for s, kk in configs if kk == k}
        pool = RayPool(next(iter(specs.values())), dataset)
        try:
            for s, spec in specs.items():
                out[(s, k)] = measure(spec, pool, dataset, args)
        finally:
            pool.shutdown()
        baseline = max(before, plain(t))
        for s in specs:
            out[(s, k)]["plain"] = baseline
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--replicas", default="1,2,4", help="K values for entropy-sgd and parle")
    ap.add_argument("--steps", type=int, default=20, help="L inner steps per round")
    ap.add_argument("--rounds", type=int, default=6, help="measured rounds per configuration")
    ap.add_argument("--warmup", type=int, default=2, help="rounds run and discarded first")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--plain-steps", type=int, default=60, help="timed steps of each plain-torch baseline")
    ap.add_argument("--plain-seconds", type=float, default=4.0, help="time bound of each plain-torch baseline")
    ap.add_argument("--gpu-share", type=float, default=0.25, help="num_gpus per replica with --device cuda")
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data", help="dataset directory (default: the loader's default location)")
    ap.add_argument("--quick", action="store_true", help="smoke run: synthetic data, L=2, 1 measured round")
    args = ap.parse_args(argv)
    if args.quick:
        args.dataset, args.data, args.batch, args.steps = "synthetic", None, 16, 2
        args.rounds, args.warmup, args.plain_steps = 1, 1, 5
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device here")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    cores = os.cpu_count() or 1
    args.slots = torch.cuda.device_count() if args.device == "cuda" else cores
    configs = configurations([int(x) for x in args.replicas.split(",")])
    per_replica = {k: (1 if args.device == "cuda" else max(1, cores // k)) for _, k in configs}
    thread_counts = sorted(set(per_replica.values()) | ({cores} if args.device == "cpu" else set()))
    load_start = load1()
    connect(num_cpus=cores)
    dataset = load_dataset(args.dataset, args.data)
    gpu = f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CUDA no"
    print(f"# scaling: {args.model} on {args.dataset} ({dataset.num_train} train), batch {args.batch}, "
          f"L={args.steps}, {args.warmup} warm-up + {args.rounds} measured rounds per configuration, device "
          f"{args.device}{' (--quick: numbers mean nothing)' if args.quick else ''}")
    print(f"# machine: {cores} CPUs ({cpu_name()}), {platform.system()} {platform.release()}, "
          f"python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}, {gpu}; "
          f"slots for the goal: {args.slots}; load average (1 min) at start: {load_start:.2f}")
    print(f"# command: {shlex.join([Path(sys.executable).name, *sys.argv])}", flush=True)

    runs: dict[int, list[float]] = {t: [] for t in thread_counts}

    def plain(t: int) -> float:
        runs[t].append(plain_torch(args.model, dataset, t, args.batch, args.plain_steps, args.device,
                                   1 if args.quick else 5, args.plain_seconds))
        return runs[t][-1]

    for t in thread_counts:
        plain(t)
    measured = run_engine(configs, args, dataset, per_replica, plain)
    disconnect()
    load_end = load1()
    best_t = max(runs, key=lambda t: max(runs[t]))
    best = max(runs[best_t])

    print("| strategy | K | threads/replica | samples/s | plain samples/s (same threads) | ratio to K × plain "
          "| ÷ best single | round ms | compute ms | comm ms | comm % | bytes/sample | goal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for strategy, k in configs:
        r = measured[(strategy, k)]
        t = per_replica[k]
        ratio, vs_best = r["samples_s"] / (k * r["plain"]), r["samples_s"] / best
        if k <= args.slots:
            goal = f"{'met' if ratio >= GOAL else 'not met'} (ratio {ratio:.2f} vs ≥ {GOAL})"
        else:
            goal = f"{'met' if vs_best >= GOAL else 'not met'} (K > {args.slots} slots: ÷ best {vs_best:.2f} vs ≥ {GOAL})"
        print(f"| {strategy} | {k} | {t} | {r['samples_s']:,.0f} | {r['plain']:,.0f} | {ratio:.2f} | {vs_best:.2f} "
              f"| {r['round'] * 1e3:.0f} | {r['compute'] * 1e3:.0f} | {r['comm'] * 1e3:.1f} "
              f"| {100 * r['comm'] / r['round']:.1f} | {r['bytes_sample']:,.0f} | {goal} |", flush=True)
    for t in thread_counts:
        print(f"# plain torch, {t} thread(s), samples/s in run order: {', '.join(f'{v:,.0f}' for v in runs[t])}")
    print(f"# best single process: plain torch with {best_t} thread(s), {best:,.0f} samples/s")
    print(f"# load average (1 min): start {load_start:.2f}, end {load_end:.2f}")


if __name__ == "__main__":
    main()
