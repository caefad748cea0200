"""Start a real `esgd serve` subprocess on a loopback port and stop it by PID."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    def __init__(self, data_dir: Path, *extra: str, env: dict | None = None):
        self.data_dir = Path(data_dir)
        self.port_file = self.data_dir / f"port-{time.monotonic_ns()}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "--port", "0", "--port-file", str(self.port_file),
             "--data-dir", str(self.data_dir), *extra],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})
        self.port = self._wait_for_port()
        self.target = f"127.0.0.1:{self.port}"

    def _wait_for_port(self, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"esgd serve exited with {self.proc.returncode}: {self.read_log()[-3000:]}")
            if self.port_file.exists() and self.port_file.read_text().strip():
                return int(self.port_file.read_text())
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"esgd serve did not start: {self.read_log()[-3000:]}")

    def read_log(self) -> str:
        return (self.data_dir / "server.log").read_text(errors="replace")

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the server and the Ray processes it started (its own process group members)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()
