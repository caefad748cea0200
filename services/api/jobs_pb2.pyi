import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_UNSPECIFIED: _ClassVar[State]
    QUEUED: _ClassVar[State]
    RUNNING: _ClassVar[State]
    SUCCEEDED: _ClassVar[State]
    FAILED: _ClassVar[State]
    CANCELLED: _ClassVar[State]
STATE_UNSPECIFIED: State
QUEUED: State
RUNNING: State
SUCCEEDED: State
FAILED: State
CANCELLED: State

class DatasetSpec(_message.Message):
    __slots__ = ("name", "path", "fraction", "train_subset", "test_subset", "seq_len", "label_noise")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SUBSET_FIELD_NUMBER: _ClassVar[int]
    TEST_SUBSET_FIELD_NUMBER: _ClassVar[int]
    SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    LABEL_NOISE_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    fraction: float
    train_subset: int
    test_subset: int
    seq_len: int
    label_noise: float
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., fraction: _Optional[float] = ..., train_subset: _Optional[int] = ..., test_subset: _Optional[int] = ..., seq_len: _Optional[int] = ..., label_noise: _Optional[float] = ...) -> None: ...

class InnerSpec(_message.Message):
    __slots__ = ("steps", "lr", "noise", "alpha", "gamma0", "gamma1", "gamma_max", "momentum", "nesterov", "weight_decay", "optimizer", "adam_beta1", "adam_beta2", "adam_eps")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    GAMMA0_FIELD_NUMBER: _ClassVar[int]
    GAMMA1_FIELD_NUMBER: _ClassVar[int]
    GAMMA_MAX_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADAM_BETA1_FIELD_NUMBER: _ClassVar[int]
    ADAM_BETA2_FIELD_NUMBER: _ClassVar[int]
    ADAM_EPS_FIELD_NUMBER: _ClassVar[int]
    steps: int
    lr: float
    noise: float
    alpha: float
    gamma0: float
    gamma1: float
    gamma_max: float
    momentum: float
    nesterov: bool
    weight_decay: float
    optimizer: str
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    def __init__(self, steps: _Optional[int] = ..., lr: _Optional[float] = ..., noise: _Optional[float] = ..., alpha: _Optional[float] = ..., gamma0: _Optional[float] = ..., gamma1: _Optional[float] = ..., gamma_max: _Optional[float] = ..., momentum: _Optional[float] = ..., nesterov: _Optional[bool] = ..., weight_decay: _Optional[float] = ..., optimizer: _Optional[str] = ..., adam_beta1: _Optional[float] = ..., adam_beta2: _Optional[float] = ..., adam_eps: _Optional[float] = ...) -> None: ...

class OuterSpec(_message.Message):
    __slots__ = ("lr", "momentum", "nesterov", "lr_form", "milestones", "lr_factor", "schedule", "lr_min_factor")
    LR_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    LR_FORM_FIELD_NUMBER: _ClassVar[int]
    MILESTONES_FIELD_NUMBER: _ClassVar[int]
    LR_FACTOR_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    LR_MIN_FACTOR_FIELD_NUMBER: _ClassVar[int]
    lr: float
    momentum: float
    nesterov: bool
    lr_form: str
    milestones: _containers.RepeatedScalarFieldContainer[float]
    lr_factor: float
    schedule: str
    lr_min_factor: float
    def __init__(self, lr: _Optional[float] = ..., momentum: _Optional[float] = ..., nesterov: _Optional[bool] = ..., lr_form: _Optional[str] = ..., milestones: _Optional[_Iterable[float]] = ..., lr_factor: _Optional[float] = ..., schedule: _Optional[str] = ..., lr_min_factor: _Optional[float] = ...) -> None: ...

class ElasticSpec(_message.Message):
    __slots__ = ("rho0", "rho1", "rho_max")
    RHO0_FIELD_NUMBER: _ClassVar[int]
    RHO1_FIELD_NUMBER: _ClassVar[int]
    RHO_MAX_FIELD_NUMBER: _ClassVar[int]
    rho0: float
    rho1: float
    rho_max: float
    def __init__(self, rho0: _Optional[float] = ..., rho1: _Optional[float] = ..., rho_max: _Optional[float] = ...) -> None: ...

class InitSpec(_message.Message):
    __slots__ = ("per_replica_seeds",)
    PER_REPLICA_SEEDS_FIELD_NUMBER: _ClassVar[int]
    per_replica_seeds: bool
    def __init__(self, per_replica_seeds: _Optional[bool] = ...) -> None: ...

