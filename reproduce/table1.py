"""``esgd reproduce table1``: the structure of the Entropy-SGD paper's Table 1, on offline data.

What is reproduced: for each model of the paper's Table 1 that has data here — ``mnistfc`` and
``lenet`` on Fashion-MNIST (the paper used MNIST, which is not available offline), ``char-lstm``
on the King James Bible (the paper used War and Peace) — the test error (perplexity for the
LSTM) of SGD, Entropy-SGD, Parle and Elastic-SGD, mean ± std over seeds, with the effective
epochs each used, gradient evaluations and wall time, next to the papers' own numbers.
All-CNN-BN on CIFAR-10 is left out: no copy of CIFAR-10 exists offline.

How cost is equalised: every method of a model gets the same number of *effective epochs*
(passes over the training data per replica = gradient evaluations per replica × batch /
training samples); see :mod:`reproduce.presets`. Parle and Elastic-SGD run K = 2 replicas, so
they spend twice the total gradient evaluations, in parallel on the two cores; K = 1 methods
get both cores as two torch threads. Wall time is the engine's time in rounds (training,
communication and aggregation; evaluations and actor start-up excluded), on the same machine.

Outputs in the output directory: ``table1.md`` (the table and its context), ``table1.png`` (test
error — perplexity for the LSTM — against effective epochs, mean ± std over seeds),
``table1.json`` (every run's numbers) and one run directory per job.
"""
from __future__ import annotations

import json
import math
import shlex
import sys
import time
from pathlib import Path

from reproduce.presets import (METHOD_LABELS, METHODS, PAPER, REPLICAS, TABLE1_MODELS, budget, job_spec,
                               train_size)
from reproduce.runner import RunResult, Runner, fmt_pm, machine_line, mean_std

DATA_LABELS = {"mnistfc": "Fashion-MNIST", "lenet": "Fashion-MNIST", "char-lstm": "KJV Bible (chars)"}


def run_table1(*, mode: str = "full", out_dir: str | Path = "runs/reproduce/table1", seeds: int = 3,
               models: tuple[str, ...] = TABLE1_MODELS, methods: tuple[str, ...] = METHODS, local: bool = False,
               ray_address: str | None = None, num_cpus: int | None = None, threads: int = 0, fresh: bool = False,
               command: str | None = None, log=print) -> dict:
    """Run (or reuse) every model × method × seed job, then write table1.md/.png/.json."""
    out = Path(out_dir)
    start, machine_start = time.time(), machine_line()
    results: dict[tuple[str, str], list[RunResult]] = {}
    jobs = [(m, meth, s) for m in models for s in range(seeds) for meth in methods]
    with Runner(out, local=local, ray_address=ray_address, num_cpus=num_cpus, threads=threads, fresh=fresh,
                log=log) as runner:
        for i, (model, method, seed) in enumerate(jobs, 1):
            spec = job_spec(model, method, seed, budget(model, mode), cpus=runner.cpus, threads=threads)
            r = runner.run(spec, out / model / method / f"seed{seed}")
            results.setdefault((model, method), []).append(r)
            s = r.summary
            metric = (f"perplexity {r.perplexity:.3f}" if model == "char-lstm" else f"test_error {r.test_error:.4f}")
            log(f"[{i:>2}/{len(jobs)}] {model:9} {method:11} seed {seed}: {metric}  "
                f"eff. epochs {s['data_passes_per_replica']:.1f}  wall {s['wall_s']:.1f}s"
                f"{' (reused)' if r.reused else f'  total {r.total_s:.1f}s'}")
    elapsed = time.time() - start
    rows = [summarise(model, method, results[(model, method)]) for model in models for method in methods]
    context = {"mode": mode, "seeds": seeds, "command": command or _command(), "elapsed_s": elapsed,
               "machine_start": machine_start, "machine_end": machine_line(),
               "date": time.strftime("%Y-%m-%d %H:%M %Z"), "runner": _runner_label(local, threads),
               "runs": len(jobs), "reused": sum(r.reused for rs in results.values() for r in rs),
               "budgets": {m: {"train_samples": train_size(m, budget(m, mode)),
                               "test_samples": budget(m, mode).test_subset or "all",
                               "effective_epochs": budget(m, mode).effective_epochs,
                               "batch_size": budget(m, mode).batch_size} for m in models}}
    (out / "table1.md").write_text(markdown(rows, context))
    plot(results, models, methods, out / "table1.png")
    (out / "table1.json").write_text(json.dumps({"context": context, "rows": rows, "runs": [
        {"model": m, "method": meth, "run_dir": str(r.run_dir), "seed": r.spec.train.seed, "summary": r.summary,
         "total_s": r.total_s} for (m, meth), rs in results.items() for r in rs]}, indent=1, default=str) + "\n")
    log(f"wrote {out}/table1.md, table1.png, table1.json ({elapsed:.0f} s)")
    return {"rows": rows, "context": context, "out_dir": str(out)}


