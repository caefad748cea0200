"""Time to accuracy across nodes joined by a capped link: Parle and friends against Ray Train DDP.

On one machine an all-reduce runs over loopback and costs almost nothing, so the one thing
Parle is built for cannot show: it talks once every L minibatches, moving one anchor out and
one result back per replica, where data-parallel SGD all-reduces every gradient. This bench
puts each worker on its own Ray node in its own network namespace
(``scripts/netns_cluster.py``: veth links to a bridge, each capped with ``tc tbf`` in both
directions) and races, for each link rate and model:

    ray-train-ddp  Ray Train ``TorchTrainer``, one worker per node (1 CPU), gloo, DDP, SGD lr 0.1
                   Nesterov 0.9, weight decay 5e-4, a DistributedSampler shard each
    parle          our engine, ``examples/quickstart.yaml`` (L = 20), K = one replica per node
    parle-bf16     the same with ``comm.dtype: bfloat16`` (anchors and results cross as bfloat16)
    entropy-sgd    ``examples/entropy-sgd-<model>.yaml`` (lenet's for mnistfc too), K = nodes
    elastic-sgd    ``examples/elastic-sgd-lenet.yaml``, K = nodes

All start from the same initial weights (``coordinator.evaluate.initial_model``, seed 0) with
the same per-worker batch (128) and run for the same train-time budget (``--seconds``: wall
seconds since the first step, minus evaluations). Every ``--eval-every`` train seconds the
model (x̄ for ours, rank 0's replica for DDP) is scored on a fixed 2,000-image probe of the test
set; *time to target* is the first probe at or under the target, so its resolution is the
evaluation period. *Bytes on the wire* are read from the nodes' interface counters (the sum of
every node's ``eth0`` tx bytes: each frame crosses the switch once), between the first step and
that probe, and over the whole budget: not estimated. Before the clock starts the links must be
idle (:func:`quiet_link`): the dataset's transfer to the second node is set-up, not training. A gradient evaluation is one minibatch
gradient on one worker. *Final error* is the full test set at the end of the budget.

The driver (our coordinator, Ray Train's controller) runs in the head's namespace; a node has
1 Ray CPU, so the two workers or replicas land on different nodes, and their traffic crosses
the capped links. On a 2-core machine each node's replica gets about one core.

Usage (root):  python bench/network.py [--rates unlimited,1gbit,100mbit,10mbit] [--models lenet,mnistfc]
               [--systems ...] [--seconds 60] [--targets lenet=0.2,mnistfc=0.2] [--results FILE]
               [--figure docs/img/network-time-to-target.png] [--quick]
Rows are appended to ``--results`` (JSON lines) as they finish; a rerun skips the rows there,
so rerunning with other ``--targets`` only prints the tables for them from the stored probes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "scripts")]
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")  # slow links, loaded machine

SYSTEMS = ("ray-train-ddp", "parle", "parle-bf16", "entropy-sgd", "elastic-sgd")
PRESETS = {"parle": "quickstart.yaml", "parle-bf16": "quickstart.yaml", "elastic-sgd": "elastic-sgd-lenet.yaml",
           "entropy-sgd": "entropy-sgd-{model}.yaml"}
SGD = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
CLUSTER, SUBNET = "esgdbench", "10.214.0.0/24"
RATE_BPS = {"unlimited": None}


def wire_bytes(cluster: str) -> int:
    """Bytes every node has sent on its link so far (interface counters)."""
    from netns_cluster import counters

    return sum(c["tx_bytes"] or 0 for c in counters(cluster).values())


def quiet_link(cluster: str, limit_s: float = 300.0) -> float:
    """Wait until the links are idle (under 64 KB in 2 s), so that set-up traffic is not counted
    as training. On a slow link Ray keeps pushing a large object (the dataset) for a while after
    the receiver has it: its pushes time out and are sent again (measured at 10mbit: a 20 MB
    object moved 63 MB). Returns the seconds waited."""
    t0, last = time.perf_counter(), wire_bytes(cluster)
    while time.perf_counter() - t0 < limit_s:
        time.sleep(2.0)
        now = wire_bytes(cluster)
        if now - last < 64_000:
            break
        last = now
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- one system, in the head's namespace
def base_spec(model: str, quick: bool):
    from core.spec import JobSpec

    subset = {"train_subset": 2000, "test_subset": 1000} if quick else {}
    return JobSpec.parse({"model": model, "dataset": {"name": "fashion-mnist", **subset},
                          "train": {"batch_size": 128, "outer_steps": 1, "seed": 0}})


def ddp_loop(cfg: dict) -> None:
    """Ray Train worker: DDP SGD; rank 0 keeps the clock, evaluates and reads the link counters."""
    import numpy as np
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train import Checkpoint
    from ray.train.torch import prepare_model
    from torch.utils.data import DistributedSampler

    from coordinator.evaluate import initial_model
    from core.spec import JobSpec
    from vs_ray_train import probe_of, test_error
    from worker.models import task_loss

    torch.set_num_threads(1)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    spec, data, bs = JobSpec.parse(cfg["spec"]), ray.get(cfg["data"]), cfg["batch_size"]
    probe = probe_of(data)
    model = prepare_model(initial_model(spec, data))
    opt = torch.optim.SGD(model.parameters(), **SGD)
    sampler = DistributedSampler(range(data.num_train), num_replicas=world, rank=rank, shuffle=True, seed=0,
                                 drop_last=True)
    evals, steps, eval_s, next_eval, epoch = [], 0, 0.0, cfg["eval_every"], 0
    flag = torch.zeros(2, dtype=torch.int64)
    if rank == 0:
        quiet_link(cfg["cluster"])
    dist.barrier()  # rank 1 waits here while rank 0 lets the set-up traffic drain
    first, wire0 = time.perf_counter(), wire_bytes(cfg["cluster"]) if rank == 0 else 0
    while True:
        sampler.set_epoch(epoch)
        order = np.fromiter(iter(sampler), dtype=np.int64)
        for b in range(len(order) // bs):
            clock = time.perf_counter() - first - eval_s
            if rank == 0:
                flag[0], flag[1] = int(clock >= next_eval or clock >= cfg["seconds"]), int(clock >= cfg["seconds"])
            dist.broadcast(flag, 0)
            if flag[0]:
                t0 = time.perf_counter()
                if rank == 0:
                    evals.append((clock, steps * world, test_error(model.module, probe),
                                  wire_bytes(cfg["cluster"]) - wire0))
                eval_s += time.perf_counter() - t0
                next_eval += cfg["eval_every"]
            if flag[1]:
                if rank == 0:
                    out = {"evals": evals, "train_s": clock, "steps": steps, "grad_evals": steps * world,
                           "final": test_error(model.module, data), "bytes": evals[-1][3]}
                    with tempfile.TemporaryDirectory() as tmp:
                        Path(tmp, "history.json").write_text(json.dumps(out))
                        ray.train.report({"done": 1}, checkpoint=Checkpoint.from_directory(tmp))
                else:
                    ray.train.report({"done": 1})
                return
            x, y = data.batch(order[b * bs:(b + 1) * bs])
            opt.zero_grad()
            task_loss(model(x), y).backward()
            opt.step()
            steps += 1
        epoch += 1


def run_ddp(spec, args) -> dict:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from coordinator.local_run import dataset_for

    with tempfile.TemporaryDirectory(prefix="esgd-network-ddp-") as storage:
        cfg = {"spec": spec.to_dict(), "data": ray.put(dataset_for(spec)), "batch_size": spec.train.batch_size,
               "seconds": args.seconds, "eval_every": args.eval_every, "cluster": args.cluster}
        trainer = TorchTrainer(ddp_loop, train_loop_config=cfg, torch_config=TorchConfig(backend="gloo"),
                               scaling_config=ScalingConfig(num_workers=args.nodes, use_gpu=False,
                                                            resources_per_worker={"CPU": 1}),
                               run_config=RunConfig(storage_path=storage, name="ddp"))
        result = trainer.fit()
        with result.checkpoint.as_directory() as d:
            return json.loads(Path(d, "history.json").read_text())


def run_engine(system: str, spec, args) -> dict:
    from coordinator.compose import build_engine
    from coordinator.evaluate import Evaluator
    from coordinator.local_run import dataset_for
    from coordinator.pool import RayPool
    from coordinator.rundir import RunDir
    from core.spec import JobSpec
    from vs_ray_train import PROBE

    d = spec.dataset
    extra = {"comm": {"dtype": "bfloat16"}} if system == "parle-bf16" else {}
    preset = PRESETS[system].format(model=spec.model)
    if not (ROOT / "examples" / preset).exists():
        preset = PRESETS[system].format(model="lenet")
    job = JobSpec.from_file(ROOT / "examples" / preset).replace(
        model=spec.model, replicas=args.nodes,
        dataset={"train_subset": d.train_subset, "test_subset": min(d.test_subset or PROBE, PROBE)},
        train={"epochs": None, "outer_steps": 10**6, "eval_every": 10**6, "batch_size": spec.train.batch_size},
        resources={"cpus_per_replica": 1, "threads_per_replica": 1}, **extra).resolved()
    with tempfile.TemporaryDirectory(prefix="esgd-network-") as tmp:
        engine = build_engine(job, dataset_for(job), RayPool, checkpoint_dir=RunDir(tmp).checkpoints)
        nodes = sorted({s.info["node_ip"] for s in engine.pool.slots})
        quiet_link(args.cluster)
        evals, next_eval, wire0 = [], args.eval_every, wire_bytes(args.cluster)
        try:
            while True:
                engine.step()
                clock = engine.counters["wall_s"]
                if clock >= next_eval or clock >= args.seconds:
                    err = engine.evaluate()["test_error"]
                    evals.append((clock, engine.counters["grad_evals"], err, wire_bytes(args.cluster) - wire0))
                    next_eval += args.eval_every
                if clock >= args.seconds:
                    break
        finally:
            engine.pool.shutdown()
    final = Evaluator(spec, dataset_for(spec)).evaluate(engine.strategy.reference())["test_error"]
    return {"evals": evals, "train_s": engine.counters["wall_s"], "steps": engine.t, "nodes": nodes,
            "grad_evals": engine.counters["grad_evals"], "final": final, "bytes": evals[-1][3]}


def one(args) -> None:
    """Run one system on the cluster (we are in its head's namespace); print one JSON line."""
    import ray

    start = time.perf_counter()
    # gloo finds its own address from the host name (127.0.0.1 here): name the node's link instead
    ray.init(address=args.address, log_to_driver=False, runtime_env={"env_vars": {
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench"), str(ROOT / "scripts")]),
        "GLOO_SOCKET_IFNAME": "eth0", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300"}})
    spec = base_spec(args.model, args.quick)
    try:
        r = run_ddp(spec, args) if args.one == "ray-train-ddp" else run_engine(args.one, spec, args)
    finally:
        ray.shutdown()
    print(json.dumps({**r, "wall_s": time.perf_counter() - start}), flush=True)


# ----------------------------------------------------------------------------- the race, from the root namespace
def hit(row: dict) -> list | None:
    return next((e for e in row["evals"] if e[2] <= row["target"]), None)


def table(rows: list[dict]) -> str:
    out = ["| model | link | system | s to target | grad evals to target | MB on the wire to target "
           "| final error % (equal time) | grad evals | MB on the wire | MB per 1k grad evals |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        h = hit(r)
        reach = f"{h[0]:.1f} | {h[1]:,} | {h[3] / 1e6:.1f}" if h else "not reached | — | —"
        per_k = r["bytes"] / 1e6 / max(r["grad_evals"], 1) * 1000
        out.append(f"| {r['model']} (≤{100 * r['target']:g}%) | {r['rate']} | {r['system']} | {reach} "
                   f"| {100 * r['final']:.2f} | {r['grad_evals']:,} | {r['bytes'] / 1e6:.1f} | {per_k:.1f} |")
    return "\n".join(out)


def crossover(rows: list[dict], rates: list[str]) -> list[str]:
    """Per model: at which link rates Parle reaches the target sooner than DDP, and by how much."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        parts = []
        for rate in rates:
            got = {r["system"]: r for r in rows if r["model"] == model and r["rate"] == rate}
            if "parle" not in got or "ray-train-ddp" not in got:
                continue
            p, d = hit(got["parle"]), hit(got["ray-train-ddp"])
            if p and d:
                parts.append(f"{rate}: DDP/Parle time = {d[0] / p[0]:.2f}")
            elif p:
                parts.append(f"{rate}: Parle {p[0]:.0f} s, DDP not within {got['parle']['seconds']:g} s")
            elif d:
                parts.append(f"{rate}: DDP {d[0]:.0f} s, Parle not within {got['parle']['seconds']:g} s")
            else:
                parts.append(f"{rate}: neither reached it")
        lines.append(f"# {model}: " + "; ".join(parts))
    return lines


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from netns_cluster import parse_rate

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        top = max(r["seconds"] for r in mine)
        for system in dict.fromkeys(r["system"] for r in mine):
            pts = sorted(((parse_rate(r["rate"]) or 1.25e9) * 8, hit(r)) for r in mine if r["system"] == system)
            xs = [x for x, _ in pts]
            ys = [h[0] if h else top * 1.15 for _, h in pts]
            line, = ax.plot(xs, ys, marker="o", label=system)
            ax.scatter([x for x, h in pts if not h], [top * 1.15] * sum(1 for _, h in pts if not h),
                       facecolors="white", edgecolors=line.get_color(), zorder=3, s=40)
        ax.set_xscale("log")
        ax.set_xlabel("link rate per node (bit/s; 10 Gbit/s = unlimited)")
        ax.set_ylabel(f"train seconds to {100 * mine[0]['target']:g}% test error")
        ax.axhline(top, color="grey", lw=0.6, ls=":")
        ax.set_title(f"{model} on Fashion-MNIST, 2 nodes (open: not reached in {top:g} s)", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def race(args) -> None:
    import netns_cluster as nc

    rates, models, systems = args.rates.split(","), args.models.split(","), args.systems.split(",")
    targets = dict(kv.split("=") for kv in args.targets.split(","))
    for rate in rates:
        nc.parse_rate(rate)  # a bad rate fails before anything is built
    results = Path(args.results)
    done = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    for rate in rates:
        todo = [(m, s) for m in models for s in systems
                if not any(r["rate"] == rate and r["model"] == m and r["system"] == s for r in done)]
        if not todo:
            continue
        print(f"# {rate}: {len(todo)} runs, {args.nodes} nodes x 1 Ray CPU, {args.seconds:g} s train each, probe "
              f"every {args.eval_every:g} s, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)
        state = nc.up(CLUSTER, args.nodes, rate, subnet=SUBNET, object_store_mb=400)
        try:
            for model, system in todo:
                cmd = ["ip", "netns", "exec", state["nodes"][0]["ns"], sys.executable, __file__, "--one", system,
                       "--model", model, "--address", state["head"], "--cluster", CLUSTER, "--nodes", str(args.nodes),
                       "--seconds", str(args.seconds), "--eval-every", str(args.eval_every)] + (["--quick"] if args.quick else [])
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds * 6 + 600)
                if p.returncode:
                    print(f"# {model} {system} at {rate} failed:\n{p.stderr[-2000:]}", file=sys.stderr, flush=True)
                    continue
                row = {**json.loads(p.stdout.strip().splitlines()[-1]), "rate": rate, "model": model, "system": system,
                       "target": float(targets[model]), "seconds": args.seconds, "load1": os.getloadavg()[0]}
                done.append(row)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(table([row]).splitlines()[-1], flush=True)
        finally:
            nc.down(CLUSTER)
    # the probes are stored, so a table for any target comes from the same runs (rerun with
    # other --targets: every row is already in --results, nothing is trained again)
    rows = [{**r, "target": float(targets[r["model"]])} for r in done
            if r["rate"] in rates and r["model"] in models and r["system"] in systems]
    print(table(rows))
    print("\n".join(crossover(rows, rates)))
    if args.figure:
        figure(rows, Path(args.figure))
        print(f"# figure: {args.figure}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="unlimited,1gbit,100mbit,10mbit")
    ap.add_argument("--models", default="lenet,mnistfc")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--targets", default="lenet=0.2,mnistfc=0.2", help="test-error target per model")
    ap.add_argument("--seconds", type=float, default=60.0, help="train-time budget per system")
    ap.add_argument("--eval-every", type=float, default=5.0)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--results", default="runs/network.jsonl")
    ap.add_argument("--figure", default="")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2,000 train images, a few seconds each")
    ap.add_argument("--one", choices=SYSTEMS, help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--cluster", default=CLUSTER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick and not args.one:
        args.seconds, args.eval_every = 4.0, 2.0
    if args.one:
        one(args)
    else:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        race(args)


if __name__ == "__main__":
    main()
