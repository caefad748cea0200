"""bench/scaling.py --quick runs end to end on real Ray actors and prints a well-formed table.

Only the shape of the output is checked: a smoke run's throughput means nothing.
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [("sgd", "1"), ("entropy-sgd", "1"), ("entropy-sgd", "2"), ("entropy-sgd", "4"),
           ("parle", "1"), ("parle", "2"), ("parle", "4")]


def test_scaling_bench_quick_prints_one_well_formed_row_per_configuration():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scaling.py"), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    comments = [line for line in lines if line.startswith("#")]
    assert lines[0].startswith("# scaling:") and "--quick" in lines[0]
    machine = next(line for line in comments if line.startswith("# machine:"))
    assert all(word in machine for word in ("CPUs", "torch", "ray", "CUDA", "load average"))
    assert any(line.startswith("# command:") and "scaling.py --quick" in line for line in comments)
    assert any(line.startswith("# load average (1 min): start") for line in comments)

    table = [line for line in lines if line.startswith("|")]
    header, rule, rows = table[0], table[1], table[2:]
    assert header.startswith("| strategy | K |") and "samples/s" in header and "goal" in header
    assert set(rule.replace("|", "")) == {"-"}
    width = header.count("|")
    assert rule.count("|") == width and all(row.count("|") == width for row in rows)
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [(c[0], c[1]) for c in cells] == CONFIGS
    for c in cells:
        float(c[3].replace(",", ""))  # samples/s is a number
        assert c[-1].startswith(("met", "not met"))
