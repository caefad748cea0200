"""A job's history from hand-written metrics.jsonl records: parsing (resumes, replica failures,
membership changes, torn or broken lines), the figure, and the TensorBoard export read back by
TensorBoard's own reader. No server: the service path is tests/test_history_service.py."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from services.export import scalars, write_tensorboard
from services.history import HistoryError, parse_lines, read_metrics
from services.plot import HISTORY_PANELS, plot_histories


def round_rec(r, k=2, grad_evals=6, nb=10, **extra):
    """A round record as MetricsLog writes it (the engine's keys)."""
    return {"kind": "round", "round": r, "epoch": r / nb, "loss": 2.0 / r, "train_error": 0.5 / r,
            "gamma": 0.01 * 1.1 ** r, "rho": 0.5, "lr": 1.0, "inner_lr": 0.1, "grad_norm": 0.3, "spread": 0.1 * r,
            "round_s": 0.25, "compute_s": 0.2, "comm_s": 0.05, "samples_per_s": 1000.0 + r, "samples": 192,
            "grad_evals": grad_evals, "replica_failures": 0,
            "replicas": [{"replica": i, "loss": 2.0 / r, "compute_s": 0.2, "grad_evals": 3} for i in range(k)], **extra}


def eval_rec(r, nb=10, grad_evals_total=None):
    return {"kind": "eval", "round": r, "epoch": r / nb, "test_loss": 1.5 / r, "test_error": 0.4 / r,
            "grad_evals_total": grad_evals_total if grad_evals_total is not None else 6 * r, "wall_s": 0.25 * r}


def lines(records):
    return [json.dumps(r) + "\n" for r in records]


def eventful():
    """8 rounds on 2 replicas: replica 1 fails and restarts in round 3, a third replica joins at
    round 5 (9 grad evals a round from then), a checkpoint write fails at round 4."""
    recs = [round_rec(1), round_rec(2), eval_rec(2)]
    recs += [{"kind": "failed", "replica": 1, "round": 3, "cause": "ActorDiedError: killed"},
             {"kind": "restarted", "replica": 1, "round": 3, "cause": "ActorDiedError: killed", "replicas": 2},
             round_rec(3, replica_failures=1), round_rec(4), eval_rec(4),
             {"kind": "checkpoint_failed", "round": 4, "path": "/x", "errno": "ENOSPC", "consecutive": 1,
              "fatal": False, "message": "No space left on device; training goes on", "cause": "OSError: ENOSPC"},
             {"kind": "added", "replica": 2, "round": 5, "cause": "scaled from 2 to 3 replicas", "replicas": 3}]
    recs += [round_rec(r, k=3, grad_evals=9) for r in (5, 6, 7, 8)]
    recs += [eval_rec(8, grad_evals_total=4 * 6 + 4 * 9), {"kind": "checkpoint", "round": 8, "path": "/c"}]
    return recs


def test_parse_marks_failures_and_membership_changes_at_their_rounds():
    h = parse_lines(lines(eventful()), "m.jsonl")
    assert [r["round"] for r in h.rounds] == list(range(1, 9)) and [e["round"] for e in h.evals] == [2, 4, 8]
    assert [(e["kind"], e["round"]) for e in h.events] == [("failed", 3), ("restarted", 3),
                                                           ("checkpoint_failed", 4), ("added", 5)]
    xs, kinds, texts = zip(*h.markers("rounds"))
    assert xs == (3.0, 3.0, 4.0, 5.0)
    assert "replica 1 failed: ActorDiedError: killed" in texts[0] and "No space left" in texts[2]
    assert h.series("replicas")[1] == [2, 2, 2, 2, 3, 3, 3, 3]
    # epochs and gradient evaluations: the round's own epoch; the cumulative grad evals (9 a round once K = 3)
    assert [x for x, _, _ in h.markers("epochs")] == [0.3, 0.3, 0.4, 0.5]
    assert [x for x, _, _ in h.markers("grad-evals")] == [18.0, 18.0, 24.0, 33.0]
    assert h.series("test_error", "grad-evals") == ([12.0, 24.0, 60.0], [0.2, 0.1, 0.05])
    assert h.series("test_error", "grad-evals")[0][-1] == h.evals[-1]["grad_evals_total"]  # agrees with the engine


def test_a_resume_cuts_the_abandoned_rounds_and_is_marked():
    """Rounds 5–6 ran, the server died, the job resumed from the round-4 checkpoint: the second
    copies of 5–6 are the history; the first are dropped (with their evaluation)."""
    first = [round_rec(r) for r in range(1, 5)] + [eval_rec(4), {"kind": "checkpoint", "round": 4, "path": "/c"}]
    abandoned = [round_rec(5), round_rec(6, loss=99.0), eval_rec(6)]
    resumed = [round_rec(5), round_rec(6), round_rec(7)]
    h = parse_lines(lines(first + abandoned + resumed), "m.jsonl")
    assert [r["round"] for r in h.rounds] == [1, 2, 3, 4, 5, 6, 7]
    assert 99.0 not in h.series("loss")[1] and [e["round"] for e in h.evals] == [4]
    assert [(e["kind"], e["round"]) for e in h.events] == [("resumed", 4)]


def test_a_torn_last_line_is_skipped_but_a_broken_line_is_an_error_naming_file_and_line(tmp_path):
    text = "".join(lines([round_rec(1), round_rec(2)])) + '{"kind": "round", "rou'
    assert [r["round"] for r in parse_lines(text.splitlines(keepends=True), "m").rounds] == [1, 2]
    broken = "".join(lines([round_rec(1)])) + "not json\n" + "".join(lines([round_rec(2)]))
    with pytest.raises(HistoryError, match=r"m\.jsonl, line 2: not JSON"):
        parse_lines(broken.splitlines(keepends=True), "m.jsonl")
    with pytest.raises(HistoryError, match=r"line 1: a round record without an integer 'round'"):
        parse_lines(['{"kind": "round", "round": "1"}\n'], "m.jsonl")
    newer = parse_lines(lines([round_rec(1), {"kind": "log", "line": "hi"}]), "m")  # a newer writer's kind
    assert len(newer.rounds) == 1
    empty = tmp_path / "metrics.jsonl"
    empty.write_text("")
    with pytest.raises(HistoryError, match=f"{empty}: no rounds recorded yet"):
        read_metrics(empty)
    with pytest.raises(HistoryError, match="cannot read it"):
        read_metrics(tmp_path / "missing.jsonl")
    with pytest.raises(HistoryError, match="--x: must be one of rounds, epochs, grad-evals"):
        parse_lines(lines([round_rec(1)]), "m").series("loss", "seconds")


def test_the_figure_draws_every_panel_and_marks_the_events(tmp_path):
    a = parse_lines(lines(eventful()), "a")
    b = parse_lines(lines([round_rec(r, rho=None) for r in range(1, 9)] + [eval_rec(8)]), "b")  # no ρ: not Parle
    a.label, a.meta = "aaa · esgd (parle)", {"name": "esgd", "strategy": "parle", "model": "mlp",
                                              "dataset": "synthetic", "replicas": 2}
    b.label, b.meta = "bbb · sgd (entropy-sgd)", {"name": "sgd"}
    for axis in ("rounds", "epochs", "grad-evals"):
        out = tmp_path / f"{axis}.png"
        info = plot_histories([a, b], axis, str(out))
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 50_000
        assert info["events"] == 4
        # both jobs in every panel, both series where both are recorded; ρ only for the Parle job
        assert info["panels"] == {title: 2 * len(series) - (title == "Coupling γ and ρ") for title, _, _, series
                                  in HISTORY_PANELS}
    pdf = tmp_path / "one.pdf"
    plot_histories([a], "rounds", str(pdf))
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_tensorboard_files_read_back_equal_the_records(tmp_path):
    """TensorBoard's own reader (EventAccumulator) sees every value of metrics.jsonl at its step
    (float32, as TensorBoard stores scalars), and the events as text."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    h = parse_lines(lines(eventful()), "m")
    for axis in ("rounds", "grad-evals"):
        info = write_tensorboard(h, tmp_path / axis, axis, start_time=1_700_000_000.0, spec_text="name: x")
        acc = EventAccumulator(str(tmp_path / axis), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        want = {}
        for tag, step, value in scalars(h, axis):
            want.setdefault(tag, []).append((step, value))
        assert set(acc.Tags()["scalars"]) == set(want) and info["scalars"] == sum(map(len, want.values()))
        for tag, points in want.items():
            got = [(e.step, e.value) for e in acc.Scalars(tag)]
            assert got == [(s, float(np.float32(v))) for s, v in points], tag
        steps = [s for s, _ in want["train/loss"]]
        assert steps == ([r["round"] for r in h.rounds] if axis == "rounds" else
                         list(np.cumsum([r["grad_evals"] for r in h.rounds])))
        assert [v for _, v in want["test/error"]] == [e["test_error"] for e in h.evals]
        walls = [e.wall_time for e in acc.Scalars("train/loss")]
        assert walls == pytest.approx([1_700_000_000.0 + 0.25 * r for r in range(1, 9)])
        assert "events" in "".join(acc.Tags()["tensors"]) and info["events"] == 4
    with pytest.raises(HistoryError, match="already holds event files"):
        write_tensorboard(h, tmp_path / "rounds")
    with pytest.raises(HistoryError, match="--x: TensorBoard steps are integers"):
        scalars(h, "epochs")
    assert not any(math.isnan(v) for _, _, v in scalars(h))
