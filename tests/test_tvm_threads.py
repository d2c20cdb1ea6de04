"""TVM's thread pool gets every physical core (its own default is half the CPUs on x86)."""

import os
import subprocess
import sys

from conftest import REPO

from pipelines.runtime.tvm_threads import physical_cores

PROBE = "from pipelines.runtime.tvm_threads import configure_tvm_threads as c; c({}); import tvm; print(tvm.get_global_func('runtime.NumThreads')())"


def tvm_pool_size(threads=None, **env) -> int:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TVM_")} | env
    out = subprocess.run([sys.executable, "-c", PROBE.format(threads)], cwd=REPO, env=environ, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_pool_uses_every_physical_core_unless_told_otherwise():
    assert tvm_pool_size() == physical_cores()
    assert tvm_pool_size(1) == 1
    assert tvm_pool_size(TVM_NUM_THREADS="1") == 1  # the user's setting is kept
