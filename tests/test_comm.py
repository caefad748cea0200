"""comm.dtype: what crosses the network in 16 bits, and that float32 is exactly as before."""
import numpy as np
import pytest
import torch

from coordinator.membership import DivergenceError
from coordinator.pool import LocalPool
from core.spec import COMM_DTYPES, JobSpec, SpecError
from worker import comm
from worker.langevin import InnerParams
from worker.replica import Replica, ReplicaConfig
from tests.helpers import local_engine, ray_engine, spec_of, synthetic

HALF = ("bfloat16", "float16")


def _values(n=20_000, seed=0):
    """Signed values over many magnitudes (all float16-normal: 2⁻¹⁴ ≤ |v| < 6e4)."""
    rng = np.random.default_rng(seed)
    mag = np.exp(rng.uniform(np.log(2.0 ** -13), np.log(6e4), n))
    return (mag * rng.choice([-1.0, 1.0], n)).astype(np.float32)


# ----- the pure functions ---------------------------------------------------------------------
def test_float32_is_the_identity():
    x = _values()
    assert comm.encode(x, "float32") is x and comm.decode(x, "float32") is x
    assert comm.pack_result(x, x[::-1], "float32") is x and comm.unpack_result(x, x[::-1], "float32") is x


@pytest.mark.parametrize("dtype,unit", [("bfloat16", 2.0 ** -8), ("float16", 2.0 ** -11)])
def test_16bit_round_trip_within_half_an_ulp_and_half_the_bytes(dtype, unit):
    x = _values()
    wire = comm.encode(x, dtype)
    assert wire.dtype == comm.WIRE[dtype] and wire.nbytes * 2 == x.nbytes
    y = comm.decode(wire, dtype)
    assert y.dtype == np.float32 and y.shape == x.shape
    rel = np.abs(y - x) / np.abs(x)
    assert rel.max() <= unit and rel.max() > unit / 4  # rounded, and to nearest
    torch_ref = torch.from_numpy(x).to(getattr(torch, dtype)).float().numpy()
    assert np.array_equal(y, torch_ref)  # the same rounding as torch's own cast


def test_bfloat16_rounds_ties_to_even():
    ties = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)], np.float32)  # midpoints between bf16s
    assert comm.decode(comm.encode(ties, "bfloat16"), "bfloat16").tolist() == [1.0, 1 + 2 ** -6, -1.0]


def test_float16_subnormals_keep_an_absolute_error_of_2_to_the_minus_25():
    x = np.linspace(-2.0 ** -14, 2.0 ** -14, 1001, dtype=np.float32)
    assert np.abs(comm.decode(comm.encode(x, "float16"), "float16") - x).max() <= 2.0 ** -25


def test_values_beyond_the_range_are_rejected_not_clamped():
    edge = np.array([65504, 65519, -65519, 1], np.float32)  # 65519 still rounds to 65504
    assert comm.decode(comm.encode(edge, "float16"), "float16").tolist() == [65504, 65504, -65504, 1]
    with pytest.raises(comm.CommRangeError, match=r"comm.dtype float16: 1 of 3 weights .*65504.*bfloat16"):
        comm.encode(np.array([1, -65520, 3], np.float32), "float16", "weights")
    assert comm.decode(comm.encode(np.array([1e5], np.float32), "bfloat16"), "bfloat16")[0] == 99840
    with pytest.raises(comm.CommRangeError, match="comm.dtype bfloat16"):
        comm.encode(np.array([3.4e38], np.float32), "bfloat16")
    special = np.array([np.nan, np.inf, -np.inf], np.float32)  # passed on: the divergence check reports them
    for dtype in HALF:
        out = comm.decode(comm.encode(special, dtype), dtype)
        assert np.isnan(out[0]) and out[1] == np.inf and out[2] == -np.inf


def test_decode_refuses_a_wire_array_of_another_format():
    with pytest.raises(TypeError, match="comm.dtype bfloat16: expected a uint16"):
        comm.decode(np.zeros(3, np.float16), "bfloat16")


@pytest.mark.parametrize("dtype", HALF)
def test_a_move_smaller_than_the_weights_ulp_survives(dtype):
    """Why results travel as displacements: q(μ) would round a small move of x away."""
    x = np.full(1000, 1.0 + 2 ** -12, np.float32)  # not representable in bfloat16
    x_hat = comm.decode(comm.encode(x, dtype), dtype)
    move = np.float32(1e-4)  # far below bfloat16's half-ulp at 1 (2⁻⁸)
    mu = x_hat + move
    got = comm.unpack_result(comm.pack_result(mu, x_hat, dtype), x, dtype)
    np.testing.assert_allclose(got - x, move, rtol=2.0 ** -8)
    if dtype == "bfloat16":
        assert np.all(comm.decode(comm.encode(mu, dtype), dtype) == 1.0)  # plain rounding: the move is lost


# ----- the spec and its wire form -------------------------------------------------------------
def test_spec_accepts_the_three_formats_and_names_the_field_otherwise():
    assert JobSpec.parse({"train": {"outer_steps": 1}}).comm.dtype == "float32" and COMM_DTYPES == comm.DTYPES
    for dtype in comm.DTYPES:
        assert JobSpec.parse({"train": {"outer_steps": 1}, "comm": {"dtype": dtype}}).comm.dtype == dtype
    for bad in ("fp8", "BFLOAT16", 16, None):
        with pytest.raises(SpecError, match=r"comm.dtype: .*'float32', 'bfloat16' or 'float16'") as exc:
            JobSpec.parse({"train": {"outer_steps": 1}, "comm": {"dtype": bad}})
        assert exc.value.field == "comm.dtype"


