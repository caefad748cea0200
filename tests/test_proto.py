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
