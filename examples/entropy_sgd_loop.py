"""EntropySGD in an ordinary PyTorch training loop: LeNet on Fashion-MNIST (the Debian package
dataset-fashion-mnist, `make data`), with training counted in effective epochs.

Each EntropySGD step draws L = 20 minibatches (the Langevin chain), so "one epoch" means one
pass over the data, as in the Entropy-SGD paper: `BatchCycle` hands out minibatches without
end, reshuffling at every pass, and counts the passes. The loop evaluates after each one.

    .venv/bin/python examples/entropy_sgd_loop.py [--epochs 5] [--train-subset N] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from worker.data import load_dataset  # noqa: E402
from worker.models import build_model, error_count, task_loss  # noqa: E402
from worker.optim import BatchCycle, EntropySGD  # noqa: E402


@torch.no_grad()
def test_error(model, data) -> float:
    model.eval()
    wrong = sum(error_count(model(x), y) for x, y in
                (data.batch(np.arange(s, min(data.num_test, s + 1000)), "test") for s in range(0, data.num_test, 1000)))
    model.train()
    return wrong / data.num_test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=5.0, help="effective epochs (passes over the training data)")
    ap.add_argument("--train-subset", type=int, default=0, help="train on this many images (0 = all 60,000)")
    ap.add_argument("--test-subset", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    torch.manual_seed(0)
    data = load_dataset("fashion-mnist")
    if args.train_subset or args.test_subset:
        data = data.subset(train=args.train_subset, test=args.test_subset, seed=0)
    loader = DataLoader(range(data.num_train), batch_size=args.batch_size, shuffle=True, drop_last=True,
                        collate_fn=lambda idx: data.batch(np.asarray(idx)))
    model = build_model("lenet", data.input_shape, data.num_classes)
    opt = EntropySGD(model.parameters(), lr=1.0, inner_lr=0.1, inner_steps=20, gamma0=1e-4, gamma1=1e-3,
                     weight_decay=5e-4)
    batches = BatchCycle(loader)

    def closure():
        x, y = next(batches)
        opt.zero_grad()
        loss = task_loss(model(x), y)
        loss.backward()
        return loss

    start, next_eval = time.perf_counter(), 1.0
    while batches.epochs < args.epochs:
        loss = opt.step(closure)
        if batches.epochs >= min(next_eval, args.epochs):
            print(f"epoch {batches.epochs:5.2f}  step {opt.outer_steps:5d}  loss {float(loss):.4f}  "
                  f"test error {100 * test_error(model, data):5.2f}%  ({time.perf_counter() - start:.0f} s)", flush=True)
            next_eval += 1.0


if __name__ == "__main__":
    main()