def summarise(model: str, method: str, runs: list[RunResult]) -> dict:
    s = [r.summary for r in runs]
    return {
        "model": model, "method": method, "label": METHOD_LABELS[method], "seeds": len(runs),
        "replicas": REPLICAS[method], "inner_steps": runs[0].spec.inner.steps,
        "effective_epochs": mean_std([x["data_passes_per_replica"] for x in s])[0],
        "grad_evals_per_replica": mean_std([x["grad_evals_per_replica"] for x in s])[0],
        "grad_evals_total": mean_std([x["grad_evals_total"] for x in s])[0],
        "test_error": [r.test_error for r in runs],
        "perplexity": [r.perplexity for r in runs] if model == "char-lstm" else [],
        "test_loss": [float(x.get("test_loss", float("nan"))) for x in s],
        "wall_s": [float(x["wall_s"]) for x in s],
        "total_s": [r.total_s for r in runs],
        "paper": PAPER.get((model, method), "—"),
    }


def markdown(rows: list[dict], ctx: dict) -> str:
    lines = [
        f"### Table 1 reproduction ({ctx['mode']} mode, {ctx['seeds']} seed{'s' if ctx['seeds'] != 1 else ''})",
        "",
        f"`{ctx['command']}` — {ctx['date']}, {ctx['elapsed_s'] / 60:.1f} min in all, replicas as {ctx['runner']}"
        + (f"; {ctx['reused']} of {ctx['runs']} runs reused from an earlier invocation." if ctx["reused"] else "."),
        "",
        f"- machine at the start: {ctx['machine_start']}",
        f"- machine at the end: {ctx['machine_end']}",
    ]
    for m, b in ctx["budgets"].items():
        lines.append(f"- `{m}` on {DATA_LABELS.get(m, m)}: {b['train_samples']} training samples, "
                     f"{b['test_samples']} test samples, batch {b['batch_size']}, "
                     f"{b['effective_epochs']} effective epochs for every method")
    lines += [
        "",
        "| model | method | K | L | effective epochs | grad evals / replica (total) | test error (%) | "
        "perplexity | wall (s) | paper (published) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['label']} | {r['replicas']} | {r['inner_steps']} | {r['effective_epochs']:.1f} | "
            f"{r['grad_evals_per_replica']:.0f} ({r['grad_evals_total']:.0f}) | {fmt_pm(r['test_error'], 2, 100.0)} | "
            f"{fmt_pm(r['perplexity'], 3) if r['perplexity'] else '—'} | {fmt_pm(r['wall_s'], 1)} | {r['paper']} |")
    lines += [
        "",
        "Cells are mean ± sample std over seeds. Effective epochs = passes over the training data per "
        "replica; wall = the engine's time in rounds (evaluations and actor start-up excluded). "
        "Perplexity = exp(test cross-entropy per character, nats). The char-LSTM SGD row is SGD with "
        "Nesterov momentum: the paper's baseline there is Adam, which the engine does not offer.",
        "",
    ]
    return "\n".join(lines)


def curves(runs: list[RunResult], key: str, scale: float = 1.0) -> tuple[list[float], list[float], list[float]]:
    """Mean and std over seeds of ``key`` at each evaluation, against mean effective epochs."""
    n = min(len(r.evals) for r in runs)
    xs, means, stds = [], [], []
    for i in range(n):
        xs.append(mean_std([r.evals[i]["data_passes_per_replica"] for r in runs])[0])
        m, s = mean_std([float(r.evals[i].get(key, float("nan"))) * scale for r in runs])
        means.append(m)
        stds.append(0.0 if math.isnan(s) else s)
    return xs, means, stds


def plot(results: dict[tuple[str, str], list[RunResult]], models, methods, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4), constrained_layout=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        text = model == "char-lstm"
        for method in methods:
            runs = results.get((model, method))
            if not runs:
                continue
            xs, m, s = curves(runs, "test_perplexity" if text else "test_error", 1.0 if text else 100.0)
            line, = ax.plot(xs, m, marker="o", ms=3, label=f"{METHOD_LABELS[method]} (K={REPLICAS[method]})")
            ax.fill_between(xs, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                            color=line.get_color(), alpha=0.2)
        ax.set_title(f"{model} on {DATA_LABELS.get(model, model)}")
        ax.set_xlabel("effective epochs (data passes per replica)")
        ax.set_ylabel("test perplexity" if text else "test error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _runner_label(local: bool, threads: int) -> str:
    where = "LocalPool (in-process)" if local else "Ray actors"
    return f"{where}, {threads} torch thread{'s' if threads != 1 else ''} each" if threads else where


def _command() -> str:
    return " ".join(shlex.quote(a) for a in ["esgd", *sys.argv[1:]])

