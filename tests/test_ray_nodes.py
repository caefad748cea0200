"""tests/ray_nodes.add_node: a node whose raylet registered too slowly is killed by PID and started again."""
import subprocess, sys
from tests.ray_nodes import descendants, add_node
def test_descendants_sees_a_grandchild():
    p = subprocess.Popen([sys.executable, "-c", "import subprocess,sys,time; q=subprocess.Popen(['sleep','30']); print(q.pid, flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    grandchild = int(p.stdout.readline())
    assert {p.pid, grandchild} <= descendants()
    p.kill(); p.wait()
class Flaky:
    calls = 0
    def add_node(self, **kw):
        self.calls += 1
        if self.calls == 1:
            self.proc = subprocess.Popen(["sleep", "60"])
            raise Exception("The current node timed out during startup. This could happen")
        return kw
def test_retry_kills_the_half_started_node():
    c = Flaky()
    assert add_node(c, num_cpus=1) == {"num_cpus": 1} and c.calls == 2
    assert c.proc.poll() is not None or c.proc.wait(5) is not None
