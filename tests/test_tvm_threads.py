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


def cores_by_lscpu() -> int:
    """Physical cores this process may use, counted independently of the product: the
    distinct (socket, core) pairs of the CPUs in its affinity mask, as lscpu lists them."""
    rows = subprocess.run(["lscpu", "-p=CPU,CORE,SOCKET"], capture_output=True, text=True, check=True).stdout
    allowed = os.sched_getaffinity(0)
    return len({(socket, core) for cpu, core, socket in (r.split(",") for r in rows.splitlines() if r and r[0] != "#")
                if int(cpu) in allowed})


def test_pool_uses_every_physical_core_unless_told_otherwise():
    assert physical_cores() == cores_by_lscpu()
    assert tvm_pool_size() == cores_by_lscpu()
    assert tvm_pool_size(1) == 1
    assert tvm_pool_size(TVM_NUM_THREADS="1") == 1  # the user's setting is kept


def test_jobs_inherit_the_users_environment_not_the_apps_thread_settings(monkeypatch):
    """The highlighter's TVM engine sizes the app's pool; a job the app starts afterwards
    must size its own (it leaked: a bench started from the TUI ran with the app's setting)."""
    import pipelines.runtime.tvm_threads as tvm_threads

    monkeypatch.setattr(tvm_threads, "_BEFORE", {})
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.setenv("TVM_THREAD_POOL_SPIN_COUNT", "7")  # the user's own
    tvm_threads.configure_tvm_threads(1)
    assert os.environ["TVM_NUM_THREADS"] == "1"
    children = tvm_threads.environment_for_children()
    assert "TVM_NUM_THREADS" not in children and children["TVM_THREAD_POOL_SPIN_COUNT"] == "7"