class InitFromSpec(_message.Message):
    __slots__ = ("job", "round", "path")
    JOB_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    job: str
    round: int
    path: str
    def __init__(self, job: _Optional[str] = ..., round: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class TrainSpec(_message.Message):
    __slots__ = ("batch_size", "epochs", "outer_steps", "eval_every", "seed", "max_replica_failures", "min_replicas")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    OUTER_STEPS_FIELD_NUMBER: _ClassVar[int]
    EVAL_EVERY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICA_FAILURES_FIELD_NUMBER: _ClassVar[int]
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    epochs: float
    outer_steps: int
    eval_every: int
    seed: int
    max_replica_failures: int
    min_replicas: int
    def __init__(self, batch_size: _Optional[int] = ..., epochs: _Optional[float] = ..., outer_steps: _Optional[int] = ..., eval_every: _Optional[int] = ..., seed: _Optional[int] = ..., max_replica_failures: _Optional[int] = ..., min_replicas: _Optional[int] = ...) -> None: ...

class ResourceSpec(_message.Message):
    __slots__ = ("cpus_per_replica", "gpus_per_replica", "threads_per_replica", "placement_timeout_s")
    CPUS_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    THREADS_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    cpus_per_replica: float
    gpus_per_replica: float
    threads_per_replica: int
    placement_timeout_s: float
    def __init__(self, cpus_per_replica: _Optional[float] = ..., gpus_per_replica: _Optional[float] = ..., threads_per_replica: _Optional[int] = ..., placement_timeout_s: _Optional[float] = ...) -> None: ...

class FlatnessSpec(_message.Message):
    __slots__ = ("enabled",)
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    def __init__(self, enabled: _Optional[bool] = ...) -> None: ...

class CheckpointSpec(_message.Message):
    __slots__ = ("every", "keep_last")
    EVERY_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    every: int
    keep_last: int
    def __init__(self, every: _Optional[int] = ..., keep_last: _Optional[int] = ...) -> None: ...

class CommSpec(_message.Message):
    __slots__ = ("dtype",)
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    def __init__(self, dtype: _Optional[str] = ...) -> None: ...

class SweepSpec(_message.Message):
    __slots__ = ("space", "trials", "metric", "mode", "scheduler", "grace_period", "reduction_factor", "max_concurrent", "seed")
    class SpaceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPACE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    space: _containers.ScalarMap[str, str]
    trials: int
    metric: str
    mode: str
    scheduler: str
    grace_period: float
    reduction_factor: float
    max_concurrent: int
    seed: int
    def __init__(self, space: _Optional[_Mapping[str, str]] = ..., trials: _Optional[int] = ..., metric: _Optional[str] = ..., mode: _Optional[str] = ..., scheduler: _Optional[str] = ..., grace_period: _Optional[float] = ..., reduction_factor: _Optional[float] = ..., max_concurrent: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "model", "dataset", "strategy", "replicas", "inner", "outer", "elastic", "train", "resources", "checkpoint", "flatness", "comm", "init", "sweep", "init_from")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    INNER_FIELD_NUMBER: _ClassVar[int]
    OUTER_FIELD_NUMBER: _ClassVar[int]
    ELASTIC_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FLATNESS_FIELD_NUMBER: _ClassVar[int]
    COMM_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    INIT_FROM_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    dataset: DatasetSpec
    strategy: str
    replicas: int
    inner: InnerSpec
    outer: OuterSpec
    elastic: ElasticSpec
    train: TrainSpec
    resources: ResourceSpec
    checkpoint: CheckpointSpec
    flatness: FlatnessSpec
    comm: CommSpec
    init: InitSpec
    sweep: SweepSpec
    init_from: InitFromSpec
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., dataset: _Optional[_Union[DatasetSpec, _Mapping]] = ..., strategy: _Optional[str] = ..., replicas: _Optional[int] = ..., inner: _Optional[_Union[InnerSpec, _Mapping]] = ..., outer: _Optional[_Union[OuterSpec, _Mapping]] = ..., elastic: _Optional[_Union[ElasticSpec, _Mapping]] = ..., train: _Optional[_Union[TrainSpec, _Mapping]] = ..., resources: _Optional[_Union[ResourceSpec, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointSpec, _Mapping]] = ..., flatness: _Optional[_Union[FlatnessSpec, _Mapping]] = ..., comm: _Optional[_Union[CommSpec, _Mapping]] = ..., init: _Optional[_Union[InitSpec, _Mapping]] = ..., sweep: _Optional[_Union[SweepSpec, _Mapping]] = ..., init_from: _Optional[_Union[InitFromSpec, _Mapping]] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "message", "replica", "round", "root_cause")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROOT_CAUSE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    replica: int
    round: int
    root_cause: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., replica: _Optional[int] = ..., round: _Optional[int] = ..., root_cause: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("round", "total_rounds", "epoch", "loss", "train_error", "gamma", "rho", "lr", "samples_per_second", "round_seconds", "compute_seconds", "grad_norm", "spread")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ERROR_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    RHO_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ROUND_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    round: int
    total_rounds: int
    epoch: float
    loss: float
    train_error: float
    gamma: float
    rho: float
    lr: float
    samples_per_second: float
    round_seconds: float
    compute_seconds: float
    grad_norm: float
    spread: float
    def __init__(self, round: _Optional[int] = ..., total_rounds: _Optional[int] = ..., epoch: _Optional[float] = ..., loss: _Optional[float] = ..., train_error: _Optional[float] = ..., gamma: _Optional[float] = ..., rho: _Optional[float] = ..., lr: _Optional[float] = ..., samples_per_second: _Optional[float] = ..., round_seconds: _Optional[float] = ..., compute_seconds: _Optional[float] = ..., grad_norm: _Optional[float] = ..., spread: _Optional[float] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("round", "epoch", "test_error", "test_loss", "grad_evals_total", "data_passes_per_replica", "wall_seconds")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TEST_ERROR_FIELD_NUMBER: _ClassVar[int]
    TEST_LOSS_FIELD_NUMBER: _ClassVar[int]
    GRAD_EVALS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DATA_PASSES_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    round: int
    epoch: float
    test_error: float
    test_loss: float
    grad_evals_total: int
    data_passes_per_replica: float
    wall_seconds: float
    def __init__(self, round: _Optional[int] = ..., epoch: _Optional[float] = ..., test_error: _Optional[float] = ..., test_loss: _Optional[float] = ..., grad_evals_total: _Optional[int] = ..., data_passes_per_replica: _Optional[float] = ..., wall_seconds: _Optional[float] = ...) -> None: ...

class JobSummary(_message.Message):
    __slots__ = ("test_error", "test_loss", "rounds", "epochs", "grad_evals_total", "grad_evals_per_replica", "samples_total", "data_passes_per_replica", "data_passes_total", "wall_seconds", "top_eigenvalue", "hessian_trace", "near_zero_fraction")
    TEST_ERROR_FIELD_NUMBER: _ClassVar[int]
    TEST_LOSS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    GRAD_EVALS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    GRAD_EVALS_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DATA_PASSES_PER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    DATA_PASSES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOP_EIGENVALUE_FIELD_NUMBER: _ClassVar[int]
    HESSIAN_TRACE_FIELD_NUMBER: _ClassVar[int]
    NEAR_ZERO_FRACTION_FIELD_NUMBER: _ClassVar[int]
    test_error: float
    test_loss: float
    rounds: int
    epochs: float
    grad_evals_total: int
    grad_evals_per_replica: float
    samples_total: int
    data_passes_per_replica: float
    data_passes_total: float
    wall_seconds: float
    top_eigenvalue: float
    hessian_trace: float
    near_zero_fraction: float
    def __init__(self, test_error: _Optional[float] = ..., test_loss: _Optional[float] = ..., rounds: _Optional[int] = ..., epochs: _Optional[float] = ..., grad_evals_total: _Optional[int] = ..., grad_evals_per_replica: _Optional[float] = ..., samples_total: _Optional[int] = ..., data_passes_per_replica: _Optional[float] = ..., data_passes_total: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., top_eigenvalue: _Optional[float] = ..., hessian_trace: _Optional[float] = ..., near_zero_fraction: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("name", "id", "spec", "state", "create_time", "start_time", "end_time", "progress", "last_evaluation", "summary", "error", "checkpoint_round", "request_id", "restarts", "replicas", "parent", "children", "sweep", "trial")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVALUATION_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ROUND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    spec: JobSpec
    state: State
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    progress: Progress
    last_evaluation: Evaluation
    summary: JobSummary
    error: JobError
    checkpoint_round: int
    request_id: str
    restarts: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaPlacement]
    parent: str
    children: _containers.RepeatedScalarFieldContainer[str]
    sweep: SweepStatus
    trial: TrialInfo
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[State, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., last_evaluation: _Optional[_Union[Evaluation, _Mapping]] = ..., summary: _Optional[_Union[JobSummary, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., checkpoint_round: _Optional[int] = ..., request_id: _Optional[str] = ..., restarts: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaPlacement, _Mapping]]] = ..., parent: _Optional[str] = ..., children: _Optional[_Iterable[str]] = ..., sweep: _Optional[_Union[SweepStatus, _Mapping]] = ..., trial: _Optional[_Union[TrialInfo, _Mapping]] = ...) -> None: ...

