"""A job's history as series: ``metrics.jsonl`` parsed into rounds, evaluations and marked events.

``metrics.jsonl`` (coordinator.rundir.MetricsLog) is the run's own record, one JSON object a line
with a ``kind``: ``round``, ``eval``, ``checkpoint``, ``checkpoint_failed`` and ``replica`` (whose
own ``kind`` — failed, restarted, added, removed or scale_failed, see core.events.ReplicaEvent —
overwrites it, so those are the kinds a line carries), under the run directory's names
(core.events.record).
It holds every round, so plots and exports need no Prometheus; the functions here are pure
(records in, numbers out) so ``esgd plot`` and ``esgd export`` can be tested on hand-written records.

A resumed job (server restart, ``esgd run --resume``) appends the rounds after its last
checkpoint again: the engine rewinds to the checkpoint. The first copies are an abandoned
timeline, so a round number that goes back cuts the history there (later records win) and the
cut is marked ``resumed``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from core.spec import SpecError

# --x values → what each is called on an axis
X_AXES = {"rounds": "outer round", "epochs": "effective epochs (training-set passes)",
          "grad-evals": "gradient evaluations (all replicas)"}
# the marked events: replica record kinds plus the two derived here; failures first
REPLICA_KINDS = ("failed", "restarted", "added", "removed", "scale_failed")
FAILURES = ("failed", "checkpoint_failed", "scale_failed")
MEMBERSHIP = ("added", "removed", "restarted")
EVENT_KINDS = FAILURES + MEMBERSHIP + ("resumed",)


class HistoryError(SpecError):
    """metrics.jsonl that cannot be read, or holds no round yet (a bad input: exit 2)."""

    def __init__(self, message: str, field: str = "metrics.jsonl"):
        super().__init__(message, field)


@dataclass
class History:
    """One job's records, with the abandoned timelines of resumes removed.

    ``rounds``/``evals``: the records in round order. ``events``: replica changes, failed
    checkpoints and resumes, each ``{"kind", "round", "replica", "cause", ...}``. ``label``: the
    legend entry (job id and spec name); ``meta``: the spec's name, strategy, model, dataset."""

    rounds: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    label: str = ""
    meta: dict = field(default_factory=dict)

    def x_of(self, rnd: int, axis: str) -> float:
        """Where round ``rnd`` (rounds completed) lies on ``axis``; NaN for a round not recorded."""
        if axis not in X_AXES:
            raise HistoryError(f"--x: must be one of {', '.join(X_AXES)}; got {axis!r}", "--x")
        if axis == "rounds":
            return float(rnd)
        return self._index(axis).get(rnd, math.nan)

    def _index(self, axis: str) -> dict[int, float]:
        key = f"_idx_{axis}"
        if key not in self.__dict__:
            idx, total = {0: 0.0}, 0
            for r in self.rounds:
                total += int(r.get("grad_evals") or 0)
                idx[r["round"]] = float(r.get("epoch", math.nan)) if axis == "epochs" else float(total)
            for e in self.evals:  # a round with no round record (the history starts mid-run): the eval's own
                own = e.get("epoch") if axis == "epochs" else e.get("grad_evals_total")
                if e["round"] not in idx and own is not None:
                    idx[e["round"]] = float(own)
            self.__dict__[key] = idx
        return self.__dict__[key]

    def series(self, name: str, axis: str = "rounds") -> tuple[list[float], list[float]]:
        """(x, y) of one quantity: a round record key (``loss``, ``gamma``, ``spread``, …, or
        ``replicas`` for the replica count), or ``test_loss``/``test_error`` from evaluations.
        Records without the key (ρ in a non-Parle job) are skipped."""
        source = self.evals if name in ("test_loss", "test_error") else self.rounds
        xs, ys = [], []
        for rec in source:
            value = len(rec["replicas"]) if name == "replicas" and isinstance(rec.get("replicas"), list) \
                else rec.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                x = self.x_of(rec["round"], axis)
                if not math.isnan(x):
                    xs.append(x)
                    ys.append(float(value))
        return xs, ys

    def markers(self, axis: str = "rounds") -> list[tuple[float, str, str]]:
        """(x, kind, text) for each marked event, in order."""
        out = []
        for ev in self.events:
            x = self.x_of(ev["round"], axis)
            who = f"replica {ev['replica']} " if isinstance(ev.get("replica"), int) and ev["replica"] >= 0 else ""
            out.append((x, ev["kind"], f"round {ev['round']}: {who}{ev['kind']}: {ev.get('cause', '')}".rstrip(": ")))
        return out


