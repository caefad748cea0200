"""Time-to-accuracy against what users would pick instead: Ray Train DDP and plain SGD.

Four systems train LeNet on Fashion-MNIST on this machine, from the same initial weights
(``coordinator.evaluate.initial_model``, job seed 0), each for the same training-time budget:

    ray-train-ddp  Ray Train ``TorchTrainer``, 2 workers × 1 CPU, gloo, DistributedDataParallel
                   (``ray.train.torch.prepare_model``), DistributedSampler shards, batch 128 per
                   worker, SGD lr 0.1 Nesterov 0.9, weight decay 5e-4 (the SGD baseline of
                   examples/sgd-lenet.yaml)
    parle          our engine, ``examples/quickstart.yaml`` (Parle settings, K = 2, L = 20)
    entropy-sgd    our engine, ``examples/entropy-sgd-lenet.yaml`` with K = 2 (shared anchor)
    sgd            one process, 2 torch threads, the same batch 128 and optimizer as the DDP run
Ours use ``coordinator.compose.build_engine`` with real Ray actors (1 CPU, 1 thread each).

What is measured, and how:
- *train s*: wall-clock seconds since the first training step, minus the time spent evaluating
  (and, for Ray Train, in ``ray.train.report``). Setup (Ray Train's worker group and process
  group, our actors and dataset put) is reported apart as *setup s*. Each system runs until its
  train clock passes ``--seconds``; DDP and SGD stop at a step boundary, ours at a round one.
- *time / grad evals to target*: at the first periodic evaluation (every ``--eval-every`` train
  seconds, on a fixed 2,000-image probe of the test set) whose error is ≤ ``--target``; its
  resolution is the evaluation period. A gradient evaluation is one minibatch gradient (128
  samples) on one worker: DDP counts 2 per step, ours L per replica per round (docs/design.md,
  "Data per replica and cost accounting").
- *final error*: the full 10,000-image test set at the end of the budget (equal train time).
- *train CPU s*: CPU seconds (user + system, /proc) the training processes got in that time:
  the SGD process, both Ray Train workers, or our 2 actors plus the driver's share of the rounds.
  With 2 cores idle it can reach 2 × train s; much less means other processes took the CPU.
- *bytes*: ours, the engine's counters: anchors put into the object store (a shared anchor
  once) plus the results returned, per round. DDP, analytically per step: a ring all-reduce of
  the float32 gradients (each of W workers sends 2(W−1)/W of them, so 2 × gradient bytes in all
  for W = 2) plus rank 0's broadcast of the BatchNorm buffers (DDP's broadcast_buffers) to W−1
  peers. The harness's own per-step 16-byte stop flag and the evaluations are not counted.

The Parle paper claims 2–4× faster than data-parallel SGD; this prints what we measure.

Usage:  python bench/vs_ray_train.py [--seconds 120] [--target 0.15] [--eval-every 6] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Ray Train gives its worker group 60 s to start; on a loaded 2-core machine (CI, other tests)
# two workers importing torch and joining a gloo group can take longer, and the run then fails.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from coordinator.cluster import connect, disconnect  # noqa: E402
from coordinator.compose import build_engine  # noqa: E402
from coordinator.evaluate import Evaluator, initial_model  # noqa: E402
from coordinator.local_run import dataset_for  # noqa: E402
from coordinator.pool import RayPool  # noqa: E402
from coordinator.rundir import RunDir  # noqa: E402
from core.events import EvalRecord, Listener, RoundRecord  # noqa: E402
from core.spec import JobSpec  # noqa: E402
from worker.models import error_count, task_loss  # noqa: E402

SYSTEMS = ("ray-train-ddp", "parle", "entropy-sgd", "sgd")
PRESETS = {"parle": "quickstart.yaml", "entropy-sgd": "entropy-sgd-lenet.yaml"}
SGD = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
PROBE = 2000  # test images in each periodic evaluation


def cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (all threads; this process if None)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probe_of(data):
    """The fixed probe: the same random test images ``dataset_for`` picks with test_subset=PROBE."""
    return data.subset(test=PROBE, seed=0)


def base_spec(quick: bool) -> JobSpec:
    subset = {"train_subset": 2000, "test_subset": 1000} if quick else {}
    return JobSpec.parse({"model": "lenet", "dataset": {"name": "fashion-mnist", **subset},
                          "train": {"batch_size": 128, "outer_steps": 1, "seed": 0}})


@torch.no_grad()
def test_error(model, data) -> float:
    """Top-1 error of ``model`` (eval mode) on ``data``'s test split."""
    model.eval()
    n = data.num_test
    errors = sum(error_count(model(x), y) for x, y in
                 (data.batch(np.arange(s, min(n, s + 500)), "test") for s in range(0, n, 500)))
    model.train()
    return errors / n