class SweepStatus(_message.Message):
    __slots__ = ("metric", "mode", "trials", "started", "succeeded", "stopped_early", "failed", "best_trial", "best_value", "best_config")
    class BestConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    STOPPED_EARLY_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    BEST_TRIAL_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    BEST_CONFIG_FIELD_NUMBER: _ClassVar[int]
    metric: str
    mode: str
    trials: int
    started: int
    succeeded: int
    stopped_early: int
    failed: int
    best_trial: str
    best_value: float
    best_config: _containers.ScalarMap[str, str]
    def __init__(self, metric: _Optional[str] = ..., mode: _Optional[str] = ..., trials: _Optional[int] = ..., started: _Optional[int] = ..., succeeded: _Optional[int] = ..., stopped_early: _Optional[int] = ..., failed: _Optional[int] = ..., best_trial: _Optional[str] = ..., best_value: _Optional[float] = ..., best_config: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TrialInfo(_message.Message):
    __slots__ = ("trial_id", "config", "value", "stopped_early")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STOPPED_EARLY_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    config: _containers.ScalarMap[str, str]
    value: float
    stopped_early: bool
    def __init__(self, trial_id: _Optional[str] = ..., config: _Optional[_Mapping[str, str]] = ..., value: _Optional[float] = ..., stopped_early: _Optional[bool] = ...) -> None: ...

class ReplicaPlacement(_message.Message):
    __slots__ = ("index", "node_id", "node_ip", "pid", "device")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_IP_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    index: int
    node_id: str
    node_ip: str
    pid: int
    device: str
    def __init__(self, index: _Optional[int] = ..., node_id: _Optional[str] = ..., node_ip: _Optional[str] = ..., pid: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("job", "request_id")
    JOB_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    job: JobSpec
    request_id: str
    def __init__(self, job: _Optional[_Union[JobSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RetryJobRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: State
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[State, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("name", "after_seq")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_seq: int
    def __init__(self, name: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("state", "reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    state: State
    reason: str
    def __init__(self, state: _Optional[_Union[State, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("seq", "time", "snapshot", "state_change", "progress", "evaluation", "error", "summary", "replica", "trial")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    snapshot: Job
    state_change: StateChange
    progress: Progress
    evaluation: Evaluation
    error: JobError
    summary: JobSummary
    replica: ReplicaEvent
    trial: TrialEvent
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot: _Optional[_Union[Job, _Mapping]] = ..., state_change: _Optional[_Union[StateChange, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., evaluation: _Optional[_Union[Evaluation, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., summary: _Optional[_Union[JobSummary, _Mapping]] = ..., replica: _Optional[_Union[ReplicaEvent, _Mapping]] = ..., trial: _Optional[_Union[TrialEvent, _Mapping]] = ...) -> None: ...

class TrialEvent(_message.Message):
    __slots__ = ("trial", "kind", "round", "epoch", "value", "config", "message")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    trial: str
    kind: str
    round: int
    epoch: float
    value: float
    config: _containers.ScalarMap[str, str]
    message: str
    def __init__(self, trial: _Optional[str] = ..., kind: _Optional[str] = ..., round: _Optional[int] = ..., epoch: _Optional[float] = ..., value: _Optional[float] = ..., config: _Optional[_Mapping[str, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ReplicaEvent(_message.Message):
    __slots__ = ("replica", "round", "kind", "cause", "replicas")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replica: int
    round: int
    kind: str
    cause: str
    replicas: int
    def __init__(self, replica: _Optional[int] = ..., round: _Optional[int] = ..., kind: _Optional[str] = ..., cause: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class ScaleJobRequest(_message.Message):
    __slots__ = ("name", "replicas")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    replicas: int
    def __init__(self, name: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class DownloadArtifactRequest(_message.Message):
    __slots__ = ("name", "artifact")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    name: str
    artifact: str
    def __init__(self, name: _Optional[str] = ..., artifact: _Optional[str] = ...) -> None: ...

class DownloadCheckpointRequest(_message.Message):
    __slots__ = ("name", "round")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    name: str
    round: int
    def __init__(self, name: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class CheckpointChunk(_message.Message):
    __slots__ = ("data", "offset", "total_size", "round", "sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    total_size: int
    round: int
    sha256: str
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., total_size: _Optional[int] = ..., round: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class StreamJobLogsRequest(_message.Message):
    __slots__ = ("name", "follow", "replica", "tail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    follow: bool
    replica: int
    tail: int
    def __init__(self, name: _Optional[str] = ..., follow: _Optional[bool] = ..., replica: _Optional[int] = ..., tail: _Optional[int] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("n", "time", "source", "replica", "round", "stream", "level", "text")
    N_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    n: int
    time: _timestamp_pb2.Timestamp
    source: str
    replica: int
    round: int
    stream: str
    level: str
    text: str
    def __init__(self, n: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., replica: _Optional[int] = ..., round: _Optional[int] = ..., stream: _Optional[str] = ..., level: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class JobLogs(_message.Message):
    __slots__ = ("lines", "dropped")
    LINES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[LogLine]
    dropped: int
    def __init__(self, lines: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ..., dropped: _Optional[int] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[_Iterable[str]] = ...) -> None: ...
