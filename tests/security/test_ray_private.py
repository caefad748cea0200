"""The embedded Ray of `esgd serve` is private to the machine: every socket listens on loopback.

Ray's processes accept work (and so run code) from whoever reaches their ports, and its token
auth is off for the embedded instance. A real `esgd serve` runs a small job here, and while
its replicas are alive every listening TCP socket and every unconnected UDP socket of the whole
process tree (server, GCS, raylet, agents, the job runner and replica workers, idle workers) is
listed from /proc: one that is not on a loopback address fails the test.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from tests.service_harness import ServerProcess, descendants, follow, free_port
from tests.test_service import create, quick_spec, wait_state

pytestmark = pytest.mark.slow

TCP_LISTEN, UDP_UNCONNECTED = "0A", "07"


def _address(hex_addr: str, v6: bool) -> tuple[str, int]:
    ip, port = hex_addr.split(":")
    raw = bytes.fromhex(ip)
    if v6:  # four 32-bit words, each in host (little-endian) order
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, raw), int(port, 16)
    return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)


def _socket_table(pid: int) -> dict[int, tuple[str, str, int]]:
    """inode -> (protocol, address, port) of the listening sockets in ``pid``'s network namespace."""
    table = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == (TCP_LISTEN if proto.startswith("tcp") else UDP_UNCONNECTED):
                table[int(fields[9])] = (proto, *_address(fields[1], proto.endswith("6")))
    return table


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def listeners(root_pid: int) -> list[dict]:
    """Every listening socket of ``root_pid`` and its descendants, with the owning process."""
    out = []
    for pid in [root_pid, *descendants(root_pid)]:
        table = _socket_table(pid)
        for inode in _socket_inodes(pid) & table.keys():
            proto, address, port = table[inode]
            out.append({"pid": pid, "command": _command(pid)[:120], "proto": proto, "address": address, "port": port})
    return out


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped   # ::ffff:127.0.0.1, as gRPC's dual-stack sockets show it
    return ip.is_loopback




def test_the_address_helpers():
    assert _address("0100007F:1F90", False) == ("127.0.0.1", 8080)
    assert _address("0000000000000000FFFF00000100007F:0050", True) == ("::ffff:127.0.0.1", 80)
    assert all(is_loopback(a) for a in ("127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"))
    assert not any(is_loopback(a) for a in ("0.0.0.0", "::", "192.0.2.2", "::ffff:10.0.0.1", "fe80::1"))


def test_embedded_ray_listens_on_loopback_only(tmp_path):
    ray_metrics = free_port()
    srv = ServerProcess(tmp_path, "--num-cpus", "2", "--ray-metrics-port", str(ray_metrics),
                        "--metrics-port", str(free_port()), env={"RAY_ADDRESS": "local"})
    samples = []
    try:
        with srv.channel() as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            job = create(stub, quick_spec(train={"outer_steps": 400, "batch_size": 32, "eval_every": 100}))
            follow(stub, job.name, until=lambda ev: ev.HasField("progress"), timeout=240)
            samples.append(listeners(srv.proc.pid))      # replicas and runner alive
            stub.CancelJob(pb.CancelJobRequest(name=job.name), timeout=30)
            wait_state(stub, job.name, {pb.CANCELLED, pb.SUCCEEDED, pb.FAILED}, timeout=120)
            samples.append(listeners(srv.proc.pid))      # after the job: idle workers
    finally:
        assert srv.terminate() == 0, srv.read_log()[-3000:]
    running = samples[0]
    commands = " | ".join(sorted({s["command"][:60] for s in running}))
    # the listing must see Ray's processes, or it proves nothing
    assert any("gcs_server" in s["command"] for s in running), commands
    assert any("raylet" in s["command"] for s in running), commands
    assert any(s["command"].startswith("ray::ReplicaActor") for s in running), commands
    assert any(s["command"].startswith("ray::JobRunner") for s in running), commands
    assert any(s["port"] == ray_metrics for s in running), (ray_metrics, running)
    exposed = [s for sample in samples for s in sample if not is_loopback(s["address"])]
    assert not exposed, "listening beyond loopback:\n" + "\n".join(
        f"  {s['proto']} {s['address']}:{s['port']}  pid {s['pid']}  {s['command']}" for s in exposed)
