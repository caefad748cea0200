"""StreamJobLogs without a thread per follower: a coroutine on the server's event loop.

The lines are read from the job's log files (coordinator.joblogs.LogCursor: from where the last
read stopped, across rotations) through the server's thread pool, one short read at a time;
between reads a follower sleeps on the loop (:data:`POLL_S`), holding no thread. Like every
stream it holds one of the server's stream slots while it lives (services.guard). A follow
ends once the job has ended and every line written before its end has been sent: the job's
runner writes its last line before it reports the end (coordinator.runner), and the state is
read before the lines.
"""
from __future__ import annotations

import asyncio
import functools

from google.protobuf.timestamp_pb2 import Timestamp

from coordinator.joblogs import LogCursor, matches
from coordinator.store import TERMINAL
from services.api import jobs_pb2 as pb

POLL_S = 0.5   # a follower's pause between reads of the files
BATCH = 500    # lines per message at most


def line_to_proto(rec: dict) -> pb.LogLine:
    ts = Timestamp()
    ts.FromNanoseconds(int(float(rec.get("time", 0.0)) * 1e9))
    return pb.LogLine(n=int(rec["n"]), time=ts, source=str(rec.get("source", "")), replica=int(rec.get("replica", -1)),
                      round=int(rec.get("round", 0)), stream=str(rec.get("stream", "")),
                      level=str(rec.get("level", "")), text=str(rec.get("text", "")))


async def stream_logs(manager, in_pool, job_id: str, principal, *, replica: int | None, tail: int, follow: bool,
                      stopping=lambda: False):
    """The job's stored lines (the last ``tail`` when > 0; only ``replica``'s when given), as
    :class:`JobLogs` messages; with ``follow``, then its new lines until it ends."""
    await in_pool(functools.partial(manager.get, job_id, principal=principal))  # NOT_FOUND for others' jobs
    cursor = LogCursor(manager.run_dir(job_id).path)
    done = False
    lines = [r for r in await in_pool(cursor.read) if matches(r, replica)]
    if tail:
        lines = lines[-tail:]
    first = True
    while True:
        for start in range(0, max(len(lines), 1 if first else 0), BATCH):
            yield pb.JobLogs(lines=[line_to_proto(r) for r in lines[start:start + BATCH]], dropped=cursor.dropped)
        first = False
        if not follow or done or stopping():
            return
        await asyncio.sleep(POLL_S)
        rec = await in_pool(manager.record, job_id)  # the state first, then the lines written before it
        done = rec is None or rec.state in TERMINAL
        lines = [r for r in await in_pool(cursor.read) if matches(r, replica)]
