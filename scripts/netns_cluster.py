"""A real multi-node Ray cluster on one machine: network namespaces joined by capped links.

Topology (``--name esgd``, ``--subnet 10.213.0.0/24``, ``--nodes 3``)::

    esgd-n0 10.213.0.1 (Ray head)   esgd-n1 10.213.0.2     esgd-n2 10.213.0.3
        eth0 [tbf: node → switch]       eth0 [tbf]             eth0 [tbf]
          │ veth                          │                      │
        p0 [tbf: switch → node] ─── br0 ─ p1 [tbf] ───────────── p2 [tbf]
                              esgd-sw (the switch's namespace)

Why: every Ray node lives in its own network namespace, so the head's GCS, the raylets'
object transfers (anchors out, results back) and any gloo all-reduce between nodes really
cross a veth link and a bridge; each link is capped with a ``tbf`` qdisc in both directions
(``eth0`` egress inside the node, the bridge port's egress in the switch), so a benchmark sees
what a slower network does, and reads the bytes on the wire from the interfaces' own counters
(:func:`counters`) instead of estimating them. Nothing is added to the root namespace: the
veth pairs are created directly in the switch namespace and the node namespaces, no namespace
has a default route, so no traffic can leave them except through loopback. Ray's auth token is
off (``RAY_AUTH_MODE=disabled``) because nothing outside these namespaces can reach its ports.
Each node gets ``--num-cpus`` CPUs and no GPU (the nodes share one machine's devices).

qdiscs checked on this kernel (6.18, no loadable modules): ``tbf`` and ``htb`` are built in and
shape accurately (a 2 MB TCP send over ``tbf rate 10mbit`` took 1.65 s = 9.7 Mbit/s;
``1gbit`` gave 962 Mbit/s); ``netem``, ``fq_codel``, ``sfq`` and ``prio`` are not available
("Specified qdisc kind is unknown"), so there is no added delay or loss, only a rate cap.

State: ``/run/esgd-netns/<name>.json`` (created exclusively: it is also the lock), Ray's temp
dirs under ``/tmp/esgd-netns/<name>/``, the ``ray start`` logs in ``/tmp/esgd-netns/<name>-nI.log``
(kept after a failed ``up``: its error points there). Needs root and Debian's
``iproute2`` (``ip``, ``tc``); ``--pin`` also ``util-linux`` (``taskset``). On a machine whose
init does not reap orphans, the stopped Ray processes may linger as zombies (dead, no netns).

Usage: scripts/netns-cluster.sh up --nodes 2 --rate 100mbit | status [--json] | counters [--json]
       | exec -- CMD... (in the head's namespace, with $ESGD_RAY_ADDRESS) | down
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # netns_plumbing.py, also when this file is loaded by path
from netns_plumbing import (RATE_HELP, ClusterError, _alive, _build, _in_ns, _netns_list,  # noqa: E402
                            _ns_popen, _stop, parse_rate, preflight, sh)

STATE_DIR, TEMP_ROOT = Path("/run/esgd-netns"), Path("/tmp/esgd-netns")
RAY_PORT, ADDRESS_ENV = 6379, "ESGD_RAY_ADDRESS"
_PROBE = """import json, sys, time, ray
addr, n, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
ray.init(address=addr, log_to_driver=False, logging_level="ERROR")
while True:
    alive = sorted(x["NodeManagerAddress"] for x in ray.nodes() if x["Alive"])
    if len(alive) >= n or time.time() > deadline:
        print(json.dumps(alive)); break
    time.sleep(0.5)