def run_sgd(spec: JobSpec, args) -> dict:
    """Plain single-process SGD: one model, 2 torch threads, a fresh permutation per pass."""
    start = time.perf_counter()
    torch.set_num_threads(2)
    data = dataset_for(spec)
    probe = probe_of(data)
    model = initial_model(spec, data)
    opt = torch.optim.SGD(model.parameters(), **SGD)
    rng, bs = np.random.default_rng(0), spec.train.batch_size
    evals, steps, eval_s, eval_cpu, next_eval = [], 0, 0.0, 0.0, args.eval_every
    first, cpu0 = time.perf_counter(), cpu_s()
    while True:
        order = rng.permutation(data.num_train)
        for b in range(data.num_train // bs):
            clock = time.perf_counter() - first - eval_s
            if clock >= next_eval or clock >= args.seconds:
                t0, c0 = time.perf_counter(), cpu_s()
                evals.append((clock, steps, test_error(model, probe), 0))
                eval_s, eval_cpu = eval_s + time.perf_counter() - t0, eval_cpu + cpu_s() - c0
                next_eval += args.eval_every
            if clock >= args.seconds:
                return {"evals": evals, "cpu_s": cpu_s() - cpu0 - eval_cpu, "final": test_error(model, data),
                        "train_s": clock, "steps": steps, "grad_evals": steps, "bytes": 0, "setup_s": first - start,
                        "workers": 1}
            x, y = data.batch(order[b * bs:(b + 1) * bs])
            opt.zero_grad()
            task_loss(model(x), y).backward()
            opt.step()
            steps += 1


def ddp_worker(cfg: dict) -> None:
    """Ray Train worker loop: DDP SGD; rank 0 keeps the clock and evaluates (model.module)."""
    import ray.train
    import torch.distributed as dist
    from ray.train import Checkpoint
    from ray.train.torch import prepare_model
    from torch.utils.data import DistributedSampler

    torch.set_num_threads(1)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    spec, data, bs = JobSpec.parse(cfg["spec"]), ray.get(cfg["data"]), cfg["batch_size"]
    probe = probe_of(data)
    model = prepare_model(initial_model(spec, data))
    opt = torch.optim.SGD(model.parameters(), **SGD)
    sampler = DistributedSampler(range(data.num_train), num_replicas=world, rank=rank, shuffle=True, seed=0,
                                 drop_last=True)
    evals, steps, eval_s, eval_cpu, next_eval, epoch = [], 0, 0.0, 0.0, cfg["eval_every"], 0
    flag = torch.zeros(2, dtype=torch.int64)
    first, cpu0 = time.perf_counter(), cpu_s()
    setup_s = time.time() - cfg["t0"]
    while True:
        sampler.set_epoch(epoch)
        order = np.fromiter(iter(sampler), dtype=np.int64)
        for b in range(len(order) // bs):
            clock = time.perf_counter() - first - eval_s
            if rank == 0:
                flag[0], flag[1] = int(clock >= next_eval or clock >= cfg["seconds"]), int(clock >= cfg["seconds"])
            dist.broadcast(flag, 0)  # every rank takes the same step count and evaluates together
            if flag[0]:
                t0, c0 = time.perf_counter(), cpu_s()
                if rank == 0:
                    evals.append((clock, steps * world, test_error(model.module, probe)))
                ray.train.report({"train_s": clock, "steps": steps, "probe_error": evals[-1][2]} if rank == 0
                                 else {})
                eval_s, eval_cpu = eval_s + time.perf_counter() - t0, eval_cpu + cpu_s() - c0
                next_eval += cfg["eval_every"]
            if flag[1]:
                cpu = torch.tensor([cpu_s() - cpu0 - eval_cpu], dtype=torch.float64)
                dist.all_reduce(cpu)  # CPU seconds of all workers' processes while training
                out = {"evals": evals, "train_s": clock, "steps": steps, "setup_s": setup_s, "cpu_s": float(cpu),
                       "final": test_error(model.module, data) if rank == 0 else None}
                with tempfile.TemporaryDirectory() as tmp:
                    Path(tmp, "history.json").write_text(json.dumps(out))
                    ray.train.report({"final_error": out["final"]},
                                     checkpoint=Checkpoint.from_directory(tmp) if rank == 0 else None)
                return
            x, y = data.batch(order[b * bs:(b + 1) * bs])
            opt.zero_grad()
            task_loss(model(x), y).backward()
            opt.step()
            steps += 1
        epoch += 1


def run_ray_train(spec: JobSpec, args) -> dict:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    start_wall = time.time()
    data = dataset_for(spec)
    model = initial_model(spec, data)
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    buf_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    world = 2
    per_step = world * 2 * (world - 1) / world * grad_bytes + (world - 1) * buf_bytes
    with tempfile.TemporaryDirectory(prefix="esgd-vs-ray-train-") as storage:
        cfg = {"spec": spec.to_dict(), "data": ray.put(data), "batch_size": spec.train.batch_size,
               "seconds": args.seconds, "eval_every": args.eval_every, "t0": start_wall}
        trainer = TorchTrainer(ddp_worker, train_loop_config=cfg, torch_config=TorchConfig(backend="gloo"),
                               scaling_config=ScalingConfig(num_workers=world, use_gpu=False),
                               # one retry of a worker group that fails to start or dies under load;
                               # a retried run's set-up shows in "setup s"
                               run_config=RunConfig(storage_path=storage, name="ddp",
                                                    failure_config=FailureConfig(max_failures=1)))
        result = trainer.fit()
        with result.checkpoint.as_directory() as d:
            out = json.loads(Path(d, "history.json").read_text())
    evals = [(c, g, e, per_step * g / world) for c, g, e in out["evals"]]
    return {**{k: out[k] for k in ("cpu_s", "final", "train_s", "steps", "setup_s")}, "evals": evals,
            "grad_evals": out["steps"] * world, "bytes": per_step * out["steps"], "workers": world}


class Capture(Listener):
    """Engine listener: bytes from round records, (time, grad evals, error, bytes) per evaluation."""

    def __init__(self):
        self.bytes, self.evals = 0, []

    def on_round(self, record: RoundRecord) -> None:
        self.bytes += record.bytes_sent + record.bytes_received

    def on_eval(self, record: EvalRecord) -> None:
        self.evals.append((record.wall_seconds, record.grad_evals_total, record.test_error, self.bytes))


def run_engine(name: str, spec: JobSpec, args) -> dict:
    """Our engine on real Ray actors; the driver evaluates the probe between rounds."""
    start = time.perf_counter()
    d = spec.dataset
    job = JobSpec.from_file(ROOT / "examples" / PRESETS[name]).replace(
        replicas=2, dataset={"train_subset": d.train_subset, "test_subset": min(d.test_subset or PROBE, PROBE)},
        train={"epochs": None, "outer_steps": 10**6, "eval_every": 10**6},
        resources={"cpus_per_replica": 1, "threads_per_replica": 1}).resolved()
    torch.set_num_threads(2)
    capture = Capture()
    with tempfile.TemporaryDirectory(prefix="esgd-vs-ray-") as tmp:
        engine = build_engine(job, dataset_for(job), RayPool, checkpoint_dir=RunDir(tmp).checkpoints,
                              listeners=[capture])
        pids = [s.info["pid"] for s in engine.pool.slots]
        first, cpu0, eval_cpu = time.perf_counter(), cpu_s() + sum(map(cpu_s, pids)), 0.0
        try:
            next_eval = args.eval_every
            while True:
                engine.step()
                clock = engine.counters["wall_s"]
                if clock >= next_eval or clock >= args.seconds:
                    c0 = cpu_s()
                    engine.evaluate()
                    eval_cpu += cpu_s() - c0
                    next_eval += args.eval_every
                if clock >= args.seconds:
                    break
            cpu = cpu_s() + sum(map(cpu_s, pids)) - cpu0 - eval_cpu  # the driver's rounds + the actors
        finally:
            engine.pool.shutdown()
    full = Evaluator(spec, dataset_for(spec)).evaluate(engine.strategy.reference())["test_error"]
    return {"evals": capture.evals, "cpu_s": cpu, "final": full, "train_s": engine.counters["wall_s"],
            "steps": engine.t, "grad_evals": engine.counters["grad_evals"], "bytes": capture.bytes,
            "setup_s": first - start, "workers": job.replicas}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB, torch {torch.__version__}, ray {ray.__version__}, "
            f"CUDA {'yes' if torch.cuda.is_available() else 'no'}")


def row(name: str, r: dict, target: float) -> str:
    hit = next((e for e in r["evals"] if e[2] <= target), None)
    reach = (f"{hit[0]:.1f} | {hit[1]:,} | {hit[3] / 1e6:.1f}" if hit else "not reached | — | —")
    return (f"| {name} | {r['workers']} | {reach} | {100 * r['final']:.2f} | {r['train_s']:.1f} | {r['steps']:,} "
            f"| {r['cpu_s']:.0f} | {r['grad_evals']:,} | {r['bytes'] / 1e6:.1f} | {r['setup_s']:.1f} "
            f"| {os.getloadavg()[0]:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="training-time budget per system")
    ap.add_argument("--target", type=float, default=0.15, help="test-error target (fraction)")
    ap.add_argument("--eval-every", type=float, default=6.0, help="train seconds between probe evaluations")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--quick", action="store_true", help="smoke run: 2,000 train images, a few seconds each")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.eval_every, args.target = 4.0, 2.0, 0.5
    spec = base_spec(args.quick)
    load0 = os.getloadavg()
    print(f"# vs Ray Train: lenet / fashion-mnist{' (quick subset)' if args.quick else ''}, {machine()}; "
          f"{args.seconds:g} s train budget each, target {100 * args.target:g}% test error, probe every "
          f"{args.eval_every:g} s; load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    connect(num_cpus=2)
    results = {}
    try:
        for name in args.systems.split(","):
            t_sys = time.perf_counter()
            if name == "ray-train-ddp":
                results[name] = run_ray_train(spec, args)
            elif name == "sgd":
                results[name] = run_sgd(spec, args)
            else:
                results[name] = run_engine(name, spec, args)
            results[name]["row"] = row(name, results[name], args.target)
            print(f"# {name} done in {time.perf_counter() - t_sys:.0f} s: train {results[name]['train_s']:.1f} s, "
                  f"final error {100 * results[name]['final']:.2f}%", file=sys.stderr, flush=True)
    finally:
        disconnect()
    pct = f"{100 * args.target:g}%"
    print(f"| system | workers | s to {pct} | grad evals to {pct} | MB to {pct} | final error % (full test) "
          f"| train s | steps/rounds | train CPU s | grad evals | MB total | setup s | load 1m after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in results:
        print(results[name]["row"])
    for name, r in results.items():
        print(f"# probe error by train time, {name}: "
              + " ".join(f"{c:.0f}s:{100 * e:.1f}%" for c, _, e, _ in r["evals"]))
    load1 = os.getloadavg()
    print(f"# load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if "ray-train-ddp" in results:
        ddp = next((e[0] for e in results["ray-train-ddp"]["evals"] if e[2] <= args.target), None)
        for name in ("parle", "entropy-sgd", "sgd"):
            mine = next((e[0] for e in results.get(name, {"evals": []})["evals"] if e[2] <= args.target), None)
            if ddp and mine:
                print(f"# time to {pct}: {name} vs ray-train-ddp = {ddp / mine:.2f}x faster"
                      if mine < ddp else f"# time to {pct}: {name} vs ray-train-ddp = {mine / ddp:.2f}x slower")


if __name__ == "__main__":
    main()
