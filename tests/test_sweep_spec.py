"""The ``sweep:`` section without Ray: expressions, their mapping to Ray Tune's own search
space, and every check that names a path (core/sweep_spec.py)."""
from __future__ import annotations

import pytest

from core.spec import JobSpec, SpecError
from core.sweep_spec import (apply, footprint, num_samples, parse_expr, probe_values, to_tune,
                                    trial_specs, SweepError)

BASE = {"model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "parle", "replicas": 2,
        "train": {"outer_steps": 4}, "resources": {"cpus_per_replica": 0.5}}


def sweep(**section):
    return JobSpec.parse({**BASE, "sweep": {"trials": 4, **section}})


@pytest.mark.parametrize("text, kind, args", [
    ("loguniform(1e-4, 1e-1)", "loguniform", (1e-4, 0.1)),
    ("uniform(0.1, 1)", "uniform", (0.1, 1)),
    (" randint( 2, 9 ) ", "randint", (2, 9)),
    ("choice(5, 10, 20)", "choice", (5, 10, 20)),
    ("grid('sgd', 'adam')", "grid", ("sgd", "adam")),
    ("choice(true)".replace("true", "True"), "choice", (True,)),
])
def test_expressions_parse_to_literals(text, kind, args):
    d = parse_expr("sweep.space.x", text)
    assert (d.kind, d.args) == (kind, args)


@pytest.mark.parametrize("text", ["normal(0, 1)", "uniform(1)", "uniform(1, 0)", "loguniform(0, 1)",
                                  "randint(0.5, 3)", "choice()", "uniform(__import__('os'), 1)", "uniform(0, inf)",
                                  "lambda: 1", "", 3])
def test_bad_expressions_name_the_path(text):
    with pytest.raises(SweepError, match=r"^sweep\.space\.x: "):
        parse_expr("sweep.space.x", text)


def test_the_space_maps_to_tunes_own_search_space():
    from ray.tune.search.sample import Categorical, Float, Integer

    s = sweep(space={"inner.gamma0": "loguniform(1e-4, 1e-1)", "outer.lr": "uniform(0.1, 1)",
                     "inner.steps": "choice(5, 10, 20)", "train.seed": "randint(0, 100)",
                     "elastic.rho0": "grid(0.1, 1.0)"}).sweep
    space = to_tune(s)
    assert isinstance(space["inner.gamma0"], Float) and space["inner.gamma0"].lower == 1e-4
    assert "LogUniform" in type(space["inner.gamma0"].sampler).__name__
    assert isinstance(space["outer.lr"], Float) and isinstance(space["train.seed"], Integer)
    assert isinstance(space["inner.steps"], Categorical) and space["inner.steps"].categories == [5, 10, 20]
    assert space["elastic.rho0"] == {"grid_search": [0.1, 1.0]}
    assert s.grid_size() == 2 and num_samples(s) == 2  # Tune runs the grid once per sample: 2 × 2 = 4 trials


def test_a_trial_spec_is_the_sweeps_with_the_config_applied():
    s = sweep(space={"inner.steps": "choice(5, 10)"})
    trial = apply(s.to_dict(), {"inner.steps": 10, "outer.lr": 0.3})
    assert "sweep" not in trial and trial["inner"]["steps"] == 10 and trial["outer"]["lr"] == 0.3
    assert "sweep" not in s.to_dict()["inner"] and JobSpec.parse(trial).inner.steps == 10
    assert "sweep" not in JobSpec.parse(BASE).to_dict()  # a plain job's dict is unchanged


def test_probe_values_stand_for_the_distribution():
    assert probe_values(parse_expr("p", "randint(2, 9)")) == [2, 8]  # Tune's upper bound is exclusive
    assert probe_values(parse_expr("p", "uniform(1, 2)")) == [1.0, 2.0]
    assert probe_values(parse_expr("p", "choice(1, 'a')")) == [1, "a"]


@pytest.mark.parametrize("section, path", [
    ({"space": {"inner.gamma": "uniform(0, 1)"}}, "sweep.space.inner.gamma"),
    ({"space": {"inner": "choice(1)"}}, "sweep.space.inner"),            # a section, not a field
    ({"space": {"inner.steps": "uniform(1, 5)"}}, "sweep.space.inner.steps"),
    ({"space": {"inner.nesterov": "choice(1, 2)"}}, "sweep.space.inner.nesterov"),
    ({"space": {"inner.optimizer": "choice('sgd', 'lbfgs')"}}, "sweep.space.inner.optimizer"),
    ({"space": {"replicas": "randint(1, 2000)"}}, "sweep.space.replicas"),
    ({"space": {}}, "sweep.space"),
    ({"space": {"sweep.trials": "choice(1)"}}, "sweep.space.sweep.trials"),
    ({"space": {"inner.lr": "uniform(0.1, 1)"}, "trials": 0}, "sweep.trials"),
    ({"space": {"inner.lr": "uniform(0.1, 1)"}, "mode": "best"}, "sweep.mode"),
    ({"space": {"inner.lr": "uniform(0.1, 1)"}, "metric": "accuracy"}, "sweep.metric"),
    ({"space": {"inner.lr": "uniform(0.1, 1)"}, "grace_period": 0}, "sweep.grace_period"),
    ({"space": {"inner.lr": "uniform(0.1, 1)"}, "reduction_factor": 1}, "sweep.reduction_factor"),
    ({"space": {"inner.lr": "uniform(0.1, 1)"}, "extra": 1}, "sweep.extra"),
])
def test_bad_sections_name_the_path(section, path):
    with pytest.raises(SpecError) as err:
        JobSpec.parse({**BASE, "sweep": {"trials": 4, **section}})
    assert err.value.field == path and str(err.value).startswith(path + ":"), str(err.value)


def test_a_value_the_strategy_pins_is_refused():
    with pytest.raises(SpecError) as err:
        JobSpec.parse({**BASE, "strategy": "sgd", "replicas": 1, "sweep": {"space": {"outer.lr": "uniform(0.1, 1)"}}})
    assert err.value.field == "sweep.space.outer.lr" and "strategy sgd runs with outer.lr" in str(err.value)


def test_footprint_is_the_trials_that_run_at_once():
    s = sweep(space={"inner.lr": "uniform(0.1, 1)"})            # a trial: 2 × 0.5 CPU
    assert footprint(s, 4.0) == (4, 4.0, 8)
    assert footprint(s, 2.5) == (2, 2.0, 4)                     # more trials than fit: the rest wait
    assert footprint(s, 0.5) == (1, 1.0, 2)                     # at least one (admission refuses a misfit)
    capped = sweep(space={"inner.lr": "uniform(0.1, 1)"}, max_concurrent=1)
    assert footprint(capped, 16.0) == (1, 1.0, 2)
    wide = sweep(space={"replicas": "choice(1, 4)"})            # the widest trial counts
    assert footprint(wide, 8.0) == (4, 8.0, 16)
    assert sorted({t.replicas for t in trial_specs(wide)}) == [1, 2, 4]