"""


def state_path(name: str) -> Path:
    return STATE_DIR / f"{name}.json"


def load(name: str) -> dict:
    try:
        return json.loads(state_path(name).read_text())
    except FileNotFoundError:
        raise ClusterError(f"no cluster {name!r} is up (no {state_path(name)}); start one with `up`") from None


def _save(state: dict) -> None:
    tmp = state_path(state["name"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_path(state["name"]))


def _check_free(name: str, net: ipaddress.IPv4Network, namespaces: list[str]) -> None:
    """Refuse namespaces that exist already and a subnet another cluster or the host uses."""
    if taken := sorted(set(namespaces) & _netns_list()):
        raise ClusterError(f"network namespace {taken[0]} already exists and is not ours (no {state_path(name)}); "
                           f"choose another --name or remove it with `ip netns del {taken[0]}`")
    used = []
    for other in set(STATE_DIR.glob("*.json")) - {state_path(name)}:
        with contextlib.suppress(ValueError, KeyError):  # another `up` is creating it
            o = json.loads(other.read_text())
            used.append((o["subnet"], f"cluster {o['name']!r}"))
    for link in json.loads(sh("ip", "-j", "addr").stdout or "[]"):
        used += [(f"{a['local']}/{a['prefixlen']}", f"the host's {link['ifname']}")
                 for a in link.get("addr_info", []) if a.get("family") == "inet"]
    for subnet, owner in used:
        if ipaddress.ip_network(subnet, strict=False).overlaps(net):
            raise ClusterError(f"--subnet {net} is already taken by {owner} ({subnet}); choose another --subnet")


def teardown(state: dict, keep_logs: bool = False) -> None:
    """Stop every process ``up`` started and every process left in the namespaces, delete the
    namespaces (which deletes their veths and bridge), the temp dir, the logs and the state file.
    ``keep_logs``: a failed ``up`` keeps the ``ray start`` logs its error points to."""
    existing = _netns_list()
    _stop([n["pid"] for n in state["nodes"] if n["pid"] and n["ns"] in existing and _in_ns(n["pid"], n["ns"])])
    namespaces = [ns for ns in state["namespaces"] if ns in existing]
    _stop([int(p) for ns in namespaces for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()], 5.0)
    for ns in namespaces:
        sh("ip", "netns", "del", ns, check=False)
    shutil.rmtree(state["temp_dir"], ignore_errors=True)
    for n in [] if keep_logs else state["nodes"]:
        Path(n["log"]).unlink(missing_ok=True)
    state_path(state["name"]).unlink(missing_ok=True)
    _prune()


def _prune() -> None:
    for d in (TEMP_ROOT, STATE_DIR):  # when no other cluster uses them
        with contextlib.suppress(OSError):
            d.rmdir()


def up(name: str = "esgd", nodes: int = 2, rate: str = "unlimited", *, cpus_per_node: int = 1,
       subnet: str = "10.213.0.0/24", object_store_mb: int = 256, pin: bool = False, timeout: float = 120.0) -> dict:
    """Build the namespaces, links and caps, start one Ray node in each and wait until all are
    alive; return the state. On any failure everything created so far is removed."""
    if not re.fullmatch(r"[a-z][a-z0-9]{0,11}", name):
        raise ClusterError(f"--name {name!r}: use 1-12 lowercase letters and digits, starting with a letter")
    if nodes not in (2, 3) or cpus_per_node < 1:
        raise ClusterError(f"--nodes {nodes}: must be 2 or 3" if nodes not in (2, 3) else
                           f"--cpus-per-node {cpus_per_node}: must be at least 1")
    bps = parse_rate(rate)
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError:
        net = None
    hosts = list(net.hosts())[:nodes] if net and net.version == 4 else []
    if len(hosts) < nodes:
        raise ClusterError(f"--subnet {subnet!r}: need an IPv4 network with {nodes} addresses, e.g. 10.213.0.0/24")
    preflight()
    if not (Path(sys.executable).parent / "ray").exists():
        raise ClusterError(f"no `ray` next to {sys.executable}: run it with the repo's .venv python "
                           "(scripts/netns-cluster.sh)")
    sw, node_ns, head = f"{name}-sw", [f"{name}-n{i}" for i in range(nodes)], f"{hosts[0]}:{RAY_PORT}"
    state = {"name": name, "subnet": str(net), "rate": rate, "head": head, "switch": sw, "bridge": "br0",
             "namespaces": [sw, *node_ns], "temp_dir": str(TEMP_ROOT / name), "created": time.time(),
             "nodes": [{"node": f"n{i}", "ns": ns, "ip": str(hosts[i]), "if": "eth0", "port": f"p{i}",
                        "pid": None, "log": str(TEMP_ROOT / f"{name}-n{i}.log")} for i, ns in enumerate(node_ns)]}
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    try:  # the state file, created exclusively, is the lock
        os.close(os.open(state_path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        raise ClusterError(f"cluster {name!r} is already up ({state_path(name)}); "
                           f"run `down --name {name}` first") from None
    try:
        _check_free(name, net, state["namespaces"])
    except BaseException:
        state_path(name).unlink()  # nothing built yet, and those namespaces are not ours to delete
        _prune()
        raise
    try:
        _save(state)
        _build(state, bps)
        _start_ray(state, cpus_per_node, object_store_mb, pin, timeout)
        return state
    except BaseException:
        teardown(state, keep_logs=True)
        raise


def _start_ray(state: dict, cpus: int, store_mb: int, pin: bool, timeout: float) -> None:
    """``ray start --block`` in each namespace (the head first), then wait for ray.nodes()."""
    deadline = time.monotonic() + timeout
    for i, n in enumerate(state["nodes"]):
        tmp = Path(state["temp_dir"]) / n["node"]
        tmp.mkdir(parents=True, exist_ok=True)
        role = ["--head", f"--port={RAY_PORT}", "--include-dashboard=false"] if i == 0 else \
            [f"--address={state['head']}"]
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--block", *role, f"--node-ip-address={n['ip']}",
               f"--num-cpus={cpus}", "--num-gpus=0", f"--temp-dir={tmp}", "--disable-usage-stats",
               f"--object-store-memory={store_mb * 1024 * 1024}"]
        cmd = ["taskset", "-c", str(i % (os.cpu_count() or 1)), *cmd] if pin else cmd
        with open(n["log"], "w") as log:
            n["pid"] = _ns_popen(n["ns"], cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, cwd=tmp).pid
        _save(state)
        probe = f"import socket; socket.create_connection(('{n['ip']}', {RAY_PORT}), 1)"
        while i == 0 and _ns_popen(n["ns"], [sys.executable, "-c", probe], stderr=subprocess.DEVNULL).wait():
            _check_nodes(state, deadline, [n["ip"]])  # the workers need the head's GCS listening
            time.sleep(0.5)
    ips = [n["ip"] for n in state["nodes"]]
    with open(Path(state["temp_dir"]) / "probe.log", "w") as log:
        probe = _ns_popen(state["nodes"][0]["ns"], [sys.executable, "-c", _PROBE, state["head"], str(len(ips)),
                                                    str(max(1.0, deadline - time.monotonic()))],
                          stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        while probe.poll() is None:
            _check_nodes(state, deadline + 30, ips)
            time.sleep(0.5)
    finally:
        if probe.poll() is None:
            probe.kill()
    alive = json.loads(probe.stdout.read() or "null") if probe.wait() == 0 else None
    if alive is None:
        raise ClusterError(f"could not query the cluster from {state['nodes'][0]['ns']}: see {log.name}")
    _check_nodes(state, 0, [ip for ip in ips if ip not in alive])


def _check_nodes(state: dict, deadline: float, missing: list[str]) -> None:
    """Raise naming the first node in ``missing`` whose Ray died, or that is late past ``deadline``."""
    for n in state["nodes"]:
        if n["ip"] in missing and (not _alive(n["pid"]) or time.monotonic() > deadline):
            why = "ray start exited" if not _alive(n["pid"]) else "not alive in ray.nodes() in time"
            tail = [ln.strip() for ln in Path(n["log"]).read_text(errors="replace").splitlines() if ln.strip()]
            raise ClusterError(f"node {n['ns']} ({n['ip']}): {why}; see {n['log']}"
                               + (f" (last line: {tail[-1][:200]})" if tail else ""))


def down(name: str = "esgd") -> None:
    preflight()
    teardown(load(name))


def counters(name: str = "esgd") -> dict[str, dict[str, int | None]]:
    """Each node's bytes and packets on its link, read from its ``eth0`` counters in its
    namespace (rx = into the node); None where the namespace is gone."""
    out = {}
    for n in load(name)["nodes"]:
        p = sh("ip", "-n", n["ns"], "-s", "-j", "link", "show", "dev", n["if"], check=False)
        s = json.loads(p.stdout)[0]["stats64"] if p.returncode == 0 else None
        out[n["node"]] = {f"{d}_{k}": s[d][k] if s else None for d in ("rx", "tx") for k in ("bytes", "packets")}
    return out


def status(name: str = "esgd") -> dict:
    state, existing, count = load(name), _netns_list(), counters(name)
    for n in state["nodes"]:
        n.update(alive=bool(n["pid"]) and _alive(n["pid"]), ns_exists=n["ns"] in existing, **count[n["node"]])
    return state


def exec_in_head(name: str, cmd: list[str]) -> None:
    """Replace this process by ``cmd`` inside the head's namespace, with $ESGD_RAY_ADDRESS set."""
    state = load(name)
    if not cmd:
        raise ClusterError("exec: nothing to run; usage: exec [--name NAME] -- CMD [ARGS...]")
    os.environ.update({ADDRESS_ENV: state["head"], "RAY_USAGE_STATS_ENABLED": "0"})
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.execvp("ip", ["ip", "netns", "exec", state["nodes"][0]["ns"], *cmd])


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise ClusterError(message)


