"""Flatness reports for a trained job: from its final checkpoint to ``flatness.json`` + a PNG.

The PNG follows the seed paper's Figure 1: the Hessian's eigenvalue density on a log scale,
where a wide valley shows as a tall spike at zero and a short tail of large eigenvalues.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from coordinator.checkpoint import load_latest
from coordinator.flatness import flatness_report
from core.spec import JobSpec, SpecError
from worker.models import build_model

HEADLINE = ("top_eigenvalues", "trace", "near_zero_fraction")


def load_checkpoint(target: str | Path) -> tuple[dict, Path]:
    """A checkpoint from a file, or the newest valid one in a run directory."""
    path = Path(target)
    if path.is_dir():
        found = load_latest(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
        if found is None:
            raise SpecError(f"{path}: no valid checkpoint (ckpt-*.pt with its .sha256) found", "TARGET")
        return found[1], found[0]
    if not path.is_file():
        raise SpecError(f"{path}: no such run directory or checkpoint file", "TARGET")
    try:
        ckpt = torch.load(path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - not a torch file, torn, or not loadable safely
        raise SpecError(f"{path}: not a checkpoint ({type(exc).__name__})", "TARGET") from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("spec"), dict) and "model" in ckpt):
        raise SpecError(f"{path}: not an esgd checkpoint (no spec and model in it)", "TARGET")
    return ckpt, path


def report_for_checkpoint(ckpt: dict, out_dir: str | Path, **sizes) -> dict:
    """Compute the report for the checkpoint's model and write ``flatness.json``/``flatness.png``."""
    from coordinator.local_run import dataset_for

    spec = JobSpec.parse(ckpt["spec"])
    dataset = dataset_for(spec)
    model = build_model(spec.model, dataset.input_shape, dataset.num_classes)
    model.load_state_dict(ckpt["model"])
    report = {"round": int(ckpt.get("round", 0)), "model": spec.model, "strategy": spec.strategy,
              **flatness_report(model, dataset, seed=spec.train.seed, **sizes)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "flatness.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_density(report, out / "flatness.png")
    return report


def plot_density(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid, density = report["density"]["grid"], report["density"]["density"]
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ax.fill_between(grid, [max(d, 1e-12) for d in density], 1e-12, alpha=0.4)
    ax.plot(grid, [max(d, 1e-12) for d in density])
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(1e-8, min(d for d in density if d > 0) if any(d > 0 for d in density) else 1e-8))
    ax.set_xlabel("eigenvalue λ of the Hessian")
    ax.set_ylabel("density (log scale)")
    top = report["top_eigenvalues"][0] if report["top_eigenvalues"] else float("nan")
    ax.set_title(f"{report['strategy']} {report['model']} round {report['round']}: λ_max {top:.3g}, "
                 f"trace {report['trace']:.3g}, near-zero {100 * report['near_zero_fraction']:.0f}%")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def headline(report: dict) -> str:
    return (f"λ_max {report['top_eigenvalues'][0]:.4g}  trace {report['trace']:.4g} ± {report['trace_stderr']:.2g}  "
            f"near-zero fraction {report['near_zero_fraction']:.3f} (|λ| < {report['near_zero_threshold']:.3g})  "
            f"local energy gap {report['local_entropy']['energy_gap']:.3g}  ({report['seconds']:.1f} s)")
