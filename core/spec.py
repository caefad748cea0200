"""The job spec: one frozen, validated configuration object for a training job.

Every entry point (YAML/JSON file, gRPC request, Python call) builds a :class:`JobSpec` and
nothing else: validation happens once, here, and every error names the offending field with
its dotted path (``inner.lr``) and the allowed range, e.g.::

    inner.lr: Input should be greater than 0 (got -0.1)

Unknown keys, wrong types, NaN/Inf, negatives and out-of-range values are all rejected.
Symbols follow the README's "The strategies and their equations": ``K`` replicas, ``L`` inner
steps, ``γ`` coupling (scope), ``η'`` Langevin step, ``ε`` thermal noise, ``α`` weight of the
newest iterate in ``μ``, ``ρ`` elastic coupling, ``η`` outer learning rate, ``λ`` weight decay.

A combination that cannot mean what it says is rejected here, naming the field: e.g.
``outer.lr_form: gamma`` where γ is pinned to 0 (the step would be 0), ``inner.optimizer: adam``
for a strategy whose inner loop is a Langevin chain, per-replica initial seeds for a strategy
whose replicas share one anchor, or a cosine schedule with milestones.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import CapacityError, SpecError  # noqa: F401  (raised with the spec; re-exported)
from core.init_from_spec import InitFromSpec
from core.methods import METHODS
from core.sweep_spec import SweepSpec, check_space

STRATEGIES = tuple(m.name for m in METHODS)  # core.methods declares each method once
MODEL_NAMES = ("mnistfc", "lenet", "allcnn-bn", "char-lstm", "mlp")
COMM_DTYPES = ("float32", "bfloat16", "float16")
DATASET_NAMES = ("fashion-mnist", "mnist", "idx", "cifar10", "text", "synthetic", "synthetic-text")


INNER_OPTIMIZERS = ("sgd", "adam")
BUDGET_REQUIRED = ("a budget is required: give exactly one of train.epochs (effective epochs) or "
                   "train.outer_steps (rounds)")
LR_SCHEDULES = ("step", "cosine")

# What each baseline strategy pins (core.methods; docs/design.md's strategy table). Setting one
# of these fields explicitly to another value is an error; leaving it out takes the pinned value.
FORCED: dict[str, dict[str, dict[str, float]]] = {
    m.name: {section: dict(values) for section, values in m.pinned.items()} for m in METHODS if m.pinned}
# Strategies whose replicas each keep their own anchor x^a (the others share one anchor x).
PER_REPLICA_ANCHORS = tuple(m.name for m in METHODS if m.per_replica_anchors)
# Strategies whose inner loop is plain minibatch descent (γ = 0, ε = 0, α = 1 pinned): the only
# ones where another inner optimizer (Adam) means something; the others run a Langevin chain.
PLAIN_INNER_LOOP = tuple(FORCED)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class DatasetSpec(_Section):
    name: Literal[DATASET_NAMES] = "fashion-mnist"  # type: ignore[valid-type]
    path: str | None = Field(None, description="directory or file; None = the default location")
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of the training set each replica sees")
    train_subset: int = Field(0, ge=0, description="use only this many training samples (0 = all)")
    test_subset: int = Field(0, ge=0, description="use only this many test samples (0 = all)")
    seq_len: int = Field(100, ge=2, le=10_000, description="characters per sequence (text data)")
    label_noise: float = Field(0.0, ge=0.0, lt=1.0, description="share of the training labels flipped to another "
                               "class, seeded by train.seed (image data; the noisy-label regime)")


class InnerSpec(_Section):
    """The Langevin inner loop (Entropy-SGD Algorithm 1)."""

    steps: int = Field(20, ge=1, le=100_000, description="L: inner steps (gradient evaluations) per outer step")
    lr: float = Field(0.1, gt=0.0, le=100.0, description="η': Langevin step size")
    noise: float = Field(1e-4, ge=0.0, le=10.0, description="ε: thermal noise")
    alpha: float = Field(0.75, gt=0.0, le=1.0, description="α: weight of the newest iterate in μ")
    gamma0: float = Field(1e-4, ge=0.0, le=1e6, description="γ0: initial coupling")
    gamma1: float = Field(1e-3, ge=0.0, le=10.0, description="γ1: scoping rate, γ_t = γ0 (1+γ1)^t")
    gamma_max: float | None = Field(None, ge=0.0, description="cap on γ_t (None = no cap)")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="momentum on the inner gradient g")
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="λ: L2 term added to g (inner loop only)")
    optimizer: Literal[INNER_OPTIMIZERS] = Field(  # type: ignore[valid-type]
        "sgd", description="the inner step: sgd (the Langevin/SGD kernel) or adam (torch.optim.Adam's step, "
                           "state kept per replica; strategies sgd, elastic-sgd, replicated-sgd only)")
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0, description="Adam's β1 (inner.optimizer adam)")
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0, description="Adam's β2 (inner.optimizer adam)")
    adam_eps: float = Field(1e-8, gt=0.0, le=1.0, description="Adam's ε in the denominator (inner.optimizer adam)")

    @model_validator(mode="after")
    def _optimizer(self) -> "InnerSpec":
        if self.optimizer == "adam":
            if self.momentum != 0.0:
                raise ValueError("inner.momentum: Adam keeps its own first moment (inner.adam_beta1); "
                                 f"leave inner.momentum at 0 with inner.optimizer adam (got {self.momentum!r})")
            if self.nesterov:
                raise ValueError("inner.nesterov: not an Adam option; leave it out with inner.optimizer adam")
        else:
            for key, default in (("adam_beta1", 0.9), ("adam_beta2", 0.999), ("adam_eps", 1e-8)):
                if getattr(self, key) != default:
                    raise ValueError(f"inner.{key}: only inner.optimizer adam uses it (inner.optimizer is "
                                     f"{self.optimizer}; got {getattr(self, key)!r})")
        return self


class OuterSpec(_Section):
    """The outer step: a stock ``torch.optim.SGD`` on the pseudo-gradient ``d = x − μ̄``."""

    lr: float = Field(1.0, gt=0.0, le=100.0, description="η: outer learning rate")
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    lr_form: Literal["direct", "gamma"] = Field(
        "direct", description="direct: x ← x − η (x − μ̄); gamma (paper form): x ← x − η γ_t (x − μ̄); "
                              "for Parle only the entropy term is weighted: d_a = γ_t (x^a − μ_a) + ρ_t (x^a − x̄)")
    schedule: Literal[LR_SCHEDULES] = Field(  # type: ignore[valid-type]
        "step", description="step: × lr_factor after each milestone; cosine: annealed over the budget "
                            "(train.outer_steps, or epochs x nb) from 1 to lr_min_factor (the same LR the step schedule scales)")
    milestones: tuple[float, ...] = Field((), description="epochs after which η is multiplied by lr_factor")
    lr_factor: float = Field(0.1, gt=0.0, le=1.0)
    lr_min_factor: float = Field(0.0, ge=0.0, le=1.0, description="cosine: the LR's final multiple")

    @model_validator(mode="after")
    def _check(self) -> "OuterSpec":
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("outer.nesterov: needs outer.momentum > 0")
        if any(m <= 0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError("outer.milestones: must be positive and increasing")
        if self.schedule == "cosine":
            if self.milestones:
                raise ValueError("outer.milestones: the cosine schedule has no milestones; leave them out "
                                 "(or use outer.schedule step)")
            if self.lr_factor != 0.1:
                raise ValueError("outer.lr_factor: the step schedule's factor; the cosine schedule ends at "
                                 f"outer.lr_min_factor instead (got {self.lr_factor!r})")
        elif self.lr_min_factor != 0.0:
            raise ValueError("outer.lr_min_factor: only outer.schedule cosine uses it "
                             f"(got {self.lr_min_factor!r})")
        return self


class ElasticSpec(_Section):
    """Parle / Elastic-SGD coupling of each replica to the reference: ρ_t = ρ0 (1+ρ1)^t."""

    rho0: float = Field(1.0, ge=0.0, le=1e6)
    rho1: float = Field(0.0, ge=0.0, le=10.0)
    rho_max: float | None = Field(None, ge=0.0)


class InitSpec(_Section):
    """Where the replicas start."""

    per_replica_seeds: bool = Field(
        False, description="each replica's initial weights from its own seed (as the official Parle code); "
                           "x̄ is their mean. Replica 0 keeps the job's initial weights. Strategies with one "
                           "anchor per replica only (parle, elastic-sgd, replicated-sgd)")


class TrainSpec(_Section):
    batch_size: int = Field(128, ge=1, le=65_536)
    epochs: float | None = Field(
        None, gt=0.0, le=10_000, description="paper epochs: one epoch = nb outer steps (nb = batches per pass)")
    outer_steps: int | None = Field(None, ge=1, le=100_000_000, description="explicit number of outer steps")
    eval_every: int = Field(0, ge=0, description="evaluate every N outer steps (0 = 10 times per run)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    max_replica_failures: int = Field(
        3, ge=0, le=1_000_000, description="replica failures tolerated (each replica is recreated); one more fails the job")
    min_replicas: int = Field(
        1, ge=1, le=1024, description="fewest replicas the job may shrink to when lost ones cannot be re-placed")

    @model_validator(mode="after")
    def _budget(self) -> "TrainSpec":
        if (self.epochs is None) == (self.outer_steps is None):
            raise ValueError(f"train.epochs: {BUDGET_REQUIRED}")
        return self


class ResourceSpec(_Section):
    cpus_per_replica: float = Field(1.0, gt=0.0, le=1024)
    gpus_per_replica: float | Literal["auto"] = Field(
        "auto", description="fraction of a GPU per replica; auto = share the cluster's GPUs, 0 without CUDA")
    threads_per_replica: int = Field(0, ge=0, le=256, description="torch threads per replica (0 = from cpus)")
    placement_timeout_s: float = Field(
        120.0, gt=0.0, le=86_400, description="how long to wait for Ray to place a replica before giving up")

    @model_validator(mode="after")
    def _gpus(self) -> "ResourceSpec":
        g = self.gpus_per_replica
        if g != "auto" and not (0.0 <= g <= 64 and math.isfinite(g)):
            raise ValueError("resources.gpus_per_replica: must be 'auto' or in [0, 64]")
        return self


class FlatnessSpec(_Section):
    enabled: bool = Field(False, description="after training, write the Hessian flatness report of the final model")


class CheckpointSpec(_Section):
    every: int = Field(0, ge=0, description="checkpoint every N outer steps (0 = at each evaluation)")
    keep_last: int = Field(3, ge=1, le=1000)


class CommSpec(_Section):
    """What crosses the network each round (worker/comm.py has the rounding and the reason)."""

    dtype: Literal[COMM_DTYPES] = Field(  # type: ignore[valid-type]
        "float32", description="number format of the anchors sent and the results returned; bfloat16 and "
                               "float16 halve the bytes, all arithmetic stays float32")


class JobSpec(_Section):
    """A complete, validated, immutable training job."""

    name: str = Field("job", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: Literal[MODEL_NAMES] = "lenet"  # type: ignore[valid-type]
    dataset: DatasetSpec = DatasetSpec()
    strategy: Literal[STRATEGIES] = "entropy-sgd"  # type: ignore[valid-type]
    replicas: int = Field(1, ge=1, le=1024, description="K")
    inner: InnerSpec = InnerSpec()
    outer: OuterSpec = OuterSpec()
    elastic: ElasticSpec = ElasticSpec()
    init: InitSpec = InitSpec()
    train: TrainSpec = Field(None, description="required: its budget is exactly one of train.epochs and "  # type: ignore[assignment]
                                               "train.outer_steps (no default budget)")
    resources: ResourceSpec = ResourceSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    flatness: FlatnessSpec = FlatnessSpec()
    comm: CommSpec = CommSpec()
    init_from: InitFromSpec | None = Field(None, description="start from another job's checkpoint (its model "
                                                             "weights only; InitFromSpec)")
    sweep: SweepSpec | None = Field(None, description="a search space over this spec's fields: the job is a "
                                                      "sweep, each trial a job (core/sweep_spec.py)")

    @model_validator(mode="after")
    def _cross(self) -> "JobSpec":
        text_model = self.model == "char-lstm"
        text_data = self.dataset.name in ("text", "synthetic-text")
        if text_model != text_data:
            raise ValueError("model: char-lstm goes with dataset.name text or synthetic-text, and only with them")
        if self.train is not None and self.train.min_replicas > self.replicas:
            raise ValueError(f"train.min_replicas: must be at most replicas ({self.replicas}); "
                             f"got {self.train.min_replicas}")
        for section, pinned in FORCED.get(self.strategy, {}).items():
            sec = getattr(self, section)
            for key, value in pinned.items():
                if key in sec.model_fields_set and getattr(sec, key) != value:
                    raise ValueError(f"{section}.{key}: strategy {self.strategy} runs with {section}.{key} = "
                                     f"{value:g}; leave it out (got {getattr(sec, key)!r})")
        gamma0 = FORCED.get(self.strategy, {}).get("inner", {}).get("gamma0", self.inner.gamma0)
        if self.outer.lr_form == "gamma" and gamma0 == 0.0:
            raise ValueError(f"outer.lr_form: gamma multiplies the entropy step by γ_t, and γ is 0 here "
                             f"(strategy {self.strategy}, inner.gamma0 = 0), so nothing would move; use direct")
        if self.inner.optimizer != "sgd" and self.strategy not in PLAIN_INNER_LOOP:
            raise ValueError(f"inner.optimizer: {self.inner.optimizer} replaces plain minibatch steps, so it goes "
                             f"with strategies {', '.join(PLAIN_INNER_LOOP)}; strategy {self.strategy} runs a "
                             "Langevin chain (SGLD), which an adaptive step would no longer be")
        if self.init.per_replica_seeds and self.strategy not in PER_REPLICA_ANCHORS:
            raise ValueError(f"init.per_replica_seeds: strategy {self.strategy} sends all replicas one shared "
                             f"anchor; separate starts need a strategy with one anchor per replica "
                             f"({', '.join(PER_REPLICA_ANCHORS)})")
        if self.init_from is not None and self.init.per_replica_seeds:
            raise ValueError("init.per_replica_seeds: every replica starts from the init_from checkpoint; "
                             "leave init.per_replica_seeds out with init_from")
        if self.train is None:  # checked last: a field the user did write is named first
            raise ValueError(f"train.epochs: {BUDGET_REQUIRED}")
        if self.sweep is not None:
            check_space(self)  # each distribution validated through this very model
        return self

    # ----- resolution: once, where a spec enters -------------------------------------------
    @property
    def is_resolved(self) -> bool:
        """Whether every field the strategy pins is set, to its pinned value: resolving would
        change nothing. True of any spec parsed back from a resolved one (a stored job, a run
        directory's spec.yaml), which carries every field."""
        return all(key in getattr(self, sec).model_fields_set and getattr(getattr(self, sec), key) == value
                   for sec, pinned in FORCED.get(self.strategy, {}).items() for key, value in pinned.items())

    def resolved(self) -> "JobSpec":
        """This spec with the strategy's pinned values filled in: what actually runs. Called where a
        spec enters (CreateJob, ``esgd run``, reproduce, a sweep trial); downstream code takes it
        resolved (:meth:`require_resolved`). Idempotent and cheap: a resolved spec is returned as is."""
        if self.is_resolved:
            return self
        return self.model_copy(update={sec: getattr(self, sec).model_copy(update=vals)
                                       for sec, vals in FORCED[self.strategy].items()})

    def require_resolved(self, who: str) -> "JobSpec":
        """This spec, which ``who`` takes resolved (the strategy's pinned values filled in);
        raise ValueError when it is not: the caller skipped :meth:`resolved` where the spec entered."""
        if not self.is_resolved:
            pins = ", ".join(f"{sec}.{key}" for sec, vals in FORCED[self.strategy].items() for key in vals)
            raise ValueError(f"{who} takes a resolved spec: call JobSpec.resolved() where the spec enters "
                             f"(strategy {self.strategy} pins {pins})")
        return self

    # ----- construction -----------------------------------------------------------------
    @classmethod
    def parse(cls, data: Any) -> "JobSpec":
        """Validate a plain mapping (from YAML, JSON or an RPC); raise :class:`SpecError`."""
        if not isinstance(data, dict):
            raise SpecError(f"job spec must be a mapping, got {type(data).__name__}", "")
        try:
            return cls.model_validate(_lists_to_tuples(data))
        except ValidationError as exc:
            raise _spec_error(exc) from None

    @classmethod
    def from_file(cls, path: str | Path) -> "JobSpec":
        """Load a YAML or JSON job file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read job file {p}: {exc}", "") from None
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.load(text, Loader=_YamlLoader)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise SpecError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}", "") from None
        return cls.parse(data if data is not None else {})

    def to_dict(self) -> dict:
        """Every field; ``sweep`` and ``init_from`` only when set, so a plain job's dict (and the digest and
        run directory check built on it) is what it was before sweeps existed."""
        data = self.model_dump(mode="json")
        for optional in ("sweep", "init_from"):
            if data.get(optional) is None:
                data.pop(optional, None)
            else:
                data[optional] = {k: v for k, v in data[optional].items() if v is not None} \
                    if optional == "init_from" else data[optional]
        return data

    def replace(self, **changes: Any) -> "JobSpec":
        """A validated copy with top-level sections replaced (dicts are merged into the section).
        Only fields set explicitly carry over, so defaults can still follow a new strategy."""
        data = self.model_dump(mode="json", exclude_unset=True)
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return JobSpec.parse(data)

    # ----- derived quantities -------------------------------------------------------------
    def check_capacity(self, cpus: float, gpus: float) -> None:
        """Reject ``replicas`` that the cluster can never host (``K·cpus_per_replica > cpus``)."""
        need = self.replicas * self.resources.cpus_per_replica
        if need > cpus + 1e-9:
            raise CapacityError(
                f"replicas: {self.replicas} replicas × resources.cpus_per_replica "
                f"{self.resources.cpus_per_replica} = {need:g} CPUs, but the cluster has {cpus:g}; "
                f"allowed: replicas ≤ {int(cpus // self.resources.cpus_per_replica)} "
                "(or lower resources.cpus_per_replica)", "replicas")
        g = self.resources.gpus_per_replica
        if g != "auto" and g > 0 and self.replicas * g > gpus + 1e-9:
            raise CapacityError(
                f"resources.gpus_per_replica: {self.replicas} × {g:g} GPUs needed, cluster has {gpus:g}",
                "resources.gpus_per_replica")


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _lists_to_tuples(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _lists_to_tuples(v) for k, v in data.items()}
    if isinstance(data, list):
        return tuple(_lists_to_tuples(v) for v in data)
    return data


def _spec_error(exc: ValidationError) -> SpecError:
    """Turn pydantic's report into one line per bad field, dotted path first."""
    lines, first = [], ""
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif "input" in err and not isinstance(err["input"], (dict, list, tuple)):
            msg = f"{msg} (got {err['input']!r})"
        named = re.match(r"^([a-z_][a-z0-9_.]*): (.*)$", msg)
        if named and named.group(1).startswith(loc):  # cross-field check naming its own field
            loc, msg = named.group(1), named.group(2)
        first = first or loc
        lines.append(f"{loc}: {msg}" if loc else msg)
    return SpecError("; ".join(lines), first)
