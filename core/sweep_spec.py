"""The ``sweep:`` section of a job spec: a search space over spec fields, parsed and checked.

A sweep is a job whose spec carries ``sweep:``; each of its trials is an ordinary job built
from the same spec with some fields replaced (coordinator.sweep runs them on Ray Tune)::

    sweep:
      space:
        inner.gamma0: loguniform(1e-4, 1e-1)
        outer.lr: uniform(0.1, 1)
        inner.steps: choice(5, 10, 20)
      trials: 16
      metric: test_error      # or test_loss
      mode: min
      scheduler: asha         # or none
      grace_period: 1         # effective epochs before ASHA may stop a trial
      reduction_factor: 2
      max_concurrent: 2       # 0 = as many as the cluster holds

Everything here is a pure function of the spec, so it is tested without Ray. Why strings for
the distributions: the spec travels as YAML, JSON and protobuf, and a string is the one value
all three carry unchanged; the expression is parsed with :func:`ast.literal_eval`, which
evaluates literals only (no names, no calls), so a spec can never run code.

Each expression maps to Ray Tune's own search-space function (:func:`to_tune`): no sampler
of ours. Whether a distribution fits its field is checked through the real
:class:`core.spec.JobSpec` (:func:`check_space`): the spec is validated with each
distribution's boundary values (and every value of a ``choice`` or ``grid``), so an integer
field given ``uniform(…)``, a range past a field's bounds or a value a strategy pins is an
error naming ``sweep.space.<field>`` — before any trial runs, not as a failed trial.
"""
from __future__ import annotations

import ast
import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice", "grid")
METRICS = ("test_error", "test_loss")
_EXPR = re.compile(r"^\s*([a-z]+)\s*\((.*)\)\s*$", re.S)
DRIVER_BUNDLE = 0.001  # of the server node's ``node:<ip>`` resource (1.0 per node): pins, holds no CPU


class SweepError(ValueError):
    """A bad ``sweep:`` section; the message starts with the dotted path it is about."""


class Dist(BaseModel):
    """One parsed expression: ``kind`` and its literal arguments."""

    model_config = ConfigDict(frozen=True)
    kind: str
    args: tuple


def parse_expr(path: str, text: Any) -> Dist:
    """``"loguniform(1e-4, 1e-1)"`` → ``Dist("loguniform", (1e-4, 0.1))``; SweepError naming
    ``path`` when the text is not one of :data:`DISTRIBUTIONS` with fitting arguments."""
    if not isinstance(text, str):
        raise SweepError(f"{path}: expected a distribution such as 'uniform(0.1, 1)' (got {text!r})")
    m = _EXPR.match(text)
    if not m or m.group(1) not in DISTRIBUTIONS:
        raise SweepError(f"{path}: expected one of {', '.join(d + '(…)' for d in DISTRIBUTIONS)} (got {text!r})")
    kind, body = m.group(1), m.group(2)
    try:
        args = ast.literal_eval(f"({body},)") if body.strip() else ()
    except (ValueError, SyntaxError):
        raise SweepError(f"{path}: {kind}(…) takes literal values only (got {text!r})") from None
    if kind in ("uniform", "loguniform", "randint"):
        numeric = all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args)
        if len(args) != 2 or not numeric:
            raise SweepError(f"{path}: {kind} takes two finite numbers, low and high (got {text!r})")
        low, high = args
        if not low < high:
            raise SweepError(f"{path}: {kind} needs low < high (got {text!r})")
        if kind == "loguniform" and low <= 0:
            raise SweepError(f"{path}: loguniform needs low > 0 (got {text!r})")
        if kind == "randint" and not all(isinstance(a, int) for a in args):
            raise SweepError(f"{path}: randint takes integers, low inclusive and high exclusive (got {text!r})")
    elif not args:
        raise SweepError(f"{path}: {kind} needs at least one value (got {text!r})")
    return Dist(kind=kind, args=tuple(args))


