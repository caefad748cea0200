"""``esgd reproduce study``: where does local entropy pay? A tuned comparison.

Every method gets the same tuning: one Ray Tune sweep (``coordinator.sweep``: the service's
own sweeps, Tune's search and its ASHA scheduler) with the same number of trials and the same
ASHA settings, over the hyperparameters that matter for it. The best configuration of each
sweep is then run again with 3 fresh seeds at the full budget, and each final model gets the
flatness report. Equal budgets: every run costs the same gradient evaluations per replica
(``reproduce.presets.job_spec``'s effective epochs), so K = 2 methods spend twice the total.

Regimes where flatness is expected to matter, sized for a 2-core CPU (:data:`REGIMES`):

* ``small``: Fashion-MNIST LeNet on 5,000 training images;
* ``noisy``: the same with 20% of the training labels flipped (``dataset.label_noise``);
* ``large-batch``: 2,048 images per minibatch per replica (a known generalisation gap for SGD).

The trials are tuned on seed 0 and the final runs use seeds 1-3, so the reported errors are
not the ones the selection saw. Resumable: each finished sweep and final run is kept under
``--out``; run the same command again to go on where it stopped.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from reproduce.presets import METHOD_LABELS, REPLICAS, Budget, job_spec
from reproduce.runner import Runner, mean_std

MODEL = "lenet"
METHODS = ("sgd", "entropy-sgd", "parle", "elastic-sgd")


@dataclass(frozen=True)
class Regime:
    budget: Budget
    label_noise: float = 0.0
    about: str = ""


REGIMES = {
    "small": Regime(Budget(5000, 5000, 128, 20, 4), about="5,000 training images, batch 128"),
    "noisy": Regime(Budget(5000, 5000, 128, 20, 4), 0.2, about="5,000 training images, 20% labels flipped"),
    "large-batch": Regime(Budget(10000, 5000, 2048, 20, 4), about="10,000 training images, batch 2,048"),
}
SMOKE = Regime(Budget(512, 256, 64, 20, 2), about="smoke sizes (tests)")

# The search space of each method: the knobs its paper tunes, in the ranges its code uses.
SPACES = {
    "sgd": {"inner.lr": "loguniform(0.01, 1.0)", "inner.weight_decay": "loguniform(1e-5, 1e-2)"},
    "entropy-sgd": {"inner.lr": "loguniform(0.01, 1.0)", "inner.gamma0": "loguniform(1e-4, 0.1)",
                    "inner.gamma1": "loguniform(1e-4, 1e-2)", "outer.lr": "uniform(0.2, 1.0)"},
    "parle": {"inner.lr": "loguniform(0.01, 1.0)", "inner.gamma0": "loguniform(1e-3, 0.1)",
              "elastic.rho0": "loguniform(0.01, 10.0)", "outer.lr": "loguniform(0.01, 0.5)"},
    "elastic-sgd": {"inner.lr": "loguniform(0.01, 1.0)", "elastic.rho0": "loguniform(0.01, 10.0)"},
}


def base_spec(regime: Regime, method: str, seed: int) -> dict:
    """The method's paper settings at the regime's sizes, one CPU and one thread per replica
    (two K = 1 trials, or one K = 2 trial, fill the two cores)."""
    spec = job_spec(MODEL, method, seed, regime.budget, cpus=float(REPLICAS[method]), threads=1)
    spec = spec.model_dump(mode="json", exclude_unset=True)  # only what was set: pinned fields stay out
    if regime.label_noise:
        spec["dataset"]["label_noise"] = regime.label_noise
    return spec


def sweep_spec(regime: Regime, method: str, trials: int, grace: float) -> dict:
    spec = base_spec(regime, method, seed=0)
    spec["name"] = f"study-{method}"
    spec["sweep"] = {"space": SPACES[method], "trials": trials, "metric": "test_error", "mode": "min",
                     "scheduler": "asha", "grace_period": grace, "reduction_factor": 2,
                     "max_concurrent": 2 // REPLICAS[method]}
    return spec


def apply_config(spec: dict, config: dict) -> dict:
    """``spec`` with the dotted fields of ``config`` set (a trial's sampled values)."""
    out = json.loads(json.dumps(spec))
    for dotted, value in config.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def best_so_far(errors: list[float]) -> list[float]:
    """Running minimum over trials in the order they were started (NaN: a failed trial)."""
    out, best = [], math.inf
    for e in errors:
        if not math.isnan(e):
            best = min(best, e)
        out.append(best if math.isfinite(best) else math.nan)
    return out


def beats(a: list[float], b: list[float], sigmas: float = 2.0) -> bool:
    """Whether mean(a) is below mean(b) by more than ``sigmas`` standard deviations of the
    difference of the means (sample stds, ddof = 1)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if any(math.isnan(v) for v in (ma, sa, mb, sb)):
        return False
    se = math.sqrt(sa ** 2 / len(a) + sb ** 2 / len(b))
    return mb - ma > sigmas * se if se > 0 else mb > ma


def run_study(*, out_dir: str | Path, regimes: tuple[str, ...], methods: tuple[str, ...] = METHODS,
              trials: int = 8, seeds: int = 3, grace: float = 5.0, smoke: bool = False,
              num_cpus: int | None = None, log=print) -> dict:
    """Sweep, then final runs and flatness, for each regime × method; returns the results."""
    from core.spec import JobSpec
    from reproduce.flatness_compare import _report

    out = Path(out_dir)
    started = time.time()
    results: dict = {"regimes": {}, "trials": trials, "seeds": seeds, "grace": grace, "compute_s": 0.0}
    with Runner(out, num_cpus=num_cpus, threads=1, log=log) as runner:
        runner._ensure_ray()
        for name in regimes:
            regime = Regime(SMOKE.budget, REGIMES[name].label_noise) if smoke else REGIMES[name]
            rows = {}
            for method in methods:
                sweep = _sweep(sweep_spec(regime, method, trials, grace), out / name / method / "sweep", log)
                log(f"{name} {method}: {len(sweep['trials'])} trials, best {sweep['best']['value']:.4f} "
                    f"({sweep['seconds']:.0f} s{', reused' if sweep.get('reused') else ''})")
                finals, flat = [], []
                for seed in range(1, seeds + 1):
                    data = apply_config(base_spec(regime, method, seed), sweep["best"]["config"])
                    r = runner.run(JobSpec.parse(data), out / name / method / f"final-seed{seed}")
                    finals.append(r.test_error)
                    rep = _report(r, {"eval_samples": 500, "lanczos_iters": 24}, fresh=False)
                    results["compute_s"] += (0.0 if math.isnan(r.total_s) else r.total_s) + rep.get("seconds", 0.0)
                    flat.append({"lambda_max": rep["top_eigenvalues"][0], "trace": rep["trace"],
                                 "near_zero_fraction": rep["near_zero_fraction"]})
                    log(f"{name} {method} seed {seed}: test_error {r.test_error:.4f}  λ_max "
                        f"{flat[-1]['lambda_max']:.4g}{' (reused)' if r.reused else ''}")
                rows[method] = {"sweep": sweep, "final_errors": finals, "flatness": flat}
                results["compute_s"] += sweep["seconds"]
            results["regimes"][name] = rows
    results["elapsed_s"] = time.time() - started
    (out / "study.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    return results


def _sweep(spec_data: dict, where: Path, log) -> dict:
    """Run one sweep (or reuse a finished one of the same spec, or go on with an interrupted
    one of the same spec, keeping its finished trials): its trials in start order."""
    from core.spec import JobSpec
    from coordinator.sweep import can_resume, run_sweep

    done, started, spent = where / "sweep.json", where / "spec.json", where / "seconds.json"
    if done.exists():
        kept = json.loads(done.read_text())
        if kept.get("spec") == spec_data:
            return {**kept, "reused": True}
    # a finished sweep of another spec is never resumed; an unfinished one of this spec is
    resume = (not done.exists() and started.exists() and json.loads(started.read_text()) == spec_data
              and can_resume(where))
    if where.exists() and not resume:
        import shutil

        shutil.rmtree(where)  # another spec's sweep, or one that never got going: start again
    if resume:
        log(f"{where}: going on with the interrupted sweep (its finished trials are kept)")
    else:
        where.mkdir(parents=True)
        started.write_text(json.dumps(spec_data, indent=1) + "\n")
    t0 = time.time() - (json.loads(spent.read_text()) if resume and spent.exists() else 0.0)
    try:
        res = run_sweep(JobSpec.parse(spec_data), where, trial_root=where / "trials", resume=resume)
    finally:  # the time spent so far counts toward the sweep's cost when it goes on
        spent.write_text(json.dumps(time.time() - t0))
    wanted = spec_data["sweep"]["trials"]
    if res["stopped"] or len(res["trials"]) < wanted:  # interrupted (e.g. Ctrl-C): never kept as done
        raise RuntimeError(f"{where}: the sweep stopped after {len(res['trials'])} of {wanted} trials; "
                           "run the command again to go on with it")
    trials = [{"config": t.config, "value": t.value, "state": t.state,
               "epochs": (t.result or {}).get("data_passes_per_replica")} for t in res["trials"]]
    if res["best"] is None:
        raise RuntimeError(f"{where}: no trial reported {spec_data['sweep']['metric']}")
    kept = {"spec": spec_data, "trials": trials, "best": {"config": res["best"].config, "value": res["best"].value},
            "seconds": time.time() - t0}
    done.write_text(json.dumps(kept, indent=1, default=str) + "\n")
    return kept


def verdicts(results: dict) -> list[str]:
    """One line per regime × local-entropy method: beats tuned SGD by > 2σ, or not."""
    lines = []
    for name, rows in results["regimes"].items():
        if "sgd" not in rows:
            continue
        for method in ("entropy-sgd", "parle"):
            if method in rows:
                win = beats(rows[method]["final_errors"], rows["sgd"]["final_errors"])
                lines.append(f"{name}: {METHOD_LABELS[method]} {'beats' if win else 'does not beat'} tuned SGD "
                             f"by more than 2 standard deviations")
    return lines


def markdown(results: dict, command: str) -> str:
    """The study's tables: per regime, each method's tuned test error over the final seeds,
    its flatness, its sweep, and the verdicts."""
    from reproduce.runner import fmt_pm

    lines = [f"Command: `{command}` ({results['trials']} trials per sweep, ASHA grace {results['grace']:g} "
             f"effective epochs, reduction factor 2; {results['seeds']} final seeds; "
             f"{results['compute_s'] / 60:.0f} min of sweeps, final runs and flatness reports, as recorded "
             f"when each was computed; this command {results['elapsed_s'] / 60:.0f} min)", ""]
    for name, rows in results["regimes"].items():
        regime = REGIMES.get(name)
        lines += [f"**{name}**{': ' + regime.about if regime else ''}", "",
                  "| method | tuned config | test error % (final seeds) | λ_max | trace | near-zero | "
                  "sweep: best % / stopped early / failed |", "|---|---|---|---|---|---|---|"]
        for method, row in rows.items():
            cfg = ", ".join(f"{k}={_num(v)}" for k, v in row["sweep"]["best"]["config"].items())
            flat = row["flatness"]
            trials = row["sweep"]["trials"]
            lines.append(
                f"| {METHOD_LABELS[method]} (K={REPLICAS[method]}) | {cfg} | {fmt_pm(row['final_errors'], 2, 100)} "
                f"| {fmt_pm([f['lambda_max'] for f in flat], 3)} | {fmt_pm([f['trace'] for f in flat], 1)} "
                f"| {fmt_pm([f['near_zero_fraction'] for f in flat], 3)} "
                f"| {100 * row['sweep']['best']['value']:.2f} / {sum(t['state'] == 'STOPPED' for t in trials)} / "
                f"{sum(t['state'] == 'FAILED' for t in trials)} |")
        lines.append("")
    lines += [f"- {v}" for v in verdicts(results)]
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def plot(results: dict, path: Path) -> None:
    """Best test error so far against the number of trials, per method, one panel per regime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(results["regimes"])
    fig, axes = plt.subplots(1, len(regimes), figsize=(4.2 * len(regimes), 3.4), squeeze=False)
    for ax, name in zip(axes[0], regimes):
        for method, row in results["regimes"][name].items():
            errors = [math.nan if t["value"] is None else 100 * t["value"] for t in row["sweep"]["trials"]]
            ax.plot(range(1, len(errors) + 1), best_so_far(errors), marker="o", ms=3,
                    label=f"{METHOD_LABELS[method]} (K={REPLICAS[method]})")
        ax.set_title(f"{name}: best error vs trials")
        ax.set_xlabel("trials started")
        ax.set_ylabel("best test error so far (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
