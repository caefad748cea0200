"""The committed stubs are what the .proto generates (python -m services.api.generate)."""
import subprocess
import sys

from tests.service_harness import ROOT


def test_generated_stubs_match_the_proto():
    out = subprocess.run([sys.executable, "-m", "services.api.generate", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_state_enum_follows_the_api_conventions():
    from services.api import jobs_pb2 as pb

    assert pb.State.Name(0) == "STATE_UNSPECIFIED"
    assert [pb.State.Name(i) for i in range(1, 6)] == ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]


def test_every_spec_field_has_a_wire_field():
    """JobSpec (core/spec.py) and the proto's JobSpec must not drift apart."""
    from core.spec import JobSpec
    from services.convert import proto_to_spec_dict, spec_to_proto

    full = JobSpec.parse({"train": {"epochs": 2}, "inner": {"gamma_max": 1.0}, "elastic": {"rho_max": 5.0},
                          "outer": {"milestones": [1.0]}, "resources": {"gpus_per_replica": 0.5},
                          "dataset": {"path": "/data"}})
    assert JobSpec.parse(proto_to_spec_dict(spec_to_proto(full.to_dict()))) == full
