"""Round overhead: one outer round split into replica compute and everything else.

For K = 1, 2, 4 replicas (real Ray actors, one CPU thread each) it times full engine rounds
(entropy-sgd, shared anchor) and reports

    round    wall time of a round: broadcast + L inner steps + gather + outer step
    compute  the slowest replica's time inside its L inner steps (the critical path)
    overhead round − compute: ray.put, task dispatch, result transfer, aggregation
    naive    the same round done the obvious way, measured side by side: each replica is
             sent its own pickled torch state_dict and returns one, averaged key by key

Usage:  python bench/round_overhead.py [--models lenet,mnistfc] [--replicas 1,2,4] [--rounds 8]
"""
from __future__ import annotations

import argparse
import os
import statistics
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


@ray.remote
class NaiveReplica:
    """The obvious actor: load a pickled state_dict, run L SGD steps, return a state_dict."""

    def __init__(self, model_name, dataset, batch_size, seed):
        import numpy as np

        from worker.models import build_model

        torch.set_num_threads(1)
        self.model = build_model(model_name, dataset.input_shape, dataset.num_classes)
        self.dataset, self.batch_size = dataset, batch_size
        self.rng = np.random.default_rng(seed)

    def run(self, state_dict, steps):
        from worker.models import task_loss

        self.model.load_state_dict(state_dict)
        opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        start = time.perf_counter()
        for _ in range(steps):
            x, y = self.dataset.batch(self.rng.integers(0, self.dataset.num_train, self.batch_size))
            opt.zero_grad()
            task_loss(self.model(x), y).backward()
            opt.step()
        return self.model.state_dict(), time.perf_counter() - start


def bench_engine(model, k, steps, rounds, dataset):
    spec = JobSpec.parse({"model": model, "strategy": "entropy-sgd", "replicas": k,
                          "inner": {"steps": steps}, "train": {"outer_steps": rounds},
                          "resources": {"cpus_per_replica": min(1.0, 2.0 / k), "threads_per_replica": 1}}).resolved()
    eng = build_engine(spec, dataset, RayPool)
    try:
        recs = [eng.step() for _ in range(rounds)][2:]  # the first rounds warm up
    finally:
        eng.pool.shutdown()
    med = lambda key: statistics.median(r[key] for r in recs)  # noqa: E731
    return {"round": med("round_s"), "compute": med("compute_s"), "aggregate": med("aggregate_s"),
            "params": eng.evaluator.flat.num_params}


def bench_naive(model, k, steps, rounds, dataset):
    ds_ref = ray.put(dataset)
    actors = [NaiveReplica.options(num_cpus=min(1.0, 2.0 / k)).remote(model, ds_ref, 128, i) for i in range(k)]
    from worker.models import build_model

    state = build_model(model, dataset.input_shape, dataset.num_classes).state_dict()
    times = []
    for r in range(rounds):
        start = time.perf_counter()
        outs = ray.get([a.run.remote(state, steps) for a in actors])
        state = {key: sum(o[0][key].float() for o in outs).div(k).to(state[key].dtype) for key in state}
        if r >= 2:
            times.append((time.perf_counter() - start, max(o[1] for o in outs)))
    for a in actors:
        ray.kill(a)
    return {"round": statistics.median(t for t, _ in times), "compute": statistics.median(c for _, c in times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lenet,mnistfc")
    ap.add_argument("--replicas", default="1,2,4")
    ap.add_argument("--steps", type=int, default=20, help="L inner steps per round")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--dataset", default="fashion-mnist")
    args = ap.parse_args()
    connect(num_cpus=2, object_store_mb=512)  # the embedded Ray the service starts
    dataset = load_dataset(args.dataset)
    print(f"# round overhead, L={args.steps}, batch 128, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"CUDA {'yes' if torch.cuda.is_available() else 'no'}; medians of {args.rounds - 2} rounds")
    print("| model | params | K | round ms | compute ms | overhead ms | overhead % | aggregate ms "
          "| naive overhead ms | naive / ours overhead |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for k in (int(x) for x in args.replicas.split(",")):
            ours = bench_engine(model, k, args.steps, args.rounds, dataset)
            naive = bench_naive(model, k, args.steps, args.rounds, dataset)
            over = ours["round"] - ours["compute"]
            naive_over = naive["round"] - naive["compute"]
            print(f"| {model} | {ours['params']:,} | {k} | {ours['round'] * 1e3:.0f} | {ours['compute'] * 1e3:.0f} "
                  f"| {over * 1e3:.1f} | {100 * over / ours['round']:.1f} | {ours['aggregate'] * 1e3:.1f} "
                  f"| {naive_over * 1e3:.1f} | {naive_over / max(over, 1e-9):.1f}x |", flush=True)
    disconnect()


if __name__ == "__main__":
    main()
