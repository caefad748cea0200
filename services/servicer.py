"""The JobService servicer: request → manager call → response; domain errors → status codes.

Every domain error (core.errors) carries the status it is answered with as ``code``
(INVALID_ARGUMENT for a bad spec, NOT_FOUND for another principal's job, ...); this layer reads
it, so a new error needs no change here.

Policy lives in the manager (ownership, limits, admission) and coordinator.limits; this
layer only names the caller (services.auth) and translates. Unary calls and the downloads are
plain functions run in the server's thread pool; WatchJob and StreamJobLogs are coroutines on
its event loop (services.watch, services.log_stream), so watchers and followers hold no thread.
"""
from __future__ import annotations

import functools
import hashlib
import inspect

import grpc

from coordinator.checkpoint import list_checkpoints, load_latest, verify
from coordinator.init_from import retry as retry_job
from core.errors import DomainError, JobNotFound, SpecError
from coordinator.manager import JobManager
from services.api import jobs_pb2 as pb
from services.api import jobs_pb2_grpc
from services.auth import Authenticator
from services.convert import decode_page_token, encode_page_token, job_to_proto, proto_to_spec_dict
from services.log_stream import stream_logs

CHUNK_BYTES = 1 << 20
ARTIFACTS = ("flatness.json", "flatness.png", "metrics.jsonl", "summary.json", "spec.yaml")
MAX_JOB_ID = 64
_DOMAIN = DomainError


def _status(exc: DomainError) -> tuple[grpc.StatusCode, str]:
    return getattr(grpc.StatusCode, exc.code), str(exc)


def mapped(method):
    """Translate domain errors raised by a handler (function, generator or async generator)."""
    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        async def agen(self, request, context):
            try:
                async for item in method(self, request, context):
                    yield item
            except _DOMAIN as exc:
                await context.abort(*_status(exc))
        return agen
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self, request, context):
            try:
                yield from method(self, request, context)
            except _DOMAIN as exc:
                context.abort(*_status(exc))
        return stream

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except _DOMAIN as exc:
            context.abort(*_status(exc))
    return unary


