"""``esgd reproduce flatness``: are the minima local-entropy methods find flatter, at equal compute?

What is reproduced: the Entropy-SGD paper's central claim (§2, Figure 1) that local-entropy
training ends in wide valleys — a Hessian with a few large eigenvalues and most of its mass near
zero. LeNet is trained on Fashion-MNIST with SGD, Entropy-SGD and Parle (the settings of
:mod:`reproduce.presets`), then ``coordinator.flatness_job.report_for_checkpoint`` measures the
final model's Hessian on a fixed subset of the training data: the top eigenvalue (Lanczos), the
trace (Hutchinson, with its standard error), the fraction of eigenvalues near zero and the
spectral density (stochastic Lanczos quadrature).

How cost is equalised: every method gets the same number of effective epochs — passes over the
training data per replica, i.e. the same number of gradient evaluations per replica (Parle's
K = 2 replicas spend twice that in total). See :mod:`reproduce.presets`.

The near-zero fraction of ``flatness_report`` is *relative* (``|λ| < 1% of that model's λ_max``),
so a sharper model gets a wider band. The table therefore also gives the fraction inside one
*common* absolute band (the widest of the per-model bands), computed from the same SLQ nodes.

Outputs in the output directory: ``flatness.md`` (the table and its context), ``flatness.png``
(the eigenvalue densities overlaid, log scale), ``flatness.json``, and per run its run directory
with the engine's files plus ``flatness.json``/``flatness.png`` of that model.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from reproduce.presets import FLATNESS_METHODS, FLATNESS_SIZES, METHOD_LABELS, REPLICAS, budget, job_spec, train_size
from reproduce.runner import RunResult, Runner, fmt_pm, machine_line, mean_std
from reproduce.table1 import _command, _runner_label

MODEL = "lenet"


def run_flatness(*, mode: str = "full", out_dir: str | Path = "runs/reproduce/flatness", seeds: int = 1,
                 methods: tuple[str, ...] = FLATNESS_METHODS, local: bool = False, ray_address: str | None = None,
                 num_cpus: int | None = None, threads: int = 0, fresh: bool = False, command: str | None = None,
                 log=print) -> dict:
    """Train (or reuse) one LeNet per method × seed, report each one's flatness, write the comparison."""
    out = Path(out_dir)
    start, machine_start = time.time(), machine_line()
    b = budget(MODEL, mode, flatness=True)
    sizes = FLATNESS_SIZES[mode]
    runs: dict[str, list[RunResult]] = {}
    jobs = [(m, s) for s in range(seeds) for m in methods]
    with Runner(out, local=local, ray_address=ray_address, num_cpus=num_cpus, threads=threads, fresh=fresh,
                log=log) as runner:
        for i, (method, seed) in enumerate(jobs, 1):
            spec = job_spec(MODEL, method, seed, b, cpus=runner.cpus, threads=threads)
            r = runner.run(spec, out / method / f"seed{seed}")
            runs.setdefault(method, []).append(r)
            log(f"[{i}/{len(jobs)}] train {MODEL} {method:11} seed {seed}: test_error {r.test_error:.4f}  "
                f"eff. epochs {r.summary['data_passes_per_replica']:.1f}  wall {r.summary['wall_s']:.1f}s"
                f"{' (reused)' if r.reused else ''}")
        train_s = time.time() - start
        reports: dict[str, list[dict]] = {}
        for i, (method, seed) in enumerate(jobs, 1):
            report = _report(runs[method][seed], sizes, fresh)
            reports.setdefault(method, []).append(report)
            log(f"[{i}/{len(jobs)}] flatness {method:11} seed {seed}: λ_max {report['top_eigenvalues'][0]:.4g}  "
                f"trace {report['trace']:.4g}  near-zero {report['near_zero_fraction']:.3f}  "
                f"({report['seconds']:.1f}s)")
    common = max(rep["near_zero_threshold"] for reps in reports.values() for rep in reps)
    rows = [summarise(method, runs[method], reports[method], common) for method in methods]
    elapsed = time.time() - start
    context = {"mode": mode, "seeds": seeds, "command": command or _command(), "elapsed_s": elapsed,
               "train_s": train_s, "machine_start": machine_start, "machine_end": machine_line(),
               "date": time.strftime("%Y-%m-%d %H:%M %Z"),
               "runner": _runner_label(local, threads), "sizes": sizes,
               "runs": len(jobs), "reused": sum(r.reused for rs in runs.values() for r in rs),
               "eval_samples": reports[methods[0]][0]["eval_samples"], "common_threshold": common,
               "train_samples": train_size(MODEL, b), "test_samples": b.test_subset or "all",
               "effective_epochs": b.effective_epochs, "batch_size": b.batch_size}
    (out / "flatness.md").write_text(markdown(rows, context))
    plot({m: reports[m][0] for m in methods}, out / "flatness.png")
    (out / "flatness.json").write_text(json.dumps({"context": context, "rows": rows, "reports": {
        m: [{k: v for k, v in rep.items() if k not in ("density", "slq")} for rep in reps]
        for m, reps in reports.items()}}, indent=1, default=str) + "\n")
    log(f"wrote {out}/flatness.md, flatness.png, flatness.json ({elapsed:.0f} s)")
    return {"rows": rows, "context": context, "out_dir": str(out)}


def _report(r: RunResult, sizes: dict, fresh: bool) -> dict:
    """The run's flatness report: reused when it was made with the same sizes, else computed."""
    from coordinator.flatness_job import load_checkpoint, report_for_checkpoint

    marker, path = r.run_dir / "flatness-sizes.json", r.run_dir / "flatness.json"
    if not fresh and r.reused and path.exists() and marker.exists() and json.loads(marker.read_text()) == sizes:
        return json.loads(path.read_text())
    report = report_for_checkpoint(load_checkpoint(r.run_dir)[0], r.run_dir, **sizes)
    marker.write_text(json.dumps(sizes) + "\n")
    return report


