"""The import graph of the production code points one way, and has no cycle.

Layers, lowest first (a module may import its own layer and the ones below, never above):

    core          the spec, the errors with their status codes, the outer-loop math
    worker        what runs on a replica
    coordinator   the engine, the pools, the store, the manager, the sweeps
    services      the gRPC server, the client, the CLI commands
    reproduce     the papers' experiments, driven through coordinator and the CLI's helpers
    services.cli  the ``esgd`` entry point: it composes the commands of services and reproduce
    bench         benchmarks: anything but the tests

Every import counts, at module level or inside a function (a lazy import still couples the
two modules). Read from the source with :mod:`ast`, nothing is imported.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "worker", "coordinator", "services", "reproduce", "bench")
LAYERS = ["core", "worker", "coordinator", "services", "reproduce", "services.cli", "bench"]
GENERATED = "services.api."  # protoc's stubs import each other by design


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()

    def owner(name: str) -> str | None:  # the module of ours an imported name lives in
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {owner(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {owner(f"{node.module}.{a.name}") or owner(node.module) for a in node.names}
        edges[name] = {m for m in found if m and m != name}
    return edges


def layer(module: str) -> int:
    return max(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack, on, out = [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    edges = graph()
    assert "core.spec" in edges["coordinator.engine"] and "core.outer" in edges["worker.optim"]
    assert "coordinator.compose" in edges["coordinator.runner"]  # a function-level import is seen
    assert len(edges) > 80


def test_no_import_cycle():
    found = [c for c in cycles(graph()) if not all(m.startswith(GENERATED) for m in c)]
    assert not found, "import cycles:\n" + "\n".join(" ⇄ ".join(c) for c in found)


def test_imports_only_point_down():
    up = [f"{a} → {b}" for a, targets in graph().items() for b in targets if layer(b) > layer(a)]
    assert not up, "imports that point up a layer:\n" + "\n".join(sorted(up))


def test_the_client_needs_only_the_api_the_codec_and_core():
    edges = graph()
    assert edges["services.client"] <= {"services.api", "services.api.jobs_pb2", "services.api.jobs_pb2_grpc",
                                        "services.codec", "core.spec", "core.errors"}, edges["services.client"]
    assert edges["services.codec"] <= {"core.spec", "core.errors", "services.api.jobs_pb2"}


def test_the_checker_sees_an_upward_import_and_a_cycle():
    edges = {"core.a": {"worker.b"}, "worker.b": {"core.a"}}
    assert cycles(edges) == [["core.a", "worker.b"]]
    assert layer("worker.b") > layer("core.a") and layer("services.cli") > layer("reproduce.cli")
