"""services.servicer._chunks: a file that grows while it streams (a running job's
metrics.jsonl) is sent as exactly the bytes its announced size and digest cover."""
from __future__ import annotations

import hashlib

from services.servicer import CHUNK_BYTES, _chunks


def test_a_growing_file_streams_the_snapshot_it_announced(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = b'{"kind": "round"}\n' * (CHUNK_BYTES // 9)  # a little over two chunks
    path.write_bytes(first)
    stream = _chunks(path, 0)
    chunks = [next(stream)]
    with open(path, "ab") as f:  # the job writes more rounds meanwhile
        f.write(b'{"kind": "eval"}\n' * 1000)
    chunks += list(stream)
    data = b"".join(c.data for c in chunks)
    assert len(data) == chunks[0].total_size == len(first) and data == first
    assert hashlib.sha256(data).hexdigest() == chunks[-1].sha256
    assert [c.offset for c in chunks] == [i * CHUNK_BYTES for i in range(len(chunks))]
