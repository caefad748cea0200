"""reproduce.study's pure parts: the comparison, the running best, the specs it sweeps."""
from __future__ import annotations

import math

import pytest

from core.spec import JobSpec
from reproduce.study import (METHODS, REGIMES, SPACES, apply_config, base_spec, beats, best_so_far, sweep_spec,
                             verdicts)


def test_beats_needs_more_than_two_standard_errors():
    assert beats([0.10, 0.11, 0.10], [0.15, 0.16, 0.15])           # far apart, tight
    assert not beats([0.10, 0.14, 0.18], [0.15, 0.16, 0.17])       # lower mean, but within the noise
    assert not beats([0.15, 0.16, 0.15], [0.10, 0.11, 0.10])       # worse
    assert not beats([0.10], [0.15, 0.16])                          # one seed: no standard deviation


def test_best_so_far_skips_failed_trials():
    assert best_so_far([0.3, math.nan, 0.2, 0.25]) == [0.3, 0.3, 0.2, 0.2]
    assert math.isnan(best_so_far([math.nan, 0.4])[0])


def test_verdicts_name_each_local_entropy_method_against_sgd():
    rows = {"sgd": {"final_errors": [0.15, 0.16, 0.15]}, "entropy-sgd": {"final_errors": [0.10, 0.11, 0.10]},
            "parle": {"final_errors": [0.16, 0.17, 0.16]}}
    assert verdicts({"regimes": {"small": rows}}) == [
        "small: Entropy-SGD beats tuned SGD by more than 2 standard deviations",
        "small: Parle does not beat tuned SGD by more than 2 standard deviations"]


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("method", METHODS)
def test_every_sweep_and_its_best_config_are_valid_specs_at_equal_budget(regime, method):
    spec = sweep_spec(REGIMES[regime], method, trials=6, grace=5.0)
    parsed = JobSpec.parse(spec)  # the sweep section too: every space point is checked against the spec
    assert set(parsed.sweep.space) == set(SPACES[method]) and parsed.sweep.trials == 6
    assert parsed.dataset.label_noise == REGIMES[regime].label_noise
    low = {k: float(v.split("(")[1].split(",")[0]) for k, v in SPACES[method].items()}
    final = JobSpec.parse(apply_config(base_spec(REGIMES[regime], method, seed=2), low))
    assert final.train.seed == 2 and final.inner.lr == low["inner.lr"]
    # equal gradient evaluations per replica: effective epochs × batches per pass, whatever L
    b = REGIMES[regime].budget
    nb = b.train_subset // b.batch_size
    assert final.train.epochs * final.inner.steps * nb == b.effective_epochs * nb
