"""An interrupted sweep goes on where it stopped (coordinator.sweep.run_sweep(resume=True)).

A sweep of 3 trials, one at a time, runs in its own process with its own embedded Ray; it gets
SIGINT (Ctrl-C) as soon as its first trial has finished. A second process resumes it: the
finished trial is kept and not started again, the others run (the interrupted one from its
newest checkpoint), and every trial's metrics.jsonl records each round exactly once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DRIVER = r"""
import json, sys
from coordinator.cluster import connect
from core.spec import JobSpec
from coordinator.sweep import run_sweep
storage, resume, spec = sys.argv[1], sys.argv[2] == "1", json.loads(sys.argv[3])
connect(num_cpus=2, object_store_mb=256)
started = []
out = run_sweep(JobSpec.parse(spec), storage, trial_root=storage + "/trials", resume=resume,
                sink=lambda kind, p: kind == "trial_start" and started.append(p["trial_id"]))
print("RESULT " + json.dumps({"trials": [[t.trial_id, t.state, t.value] for t in out["trials"]],
                              "started": started}), flush=True)
"""
SPEC = {"name": "resume", "model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "sgd", "replicas": 1,
        "inner": {"steps": 2}, "resources": {"cpus_per_replica": 1},
        "train": {"epochs": 3, "batch_size": 256, "eval_every": 4},  # 8 rounds an epoch
        "checkpoint": {"every": 4},
        "sweep": {"space": {"inner.lr": "choice(0.05, 0.1, 0.2)"}, "trials": 3, "scheduler": "none",
                  "max_concurrent": 1, "seed": 3}}


def _driver(storage: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0",
           "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(storage), "1" if resume else "0", json.dumps(SPEC)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def _result(proc: subprocess.Popen, timeout: float) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, out[-4000:]
    return json.loads(line[len("RESULT "):])


def test_an_interrupted_sweep_keeps_its_finished_trials_and_runs_the_rest(tmp_path):
    storage = tmp_path / "sweep"
    first = _driver(storage, resume=False)
    record = storage / "trials.jsonl"
    deadline = time.monotonic() + 300
    while not (record.exists() and record.read_text().strip()):
        assert first.poll() is None, first.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "the first trial never finished"
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves the experiment and returns
    interrupted = _result(first, timeout=180)
    done = [tid for tid, state, _ in interrupted["trials"] if state == "SUCCEEDED"]
    assert 1 <= len(done) < 3, interrupted

    resumed = _result(_driver(storage, resume=True), timeout=400)
    ids = [tid for tid, _, _ in resumed["trials"]]
    assert len(ids) == 3 and len(set(ids)) == 3, resumed
    assert all(state == "SUCCEEDED" for _, state, _ in resumed["trials"]), resumed
    assert not set(done) & set(resumed["started"]), "a finished trial was run again"
    kept = {tid: value for tid, _, value in interrupted["trials"] if tid in done}
    assert {tid: v for tid, _, v in resumed["trials"] if tid in kept} == kept
    for tid in ids:  # 24 rounds, each recorded once, whether a trial ran once or went on after the interruption
        records = [json.loads(ln) for ln in (storage / "trials" / tid / "metrics.jsonl").read_text().splitlines()]
        rounds = [r["round"] for r in records if r.get("kind") == "round"]
        assert rounds == list(range(1, 25)), (tid, rounds)
