"""The JobService servicer: request → manager call → response; domain errors → status codes.

| domain error                         | status code          |
|--------------------------------------|----------------------|
| SpecError (bad spec, names the field)| INVALID_ARGUMENT     |
| CapacityError (can never be hosted)  | RESOURCE_EXHAUSTED   |
| JobNotFound                          | NOT_FOUND            |
| JobFinished (cancel a finished job)  | FAILED_PRECONDITION  |
| ClusterUnavailable (Ray unreachable) | UNAVAILABLE          |
| StoreError (job store unwritable)    | UNAVAILABLE          |
"""
from __future__ import annotations

import functools
import hashlib
import inspect

import grpc

from coordinator.checkpoint import list_checkpoints, load_latest, verify
from coordinator.errors import CapacityError, ClusterUnavailable, JobFinished, JobNotFound, SpecError
from coordinator.manager import JobManager
from coordinator.store import TERMINAL, StoreError
from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from services.convert import (decode_page_token, encode_page_token, event_to_proto, job_to_proto,
                              proto_to_spec_dict)

CHUNK_BYTES = 1 << 20
WATCH_PAGE = 64  # events read from the store at a time: a replay the client drops early costs a page
ARTIFACTS = ("flatness.json", "flatness.png", "metrics.jsonl", "summary.json", "spec.yaml")
_CODES = [(CapacityError, grpc.StatusCode.RESOURCE_EXHAUSTED), (SpecError, grpc.StatusCode.INVALID_ARGUMENT),
          (JobNotFound, grpc.StatusCode.NOT_FOUND), (JobFinished, grpc.StatusCode.FAILED_PRECONDITION),
          (ClusterUnavailable, grpc.StatusCode.UNAVAILABLE), (StoreError, grpc.StatusCode.UNAVAILABLE)]


def _abort_for(exc: Exception, context) -> None:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            context.abort(code, str(exc))
    raise exc


def mapped(method):
    """Translate domain errors raised by a unary or server-streaming method into statuses."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self, request, context):
            try:
                yield from method(self, request, context)
            except tuple(cls for cls, _ in _CODES) as exc:
                _abort_for(exc, context)
        return stream

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except tuple(cls for cls, _ in _CODES) as exc:
            _abort_for(exc, context)
    return unary


def job_id(name: str) -> str:
    if not name.startswith("jobs/") or len(name) <= 5 or "/" in name[5:]:
        raise SpecError(f"name: expected 'jobs/{{id}}', got {name!r}", "name")
    return name[5:]


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, manager: JobManager, watch_poll_s: float = 1.0):
        self.m = manager
        self.watch_poll_s = watch_poll_s

    @mapped
    def CreateJob(self, request, context):
        return job_to_proto(self.m.create(proto_to_spec_dict(request.job), request.request_id or None))

    @mapped
    def GetJob(self, request, context):
        return job_to_proto(self.m.get(job_id(request.name)))

    @mapped
    def ListJobs(self, request, context):
        if request.page_size < 0:
            raise SpecError("page_size: must be >= 0", "page_size")
        size = min(request.page_size or 50, 1000)
        state = pb.State.Name(request.state) if request.state else ""
        after = decode_page_token(request.page_token, state) if request.page_token else 0
        recs = self.m.store.list(state or None, after, size + 1)
        token = encode_page_token(recs[size - 1].ordinal, state) if len(recs) > size else ""
        return pb.ListJobsResponse(jobs=[job_to_proto(r) for r in recs[:size]], next_page_token=token)

    @mapped
    def CancelJob(self, request, context):
        return job_to_proto(self.m.cancel(job_id(request.name)))

    @mapped
    def ScaleJob(self, request, context):
        return job_to_proto(self.m.scale(job_id(request.name), request.replicas))

    @mapped
    def WatchJob(self, request, context):
        jid = job_id(request.name)
        if request.HasField("after_seq"):
            if request.after_seq < 0:
                raise SpecError("after_seq: must be >= 0", "after_seq")
            self.m.get(jid)
            after = request.after_seq
        else:
            after = self.m.store.last_seq(jid)  # read before the snapshot: nothing falls between
            yield pb.JobEvent(seq=0, snapshot=job_to_proto(self.m.get(jid)))
        while context.is_active() and not self.m.stopping:
            events = self.m.store.events(jid, after, limit=WATCH_PAGE)
            for ev in events:
                yield event_to_proto(ev)
                after = ev.seq
            if events:
                continue
            if self.m.get(jid).state in TERMINAL:
                while events := self.m.store.events(jid, after, limit=WATCH_PAGE):  # written with the final state
                    for ev in events:
                        yield event_to_proto(ev)
                        after = ev.seq
                return
            with self.m.changed:
                self.m.changed.wait(timeout=self.watch_poll_s)

    @mapped
    def DownloadCheckpoint(self, request, context):
        jid = job_id(request.name)
        self.m.get(jid)
        directory = self.m.run_dir(jid).checkpoints
        if request.round:
            path = next((p for p in list_checkpoints(directory) if p.name == f"ckpt-{request.round:08d}.pt"), None)
            if path is None or not verify(path):
                raise JobNotFound(f"job {jid} has no valid checkpoint for round {request.round}")
        else:
            found = load_latest(directory)
            if found is None:
                raise JobNotFound(f"job {jid} has no checkpoint yet")
            path = found[0]
        yield from _chunks(path, int(path.stem.split("-")[1]))

    @mapped
    def DownloadArtifact(self, request, context):
        jid = job_id(request.name)
        self.m.get(jid)
        if request.artifact not in ARTIFACTS:
            raise SpecError(f"artifact: must be one of {', '.join(ARTIFACTS)}; got {request.artifact!r}", "artifact")
        path = self.m.run_dir(jid).path / request.artifact
        if not path.is_file():
            hint = " (submit the job with flatness.enabled: true)" if request.artifact.startswith("flatness") else ""
            raise JobNotFound(f"job {jid} has no {request.artifact} yet{hint}")
        yield from _chunks(path, 0)


def _chunks(path, rnd: int):
    """A file as ~1 MiB chunks, each carrying the SHA-256 of the whole file."""
    with open(path, "rb") as f:  # one handle: retention may unlink the file meanwhile
        digest, size = hashlib.sha256(), 0
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
            size += len(block)
        f.seek(0)
        offset = 0
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            yield pb.CheckpointChunk(data=block, offset=offset, total_size=size, round=rnd, sha256=digest.hexdigest())
            offset += len(block)
