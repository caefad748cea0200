"""The service's limits: one validated configuration, and the admission checks that use it.

A client of ``esgd serve`` chooses the job spec, so every size it controls is bounded here
before the server commits memory, processes or disk to it (docs/security.md lists them):

===========================  ========================  ======================================
limit                        default                   refused with
===========================  ========================  ======================================
spec size (serialized)       64 KiB                    RESOURCE_EXHAUSTED ``job``
``request_id``               128 characters            INVALID_ARGUMENT ``request_id``
any list in the spec         1,000 entries             INVALID_ARGUMENT naming the list
request message (gRPC)       4 × spec cap + 16 KiB     RESOURCE_EXHAUSTED (gRPC's own check)
``cpus_per_replica`` floor   0.1                       INVALID_ARGUMENT ``resources.…``
replica processes per node   2 × the node's CPUs       RESOURCE_EXHAUSTED ``replicas``
memory estimate per node     Ray's ``memory`` of it    RESOURCE_EXHAUSTED, the dominant field
queued jobs (server)         1,000                     RESOURCE_EXHAUSTED ``--max-queued-jobs``
queued jobs (per principal)  100                       RESOURCE_EXHAUSTED ``--max-queued-…``
concurrent streams           256                       RESOURCE_EXHAUSTED at once
ListJobs page                1,000 jobs and 1 MiB      a shorter page + ``next_page_token``
===========================  ========================  ======================================

Why a floor on ``cpus_per_replica``: without it 1,000 replicas at 0.001 CPU "fit" in one CPU,
and each is a process of ~400 MB — a replica bomb. The per-node cap bounds the processes
even where the CPUs would allow more.

The memory estimate (:func:`estimate_memory`) is rough and deliberately conservative; see its
docstring for the formula. It refuses what cannot fit on a node, not what merely might not.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from core.spec import CapacityError, JobSpec, SpecError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# ----- the memory model (estimate_memory) ------------------------------------------------------
PROCESS_BYTES = 400 * MiB     # one Ray worker with torch and our modules imported (measured 390 MB RSS)
REPLICA_COPIES = 12           # weight-sized float32 buffers per replica (x, anchor, μ, grad, momentum,
                              # noise, Adam's two moments, comm encode/decode, result, slack)
RUNNER_COPIES = 8             # weight-sized buffers in the round loop, plus 3 per replica (anchor,
                              # result, outer momentum of per-replica strategies)
ACTIVATION_FACTOR = 3         # training: every layer's output kept for backward, its gradient, workspace
EVAL_FACTOR = 3               # evaluation (no grad): the widest layer's input and output, workspace
EVAL_MAX_BATCH = 1000         # evaluation batch, in samples ...
EVAL_MAX_ITEMS = 100_000      # ... and in predictions (sequence positions for text): see eval_batch_size
TEXT_VOCAB = 4096             # characters assumed in a text file's vocabulary (the head and the logits)
BIBLE_CHARS = 5 * MiB         # the KJV's length in characters (4.3 M)
PROFILE_STEPS = 8             # sequence length a text model is profiled at (the rest scales linearly)

# in-memory size of the built-in datasets (uint8 images), their sample shape and classes
_DATASETS = {"fashion-mnist": (70_000 * 784, (1, 28, 28), 10), "mnist": (70_000 * 784, (1, 28, 28), 10),
             "cifar10": (60_000 * 3072, (3, 32, 32), 10), "synthetic": (4096 * 784, (1, 28, 28), 10)}


@dataclass(frozen=True)
class ServiceLimits:
    """Every limit ``esgd serve`` enforces, validated once (``from_flags``: errors name the flag)."""

    max_spec_bytes: int = 64 * KiB
    max_request_id_chars: int = 128
    max_list_entries: int = 1000
    min_cpus_per_replica: float = 0.1
    max_replicas_per_node: int = 0        # 0 = 2 × each node's CPUs
    max_queued_jobs: int = 1000
    max_queued_per_principal: int = 100
    max_streams: int = 256
    max_page_jobs: int = 1000
    max_page_bytes: int = 1 * MiB
    max_log_bytes: int = 4 * MiB          # a job's stored logs (coordinator.joblogs)
    check_memory: bool = True

    def __post_init__(self) -> None:
        for flag, value, low in (("--max-spec-bytes", self.max_spec_bytes, 1024),
                                 ("--max-queued-jobs", self.max_queued_jobs, 1),
                                 ("--max-queued-per-principal", self.max_queued_per_principal, 1),
                                 ("--max-streams", self.max_streams, 1),
                                 ("--max-replicas-per-node", self.max_replicas_per_node, 0),
                                 ("--max-page-bytes", self.max_page_bytes, 64 * KiB),
                                 ("--max-log-bytes", self.max_log_bytes, 4 * KiB)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{flag}: must be an integer ≥ {low}, got {value!r}")
        if not (isinstance(self.min_cpus_per_replica, (int, float)) and 0 < self.min_cpus_per_replica <= 1024):
            raise ValueError(f"--min-cpus-per-replica: must be in (0, 1024], got {self.min_cpus_per_replica!r}")

    @classmethod
    def from_flags(cls, args) -> "ServiceLimits":
        """From ``esgd serve``'s parsed flags (absent ones keep their defaults)."""
        names = {"max_spec_bytes", "min_cpus_per_replica", "max_replicas_per_node", "max_queued_jobs",
                 "max_queued_per_principal", "max_streams", "max_page_bytes", "max_log_bytes"}
        return cls(**{n: getattr(args, n) for n in names if getattr(args, n, None) is not None})

    @property
    def max_receive_bytes(self) -> int:
        """gRPC's cap on a request message: room for the largest valid CreateJob (a spec at the
        cap plus a request_id), so that a spec just over the cap is refused naming ``job``, and
        nothing much larger is ever read into memory."""
        return 4 * self.max_spec_bytes + 16 * KiB

    def replicas_per_node(self, node_cpus: float) -> int:
        return self.max_replicas_per_node or max(1, int(2 * node_cpus))

    # ----- a request, before its spec is parsed ------------------------------------------------
    def check_request(self, spec_data, spec_bytes: int | None, request_id: str | None) -> None:
        """Size caps on what a client sent, checked before the spec is validated."""
        if spec_bytes is None:
            spec_bytes = len(json.dumps(spec_data, default=str).encode())
        if spec_bytes > self.max_spec_bytes:
            raise CapacityError(f"job: the spec is {spec_bytes} bytes; at most {self.max_spec_bytes} bytes "
                                f"(--max-spec-bytes)", "job")
        if request_id is not None and len(request_id) > self.max_request_id_chars:
            raise SpecError(f"request_id: {len(request_id)} characters; at most {self.max_request_id_chars}",
                            "request_id")
        _check_lists(spec_data, "", self.max_list_entries)

    # ----- a parsed spec: processes and memory --------------------------------------------------
    def admit(self, spec: JobSpec, nodes: list[dict]) -> None:
        """Refuse what the cluster's nodes could never host: replicas below the CPU floor, more
        replica processes than the per-node caps allow, or a memory estimate above what a
        node has. ``nodes``: ``[{"cpus": …, "memory": bytes}]`` (:func:`cluster_nodes`)."""
        cpr = spec.resources.cpus_per_replica
        if cpr < self.min_cpus_per_replica - 1e-12:
            raise SpecError(f"resources.cpus_per_replica: {cpr:g} is below this server's floor of "
                            f"{self.min_cpus_per_replica:g} CPU per replica (--min-cpus-per-replica)",
                            "resources.cpus_per_replica")
        if not nodes:
            return
        per_node = [min(self.replicas_per_node(n["cpus"]), int(n["cpus"] / cpr + 1e-9)) for n in nodes]
        if spec.replicas > sum(per_node):
            cap = (f"--max-replicas-per-node {self.max_replicas_per_node}" if self.max_replicas_per_node
                   else "2 × each node's CPUs")
            raise CapacityError(f"replicas: {spec.replicas} replica processes, but the cluster hosts at most "
                                f"{sum(per_node)} at resources.cpus_per_replica {cpr:g} ({cap}); "
                                f"allowed: replicas ≤ {sum(per_node)}", "replicas")
        if self.check_memory:
            check_memory(spec, nodes, per_node)


