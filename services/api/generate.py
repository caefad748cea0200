"""Generate the Python stubs for proto/esgd/v1/*.proto into services/api/.

The stubs are committed (so installing needs no protoc step) and a test runs ``--check`` to
prove they match the .proto files. protoc writes the gRPC module with an absolute import
(``from esgd.v1 import jobs_pb2``); it is rewritten to this package, which is what tools
such as protoletariat do.

    python -m services.api.generate           # regenerate
    python -m services.api.generate --check   # exit 1 when the committed stubs are stale

protoc comes from grpcio-tools, a development tool: it is in the `test` extra (`make install`
installs it), not in the runtime dependencies, so the image does not carry it.
"""
from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
OUT_DIR = Path(__file__).resolve().parent
PROTOS = ["esgd/v1/jobs.proto"]


def generate() -> dict[str, str]:
    """Run protoc into a temporary directory; return {file name: content} with fixed imports."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}", *[str(PROTO_DIR / p) for p in PROTOS]]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for proto in PROTOS:
            stem = Path(proto).with_suffix("")
            for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
                src = Path(tmp) / f"{stem}{suffix}"
                text = src.read_text()
                module = ".".join(stem.parts[:-1])
                text = re.sub(rf"^from {re.escape(module)} import ", "from services.api import ", text, flags=re.M)
                out[src.name] = text
    return out


def main(argv: list[str]) -> int:
    files = generate()
    if "--check" in argv:
        stale = [name for name, text in files.items()
                 if not (OUT_DIR / name).exists() or (OUT_DIR / name).read_text() != text]
        if stale:
            print(f"stale generated stubs: {', '.join(stale)}; run python -m services.api.generate", file=sys.stderr)
            return 1
        return 0
    for name, text in files.items():
        (OUT_DIR / name).write_text(text)
    print(f"wrote {', '.join(sorted(files))} to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