class SweepSpec(BaseModel):
    """The ``sweep:`` section (module docstring). Field checks only; the space is checked
    against the job's fields by :func:`check_space`, which needs the whole spec."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    space: dict[str, str] = Field(description="dotted spec field → distribution expression")
    trials: int = Field(8, gt=0, le=10_000, description="trials in all (a multiple of the grid's size)")
    metric: Literal[METRICS] = Field("test_error", description="the evaluation value trials are ranked by")  # type: ignore[valid-type]
    mode: Literal["min", "max"] = "min"
    scheduler: Literal["none", "asha"] = Field("asha", description="asha: Tune's ASHAScheduler stops poor trials early")
    grace_period: float = Field(1.0, gt=0.0, le=1e6, description="asha: effective epochs before a trial may be stopped")
    reduction_factor: float = Field(2.0, gt=1.0, le=100.0, description="asha: 1/fraction of trials kept at each rung")
    max_concurrent: int = Field(0, ge=0, le=10_000, description="trials at once (0 = as many as the cluster holds)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the random search (same seed: same configs)")

    @field_validator("space")
    @classmethod
    def _space(cls, space: dict[str, str]) -> dict[str, str]:
        if not space:
            raise ValueError("sweep.space: empty; name at least one spec field, e.g. 'outer.lr: uniform(0.1, 1)'")
        for key, text in space.items():
            if key == "sweep" or key.startswith("sweep."):
                raise ValueError(f"sweep.space.{key}: a sweep cannot search over its own sweep section")
            parse_expr(f"sweep.space.{key}", text)
        return space

    @model_validator(mode="after")
    def _grid(self) -> "SweepSpec":
        if self.trials % self.grid_size():
            raise ValueError(f"sweep.trials: Tune runs the whole grid once per sample, so with a grid of "
                             f"{self.grid_size()} points trials must be a multiple of {self.grid_size()} "
                             f"(got {self.trials})")
        return self

    def dists(self) -> dict[str, Dist]:
        return {k: parse_expr(f"sweep.space.{k}", v) for k, v in self.space.items()}

    def grid_size(self) -> int:
        """Points of the grid (the product of every ``grid(…)``'s values; 1 without a grid):
        Tune runs each sample of the other distributions once per grid point."""
        return math.prod(len(d.args) for d in self.dists().values() if d.kind == "grid")


def to_tune(sweep: SweepSpec) -> dict:
    """The space as Ray Tune search-space objects, keyed by the dotted field."""
    from ray import tune

    make = {"uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(*a), "choice": lambda a: tune.choice(list(a)),
            "grid": lambda a: tune.grid_search(list(a))}
    return {k: make[d.kind](d.args) for k, d in sweep.dists().items()}


def num_samples(sweep: SweepSpec) -> int:
    """Tune's ``num_samples``: Tune repeats the whole grid per sample, so trials / grid size."""
    return sweep.trials // sweep.grid_size()


def probe_values(d: Dist) -> list:
    """Values that stand for the whole distribution: both ends of a range, every listed value."""
    if d.kind in ("uniform", "loguniform"):
        return [float(d.args[0]), float(d.args[1])]
    if d.kind == "randint":
        return [d.args[0], d.args[1] - 1]
    return list(d.args)


def base_dict(spec_data: dict) -> dict:
    """The spec a trial starts from: the sweep's spec without its ``sweep`` section."""
    return {k: v for k, v in spec_data.items() if k != "sweep"}


def apply(spec_data: dict, config: dict) -> dict:
    """``spec_data`` (without ``sweep``) with each dotted field of ``config`` set. Numpy
    scalars (what Tune may sample) become plain Python values."""
    out = json.loads(json.dumps(base_dict(spec_data)))  # a deep copy of plain data
    for path, value in config.items():
        value = value.item() if hasattr(value, "item") else value
        *parts, leaf = path.split(".")
        node = out
        for part in parts:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SweepError(f"sweep.space.{path}: {part} is not a section")
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return out


def check_space(spec) -> None:
    """Every space key names a field of the spec, and every probe value of its distribution
    validates there (``spec``: a :class:`core.spec.JobSpec`; its class does the
    validating, so this module needs no import of spec.py). Raises SweepError naming
    ``sweep.space.<key>``, with the field's own complaint."""
    from core.errors import SpecError

    cls = type(spec)
    explicit = spec.model_dump(mode="json", exclude_unset=True)
    explicit.pop("sweep", None)
    for key, d in spec.sweep.dists().items():
        if not _is_leaf(cls, key.split(".")):
            raise SweepError(f"sweep.space.{key}: unknown field (a space key is a dotted spec field, "
                             "e.g. inner.gamma0 or outer.lr)")
        for value in probe_values(d):
            try:
                cls.parse(apply(explicit, {key: value}))
            except SpecError as exc:
                raise SweepError(f"sweep.space.{key}: {d.kind}{d.args!r} does not fit the field: value "
                                 f"{value!r}: {exc}") from None


def _is_leaf(cls, parts: list[str]) -> bool:
    """Whether ``parts`` is a path to a scalar (or list) field of pydantic model ``cls``."""
    from pydantic import BaseModel as _Model

    fields = cls.model_fields
    head = parts[0]
    if head not in fields or head == "sweep":
        return False
    ann = fields[head].annotation
    is_model = isinstance(ann, type) and issubclass(ann, _Model)
    if len(parts) == 1:
        return not is_model
    return is_model and _is_leaf(ann, parts[1:])


def trial_specs(spec) -> list:
    """The specs that stand for every trial of a sweep (each distribution at its probe values,
    the others at the sweep's own), resolved; ``[spec]`` for a plain job. Admission checks
    them all, so no trial can need more than the cluster has."""
    if spec.sweep is None:
        return [spec]
    explicit = spec.model_dump(mode="json", exclude_unset=True)
    out = [type(spec).parse(base_dict(explicit)).resolved()]
    for key, d in spec.sweep.dists().items():
        out += [type(spec).parse(apply(explicit, {key: v})).resolved() for v in probe_values(d)]
    return out


def trial_cpus(spec) -> float:
    """CPUs one trial holds: one bundle of ``cpus_per_replica`` per replica (its driver's
    bundle holds none, only a share of the server node's ``node:<ip>`` resource)."""
    return spec.replicas * spec.resources.cpus_per_replica


def footprint(spec, cluster_cpus: float) -> tuple[int, float, int]:
    """``(concurrency, cpus, processes)`` of a sweep on a cluster of ``cluster_cpus``: at most
    ``max_concurrent`` trials (0 = no cap), never more than the trials or than the cluster
    holds, at least one. The service reserves ``cpus`` for the sweep while it runs, and Tune
    runs at most ``concurrency`` trials at once, so the sweep never takes CPUs a job was
    promised; further trials wait in Tune's queue (PENDING), not as failures."""
    s, specs = spec.sweep, trial_specs(spec)
    per, procs = max(trial_cpus(t) for t in specs), max(t.replicas for t in specs)
    fits = max(1, int((cluster_cpus + 1e-9) // per)) if per > 0 else s.trials
    n = max(1, min(s.max_concurrent or s.trials, s.trials, fits))
    return n, n * per, n * procs
