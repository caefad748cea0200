"""Start a job from a checkpoint (the spec's ``init_from``) and retry a failed job.

``init_from: {job: ID, round: N}`` starts from one of the caller's own jobs' checkpoints
(``round`` left out: its latest); ``init_from: {path: FILE}`` from a checkpoint file, which the
service confines to its data roots exactly like ``dataset.path`` (the same refusal, naming
``init_from.path`` and nothing about the file). ``esgd run`` takes ``path`` only: it has no
job store.

What carries over: the reference model's weights, the checkpoint's ``model`` state_dict
(BatchNorm statistics included); a plain ``state_dict`` file works too. What does not: the
strategy's anchors and outer momentum, the replicas' inner momentum or Adam state, their RNGs
and stream positions, and the counters (round, epochs, gradient evaluations). The new job runs
its own whole budget from round 0 under its own seed, from those weights. Every replica starts
there (so not with ``init.per_replica_seeds``).

Two checks, each naming ``init_from``:

* at submission (:func:`resolve`, in the server): the job exists and is the caller's (else the
  same NOT_FOUND as any job that is not theirs), it holds a checkpoint that verifies (its
  round is then pinned in the stored spec, so a resumed or inspected job says exactly where
  it started), and it trained the same ``model``; a path lies inside the data roots;
* at start (:func:`load_initial_weights`, where the engine is built): every tensor's name and
  shape matches this job's model (the input shape and class count come from the dataset).
  A resumed job restores its own checkpoint instead and never reads the source again.

A job source is read from the run directory beside this job's own (``runs/ID``), where the
server keeps every job's. ``retry`` makes a new job from a FAILED or CANCELLED job's spec
with ``init_from`` its latest checkpoint (none yet: the spec as it was, so it starts where the
failed job started).
"""
from __future__ import annotations

import os
from pathlib import Path

from core.errors import JobNotFound, JobNotRetryable, SpecError


def _renamed(exc: Exception) -> SpecError:
    """A data-root refusal or a bad path, worded for ``init_from.path`` (same text otherwise)."""
    text = str(exc).replace("dataset.path", "init_from.path", 1)
    return SpecError(text if text.startswith("init_from.path") else f"init_from.path: {text}", "init_from.path")


def _latest_verified(directory: Path) -> int | None:
    from coordinator.checkpoint import list_checkpoints, step_of, verify

    return next((step_of(p) for p in reversed(list_checkpoints(directory)) if verify(p)), None)


def _own(manager, job_id: str, principal):
    """The caller's own job (the server itself, principal None, may read any)."""
    missing = JobNotFound(f"init_from.job: job {job_id!r} not found")
    rec = manager.store.get(job_id)
    if rec is None or (principal is not None and rec.owner != principal.name):
        raise missing
    return rec


def resolve(manager, spec, principal):
    """``spec`` with its ``init_from`` checked for ``principal`` and a job source's round
    pinned (a sweep: its best trial's); unchanged without ``init_from``."""
    from coordinator.checkpoint import verify

    src = spec.init_from
    if src is None:
        return spec
    if src.path is not None:
        from worker.data.base import DataError

        try:
            real = manager.data_policy.locate(src.path)
        except DataError as exc:
            raise _renamed(exc) from None
        if not real.is_file():
            raise SpecError(f"init_from.path: {src.path} is not a checkpoint file", "init_from.path")
        return spec
    rec = _own(manager, src.job, principal)
    job = src.job
    if rec.spec.get("sweep"):  # a sweep's checkpoint is its best trial's
        job = (rec.sweep or {}).get("best_trial") or job
        rec = manager.store.get(job) or rec
    if rec.spec.get("model") != spec.model:
        raise SpecError(f"init_from.job: job {src.job} trained model {rec.spec.get('model')}, this job is "
                        f"{spec.model}; the model must match", "init_from.job")
    directory = manager.run_dir(job).checkpoints
    if src.round is not None:
        if not verify(directory / f"ckpt-{src.round:08d}.pt"):
            raise SpecError(f"init_from.round: job {src.job} has no valid checkpoint for round {src.round}",
                            "init_from.round")
        rnd = src.round
    elif (rnd := _latest_verified(directory)) is None:
        raise SpecError(f"init_from.job: job {src.job} has no checkpoint yet", "init_from.job")
    return spec.replace(init_from={"job": job, "round": rnd})