def _text(command: str, out: dict) -> str:
    if command == "counters":
        return "\n".join(f"{node}  rx {c['rx_bytes']} B  tx {c['tx_bytes']} B" for node, c in out.items())
    return "\n".join([f"cluster {out['name']}: head {out['head']}, rate {out['rate']}, subnet {out['subnet']}"] + [
        f"  {n['ns']:<14} {n['ip']:<15} pid {n['pid']} {'alive' if n['alive'] else 'DEAD'}  rx {n['rx_bytes']} B"
        f"  tx {n['tx_bytes']} B  log {n['log']}" for n in out["nodes"]])


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="netns-cluster", description="A multi-node Ray cluster in network namespaces with capped links.")
    sub = ap.add_subparsers(dest="command", required=True)
    cmds = {c: sub.add_parser(c) for c in ("up", "down", "status", "counters", "exec")}
    for p in cmds.values():
        p.add_argument("--name", default="esgd", help="cluster name: namespaces NAME-sw, NAME-n0.. (default esgd)")
    u = cmds["up"]
    u.add_argument("--nodes", type=int, default=2, help="2 or 3")
    u.add_argument("--rate", default="unlimited", help=RATE_HELP)
    u.add_argument("--cpus-per-node", type=int, default=1)
    u.add_argument("--subnet", default="10.213.0.0/24")
    u.add_argument("--object-store-mb", type=int, default=256)
    u.add_argument("--pin", action="store_true", help="pin node i's Ray to CPU i mod ncpu (taskset)")
    u.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for all nodes alive")
    for c in ("status", "counters"):
        cmds[c].add_argument("--json", action="store_true")
    cmds["exec"].add_argument("cmd", nargs=argparse.REMAINDER)
    try:
        a = ap.parse_args(argv)
        if a.command == "up":
            s = up(a.name, a.nodes, a.rate, cpus_per_node=a.cpus_per_node, subnet=a.subnet,
                   object_store_mb=a.object_store_mb, pin=a.pin, timeout=a.timeout)
            print(f"cluster {s['name']}: {len(s['nodes'])} nodes at {s['rate']}, head {s['head']} "
                  f"(run with: exec --name {s['name']} -- CMD; ${ADDRESS_ENV}={s['head']})")
        elif a.command == "down":
            down(a.name)
            print(f"cluster {a.name}: down")
        elif a.command in ("status", "counters"):
            out = status(a.name) if a.command == "status" else counters(a.name)
            print(json.dumps(out, indent=2) if a.json else _text(a.command, out))
        else:
            exec_in_head(a.name, a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd)
    except ClusterError as exc:
        print(f"netns-cluster: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