def _check_lists(data, prefix: str, limit: int) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            _check_lists(value, f"{prefix}.{key}" if prefix else str(key), limit)
    elif isinstance(data, (list, tuple)):
        if len(data) > limit:
            raise SpecError(f"{prefix}: {len(data)} entries; at most {limit}", prefix)


# ----- memory -------------------------------------------------------------------------------------
def eval_batch_size(spec: JobSpec) -> int:
    """Samples per evaluation batch: up to 1,000, and at most 100,000 predictions (a text
    sequence of ``dataset.seq_len`` characters is that many predictions), so a long
    sequence length cannot make evaluation allocate without bound."""
    per_sample = spec.dataset.seq_len if _is_text(spec) else 1
    return max(1, min(EVAL_MAX_BATCH, EVAL_MAX_ITEMS // per_sample))


def _is_text(spec: JobSpec) -> bool:
    return spec.dataset.name in ("text", "synthetic-text")


def _shape(spec: JobSpec, data_cap: int) -> tuple[int, tuple, int]:
    """(dataset bytes in memory, sample shape, classes) assumed for the estimate."""
    d = spec.dataset
    if _is_text(spec):
        chars = (BIBLE_CHARS if d.path == "bible-kjv" else data_cap) if d.name == "text" else 4096 * 64
        vocab = 128 if d.path == "bible-kjv" else TEXT_VOCAB if d.name == "text" else 32
        return chars * 2, (d.seq_len,), vocab
    if d.name in _DATASETS and not (d.name in ("mnist", "idx") and d.path):
        size, shape, classes = _DATASETS[d.name]
        return size, shape, classes
    return data_cap, (1, 28, 28), 10  # idx/mnist from a file: bounded by the data-file cap


@functools.lru_cache(maxsize=64)
def model_profile(model: str, shape: tuple, classes: int) -> tuple[int, int, int]:
    """(weights and buffers, activations per sample summed over layers, widest layer per
    sample), in float32 numbers, from a forward pass on the ``meta`` device (no memory, ~20 ms)."""
    import torch

    from worker.models import build_model

    with torch.device("meta"):
        model_ = build_model(model, shape, classes)
    weights = sum(p.numel() for p in model_.parameters()) + sum(b.numel() for b in model_.buffers())
    total, widest = [0], [0]

    def hook(module, inputs, output) -> None:
        outs = output if isinstance(output, tuple) else (output,)
        n = sum(o.numel() for o in outs if isinstance(o, torch.Tensor))
        if isinstance(module, torch.nn.LSTM):  # gates and cell states kept per step and layer
            n += 2 * shape[0] * 8 * module.hidden_size * module.num_layers
        total[0] += n
        widest[0] = max(widest[0], n)

    hooks = [m.register_forward_hook(hook) for m in model_.modules() if not list(m.children())]
    dtype = torch.long if model == "char-lstm" else torch.float32
    model_.train()
    model_(torch.zeros((2, *shape), device="meta", dtype=dtype))  # 2: BatchNorm refuses a batch of 1
    for h in hooks:
        h.remove()
    return weights, total[0] // 2, widest[0] // 2


@dataclass(frozen=True)
class MemoryEstimate:
    replica: int          # bytes per replica process
    replica_weights: int  # of which weights and buffers
    replica_activations: int
    runner: int           # the round loop's process (evaluation included)
    dataset: int          # the dataset: loaded by the runner and put in the object store (×2)

    def node(self, replicas_here: int) -> int:
        return self.runner + self.dataset + replicas_here * self.replica


def estimate_memory(spec: JobSpec, data_cap: int | None = None) -> MemoryEstimate:
    """A conservative estimate of a job's memory, in bytes. With P the model's weights and
    buffers, A its activations per sample summed over layers, W its widest layer per sample
    (float32 numbers, from :func:`model_profile` on the dataset's sample shape), K replicas,
    B ``train.batch_size``, E the evaluation batch (:func:`eval_batch_size`) and D the dataset
    in memory:

        replica = 400 MiB + 4·P·12 + 4·A·B·3
        runner  = 400 MiB + 4·P·(8 + 3K) + 4·W·E·3
        dataset = 2·D           (the runner's copy and the object store's; replicas read it zero-copy)
        node    = runner + dataset + (replicas placed on that node) · replica

    D: 55 MB (Fashion-MNIST, MNIST), 184 MB (CIFAR-10); a file (idx, mnist, text) counts at
    the data-file cap (``--data-max-bytes`` / ``--data-max-text-bytes``, 2 bytes a character),
    a text vocabulary at 4,096 characters, idx samples at 28×28.
    """
    from worker.data.limits import Limits

    limits = Limits.from_env()
    cap = data_cap or (limits.max_text if _is_text(spec) else limits.max_bytes)
    size, shape, classes = _shape(spec, cap)
    if _is_text(spec):  # activations grow linearly with the sequence: profile 8 steps, scale (cheap at any length)
        weights, acts, widest = model_profile(spec.model, (PROFILE_STEPS,), classes)
        acts, widest = acts * shape[0] // PROFILE_STEPS, widest * shape[0] // PROFILE_STEPS
    else:
        weights, acts, widest = model_profile(spec.model, shape, classes)
    k = spec.replicas
    replica_weights = 4 * weights * REPLICA_COPIES
    replica_acts = 4 * acts * spec.train.batch_size * ACTIVATION_FACTOR
    runner = PROCESS_BYTES + 4 * weights * (RUNNER_COPIES + 3 * k) + 4 * widest * eval_batch_size(spec) * EVAL_FACTOR
    return MemoryEstimate(replica=PROCESS_BYTES + replica_weights + replica_acts, replica_weights=replica_weights,
                          replica_activations=replica_acts, runner=runner, dataset=2 * size)


def check_memory(spec: JobSpec, nodes: list[dict], per_node: list[int]) -> None:
    """Refuse a job whose estimate does not fit a node: every node Ray could place replicas on
    must hold as many of them as its CPUs and cap admit (at most K), plus — conservatively,
    since the server's node is not told apart — the round loop and the dataset."""
    est = estimate_memory(spec)
    worst = None
    for node, fits in zip(nodes, per_node):
        here = min(spec.replicas, fits)
        if here and est.node(here) > node["memory"] and (worst is None or est.node(here) - node["memory"] > worst[0]):
            worst = (est.node(here) - node["memory"], node, here)
    if worst is None:
        return
    _, node, here = worst
    need = est.node(here)
    parts = {"train.batch_size": here * est.replica_activations, "replicas": here * (PROCESS_BYTES + est.replica_weights),
             "dataset.path" if spec.dataset.path else "dataset.name": est.dataset, "model": est.runner}
    field = max(parts, key=parts.get)
    raise CapacityError(
        f"{field}: the job needs an estimated {_gib(need)} on one node ({here} replicas × {_gib(est.replica)}, "
        f"of which activations {_gib(est.replica_activations)} at train.batch_size {spec.train.batch_size}; "
        f"round loop {_gib(est.runner)}; dataset {_gib(est.dataset)}), but the node has {_gib(node['memory'])} "
        f"(formula: docs/security.md, Limits)", field)


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def cluster_nodes() -> list[dict]:
    """The alive Ray nodes' CPUs and memory (Ray's ``memory`` resource: what it lets tasks
    and actors use, by default 70% of the node's available memory when it started)."""
    import ray

    out = []
    for node in ray.nodes():
        if node.get("Alive"):
            res = node.get("Resources", {})
            out.append({"cpus": float(res.get("CPU", 0.0)), "memory": int(res.get("memory", 0)) or 1 << 62,
                        "node_id": node.get("NodeID")})
    return out