def retry(manager, job_id: str, principal=None, request_id: str | None = None):
    """A new job from FAILED or CANCELLED ``job_id``'s spec, from its latest checkpoint."""
    rec = manager.get(job_id, principal)
    if rec.state not in ("FAILED", "CANCELLED"):
        raise JobNotRetryable(f"job {job_id} is {rec.state}; only a FAILED or CANCELLED job can be retried")
    spec = dict(rec.spec)
    if not spec.get("sweep") and _latest_verified(manager.run_dir(job_id).checkpoints) is not None:
        spec["init_from"] = {"job": job_id}
    return manager.create(spec, request_id, principal=principal)


# ----- where the engine is built ----------------------------------------------------------------
def _read(spec, runs: Path | None) -> tuple[object, str]:
    """The checkpoint ``spec.init_from`` names, loaded, and how to name it in messages."""
    import torch

    from coordinator.checkpoint import list_checkpoints, step_of, verify

    src = spec.init_from
    if src.job is not None:
        if runs is None:
            raise SpecError("init_from.job: esgd run has no job store; download the checkpoint "
                            "(esgd download ID -o FILE) and give init_from: {path: FILE}", "init_from.job")
        directory = runs / src.job / "checkpoints"
        rnd = src.round if src.round is not None else next(
            (step_of(p) for p in reversed(list_checkpoints(directory)) if verify(p)), None)
        path = directory / f"ckpt-{rnd or 0:08d}.pt"
        what = f"job {src.job} round {rnd}"
        if rnd is None or not verify(path):
            raise SpecError(f"init_from: {what}: no such checkpoint (deleted, or it fails its checksum)",
                            "init_from.job")
        return torch.load(path, map_location="cpu"), what
    from worker.data.base import DataError
    from worker.data.roots import DataPolicy

    policy = DataPolicy.from_env()  # the server's roots in its runners; none for esgd run
    try:
        fd = policy.open(policy.locate(src.path))
    except DataError as exc:
        raise _renamed(exc) from None
    except OSError as exc:
        raise SpecError(f"init_from.path: cannot read {src.path}: {exc.strerror or exc}", "init_from.path") from None
    try:
        with os.fdopen(fd, "rb") as f:
            return torch.load(f, map_location="cpu"), f"checkpoint {src.path}"
    except Exception as exc:  # noqa: BLE001 - not a torch file, or not loadable safely
        raise SpecError(f"init_from.path: {src.path} is not a checkpoint ({type(exc).__name__})",
                        "init_from.path") from None


def load_initial_weights(spec, evaluator, runs: Path | None) -> None:
    """Load ``spec.init_from``'s model weights into ``evaluator.model`` (whose parameters are
    views of the flat state the strategy starts from); a mismatch names ``init_from``."""
    import torch

    if spec.init_from is None:
        return
    ckpt, what = _read(spec, runs)
    state = ckpt.get("model") if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpecError(f"init_from: {what} holds no model state_dict", "init_from")
    own = evaluator.model.state_dict()
    trained = (ckpt.get("spec") or {}).get("model") if isinstance(ckpt, dict) else None
    diffs = [f"{k} missing" for k in own if k not in state] + [f"{k} unexpected" for k in state if k not in own]
    diffs += [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if diffs:
        raise SpecError(f"init_from: {what} holds a different model" + (f" ({trained})" if trained else "") +
                        f" than this job's {spec.model} on {spec.dataset.name}: {'; '.join(diffs[:3])}"
                        f"{' …' if len(diffs) > 3 else ''}; the architecture and input shape must match", "init_from")
    with torch.no_grad():
        evaluator.model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
