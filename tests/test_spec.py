"""The job spec: one frozen, validated object; every error names its field."""
import math

import pytest

from core.spec import JobSpec, SpecError
from services.cli_common import load_spec


@pytest.mark.parametrize("data,field", [
    ({"inner": {"lr": -0.1}}, "inner.lr"),
    ({"inner": {"lr": 0}}, "inner.lr"),
    ({"inner": {"noise": math.nan}}, "inner.noise"),
    ({"inner": {"alpha": math.inf}}, "inner.alpha"),
    ({"inner": {"steps": 0}}, "inner.steps"),
    ({"inner": {"steps": "20"}}, "inner.steps"),
    ({"replicas": -2}, "replicas"),
    ({"replicas": 2.5}, "replicas"),
    ({"unknown_key": 1}, "unknown_key"),
    ({"inner": {"lr_typo": 1}}, "inner.lr_typo"),
    ({"model": "resnet9000"}, "model"),
    ({"dataset": {"name": "imagenet"}}, "dataset.name"),
    ({"dataset": {"fraction": 0}}, "dataset.fraction"),
    ({"strategy": "adam"}, "strategy"),
    ({"train": {"epochs": 1, "outer_steps": 10}}, "train.epochs"),
    ({"train": {"batch_size": 0, "outer_steps": 1}}, "train.batch_size"),
    ({"outer": {"nesterov": True}}, "outer.nesterov"),
    ({"outer": {"milestones": [3, 1]}}, "outer.milestones"),
    ({"outer": {"lr_form": "paper"}}, "outer.lr_form"),
    ({"model": "char-lstm"}, "model"),
    ({"strategy": "sgd", "inner": {"noise": 1e-3}}, "inner.noise"),
    ({"strategy": "elastic-sgd", "outer": {"lr": 0.5}}, "outer.lr"),
    ({"resources": {"cpus_per_replica": 0}}, "resources.cpus_per_replica"),
    ({"name": "bad name!"}, "name"),
])
def test_bad_fields_are_named(data, field):
    with pytest.raises(SpecError) as err:
        JobSpec.parse(data)
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")


def test_error_states_the_allowed_range():
    with pytest.raises(SpecError, match=r"inner.alpha: Input should be less than or equal to 1 \(got 2\)"):
        JobSpec.parse({"train": {"outer_steps": 1}, "inner": {"alpha": 2}})


def test_spec_is_frozen_and_round_trips():
    spec = JobSpec.parse({"strategy": "parle", "replicas": 3, "train": {"epochs": 2}})
    with pytest.raises(Exception):
        spec.replicas = 4  # type: ignore[misc]
    assert JobSpec.parse(spec.to_dict()) == spec


def test_baselines_pin_their_values():
    spec = JobSpec.parse({"train": {"outer_steps": 1}, "strategy": "sgd", "inner": {"lr": 0.05}}).resolved()
    assert (spec.inner.gamma0, spec.inner.noise, spec.inner.alpha, spec.outer.lr, spec.outer.momentum) == (0, 0, 1, 1, 0)
    assert spec.inner.lr == 0.05


def test_capacity_check_names_replicas():
    spec = JobSpec.parse({"train": {"outer_steps": 1}, "replicas": 4})
    spec.check_capacity(cpus=4, gpus=0)
    with pytest.raises(SpecError) as err:
        spec.check_capacity(cpus=2, gpus=0)
    assert err.value.field == "replicas" and "replicas ≤ 2" in str(err.value)


def test_yaml_file_with_scientific_notation_and_overrides(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("model: mlp\ninner:\n  noise: 1e-4\n  gamma0: 3e-2\ntrain: {outer_steps: 3}\n")
    spec = load_spec(str(p), ["inner.lr=0.05", "replicas=2"])
    assert spec.inner.noise == 1e-4 and spec.inner.gamma0 == 0.03 and spec.inner.lr == 0.05 and spec.replicas == 2
    with pytest.raises(SpecError, match="--set"):
        load_spec(str(p), ["inner.lr"])
    with pytest.raises(SpecError, match="inner.lr"):
        load_spec(str(p), ["inner.lr=fast"])


def test_broken_job_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(str(bad), [])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(str(listing), [])
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(str(tmp_path / "missing.yaml"), [])


def test_examples_are_valid():
    from pathlib import Path

    files = sorted(Path(__file__).parent.parent.glob("examples/*.yaml"))
    assert files
    for f in files:
        load_spec(str(f), [])


def test_replace_merges_sections_and_lets_defaults_follow_the_strategy():
    spec = JobSpec.parse({"inner": {"lr": 0.05}, "train": {"outer_steps": 3}})
    sgd = spec.replace(strategy="sgd", train={"batch_size": 64})
    assert sgd.strategy == "sgd" and sgd.inner.lr == 0.05 and sgd.train.outer_steps == 3
    assert sgd.train.batch_size == 64 and sgd.resolved().inner.noise == 0.0
    with pytest.raises(SpecError, match="inner.lr"):
        spec.replace(inner={"lr": -1})
