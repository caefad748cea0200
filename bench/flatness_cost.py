"""Cost of the flatness report against one training epoch, measured side by side.

Issue goal: on LeNet the default flatness report (coordinator/flatness.py) costs at most about
the time of one training epoch on the same machine. One process, one torch thread count for
both, no Ray:

    epoch    one epoch of plain torch training: LeNet on Fashion-MNIST, batch 128, SGD
             (momentum 0.9), train mode; every step gathers its batch from a shuffled order,
             zero_grad, forward, backward, step — what a real epoch does
    report   ``flatness_report`` with its default sizes on the same model

The report runs in the middle of the epoch (after half the steps, on the model trained for half
an epoch from random init; it restores weights and modes, so training goes on undisturbed), and
the epoch time is the sum of its two halves. Machine noise before, during and after the report
then hits both figures alike. Both wall time and process CPU time are reported, with the load
average before and after: on a shared machine the CPU-time ratio is the steadier one.

Usage:  python bench/flatness_cost.py [--threads N] [--batch 128] [--json]
``--quick`` (CI smoke): the tiny ``mlp`` on 256 synthetic images, tiny report sizes; it checks
that the script runs and says nothing about speed.
The last line printed is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from coordinator.flatness import flatness_report  # noqa: E402
from worker.data.datasets import load_dataset  # noqa: E402
from worker.models import build_model, task_loss  # noqa: E402

QUICK_SIZES = dict(eval_samples=64, batch=64, lanczos_iters=6, slq_probes=2, hutchinson_probes=2,
                   langevin_steps=3, langevin_batch=32)


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - t0[0], cpu - t0[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--batch", type=int, default=128, help="training batch size (default 128)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help=f"torch threads for both (default {torch.get_num_threads()})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke mode: mlp, tiny synthetic data and report sizes")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.quick:
        dataset, label, sizes = load_dataset("synthetic", synthetic_size=256), "synthetic-256", QUICK_SIZES
        args.model, args.batch = "mlp", 32
    else:
        dataset, label, sizes = load_dataset(args.dataset), args.dataset, {}
    torch.manual_seed(args.seed)
    model = build_model(args.model, dataset.input_shape, dataset.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    order = np.random.default_rng(args.seed).permutation(dataset.num_train)
    steps = [order[i:i + args.batch] for i in range(0, dataset.num_train, args.batch)]
    half = len(steps) // 2

    def train(chunk) -> tuple[float, float]:
        model.train()
        t0 = _clock()
        for idx in chunk:
            x, y = dataset.batch(idx)
            opt.zero_grad(set_to_none=True)
            task_loss(model(x), y).backward()
            opt.step()
        return _since(t0)

    load_before = os.getloadavg()
    first = train(steps[:half])
    t0 = _clock()
    report = flatness_report(model, dataset, seed=args.seed, **sizes)
    rep_wall, rep_cpu = _since(t0)
    second = train(steps[half:])
    load_after = os.getloadavg()

    epoch_wall, epoch_cpu = first[0] + second[0], first[1] + second[1]
    out = {
        "model": args.model, "dataset": label, "num_params": report["num_params"], "threads": args.threads,
        "train_batch": args.batch, "epoch_steps": len(steps), "epoch_samples": int(dataset.num_train),
        "report_model": f"{args.model} after {half} SGD steps (half an epoch) from random init",
        "epoch_wall_s": epoch_wall, "epoch_cpu_s": epoch_cpu,
        "epoch_samples_per_s": dataset.num_train / epoch_wall,
        "report_wall_s": rep_wall, "report_cpu_s": rep_cpu,
        "ratio_wall": rep_wall / epoch_wall, "ratio_cpu": rep_cpu / epoch_cpu,
        "report_timings": report["timings"], "hvp_calls": report["hvp_calls"],
        "eval_samples": report["eval_samples"], "trace_probes": report["trace_probes"],
        "slq": {"probes": report["slq"]["probes"], "iters": report["slq"]["iters"]},
        "top_eigenvalues": report["top_eigenvalues"], "trace": report["trace"],
        "trace_stderr": report["trace_stderr"], "near_zero_fraction": report["near_zero_fraction"],
        "loadavg_before": list(load_before), "loadavg_after": list(load_after),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "quick": args.quick,
    }
    print(f"{args.model} on {label}, {out['num_params']:,} params, {args.threads} torch thread(s); "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"epoch   ({len(steps)} steps of batch {args.batch}): wall {epoch_wall:8.1f} s  cpu {epoch_cpu:8.1f} s  "
          f"({out['epoch_samples_per_s']:.0f} samples/s)")
    print(f"report  ({report['hvp_calls']} HVPs on {report['eval_samples']} samples): wall {rep_wall:8.1f} s  "
          f"cpu {rep_cpu:8.1f} s  "
          f"[{', '.join(f'{k[:-2]} {v:.1f}' for k, v in report['timings'].items())} s]")
    print(f"report / epoch: wall {out['ratio_wall']:.2f}  cpu {out['ratio_cpu']:.2f}  "
          f"(goal: at most about 1); peak RSS {out['peak_rss_mib']:.0f} MiB")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
