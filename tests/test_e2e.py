"""End to end through the `esgd` command: real Fashion-MNIST, real Ray, a run directory."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.installed import need_path
from worker.data.idx import FASHION_MNIST_DIR

FASHION = Path(FASHION_MNIST_DIR) / "train-images-idx3-ubyte.gz"
ESGD = [sys.executable, "-m", "services.cli"]
ROOT = Path(__file__).resolve().parent.parent
CHANCE = 0.9
THRESHOLD = 0.35  # Parle, K=2, mlp on 6000 Fashion-MNIST images, 2 data passes per replica


def _job(tmp_path, **train):
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({
        "name": "e2e", "model": "mlp", "strategy": "parle", "replicas": 2,
        "dataset": {"name": "fashion-mnist", "train_subset": 6000, "test_subset": 2000},
        "inner": {"steps": 5, "lr": 0.1, "gamma0": 0.01, "gamma1": 0.01},
        "outer": {"lr": 0.5, "momentum": 0.5}, "elastic": {"rho0": 0.1},
        "train": {"batch_size": 64, "eval_every": 5, **train},
        "resources": {"cpus_per_replica": 1},
    }))
    return job


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_esgd_run_learns_fashion_mnist(tmp_path):
    need_path(FASHION, "data")
    run_dir = tmp_path / "run"
    out = subprocess.run(ESGD + ["run", str(_job(tmp_path, outer_steps=40)), "--run-dir", str(run_dir),
                                 "--no-progress", "--json"],
                         capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["test_error"] < THRESHOLD < CHANCE
    assert summary["grad_evals_total"] == 40 * 5 * 2
    assert summary["data_passes_per_replica"] == pytest.approx(40 * 5 * 64 / 6000)
    assert "test_error" in out.stderr  # one concise line per evaluation
    ckpt = torch.load(sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))[-1])
    assert ckpt["round"] == 40 and set(ckpt["model"]) >= {"1.weight", "2.running_mean"}
    assert (run_dir / "spec.yaml").exists()


@pytest.mark.slow
def test_ctrl_c_leaves_a_usable_checkpoint_and_resume_finishes(tmp_path):
    need_path(FASHION, "data")
    run_dir = tmp_path / "run"
    job = _job(tmp_path, outer_steps=400)
    proc = subprocess.Popen(ESGD + ["run", str(job), "--run-dir", str(run_dir), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if metrics.exists() and metrics.read_text().count('"kind": "round"') >= 8:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 8 <= summary["rounds"] < 400
    ckpt = torch.load(sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))[-1])
    assert ckpt["round"] == summary["rounds"]
    out = subprocess.run(ESGD + ["run", str(job), "--run-dir", str(run_dir), "--resume", "--no-progress",
                                 "--set", f"train.outer_steps={summary['rounds'] + 5}"],
                         capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    final = json.loads((run_dir / "summary.json").read_text())
    assert final["status"] == "succeeded" and final["rounds"] == summary["rounds"] + 5
