"""Job specs for the reproductions: the papers' hyperparameters, sizes per mode, equal budgets.

A budget is ``E`` *effective epochs*: passes over the (sub)set of training data per replica,
the papers' convention (docs/design.md, "Data per replica and cost accounting"). A method
with L inner steps per outer step runs ``E / L`` engine epochs (= ``E · nb / L`` outer steps,
``nb`` minibatches per pass), i.e. exactly ``E · nb`` gradient evaluations per replica. ``E``
is a multiple of every L in a model's method set, so every method gets exactly the same number
of gradient evaluations per replica. The learning rate of every method drops ×0.1 after 50%
and 75% of the budget (the schedule of the Fashion-MNIST reference run,
examples/entropy-sgd-lenet.yaml: 1 → 0.1 → 0.01 at epochs 2 and 3 of 4).

Hyperparameters (the papers' settings: docs/design.md, "Reference settings and published
numbers"; the same for every seed, not tuned per method):

============  ==================================================================================
image models  ``mnistfc`` and ``lenet`` on Fashion-MNIST, batch 128, weight decay 5e-4 in every
              method (inner loop only).
sgd           K = 1, lr 0.1, Nesterov 0.9 (L = 20 local steps per round only groups the work:
              with K = 1 the ``sgd`` strategy is exactly torch SGD).
entropy-sgd   K = 1, L = 20, η' = 0.1, ε = 1e-4, α = 0.75, γ0 = 1e-4, γ1 = 1e-3, outer lr 1
              (the Entropy-SGD paper's MNIST setting).
parle         K = 2, L = 20, η' = 0.1, ε = 1e-4, α = 0.75, γ0 = 0.01 and ρ0 = 1 growing
              ×(1 + 0.5/nb) per outer step, γ ≤ 1, ρ ≤ 10, outer lr 0.1 with Nesterov 0.9 (the
              Parle paper's setting, with L = 20 instead of 25 and K = 2 instead of 3–8: two
              replicas fill the two cores of the development machine).
elastic-sgd   K = 2, τ = L = 10, lr 0.1, Nesterov 0.9, ρ = 0.2.
char-lstm     the King James Bible (Debian ``bible-kjv``), 50-character sequences, batch 32,
              L = 5 (the Entropy-SGD paper's LSTM setting), no weight decay. **The paper's LSTM
              baseline is Adam; the engine has no Adam (its outer step and inner loop are SGD),
              so the baseline here is SGD, lr 0.5 with Nesterov 0.9.** Entropy-SGD: η' = 1,
              ε = 1e-4, α = 0.75, γ0 = 0.03, γ1 = 1e-3, outer lr 1 (examples/char-lstm.yaml);
              Parle: the same chain with γ0 = 0.03 and ρ0 = 1 growing ×(1 + 0.5/nb), outer lr
              0.1 with Nesterov 0.9; Elastic-SGD: τ = 5, lr 0.5 with Nesterov 0.9, ρ = 0.2.
============  ==================================================================================
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from core.spec import JobSpec

MODES = ("smoke", "quick", "full")
TABLE1_MODELS = ("mnistfc", "lenet", "char-lstm")
METHODS = ("sgd", "entropy-sgd", "parle", "elastic-sgd")
FLATNESS_METHODS = ("sgd", "entropy-sgd", "parle")
METHOD_LABELS = {"sgd": "SGD", "entropy-sgd": "Entropy-SGD", "parle": "Parle", "elastic-sgd": "Elastic-SGD"}
REPLICAS = {"sgd": 1, "entropy-sgd": 1, "parle": 2, "elastic-sgd": 2}

# The papers' own numbers: the Entropy-SGD paper's Table 1 and the Parle paper (MNIST for the
# image models, War and Peace for the LSTM; test error % / perplexity; docs/design.md, "Reference
# settings and published numbers"). No number is listed here for Elastic-SGD.
PAPER = {
    ("mnistfc", "sgd"): "1.39 (MNIST)",
    ("mnistfc", "entropy-sgd"): "1.37 (MNIST)",
    ("lenet", "sgd"): "0.51 (MNIST; Parle paper: 0.50)",
    ("lenet", "entropy-sgd"): "0.50 (MNIST)",
    ("lenet", "parle"): "0.44 (MNIST, K = 6)",
    ("char-lstm", "sgd"): "1.226 (Adam, War and Peace)",
    ("char-lstm", "entropy-sgd"): "1.217 (War and Peace)",
}


@dataclass(frozen=True)
class Budget:
    """Sizes of one model's runs in one mode."""

    train_subset: int        # training samples (0 = all)
    test_subset: int         # test samples (0 = all)
    batch_size: int
    effective_epochs: int    # E: passes over the training data per replica
    evals: int               # evaluations per run (the points of the learning curve)
    seq_len: int = 50        # text only


_IMAGE = {"smoke": Budget(128, 128, 32, 20, 2),
          "quick": Budget(2560, 2000, 128, 20, 4),
          "full": Budget(0, 0, 128, 100, 20)}
_TEXT = {"smoke": Budget(64, 32, 16, 5, 2),
         "quick": Budget(640, 256, 32, 10, 4),
         "full": Budget(0, 0, 32, 50, 20)}
_FLATNESS = {"smoke": Budget(128, 128, 32, 20, 2),
             "quick": Budget(2560, 2000, 128, 20, 4),
             "full": Budget(0, 0, 128, 100, 10)}