def test_comm_dtype_crosses_the_api():
    from services.convert import proto_to_spec_dict, spec_to_proto

    spec = JobSpec.parse({"train": {"outer_steps": 1}, "comm": {"dtype": "bfloat16"}})
    assert JobSpec.parse(proto_to_spec_dict(spec_to_proto(spec))) == spec
    with pytest.raises(SpecError, match="comm.dtype: expected a string"):
        spec_to_proto({"comm": {"dtype": 16}})
    with pytest.raises(SpecError, match="comm.dtype"):
        JobSpec.parse(proto_to_spec_dict(spec_to_proto({"comm": {"dtype": "fp8"}})))


# ----- jobs -------------------------------------------------------------------------------------
JOB = dict(strategy="parle", replicas=2, inner={"steps": 4, "momentum": 0.5}, train={"outer_steps": 12})


def _train(dtype=None, rounds=12, **job):
    spec = spec_of(**{**JOB, **job, **({"comm": {"dtype": dtype}} if dtype else {})})
    eng = local_engine(spec)
    records = [eng.step() for _ in range(rounds)]
    return eng, records


def test_float32_is_bit_identical_with_or_without_the_field():
    a, ra = _train(rounds=4)
    b, rb = _train("float32", rounds=4)
    assert torch.equal(a.strategy.reference(), b.strategy.reference())
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]
    n = a.strategy.reference().numel() * 4
    assert ra[-1]["bytes_sent"] == 2 * n and ra[-1]["bytes_received"] == 2 * n  # Parle: K anchors, K results


@pytest.mark.parametrize("strategy", ["parle", "entropy-sgd"])
def test_16bit_jobs_train_like_float32_on_half_the_bytes(strategy):
    full, rf = _train("float32", strategy=strategy)
    ef = full.evaluate()
    for dtype in HALF:
        eng, rec = _train(dtype, strategy=strategy)
        ev = eng.evaluate()
        assert rec[-1]["loss"] < 0.5 * rec[0]["loss"]
        assert abs(ev["test_error"] - ef["test_error"]) <= 0.03 and abs(ev["test_loss"] - ef["test_loss"]) <= 0.03
        x, xf = eng.strategy.reference(), full.strategy.reference()
        assert x.dtype == torch.float32 and not torch.equal(x, xf)  # it did travel in 16 bits...
        assert float((x - xf).norm() / xf.norm()) < 0.05  # ...and stayed close
        for r, r32 in zip(rec, rf):
            assert 2 * r["bytes_sent"] == r32["bytes_sent"] and 2 * r["bytes_received"] == r32["bytes_received"]


def test_checkpoints_keep_float32_state(tmp_path):
    eng, _ = _train("bfloat16", rounds=2)
    eng.checkpoint_dir = tmp_path
    ckpt = torch.load(eng.checkpoint())
    assert ckpt["spec"]["comm"] == {"dtype": "bfloat16"}
    assert ckpt["strategy"]["states"].dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())


def test_an_anchor_beyond_float16_fails_the_round():
    spec = spec_of(comm={"dtype": "float16"})
    pool = LocalPool(spec, synthetic())
    n = pool.slots[0].replica.flat.size
    hp = InnerParams(steps=1, lr=0.1, gamma=0.0, noise=0.0, alpha=1.0)
    with pytest.raises(comm.CommRangeError, match=r"float16: 1 of \d+ anchor values"):
        pool.run_round([np.concatenate([[1e5], np.zeros(n - 1)]).astype(np.float32)], hp)


def test_a_replica_moving_beyond_float16_is_reported_as_diverged():
    spec = spec_of(comm={"dtype": "float16"}, replicas=2)
    huge = InnerParams(steps=1, lr=1e7, gamma=0.0, noise=0.0, alpha=1.0)  # a step of ~1e5 in some weights
    rep = Replica(ReplicaConfig.from_spec(spec), 0, synthetic())
    wire, stats = rep.run(comm.encode(rep.flat.numpy(), "float16"), huge)
    assert not stats["finite"] and "comm.dtype float16" in stats["cause"] and np.isnan(wire.astype(np.float32)).all()
    eng = local_engine(spec)
    eng.strategy.round_params = lambda t, f=1.0: huge
    with pytest.raises(DivergenceError, match=r"diverged in round 1 on replica 0: comm.dtype float16: \d+ of"):
        eng.step()


# ----- a real local Ray ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", HALF)
def test_ray_pool_sends_the_same_16bit_arrays_as_the_local_pool(local_ray, dtype):
    spec = spec_of(**{**JOB, "comm": {"dtype": dtype}}, resources={"cpus_per_replica": 1})
    ray_eng = ray_engine(spec)
    loc_eng, threads = local_engine(spec), torch.get_num_threads()
    try:
        rec = [ray_eng.step() for _ in range(4)]
        torch.set_num_threads(1)  # as each actor runs: then float32 sums, and so the roundings, agree exactly
        loc = [loc_eng.step() for _ in range(4)]
        assert torch.equal(ray_eng.strategy.reference(), loc_eng.strategy.reference())
        n = ray_eng.strategy.reference().numel() * 4
        assert [(r["bytes_sent"], r["bytes_received"]) for r in rec] == [(n, n)] * 4  # 2 × n/2 each way
        assert [(r["bytes_sent"], r["bytes_received"]) for r in loc] == [(n, n)] * 4
        assert rec[-1]["loss"] < rec[0]["loss"]
    finally:
        torch.set_num_threads(threads)
        ray_eng.pool.shutdown()