def parse_lines(lines, source: str) -> History:
    """Parse ``metrics.jsonl`` lines (str) into a :class:`History`.

    ``source`` names the file in errors. A last line cut short (a download racing a write) is
    skipped, and so is a record of a kind this client does not know; any other line that is not
    such a record (with an integer ``round``) is an error naming ``source`` and the line number."""
    lines = list(lines)
    h = History()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines) and not line.endswith("\n"):
                break  # torn tail: the writer appends whole lines, the reader may be early
            raise HistoryError(f"{source}, line {n}: not JSON ({exc.msg} at column {exc.colno})") from None
        kind = rec.get("kind") if isinstance(rec, dict) else None
        if kind not in _COLLECT:
            if isinstance(rec, dict) and isinstance(kind, str):
                continue  # a kind from a newer writer: skipped, so older clients still draw what they know
            raise HistoryError(f"{source}, line {n}: expected a record with a 'kind', got {line[:80]!r}")
        if not isinstance(rec.get("round"), int) or isinstance(rec["round"], bool):
            raise HistoryError(f"{source}, line {n}: a {kind} record without an integer 'round': {line[:80]!r}")
        _COLLECT[kind](h, rec)
    return h


def _round(h: History, rec: dict) -> None:
    if h.rounds and rec["round"] <= h.rounds[-1]["round"]:
        _rewind(h, rec["round"])
    h.rounds.append(rec)


# a line's kind → where it goes in the History (MetricsLog writes a replica event with its own kind)
_COLLECT = {"round": _round, "eval": lambda h, rec: h.evals.append(rec),
            "checkpoint": lambda h, rec: h.checkpoints.append(rec),
            "checkpoint_failed": lambda h, rec: h.events.append(
                {**rec, "replica": -1, "cause": rec.get("message") or rec.get("cause", "")}),
            **{kind: lambda h, rec: h.events.append(rec) for kind in REPLICA_KINDS}}


def _rewind(h: History, rnd: int) -> None:
    """A resume restarted at round ``rnd``: drop the abandoned records from ``rnd`` on and mark it."""
    h.rounds = [r for r in h.rounds if r["round"] < rnd]
    h.evals = [e for e in h.evals if e["round"] < rnd]
    h.checkpoints = [c for c in h.checkpoints if c["round"] < rnd]
    h.events = [e for e in h.events if e["round"] < rnd]
    h.events.append({"kind": "resumed", "round": rnd - 1, "replica": -1,
                     "cause": f"resumed from the checkpoint of round {rnd - 1}"})


def read_metrics(path: str | Path, source: str | None = None, require_rounds: bool = True) -> History:
    """Parse a ``metrics.jsonl`` file; errors name ``source`` (default: the path). With
    ``require_rounds``, a file with no round yet (a job still starting) is an error too."""
    source = source or str(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            history = parse_lines(f, source)
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryError(f"{source}: cannot read it: {exc}") from None
    if require_rounds and not history.rounds:
        raise HistoryError(f"{source}: no rounds recorded yet: nothing to draw")
    return history


def describe_spec(spec: dict) -> dict:
    """The parts of a (resolved) spec dict that titles and legends show."""
    ds = spec.get("dataset") or {}
    return {"name": spec.get("name") or "", "strategy": spec.get("strategy") or "", "model": spec.get("model") or "",
            "dataset": ds.get("name", "") if isinstance(ds, dict) else str(ds), "replicas": spec.get("replicas")}
