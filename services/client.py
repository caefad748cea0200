"""A Python client for the esgd job API (``proto/esgd/v1/jobs.proto``): :class:`JobClient`.

RPC errors surface as :class:`ApiError` (``code``, ``details``); a spec that does not fit the wire
format (unknown key, wrong type) raises :class:`core.spec.SpecError` naming the field.
Ranges are not checked here: the server validates and names the field in INVALID_ARGUMENT.
"""
from __future__ import annotations

import hashlib
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from core.spec import JobSpec, SpecError
from services.api import jobs_pb2, jobs_pb2_grpc
from services.codec import proto_to_spec_dict, spec_to_proto  # noqa: F401  (part of the client API)

MAX_MESSAGE = 16 * 1024 * 1024
TERMINAL = (jobs_pb2.SUCCEEDED, jobs_pb2.FAILED, jobs_pb2.CANCELLED)


class ApiError(Exception):
    """A failed call: ``code`` is a ``grpc.StatusCode``, ``details`` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details

    @classmethod
    def from_rpc(cls, exc: grpc.RpcError) -> "ApiError":
        return cls(exc.code() or grpc.StatusCode.UNKNOWN, exc.details() or str(exc))


class ChecksumError(ApiError):
    """A downloaded checkpoint whose size or SHA-256 differs from what the server announced."""

    def __init__(self, details: str):
        super().__init__(grpc.StatusCode.DATA_LOSS, details)


def job_name(name_or_id: str) -> str:
    """``"abc"`` or ``"jobs/abc"`` → ``"jobs/abc"``."""
    s = str(name_or_id).strip().removeprefix("jobs/")
    if not s or "/" in s:
        raise SpecError(f"name: expected a job id or jobs/ID, got {name_or_id!r}", "name")
    return "jobs/" + s


# ----- the client ----------------------------------------------------------------------------
class JobClient:
    """A connection to an esgd server. Idempotent calls retry on UNAVAILABLE with backoff."""

    def __init__(self, target: str = "127.0.0.1:50051", *, token: str | None = None, tls_ca: str | None = None,
                 timeout: float = 30.0, retries: int = 4):
        opts = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
        if tls_ca:
            creds = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            self._channel = grpc.secure_channel(target, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(target, options=opts)
        self._stub = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.target, self.timeout, self.retries = target, timeout, retries

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "JobClient":
        return self

    def __exit__(self, *exc) -> None:
        self._channel.close()

    def _retry(self, fn: Callable):
        """``fn()``, retried on UNAVAILABLE ``retries`` times, 0.2 s doubling + jitter (idempotent calls only)."""
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except grpc.RpcError as exc:
                err = ApiError.from_rpc(exc)
            except ApiError as exc:
                err = exc
            if attempt == self.retries or err.code != grpc.StatusCode.UNAVAILABLE:
                raise err from None
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay *= 2

    def health(self, service: str = "") -> str:
        """grpc.health.v1 Check on this channel: the serving status name (no token needed)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            resp = health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise ApiError.from_rpc(exc) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def _unary(self, method: str, request):
        rpc = getattr(self._stub, method)
        return self._retry(lambda: rpc(request, timeout=self.timeout, metadata=self._metadata))

    def create_job(self, spec: dict | JobSpec, request_id: str | None = None) -> jobs_pb2.Job:
        """Submit a job. Retry-safe: the server dedupes on ``request_id`` (a uuid4 if not given)."""
        req = jobs_pb2.CreateJobRequest(job=spec_to_proto(spec), request_id=request_id or str(uuid.uuid4()))
        return self._unary("CreateJob", req)

    def get_job(self, name_or_id: str) -> jobs_pb2.Job:
        return self._unary("GetJob", jobs_pb2.GetJobRequest(name=job_name(name_or_id)))

    def list_jobs(self, state: str | int | None = None, page_size: int = 50,
                  page_token: str = "") -> jobs_pb2.ListJobsResponse:
        """One page of jobs; ``state`` ("running" or ``jobs_pb2.RUNNING``) filters, None = all."""
        if isinstance(state, str):
            try:
                state = jobs_pb2.State.Value(state.upper())
            except ValueError:
                raise SpecError(f"state: unknown state {state!r}", "state") from None
        req = jobs_pb2.ListJobsRequest(state=state or 0, page_size=page_size, page_token=page_token)
        return self._unary("ListJobs", req)

    def iter_jobs(self, state: str | int | None = None, page_size: int = 100) -> Iterator[jobs_pb2.Job]:
        """Every job, across all pages."""
        token = ""
        while True:
            page = self.list_jobs(state, page_size, token)
            yield from page.jobs
            if not (token := page.next_page_token):
                return

    def cancel_job(self, name_or_id: str) -> jobs_pb2.Job:
        return self._unary("CancelJob", jobs_pb2.CancelJobRequest(name=job_name(name_or_id)))

    def retry_job(self, name_or_id: str, request_id: str | None = None) -> jobs_pb2.Job:
        """A new job from a FAILED or CANCELLED job's spec, starting from its latest checkpoint
        (its ``spec.init_from``). Retry-safe: the server dedupes on ``request_id``."""
        req = jobs_pb2.RetryJobRequest(name=job_name(name_or_id), request_id=request_id or str(uuid.uuid4()))
        return self._unary("RetryJob", req)

    def scale_job(self, name_or_id: str, replicas: int) -> jobs_pb2.Job:
        """Set the job's replica count (a running job applies it at its next round boundary).
        Idempotent, so safe to retry."""
        return self._unary("ScaleJob", jobs_pb2.ScaleJobRequest(name=job_name(name_or_id), replicas=replicas))

    def delete_job(self, name_or_id: str) -> list[str]:
        """Delete a finished job (rows and files; a sweep's trials with it): the names deleted.
        FAILED_PRECONDITION for a queued or running job: cancel it first."""
        return list(self._unary("DeleteJob", jobs_pb2.DeleteJobRequest(name=job_name(name_or_id))).deleted)

    def logs(self, name_or_id: str, *, follow: bool = False, replica: int | None = None,
             tail: int = 0) -> Iterator[jobs_pb2.JobLogs]:
        """The job's log lines in :class:`JobLogs` messages (``dropped``: lines the server no
        longer holds); with ``follow``, new lines until the job ends (no overall deadline)."""
        req = jobs_pb2.StreamJobLogsRequest(name=job_name(name_or_id), follow=follow, tail=tail)
        if replica is not None:
            req.replica = replica
        call = self._stub.StreamJobLogs(req, timeout=None if follow else self.timeout, metadata=self._metadata)
        yield from self._stream(call, self.timeout, first_only=True)

    def _stream(self, call, idle: float | None, first_only: bool) -> Iterator:
        """A server stream's messages. A gRPC deadline would cut off a long stream, so instead a timer cancels
        the call when the server is silent ``idle`` seconds: before the first message, or between any two."""
        timer, fired = None, threading.Event()

        def arm():
            nonlocal timer
            if idle:
                timer = threading.Timer(idle, lambda: (fired.set(), call.cancel()))
                timer.daemon = True
                timer.start()
        arm()
        try:
            for msg in call:
                if timer:
                    timer.cancel()
                if not first_only:
                    arm()
                yield msg
        except grpc.RpcError as exc:
            raise (ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no reply from {self.target} in {idle:g}s")
                   if fired.is_set() else ApiError.from_rpc(exc)) from None
        finally:
            if timer:
                timer.cancel()
            call.cancel()

    def watch(self, name_or_id: str, after_seq: int | None = None) -> Iterator[jobs_pb2.JobEvent]:
        """A job's events: with ``after_seq=None`` a snapshot (seq 0) then live events; with
        ``after_seq=N`` the stored events after N (0 = the whole history), then live ones.

        The stream has no overall deadline (a job may run for hours); only the snapshot must
        come within ``timeout``. Not retried here: a caller reconnects with ``after_seq`` set to
        the last seq it saw, and misses nothing.
        """
        req = jobs_pb2.WatchJobRequest(name=job_name(name_or_id))
        if after_seq is not None:
            req.after_seq = after_seq
        call = self._stub.WatchJob(req, timeout=None, metadata=self._metadata)
        yield from self._stream(call, self.timeout if after_seq is None else None, first_only=True)

    def download_checkpoint(self, name_or_id: str, path: str | os.PathLike, round: int = 0) -> dict:
        """Save a checkpoint (``round`` 0 = latest) atomically to ``path``, checking size and SHA-256.

        No overall deadline (checkpoints can be large): it fails when the server is silent ``timeout`` s.
        Restarted from scratch on UNAVAILABLE. Returns {"path", "round", "bytes", "sha256"}.
        """
        req = jobs_pb2.DownloadCheckpointRequest(name=job_name(name_or_id), round=round)
        return self._download("DownloadCheckpoint", req, Path(path))

    def download_artifact(self, name_or_id: str, artifact: str, path: str | os.PathLike) -> dict:
        """Save one of the job's run-directory files (e.g. ``flatness.json``) to ``path``, like
        :meth:`download_checkpoint`. Returns {"path", "bytes", "sha256"}."""
        req = jobs_pb2.DownloadArtifactRequest(name=job_name(name_or_id), artifact=artifact)
        out = self._download("DownloadArtifact", req, Path(path))
        out.pop("round", None)
        return out

    def _download(self, method: str, req, dest: Path) -> dict:
        def attempt() -> dict:
            tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"  # same file system: atomic replace
            try:
                digest, size, last = hashlib.sha256(), 0, None
                with open(tmp, "xb") as f:
                    call = getattr(self._stub, method)(req, timeout=None, metadata=self._metadata)
                    for last in self._stream(call, self.timeout, first_only=False):
                        if last.offset != size:
                            raise ChecksumError(f"chunk at offset {last.offset}, expected {size}")
                        f.write(last.data)
                        digest.update(last.data)
                        size += len(last.data)
                if last is None:
                    raise ChecksumError("the server sent no data")
                if size != last.total_size or (sha := digest.hexdigest()) != last.sha256.lower():
                    raise ChecksumError(f"{dest.name}: got {size} bytes, sha256 {digest.hexdigest()}"
                                        f"; expected {last.total_size} bytes, sha256 {last.sha256}")
                os.replace(tmp, dest)
                return {"path": str(dest), "round": last.round, "bytes": size, "sha256": sha}
            except OSError as exc:  # name the file asked for, never the temporary beside it
                tmp.unlink(missing_ok=True)
                raise type(exc)(exc.errno, exc.strerror or str(exc), str(dest)) from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

        return self._retry(attempt)