def job_id(name: str) -> str:
    if not name.startswith("jobs/") or not 5 < len(name) <= 5 + MAX_JOB_ID or "/" in name[5:]:
        raise SpecError(f"name: expected 'jobs/{{id}}' (an id of at most {MAX_JOB_ID} characters), "
                        f"got {name[:80]!r}", "name")
    return name[5:]


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, manager: JobManager, auth: Authenticator | None = None, hub=None):
        self.m = manager
        self.auth = auth or Authenticator()
        self.hub = hub  # services.watch.WatchHub, set by the server once its event loop runs

    def _who(self, context):
        return self.auth.principal_of(context)

    @mapped
    def CreateJob(self, request, context):
        return job_to_proto(self.m.create(proto_to_spec_dict(request.job), request.request_id or None,
                                          principal=self._who(context), spec_bytes=request.job.ByteSize()))

    @mapped
    def GetJob(self, request, context):
        return job_to_proto(self.m.get(job_id(request.name), principal=self._who(context)))

    @mapped
    def ListJobs(self, request, context):
        limits = self.m.limits
        if request.page_size < 0:
            raise SpecError("page_size: must be >= 0", "page_size")
        if request.state not in pb.State.values():
            raise SpecError(f"state: {request.state} is not a job state; one of "
                            f"{', '.join(pb.State.keys())}", "state")
        size = min(request.page_size or 50, limits.max_page_jobs)
        state = pb.State.Name(request.state) if request.state else ""
        after = decode_page_token(request.page_token, state) if request.page_token else 0
        recs = self.m.list_jobs(self._who(context), state or None, after, size + 1)
        jobs, used = [], 0
        for rec in recs[:size]:  # bounded in bytes too: a page stops before it would pass the cap
            job = job_to_proto(rec)
            used += job.ByteSize() + 8
            if jobs and used > limits.max_page_bytes:
                break
            jobs.append((rec, job))
        more = len(jobs) < len(recs)
        token = encode_page_token(jobs[-1][0].ordinal, state) if jobs and more else ""
        return pb.ListJobsResponse(jobs=[j for _, j in jobs], next_page_token=token)

    @mapped
    def CancelJob(self, request, context):
        return job_to_proto(self.m.cancel(job_id(request.name), principal=self._who(context)))

    @mapped
    def RetryJob(self, request, context):
        return job_to_proto(retry_job(self.m, job_id(request.name), principal=self._who(context),
                                      request_id=request.request_id or None))

    @mapped
    def ScaleJob(self, request, context):
        return job_to_proto(self.m.scale(job_id(request.name), request.replicas, principal=self._who(context)))

    @mapped
    async def WatchJob(self, request, context):
        who, jid, hub = self._who(context), job_id(request.name), self.hub
        if request.HasField("after_seq"):
            if request.after_seq < 0:
                raise SpecError("after_seq: must be >= 0", "after_seq")
            await hub.in_pool(functools.partial(self.m.get, jid, principal=who))
            after = request.after_seq
        else:
            after = await hub.in_pool(self.m.last_seq, jid)  # read before the snapshot: nothing falls between
            snapshot = await hub.in_pool(functools.partial(self.m.get, jid, principal=who))
            yield pb.JobEvent(seq=0, snapshot=job_to_proto(snapshot))
        async for message in hub.follow(jid, after):  # converted once per event, for all watchers
            yield message

    @mapped
    async def StreamJobLogs(self, request, context):
        if request.tail < 0:
            raise SpecError("tail: must be >= 0 (0 = every stored line)", "tail")
        if request.HasField("replica") and request.replica < -1:
            raise SpecError("replica: -1 (the runner) or a replica index >= 0", "replica")
        replica = request.replica if request.HasField("replica") else None
        async for message in stream_logs(self.m, self.hub.in_pool, job_id(request.name), self._who(context),
                                         replica=replica, tail=request.tail, follow=request.follow,
                                         stopping=lambda: self.hub.stopping):
            yield message

    @mapped
    def DeleteJob(self, request, context):
        ids = self.m.delete(job_id(request.name), principal=self._who(context))
        return pb.DeleteJobResponse(deleted=[f"jobs/{i}" for i in ids])

    @mapped
    def DownloadCheckpoint(self, request, context):
        jid = self.m.download_job(job_id(request.name), principal=self._who(context))  # a sweep: its best trial
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
        jid = self.m.download_job(job_id(request.name), principal=self._who(context))  # a sweep: its best trial
        if request.artifact not in ARTIFACTS:
            raise SpecError(f"artifact: must be one of {', '.join(ARTIFACTS)}; got {request.artifact[:80]!r}",
                            "artifact")
        path = self.m.run_dir(jid).path / request.artifact
        if not path.is_file():
            hint = " (submit the job with flatness.enabled: true)" if request.artifact.startswith("flatness") else ""
            raise JobNotFound(f"job {jid} has no {request.artifact} yet{hint}")
        yield from _chunks(path, 0)


def _chunks(path, rnd: int):
    """A file as ~1 MiB chunks, each carrying the SHA-256 of the whole file. Exactly the bytes
    hashed are sent: a running job's metrics.jsonl grows while it downloads, and the client
    checks size and digest (it once got more bytes than announced: DATA_LOSS)."""
    with open(path, "rb") as f:  # one handle: retention may unlink the file meanwhile
        digest, size = hashlib.sha256(), 0
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
            size += len(block)
        f.seek(0)
        offset = 0
        while offset < size:
            block = f.read(min(CHUNK_BYTES, size - offset))
            if not block:
                break
            yield pb.CheckpointChunk(data=block, offset=offset, total_size=size, round=rnd, sha256=digest.hexdigest())
            offset += len(block)
