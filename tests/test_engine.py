"""The round loop, strategies, streams, checkpoints and resume, on in-process replicas."""
import json

import numpy as np
import pytest
import torch

from coordinator.checkpoint import list_checkpoints, load_latest, save_checkpoint
from coordinator.local_run import run_job
from coordinator.strategies.base import RoundResult
from coordinator.strategies.entropy_sgd import EntropySGD
from worker.data.stream import BatchStream
from tests.helpers import local_engine, spec_of


def test_streams_are_seeded_independent_and_cover_the_data():
    a = BatchStream(100, 10, seed=1, replica=0)
    b = BatchStream(100, 10, seed=1, replica=1)
    again = BatchStream(100, 10, seed=1, replica=0)
    first_pass = np.concatenate([a.next() for _ in range(10)])
    assert sorted(first_pass) == list(range(100))  # one pass = a permutation
    assert not np.array_equal(first_pass, np.concatenate([b.next() for _ in range(10)]))
    assert np.array_equal(first_pass, np.concatenate([again.next() for _ in range(10)]))
    assert not np.array_equal(a.next(), first_pass[:10])  # a new permutation each pass
    resumed = BatchStream(100, 10, seed=1, replica=0)
    resumed.drawn = a.drawn
    assert np.array_equal(resumed.next(), a.next())


def test_data_fraction_shards():
    s = BatchStream(1000, 10, seed=0, replica=0, fraction=0.25)
    t = BatchStream(1000, 10, seed=0, replica=1, fraction=0.25)
    seen = np.concatenate([s.next() for _ in range(s.batches_per_pass)])
    assert len(set(seen)) == 250 and s.batches_per_pass == 25
    assert set(seen) != set(np.concatenate([t.next() for _ in range(t.batches_per_pass)]))


def test_batchnorm_buffers_are_the_mean_of_the_replicas():
    P, B = 3, 2
    strat = EntropySGD(spec_of(replicas=2), torch.zeros(P + B), P)
    r0 = RoundResult(0, np.array([1, 1, 1, 10, 20], dtype=np.float32))
    r1 = RoundResult(1, np.array([3, 3, 3, 30, 40], dtype=np.float32))
    stats = strat.aggregate(0, [r0, r1])
    torch.testing.assert_close(strat.reference()[P:], torch.tensor([20.0, 30.0]))
    torch.testing.assert_close(strat.reference()[:P], torch.full((P,), 2.0))  # lr 1: x ← μ̄
    assert stats["grad_norm"] == pytest.approx(np.sqrt(12))


def test_one_round_costs_l_gradient_evaluations_per_replica():
    eng = local_engine(spec_of(strategy="parle", replicas=2, inner={"steps": 7}))
    rec = eng.step()
    assert eng.counters["grad_evals"] == 14 and [r["grad_evals"] for r in rec["replicas"]] == [7, 7]
    assert eng.counters["samples"] == 14 * 32
    assert rec["gamma"] == pytest.approx(1e-4) and eng.step()["gamma"] == pytest.approx(1e-4 * 1.001)


def test_lr_schedule_in_epochs():
    eng = local_engine(spec_of(outer={"milestones": [1.0, 2.0], "lr_factor": 0.5}, train={"epochs": 3, "outer_steps": None}))
    nb = eng.nb
    assert eng.total == 3 * nb
    assert [eng.lr_factor(t) for t in (0, nb - 1, nb, 2 * nb)] == [1.0, 1.0, 0.5, 0.25]


def test_checkpoint_is_atomic_checksummed_pruned_and_plain_torch_loadable(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, {"model": {"w": torch.ones(2) * step}}, keep_last=3)
    files = list_checkpoints(tmp_path)
    assert [f.name for f in files] == ["ckpt-00000003.pt", "ckpt-00000004.pt", "ckpt-00000005.pt"]
    assert torch.load(files[-1])["model"]["w"][0] == 5  # weights_only default
    files[-1].write_bytes(files[-1].read_bytes()[:50])  # torn write
    path, ckpt = load_latest(tmp_path)
    assert path == files[-2] and ckpt["step"] == 4
    assert not list(tmp_path.glob(".*tmp*"))


def test_resume_continues_exactly(tmp_path):
    spec = spec_of(strategy="parle", replicas=2,
                   inner={"steps": 3, "momentum": 0.9, "noise": 1e-3, "gamma1": 0.1},
                   outer={"momentum": 0.5, "lr": 0.5}, train={"outer_steps": 8, "eval_every": 4})
    straight = run_job(spec, tmp_path / "a", local=True, progress=False)
    half = spec.replace(train={"outer_steps": 4})
    run_job(half, tmp_path / "b", local=True, progress=False)
    resumed = run_job(spec, tmp_path / "b", resume=True, local=True, progress=False)
    assert resumed["rounds"] == 8 and resumed["grad_evals_total"] == straight["grad_evals_total"]
    a = torch.load(list_checkpoints(tmp_path / "a" / "checkpoints")[-1])
    b = torch.load(list_checkpoints(tmp_path / "b" / "checkpoints")[-1])
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k])
    assert resumed["test_error"] == straight["test_error"]
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines if r["kind"] == "round"] == list(range(1, 9))


def test_run_dir_refuses_to_mix_jobs(tmp_path):
    from core.spec import SpecError

    spec = spec_of(train={"outer_steps": 2})
    run_job(spec, tmp_path, local=True, progress=False)
    with pytest.raises(SpecError, match="--resume"):
        run_job(spec, tmp_path, local=True, progress=False)
    with pytest.raises(SpecError, match="inner.lr"):
        run_job(spec.replace(inner={"lr": 0.01}), tmp_path, resume=True, local=True, progress=False)


def test_checkpoint_model_loads_into_a_fresh_model(tmp_path):
    from coordinator.evaluate import initial_model
    from tests.helpers import synthetic

    spec = spec_of(train={"outer_steps": 3})
    summary = run_job(spec, tmp_path, local=True, progress=False)
    ckpt = torch.load(list_checkpoints(tmp_path / "checkpoints")[-1])
    model = initial_model(spec, synthetic())
    model.load_state_dict(ckpt["model"])
    assert ckpt["round"] == 3 and summary["rounds"] == 3
    saved = json.loads((tmp_path / "summary.json").read_text())
    for key in ("test_error", "wall_s", "grad_evals_total", "data_passes_per_replica"):
        assert key in saved
