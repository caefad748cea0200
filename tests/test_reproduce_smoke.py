"""esgd reproduce table1 / flatness in smoke mode: the commands run end to end and write a
Markdown table with one mean ± std row per model × method and a valid PNG. Accuracy and speed
are not asserted (smoke runs are seconds long)."""
import os
import re
import struct
import subprocess
import sys

import pytest

from reproduce.presets import FLATNESS_METHODS, METHOD_LABELS, METHODS, MODES, TABLE1_MODELS, budget, job_spec
from tests.service_harness import ROOT

PM = r"-?\d+\.\d+ ± \d+\.\d+"


def _esgd(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "services.cli", "reproduce", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    assert b"IEND" in data[-12:]


def _rows(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("| ") and not line.startswith("| model") and not line.startswith("| method")]


def test_table1_smoke(tmp_path):
    out = tmp_path / "t1"
    proc = _esgd("table1", "--smoke", "--local", "--threads", "1", "--seeds", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "table1.md").read_text()
    rows = _rows(md)
    assert len(rows) == len(TABLE1_MODELS) * len(METHODS)
    seen = {(r[0], r[1]) for r in rows}
    assert seen == {(m, METHOD_LABELS[s]) for m in TABLE1_MODELS for s in METHODS}
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    cols = [c.strip() for c in header.strip().strip("|").split("|")]
    err, ppl, wall = cols.index("test error (%)"), cols.index("perplexity"), cols.index("wall (s)")
    for r in rows:
        assert re.fullmatch(PM, r[err]), r
        assert re.fullmatch(PM, r[wall]), r
        if r[0] == "char-lstm":
            assert re.fullmatch(PM, r[ppl]), r
    # equal compute: the same effective epochs in every row of a model
    eff = cols.index("effective epochs")
    for model in TABLE1_MODELS:
        assert len({r[eff] for r in rows if r[0] == model}) == 1
    assert md in proc.stdout
    _assert_png(out / "table1.png")
    assert (out / "table1.json").exists()
    # a second invocation reuses the finished runs
    again = _esgd("table1", "--smoke", "--local", "--threads", "1", "--seeds", "2", "--out", str(out),
                  "--models", "lenet", "--methods", "sgd")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(reused)" in again.stdout


def test_flatness_smoke_on_ray(tmp_path):
    out = tmp_path / "fl"
    proc = _esgd("flatness", "--smoke", "--num-cpus", "2", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "flatness.md").read_text()
    rows = _rows(md)
    assert [r[0] for r in rows] == [METHOD_LABELS[m] for m in FLATNESS_METHODS]
    for r in rows:
        assert all(c and c != "nan" for c in r), r
    _assert_png(out / "flatness.png")
    for m in FLATNESS_METHODS:
        assert (out / m / "seed0" / "flatness.json").exists()


@pytest.mark.parametrize("argv", [
    ["table1", "--models", "resnet"],
    ["table1", "--methods", "adam"],
    ["table1", "--quick", "--smoke"],
    ["table1", "--mode", "huge"],
    ["table1", "--seeds", "0"],
    ["flatness", "--methods", "elastic-sgd"],
    ["nothing"],
])
def test_bad_flags_are_rejected_by_argparse(argv, capsys):
    from services.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["reproduce", *argv])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", TABLE1_MODELS)
def test_budgets_are_equal_across_methods(model, mode):
    b = budget(model, mode)
    per_replica = set()
    for method in METHODS:
        spec = job_spec(model, method, 0, b, cpus=2)
        per_replica.add(spec.train.epochs * spec.inner.steps)  # engine epochs × L = passes per replica
        assert spec.replicas * spec.resources.cpus_per_replica <= 2
    assert per_replica == {float(b.effective_epochs)}


def test_study_smoke(tmp_path):
    """esgd reproduce study end to end: a sweep through coordinator.sweep (Ray Tune), final
    seeds, flatness, the table and the figure; then a rerun reuses everything. (The verdicts
    between methods are unit-tested in tests/test_study.py.)"""
    import json

    out = tmp_path / "study"
    args = ("study", "--smoke", "--trials", "2", "--seeds", "2", "--regimes", "noisy", "--methods", "sgd",
            "--out", str(out))
    proc = _esgd(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "study.md").read_text()
    rows = _rows(md)
    assert [r[0] for r in rows] == ["SGD (K=1)"]
    assert "inner.lr=" in rows[0][1] and re.fullmatch(PM, rows[0][2]) and re.fullmatch(PM, rows[0][3]), rows
    _assert_png(out / "study.png")
    study = json.loads((out / "study.json").read_text())
    sgd = study["regimes"]["noisy"]["sgd"]
    assert len(sgd["sweep"]["trials"]) == 2 and len(sgd["final_errors"]) == 2
    spec = json.loads((out / "noisy" / "sgd" / "sweep" / "sweep.json").read_text())["spec"]
    assert spec["dataset"]["label_noise"] == 0.2 and spec["sweep"]["scheduler"] == "asha"
    again = _esgd(*args)  # resumable: finished sweeps and runs are reused, not run again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused" in again.stdout + again.stderr
    assert (out / "study.md").read_text().split("\n", 1)[1] == md.split("\n", 1)[1]
