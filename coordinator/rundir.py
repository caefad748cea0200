"""A run directory: what a job leaves behind for its user.

    run_dir/spec.yaml         the resolved job spec (strategy-pinned values filled in)
    run_dir/metrics.jsonl     one JSON object per round ("kind": "round") and evaluation ("eval")
    run_dir/checkpoints/      ckpt-NNNNNNNN.pt (+ .sha256): torch.load-able, atomic, pruned
    run_dir/summary.json      final test error, wall time, gradient evaluations, data passes
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from coordinator.spec import JobSpec, SpecError

# fields that may differ between a run and its resumption (extending the budget)
_RESUMABLE_CHANGES = {"train.epochs", "train.outer_steps", "train.eval_every", "checkpoint.every",
                      "checkpoint.keep_last"}


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.metrics_path = self.path / "metrics.jsonl"
        self.spec_path = self.path / "spec.yaml"
        self.summary_path = self.path / "summary.json"

    def prepare(self, spec: JobSpec, resume: bool) -> None:
        """Create the directory and write the spec; refuse to mix two different jobs."""
        self.path.mkdir(parents=True, exist_ok=True)
        if resume and self.spec_path.exists():
            old = JobSpec.parse(yaml.safe_load(self.spec_path.read_text()))
            changed = _diff(old.to_dict(), spec.resolved().to_dict()) - _RESUMABLE_CHANGES
            if changed:
                raise SpecError(f"{sorted(changed)[0]}: differs from the run being resumed in {self.path} "
                                f"(changed: {', '.join(sorted(changed))})", sorted(changed)[0])
        elif not resume and self.metrics_path.exists():
            raise SpecError(f"run directory {self.path} already holds a run: pass --resume to continue it "
                            "or choose another --run-dir", "run_dir")
        self.write_text(self.spec_path, yaml.safe_dump(spec.resolved().to_dict(), sort_keys=False))

    def write_text(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def write_summary(self, summary: dict) -> None:
        self.write_text(self.summary_path, json.dumps(summary, indent=2) + "\n")


class MetricsLog:
    """Engine listener appending rounds and evaluations to ``metrics.jsonl``."""

    def __init__(self, run_dir: RunDir):
        self._f = open(run_dir.metrics_path, "a", buffering=1)

    def on_round(self, record: dict) -> None:
        self._f.write(json.dumps({"kind": "round", **record}) + "\n")

    def on_eval(self, record: dict) -> None:
        self._f.write(json.dumps({"kind": "eval", **record}) + "\n")

    def on_checkpoint(self, path: Path, step: int) -> None:
        self._f.write(json.dumps({"kind": "checkpoint", "round": step, "path": str(path)}) + "\n")

    def on_replica(self, record: dict) -> None:
        self._f.write(json.dumps({"kind": "replica", **record}) + "\n")

    def close(self) -> None:
        self._f.close()


def _diff(a: dict, b: dict, prefix: str = "") -> set[str]:
    out = set()
    for key in set(a) | set(b):
        name = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out |= _diff(va, vb, name + ".")
        elif va != vb:
            out.add(name)
    return out
