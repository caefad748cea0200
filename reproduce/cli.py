"""``esgd reproduce``: the paper reproductions as subcommands of the ``esgd`` command.

    esgd reproduce table1   [--quick | --smoke | --full] [--seeds N] [--models M ...] [--methods S ...]
    esgd reproduce flatness [--quick | --smoke | --full] [--seeds N] [--methods S ...]
    esgd reproduce study    [--trials N] [--seeds N] [--regimes R ...] [--methods S ...] [--smoke]

Common flags: --out DIR (default runs/reproduce/<name>), --fresh (rerun finished runs), --local
(replicas in this process instead of Ray actors), --num-cpus N, --ray-address ADDR.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from reproduce.presets import FLATNESS_METHODS, METHODS, MODES, TABLE1_MODELS
from services.cli_common import positive_int


def _common(p: argparse.ArgumentParser, name: str) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--mode", choices=MODES, default="full",
                      help="sizes: smoke (seconds per run, for tests), quick (data subsets, minutes on a "
                           "2-core CPU), full (the papers' sizes; hours on a CPU). Default: full")
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="same as --mode quick")
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke", help="same as --mode smoke")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="same as --mode full")
    p.add_argument("--out", default=None, help=f"output directory (default runs/reproduce/{name})")
    p.add_argument("--fresh", action="store_true", help="rerun runs that already finished in --out")
    p.add_argument("--local", action="store_true", help="run replicas in this process (no Ray)")
    p.add_argument("--num-cpus", type=positive_int, help="CPUs for the embedded Ray (default: all)")
    p.add_argument("--ray-address", help="attach to an existing Ray cluster instead of starting one")
    p.add_argument("--threads", type=positive_int, default=0, metavar="N",
                   help="torch threads per replica (default: one per CPU the replica reserves; 1 is more "
                        "robust when other work shares the CPUs)")


def add_reproduce_commands(sub) -> None:
    """Register ``esgd reproduce {table1,flatness}`` on the top-level subparsers ``sub``."""
    rep = sub.add_parser("reproduce", help="reproduce the papers' experiments (Table 1, flatness) on offline data")
    rsub = rep.add_subparsers(dest="experiment", required=True, metavar="{table1,flatness,study}")

    t1 = rsub.add_parser("table1", help="SGD / Entropy-SGD / Parle / Elastic-SGD on mnistfc, lenet, char-lstm: "
                                        "test error ± std over seeds, effective epochs, wall time")
    _common(t1, "table1")
    t1.add_argument("--seeds", type=positive_int, default=3, help="seeds per model × method (default 3)")
    t1.add_argument("--models", nargs="+", choices=TABLE1_MODELS, default=list(TABLE1_MODELS), metavar="MODEL",
                    help=f"models ({', '.join(TABLE1_MODELS)}; default all)")
    t1.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD",
                    help=f"methods ({', '.join(METHODS)}; default all)")
    t1.set_defaults(func=cmd_table1)

    fl = rsub.add_parser("flatness", help="LeNet with SGD / Entropy-SGD / Parle at equal compute, then the "
                                          "Hessian spectrum of each: λ_max, trace, near-zero fraction, density plot")
    _common(fl, "flatness")
    fl.add_argument("--seeds", type=positive_int, default=1, help="seeds per method (default 1)")
    fl.add_argument("--methods", nargs="+", choices=FLATNESS_METHODS, default=list(FLATNESS_METHODS),
                    metavar="METHOD", help=f"methods ({', '.join(FLATNESS_METHODS)}; default all)")
    fl.set_defaults(func=cmd_flatness)

    from reproduce.study import METHODS as STUDY_METHODS
    from reproduce.study import REGIMES

    st = rsub.add_parser("study", help="where local entropy pays: every method tuned by the same Ray Tune sweep "
                                       "(ASHA), then its best configuration on fresh seeds, with flatness")
    st.add_argument("--out", default="runs/reproduce/study", help="output directory (default runs/reproduce/study); "
                                                                  "run again to resume")
    st.add_argument("--trials", type=positive_int, default=8, help="trials per sweep, the same for every method "
                                                                   "(default 8)")
    st.add_argument("--seeds", type=positive_int, default=3, help="final runs per method (default 3)")
    st.add_argument("--grace", type=float, default=5.0, metavar="EPOCHS",
                    help="ASHA's grace period in effective epochs (default 5 of the 20)")
    st.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=list(REGIMES), metavar="REGIME",
                    help=f"regimes ({', '.join(REGIMES)}; default all)")
    st.add_argument("--methods", nargs="+", choices=STUDY_METHODS, default=list(STUDY_METHODS), metavar="METHOD",
                    help=f"methods ({', '.join(STUDY_METHODS)}; default all)")
    st.add_argument("--smoke", action="store_true", help="tiny sizes (seconds per run, for tests)")
    st.add_argument("--num-cpus", type=positive_int, help="CPUs for the embedded Ray (default: all)")
    st.set_defaults(func=cmd_study)


def _command(args, name: str) -> str:
    parts = ["esgd", "reproduce", name, f"--{args.mode}"]
    for flag in ("seeds",):
        parts += [f"--{flag}", str(getattr(args, flag))]
    if getattr(args, "models", None) and list(args.models) != list(TABLE1_MODELS):
        parts += ["--models", *args.models]
    default_methods = METHODS if name == "table1" else FLATNESS_METHODS
    if list(args.methods) != list(default_methods):
        parts += ["--methods", *args.methods]
    for flag in ("out", "num_cpus", "ray_address", "threads"):
        if getattr(args, flag):
            parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    parts += [f"--{f}" for f in ("fresh", "local") if getattr(args, f)]
    return " ".join(shlex.quote(p) for p in parts)


def _dedupe(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def cmd_table1(args) -> int:
    from reproduce.table1 import run_table1

    result = run_table1(mode=args.mode, out_dir=args.out or "runs/reproduce/table1", seeds=args.seeds,
                        models=_dedupe(args.models), methods=_dedupe(args.methods), local=args.local,
                        ray_address=args.ray_address, num_cpus=args.num_cpus, threads=args.threads,
                        fresh=args.fresh,
                        command=_command(args, "table1"))
    print((Path(result["out_dir"]) / "table1.md").read_text())
    return 0


def cmd_flatness(args) -> int:
    from reproduce.flatness_compare import run_flatness

    result = run_flatness(mode=args.mode, out_dir=args.out or "runs/reproduce/flatness", seeds=args.seeds,
                          methods=_dedupe(args.methods), local=args.local, ray_address=args.ray_address,
                          num_cpus=args.num_cpus, threads=args.threads, fresh=args.fresh,
                          command=_command(args, "flatness"))
    print((Path(result["out_dir"]) / "flatness.md").read_text())
    return 0


def cmd_study(args) -> int:
    from reproduce.study import markdown, plot, run_study

    command = " ".join(["esgd reproduce study", f"--trials {args.trials}", f"--seeds {args.seeds}",
                        "--regimes", *args.regimes, *(["--methods", *args.methods]
                                                     if list(args.methods) != ["sgd", "entropy-sgd", "parle",
                                                                               "elastic-sgd"] else []),
                        *(["--smoke"] if args.smoke else []), f"--out {args.out}"])
    results = run_study(out_dir=args.out, regimes=_dedupe(args.regimes), methods=_dedupe(args.methods),
                        trials=args.trials, seeds=args.seeds, grace=args.grace, smoke=args.smoke,
                        num_cpus=args.num_cpus)
    out = Path(args.out)
    (out / "study.md").write_text(markdown(results, command))
    plot(results, out / "study.png")
    print((out / "study.md").read_text())
    print(f"wrote {out}/study.md, study.png, study.json")
    return 0
