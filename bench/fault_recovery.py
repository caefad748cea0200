"""What a killed replica costs a real job: test error and recovery time, fault-free vs faulted.

Starts a real ``esgd serve`` (embedded Ray, SQLite) on loopback, runs the same job twice
through the gRPC API — once undisturbed, once with one replica process SIGKILLed by PID
halfway through — and prints both final test errors, the rounds completed, and the recovery
time: from the kill to the ``restarted`` replica event (the survivor's round already counted,
the new actor placed and given the common stream position). Same seed, same spec; the only
difference is the fault, so the error gap is what the fault costs.

    .venv/bin/python bench/fault_recovery.py                       # examples/quickstart.yaml
    .venv/bin/python bench/fault_recovery.py --spec examples/parle-lenet.yaml --kill-at 0.3
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.spec import JobSpec  # noqa: E402
from services.client import JobClient  # noqa: E402


def start_server(data_dir: Path, cpus: int) -> tuple[subprocess.Popen, str]:
    port_file = data_dir / "port"
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--port", "0", "--port-file",
                             str(port_file), "--data-dir", str(data_dir), "--num-cpus", str(cpus)],
                            cwd=ROOT, stdout=open(data_dir / "server.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"esgd serve did not start; see {data_dir / 'server.log'}")
        time.sleep(0.2)
    return proc, f"127.0.0.1:{port_file.read_text().strip()}"


def run(client: JobClient, spec: dict, kill_at_round: int | None) -> dict:
    """Run one job to its end; with ``kill_at_round``, SIGKILL replica 1 when that round is done."""
    job = client.create_job(spec)
    killed_at = recovered_s = None
    failed = restarted = 0
    for ev in client.watch(job.name, after_seq=0):
        if ev.HasField("progress") and kill_at_round and killed_at is None and ev.progress.round >= kill_at_round:
            victim = client.get_job(job.name).replicas[1]
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
        elif ev.HasField("replica"):
            failed += ev.replica.kind == "failed"
            restarted += ev.replica.kind == "restarted"
            if ev.replica.kind == "restarted" and recovered_s is None and killed_at is not None:
                recovered_s = time.monotonic() - killed_at
    final = client.get_job(job.name)
    return {"state": final.state, "test_error": final.summary.test_error, "rounds": final.summary.rounds,
            "wall_s": final.summary.wall_seconds, "failed": failed, "restarted": restarted,
            "recovered_s": recovered_s, "error": f"{final.error.code}: {final.error.message}" if final.error.code else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "examples" / "quickstart.yaml"))
    ap.add_argument("--kill-at", type=float, default=0.5, help="fraction of the rounds after which to kill")
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    spec = JobSpec.from_file(args.spec)
    if spec.replicas < 2:
        raise SystemExit("--spec: needs at least 2 replicas (one is killed)")
    total = spec.train.outer_steps or 0
    kill_round = max(1, int(total * args.kill_at)) if total else 1
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, {platform.python_version()}; spec {args.spec}; "
          f"replica 1 killed after round {kill_round} of {total or '?'}; load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="esgd-faults-") as tmp:
        proc, target = start_server(Path(tmp), args.cpus)
        try:
            with JobClient(target, timeout=60) as client:
                rows = [("fault-free", run(client, spec.to_dict(), None)),
                        ("replica 1 SIGKILLed", run(client, spec.to_dict(), kill_round))]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    print("| run | state | rounds | test error | failures | restarts | recovery s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    from services.api import jobs_pb2 as pb

    for name, r in rows:
        rec = f"{r['recovered_s']:.1f}" if r["recovered_s"] is not None else "-"
        print(f"| {name} | {pb.State.Name(r['state'])} | {r['rounds']} | {100 * r['test_error']:.2f}% | "
              f"{r['failed']} | {r['restarted']} | {rec} | {r['wall_s']:.0f} |")
        if r["error"]:
            print(f"#   {name}: {r['error']}")
    print(f"# load {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
