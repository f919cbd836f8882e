"""TF Serving's parallelism flags size TensorFlow's thread pools: a TF1 Session's (through
its ConfigProto) and the eager runtime's that runs TF2 functions (``tf.config.threading``).

Each check runs in a fresh process, since the pools are per process and are sized once. The
pools are counted by their threads: the inter-op pool's are named ``tf_Compute``; the
intra-op pool's carry the name of the thread that created them (TensorFlow's naming, which
these tests rely on; TensorFlow is pinned)."""
from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.support.processes import Server
from serving.runtime.parallelism import session_config
from tests.conftest import REPO, free_port

PROBE = """
import collections, json, os, sys
import numpy as np
from serving.runtime import parallelism, savedmodel
import tensorflow as tf

def threads():
    tasks = os.listdir("/proc/self/task")
    return collections.Counter(open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks)

intra, inter, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
main = open("/proc/self/comm").read().strip()
parallelism.apply_to_eager(intra, inter)
start = threads()
model = savedmodel.load(path, session_config=parallelism.session_config(intra, inter))
assert model.in_session
model.run("serving_default", {"x": np.array([[1.0]], np.float32)})
after_session = threads()
float(tf.constant(1.0) + 1.0)  # the eager runtime starts here
after_eager = threads()
print(json.dumps({
    "session": [(after_session - start)[main], (after_session - start)["tf_Compute"]],
    "eager": [tf.config.threading.get_intra_op_parallelism_threads(),
              tf.config.threading.get_inter_op_parallelism_threads(),
              (after_eager - after_session)["tf_Compute"]],
}))
"""


def test_no_flag_leaves_tensorflow_its_defaults():
    assert session_config(0, 0) is None
    config = session_config(1, 0)
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (1, 0)


@pytest.mark.slow
def test_the_pools_have_the_threads_asked_for(tfserving_dir):
    """intra 3, inter 4 (neither is the default on a 2-core machine, nor on most others)."""
    model = tfserving_dir / "saved_model_half_plus_two_cpu" / "00000123"
    done = subprocess.run([sys.executable, "-c", PROBE, "3", "4", str(model)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["session"] == [3, 4]  # intra-op threads, inter-op threads started by the Session
    assert seen["eager"] == [3, 4, 4]  # its settings, and the inter-op threads it started


@pytest.mark.slow
def test_the_gateway_sizes_the_pools_from_its_flags(tfserving_dir, tmp_path):
    """``python -m serving --tensorflow_inter_op_parallelism=5``: every inter-op pool of the
    process (the Session's, and the eager runtime's if it started) has 5 threads."""
    rest = free_port()
    argv = [sys.executable, "-m", "serving", f"--rest_api_port={rest}", "--port=0", "--host=127.0.0.1",
            f"--model_base_path={tfserving_dir / 'saved_model_half_plus_two_cpu'}",
            "--tensorflow_inter_op_parallelism=5"]
    with Server("gateway", argv, tmp_path / "gateway.log", rest, ready_timeout=180) as server:
        tasks = Path(f"/proc/{server.proc.pid}/task")
        names = collections.Counter((task / "comm").read_text().strip() for task in tasks.iterdir())
    assert names["tf_Compute"] in (5, 10), names
