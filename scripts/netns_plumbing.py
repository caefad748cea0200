"""The plumbing of scripts/netns_cluster.py: network namespaces, veth links to a bridge, tc rate
caps, and the processes started in those namespaces.

Every function here works on the cluster's state dict or on one namespace, device or PID; the
cluster's state file, its ``up``/``down`` and the CLI are in netns_cluster.py (which describes
the topology). Failures raise :class:`ClusterError`, one line for the user.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

RATE_HELP = "'unlimited' or a tc rate such as 10mbit, 100mbit, 1gbit (units bit/kbit/mbit/gbit, bps/kbps/mbps/gbps)"
_UNITS = {"bit": 1 / 8, "kbit": 125, "mbit": 125e3, "gbit": 125e6, "tbit": 125e9,
          "bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}


class ClusterError(Exception):
    """Bad input or a failed step: one line for the user (the CLI exits 2)."""


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode:
        raise ClusterError(f"`{' '.join(cmd)}` failed: {' '.join((p.stderr or p.stdout).split())}")
    return p


def parse_rate(rate: str) -> float | None:
    """Bytes per second of a tc rate, None for 'unlimited'; ClusterError when malformed."""
    if rate == "unlimited":
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]+)", rate.lower())
    if not m or m.group(2) not in _UNITS:
        raise ClusterError(f"--rate {rate!r}: not a rate; use {RATE_HELP}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def preflight() -> None:
    if os.geteuid() != 0:
        raise ClusterError("must run as root (network namespaces, veth links and tc need CAP_NET_ADMIN)")
    for prog in ("ip", "tc"):
        if not shutil.which(prog):
            raise ClusterError(f"`{prog}` not found: install the Debian package iproute2 (apt-get install iproute2)")


def _netns_list() -> set[str]:
    return {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line.strip()}


def _cap(ns: str, dev: str, rate: str, bps: float | None) -> None:
    if bps is None:
        return
    burst = max(32 * 1024, int(bps / 100))  # ≥ 10 ms of traffic: tbf needs burst ≥ rate/HZ
    p = sh("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", str(burst),
           "latency", "100ms", check=False)
    if p.returncode:
        raise ClusterError(f"--rate {rate!r}: tc refused it: {(p.stderr or p.stdout or '?').strip().splitlines()[0]}; "
                           f"use {RATE_HELP}")


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie is dead: this machine's init may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _in_ns(pid: int, ns: str) -> bool:
    """Whether ``pid`` lives in namespace ``ns`` (so a recycled PID is never signalled)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return False


def _stop(pids: list[int], grace: float = 10.0) -> None:
    """SIGTERM each live pid (``ray start --block`` then drains and stops its node's processes),
    then SIGKILL it and its process group (its own session) after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in [p for p in pids if _alive(p)]:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
                if sig == signal.SIGKILL:
                    os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            for pid in pids:  # our own children (up() called in-process) would stay zombies
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)


def _build(state: dict, bps: float | None) -> None:
    sw, rate, prefix = state["switch"], state["rate"], ipaddress.ip_network(state["subnet"]).prefixlen
    sh("ip", "netns", "add", sw)
    sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", sw, "link", "set", "br0", "up")
    for n in state["nodes"]:
        ns = n["ns"]
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", sw, "link", "add", n["port"], "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", sw, "link", "set", n["port"], "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{n['ip']}/{prefix}", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        _cap(ns, "eth0", rate, bps)
        _cap(sw, n["port"], rate, bps)


# Ray re-requests an object chunk it has not received within 10 s, and the sender pushes it
# again; on a slow link with many chunks in flight every chunk takes longer than that, so the
# same object is sent over and over (measured at 10mbit: a 55 MB dataset kept a link saturated
# for minutes, 240 MB and counting). Long timeouts make a slow link slow, not congested.
SLOW_LINK_ENV = {"RAY_object_manager_pull_timeout_ms": "600000", "RAY_object_manager_push_timeout_ms": "600000"}


def _ns_popen(ns: str, cmd: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **SLOW_LINK_ENV}
    return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], env=env, **kw)