def _common_fraction(report: dict, threshold: float) -> float:
    from coordinator.spectrum import near_zero_fraction

    return near_zero_fraction(np.asarray(report["slq"]["nodes"]), np.asarray(report["slq"]["weights"]), threshold)


def summarise(method: str, runs: list[RunResult], reports: list[dict], common: float) -> dict:
    return {
        "method": method, "label": METHOD_LABELS[method], "seeds": len(runs), "replicas": REPLICAS[method],
        "inner_steps": runs[0].spec.inner.steps,
        "effective_epochs": float(np.mean([r.summary["data_passes_per_replica"] for r in runs])),
        "grad_evals_per_replica": float(np.mean([r.summary["grad_evals_per_replica"] for r in runs])),
        "test_error": [r.test_error for r in runs],
        "train_loss": [float(rep["loss"]) for rep in reports],
        "top_eigenvalue": [float(rep["top_eigenvalues"][0]) for rep in reports],
        "trace": [float(rep["trace"]) for rep in reports],
        "trace_stderr": [float(rep["trace_stderr"]) for rep in reports],
        "near_zero_fraction": [float(rep["near_zero_fraction"]) for rep in reports],
        "near_zero_threshold": [float(rep["near_zero_threshold"]) for rep in reports],
        "near_zero_common": [_common_fraction(rep, common) for rep in reports],
        "energy_gap": [float(rep["local_entropy"]["energy_gap"]) for rep in reports],
        "report_s": [float(rep["seconds"]) for rep in reports],
        "wall_s": [float(r.summary["wall_s"]) for r in runs],
    }


def _cell(values: list[float], digits: int, fixed: bool = False) -> str:
    """One value as is, several as mean ± std; ``fixed``: ``digits`` decimals, else significant digits."""
    if len(values) == 1:
        return f"{values[0]:.{digits}{'f' if fixed else 'g'}}"
    if fixed:
        return fmt_pm(values, digits)
    m, s = mean_std(values)
    return f"{m:.{digits}g} ± {s:.2g}"


def markdown(rows: list[dict], ctx: dict) -> str:
    one = ctx["seeds"] == 1
    lines = [
        f"### Flatness at equal compute: LeNet on Fashion-MNIST ({ctx['mode']} mode, "
        f"{ctx['seeds']} seed{'' if one else 's'})",
        "",
        f"`{ctx['command']}` — {ctx['date']}, {ctx['elapsed_s'] / 60:.1f} min in all "
        f"({ctx['train_s'] / 60:.1f} min training), replicas as {ctx['runner']}"
        + (f"; {ctx['reused']} of {ctx['runs']} runs reused from an earlier invocation." if ctx["reused"] else "."),
        "",
        f"- machine at the start: {ctx['machine_start']}",
        f"- machine at the end: {ctx['machine_end']}",
        f"- training: {ctx['train_samples']} training samples, batch {ctx['batch_size']}, "
        f"{ctx['effective_epochs']} effective epochs (passes per replica) for every method; test error on "
        f"{ctx['test_samples']} test samples",
        f"- Hessian of the training loss at the final weights, on {ctx['eval_samples']} training samples, eval "
        f"mode; report sizes {json.dumps(ctx['sizes']) if ctx['sizes'] else '(the report defaults)'}",
        "",
        "| method | K | L | effective epochs | test error (%) | train loss | λ_max | trace (± s.e.) | "
        "near-zero, relative (\\|λ\\| < 1% λ_max) | near-zero, common (\\|λ\\| < "
        f"{ctx['common_threshold']:.3g}) | local energy gap |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        err = (f"{100 * r['test_error'][0]:.2f}" if one else fmt_pm(r["test_error"], 2, 100.0))
        trace = (f"{r['trace'][0]:.4g} ± {r['trace_stderr'][0]:.2g}" if one else _cell(r["trace"], 4))
        lines.append(
            f"| {r['label']} | {r['replicas']} | {r['inner_steps']} | {r['effective_epochs']:.1f} | {err} | "
            f"{_cell(r['train_loss'], 3)} | {_cell(r['top_eigenvalue'], 4)} | {trace} | "
            f"{_cell(r['near_zero_fraction'], 3, True)} | {_cell(r['near_zero_common'], 3, True)} | "
            f"{_cell(r['energy_gap'], 3)} |")
    lines += [
        "",
        "λ_max: largest Lanczos Ritz value; trace: Hutchinson estimate; near-zero: SLQ estimate of the share "
        "of eigenvalues inside the band (relative to each model's λ_max, and inside one common absolute band); "
        "local energy gap: mean loss along a short Langevin chain around the weights minus the loss at them "
        "(smaller = flatter neighbourhood).",
        "",
    ]
    return "\n".join(lines)


def plot(reports: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    peak = 1e-12
    for method, rep in reports.items():
        grid, dens = rep["density"]["grid"], [max(d, 1e-12) for d in rep["density"]["density"]]
        peak = max(peak, max(dens))
        ax.plot(grid, dens, label=f"{METHOD_LABELS[method]}: λ_max {rep['top_eigenvalues'][0]:.3g}, "
                                  f"trace {rep['trace']:.3g}, near-zero {100 * rep['near_zero_fraction']:.0f}%")
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(1e-12, peak * 1e-7))
    ax.set_xlabel("eigenvalue λ of the training-loss Hessian")
    ax.set_ylabel("density (log scale)")
    ax.set_title("LeNet on Fashion-MNIST at equal effective epochs: Hessian eigenvalue density (SLQ)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
