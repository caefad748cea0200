"""esgd run --flatness and esgd flatness on a real (small) run."""
import json
import os
import subprocess
import sys

from tests.service_harness import ROOT


def test_run_with_flatness_then_flatness_of_the_run_dir(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({"model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "entropy-sgd",
                               "inner": {"steps": 3}, "train": {"outer_steps": 4, "batch_size": 32}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "services.cli", "run", str(job), "--run-dir", str(run_dir), "--local",
                          "--no-progress", "--flatness"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "flatness: λ_max" in out.stdout
    report = json.loads((run_dir / "flatness.json").read_text())
    assert report["round"] == 4 and len(report["top_eigenvalues"]) == 5
    assert report["top_eigenvalues"][0] >= report["top_eigenvalues"][-1] > -1e-3
    assert 0 <= report["near_zero_fraction"] <= 1 and report["trace"] > 0
    assert (run_dir / "flatness.png").read_bytes()[:4] == b"\x89PNG"
    again = subprocess.run([sys.executable, "-m", "services.cli", "flatness", str(run_dir), "-o", str(tmp_path / "f"),
                            "--eval-samples", "200", "--lanczos-iters", "10"],
                           capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "f" / "flatness.json").read_text())["eval_samples"] == 200
    missing = subprocess.run([sys.executable, "-m", "services.cli", "flatness", str(tmp_path / "nothing-here")],
                             capture_output=True, text=True, timeout=120, env={**env, "ESGD_SERVER": "127.0.0.1:1"},
                             cwd=ROOT)
    assert missing.returncode in (1, 2) and "Traceback" not in missing.stderr


def test_flatness_cost_bench_quick_smoke():
    """bench/flatness_cost.py --quick runs and prints a well-formed summary (no claim about speed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "flatness_cost.py"), "--quick", "--threads", "1"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("mlp on synthetic-256") and "load average" in lines[0]
    assert any(line.startswith("report / epoch: wall ") for line in lines)
    summary = json.loads(lines[-1])
    assert summary["quick"] is True and summary["threads"] == 1
    for key in ("epoch_wall_s", "epoch_cpu_s", "report_wall_s", "report_cpu_s", "ratio_wall", "ratio_cpu"):
        assert isinstance(summary[key], float) and summary[key] > 0, key
    assert summary["ratio_wall"] == summary["report_wall_s"] / summary["epoch_wall_s"]
    assert summary["epoch_steps"] == 8 and summary["hvp_calls"] >= 1
    assert len(summary["loadavg_before"]) == 3 and len(summary["top_eigenvalues"]) == 5
    assert set(summary["report_timings"]) == {"data_s", "graph_s", "lanczos_s", "hutchinson_s", "langevin_s"}
