"""bench/optimizer.py still runs (--quick), and the Langevin kernels agree on real models' parameters."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from worker.langevin import langevin_step
from worker.models import build_model

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"mnistfc": ((1, 28, 28), 10), "lenet": ((1, 28, 28), 10), "char-lstm": ((50,), 63)}


def test_optimizer_bench_quick_runs_and_has_a_row_per_model():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "optimizer.py"), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("#") and "torch" in lines[0] and "CUDA" in lines[0]
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
    assert [row.split("|")[1].strip() for row in rows] == list(MODELS)
    header = next(line for line in lines if line.startswith("| model"))
    assert all(row.count("|") == header.count("|") for row in rows)


def _lists(params, seed):
    g = torch.Generator().manual_seed(seed)
    xs = [p.detach().clone() for p in params]
    grads = [torch.randn(p.shape, generator=g) for p in params]
    anchors = [x + 0.01 * torch.randn(x.shape, generator=g) for x in xs]
    mus = [x.clone() for x in xs]
    return xs, grads, anchors, mus, [None] * len(xs)


@pytest.mark.parametrize("name", list(MODELS))
def test_foreach_and_loop_kernels_agree_on_real_parameters(name):
    torch.manual_seed(0)
    shape, classes = MODELS[name]
    params = [p for p in build_model(name, shape, classes).parameters() if p.requires_grad]
    assert len(params) > 1 and len({p.shape for p in params}) > 1  # a real per-parameter list
    hyper = dict(lr=0.05, gamma=0.03, noise=1e-2, alpha=0.75, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def run(foreach, noise_seed):
        xs, grads, anchors, mus, bufs = _lists(params, seed=1)
        gen = torch.Generator().manual_seed(noise_seed)
        for _ in range(4):
            langevin_step(xs, grads, anchors, mus, bufs, generator=gen, foreach=foreach, **hyper)
        return xs, mus, bufs

    out = {foreach: run(foreach, noise_seed=2) for foreach in (True, False)}
    for a_list, b_list in zip(out[True], out[False]):
        for a, b in zip(a_list, b_list):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the noise really is drawn from the generator: another seed gives another chain
    other = run(True, noise_seed=3)[0]
    assert all((a - b).abs().max() > 1e-4 for a, b in zip(out[True][0], other))