# Sizes of the Hessian report per mode (keywords of coordinator.flatness.flatness_report; the
# probe counts are left at the report's own defaults).
FLATNESS_SIZES = {
    "smoke": {"eval_samples": 128, "lanczos_iters": 8, "top_k": 3, "langevin_steps": 5},
    "quick": {"eval_samples": 500, "lanczos_iters": 24},
    "full": {},  # the report's defaults (1000 training samples, 30 Lanczos iterations)
}


def budget(model: str, mode: str, *, flatness: bool = False) -> Budget:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if flatness:
        return _FLATNESS[mode]
    return (_TEXT if model == "char-lstm" else _IMAGE)[mode]


def dataset_section(model: str, b: Budget) -> dict:
    if model == "char-lstm":
        d = {"name": "text", "path": "bible-kjv", "seq_len": b.seq_len}
    else:
        d = {"name": "fashion-mnist"}
    if b.train_subset:
        d["train_subset"] = b.train_subset
    if b.test_subset:
        d["test_subset"] = b.test_subset
    return d


@functools.lru_cache(maxsize=None)
def _full_train_size(model: str, seq_len: int) -> int:
    if model != "char-lstm":
        return 60_000
    from worker.data.datasets import load_dataset

    return load_dataset("text", "bible-kjv", seq_len=seq_len).num_train


def train_size(model: str, b: Budget) -> int:
    full = _full_train_size(model, b.seq_len)
    return min(b.train_subset, full) if b.train_subset else full


def _method_sections(model: str, method: str, nb: int) -> dict:
    grow = 0.5 / nb  # Parle: γ and ρ grow ×(1 + 0.5/nb) per outer step
    if model == "char-lstm":
        chain = {"lr": 1.0, "noise": 1e-4, "alpha": 0.75}
        sgd_inner = {"lr": 0.5, "momentum": 0.9, "nesterov": True}
        return {
            "sgd": {"inner": {"steps": 5, **sgd_inner}},
            "entropy-sgd": {"inner": {"steps": 5, **chain, "gamma0": 0.03, "gamma1": 1e-3}, "outer": {"lr": 1.0}},
            "parle": {"inner": {"steps": 5, **chain, "gamma0": 0.03, "gamma1": grow, "gamma_max": 1.0},
                      "outer": {"lr": 0.1, "momentum": 0.9, "nesterov": True},
                      "elastic": {"rho0": 1.0, "rho1": grow, "rho_max": 10.0}},
            "elastic-sgd": {"inner": {"steps": 5, **sgd_inner}, "elastic": {"rho0": 0.2}},
        }[method]
    wd = {"weight_decay": 5e-4}
    sgd_inner = {"lr": 0.1, "momentum": 0.9, "nesterov": True, **wd}
    chain = {"lr": 0.1, "noise": 1e-4, "alpha": 0.75, **wd}
    return {
        "sgd": {"inner": {"steps": 20, **sgd_inner}},
        "entropy-sgd": {"inner": {"steps": 20, **chain, "gamma0": 1e-4, "gamma1": 1e-3}, "outer": {"lr": 1.0}},
        "parle": {"inner": {"steps": 20, **chain, "gamma0": 0.01, "gamma1": grow, "gamma_max": 1.0},
                  "outer": {"lr": 0.1, "momentum": 0.9, "nesterov": True},
                  "elastic": {"rho0": 1.0, "rho1": grow, "rho_max": 10.0}},
        "elastic-sgd": {"inner": {"steps": 10, **sgd_inner}, "elastic": {"rho0": 0.2}},
    }[method]


def job_spec(model: str, method: str, seed: int, b: Budget, *, cpus: float = 2.0, threads: int = 0) -> JobSpec:
    """The job for ``model`` × ``method`` × ``seed`` at budget ``b`` on a cluster of ``cpus`` CPUs.

    Each replica reserves ``cpus / K`` CPUs (K = 1 gets the whole machine, K = 2 half each) and
    runs that many torch threads, unless ``threads`` (> 0) fixes the thread count."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    n = train_size(model, b)
    nb = max(1, n // b.batch_size)
    sections = _method_sections(model, method, nb)
    steps = sections["inner"]["steps"]
    if b.effective_epochs % steps:
        raise ValueError(f"effective_epochs {b.effective_epochs} is not a multiple of L = {steps}: "
                         "the budgets would not be equal")
    epochs = b.effective_epochs // steps          # engine epochs: each costs L passes per replica
    rounds = epochs * nb
    k = REPLICAS[method]
    outer = dict(sections.get("outer", {}))
    outer.update({"milestones": [0.5 * epochs, 0.75 * epochs], "lr_factor": 0.1})
    data = {
        "name": f"{model}-{method}-s{seed}",
        "model": model,
        "dataset": dataset_section(model, b),
        "strategy": method,
        "replicas": k,
        **{key: val for key, val in sections.items() if key != "outer"},
        "outer": outer,
        "train": {"batch_size": b.batch_size, "epochs": float(epochs), "seed": seed,
                  "eval_every": max(1, rounds // max(1, b.evals))},
        "resources": {"cpus_per_replica": float(cpus) / k, "threads_per_replica": threads},
        "checkpoint": {"every": rounds, "keep_last": 1},
    }
    if method in ("sgd", "elastic-sgd"):
        data.pop("outer")  # η = 1, no outer momentum: pinned; the schedule scales η' instead
        data["outer"] = {"milestones": outer["milestones"], "lr_factor": 0.1}
    return JobSpec.parse(data)
