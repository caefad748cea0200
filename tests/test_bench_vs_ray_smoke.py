"""bench/vs_ray_train.py --quick runs all four systems (Ray Train DDP included) and prints a
well-formed table with one row per system. It checks the shape of the report, never speed."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ["ray-train-ddp", "parle", "entropy-sgd", "sgd"]



@pytest.mark.slow
def test_vs_ray_train_quick_prints_one_row_per_system():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "vs_ray_train.py"), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("#") and "load average at start" in lines[0] and "torch" in lines[0]
    header = next(line for line in lines if line.startswith("| system"))
    assert lines[lines.index(header) + 1].startswith("|---")
    rows = [line for line in lines if line.startswith("| ") and line != header]
    assert [r.split("|")[1].strip() for r in rows] == SYSTEMS
    columns = [c.strip() for c in header.strip("|").split("|")]
    for r in rows:
        cells = dict(zip(columns, (c.strip() for c in r.strip("|").split("|")), strict=True))
        assert 0.0 <= float(cells["final error % (full test)"]) <= 100.0
        assert float(cells["train s"]) > 0 and int(cells["grad evals"].replace(",", "")) > 0
        reached = next(c for c in columns if c.startswith("s to "))
        assert cells[reached] == "not reached" or float(cells[reached]) > 0
        # only single-process SGD communicates nothing
        assert (float(cells["MB total"]) == 0) == (cells["system"] == "sgd")
    assert any(line.startswith("# load average at end") for line in lines)
