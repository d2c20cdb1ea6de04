"""TVM's CPU thread pool, sized and tuned before TVM first uses it.

TVM sizes its pool once per process, at the first parallel kernel, from
``TVM_NUM_THREADS``; unset, it takes *half* the logical CPUs on x86 because it
assumes SMT. On a 2-vCPU machine without SMT that is one thread: every TVM kernel
ran on half the machine (BERT-mini/128: 5.1 ms on one thread, 2.2 ms on two).
"""

from __future__ import annotations

import os

# Yields a worker makes before it sleeps after a kernel. 0 (sleep at once) pays a
# wake-up per kernel (mini/128: 3.9 ms instead of 2.2); TVM's default (300,000,
# ~50 ms of both cores after every call) steals the cores from the UI and from the
# next engine in a benchmark. 1,000 is as fast as the default here.
SPIN_COUNT = "1000"


def physical_cores() -> int:
    """Cores this process may use, one per physical core (SMT siblings share units)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:
        physical = usable
    return max(1, min(usable, physical))


# What the environment held before this process set a key, so the processes it starts
# (the TUI's jobs) get the user's environment back, not the highlighter's thread count.
_BEFORE: dict[str, str | None] = {}


def _put(key: str, value: str, override: bool) -> None:
    _BEFORE.setdefault(key, os.environ.get(key))
    if override or key not in os.environ:
        os.environ[key] = value


def configure_tvm_threads(threads: int | None = None) -> None:
    """Call before TVM runs any kernel in this process (later calls change nothing).
    An explicit ``threads`` wins; otherwise a user's ``TVM_NUM_THREADS`` is kept."""
    _put("TVM_NUM_THREADS", str(threads or physical_cores()), override=bool(threads))
    _put("TVM_THREAD_POOL_SPIN_COUNT", SPIN_COUNT, override=False)


def environment_for_children() -> dict[str, str]:
    """This process's environment less what ``configure_tvm_threads`` set in it: what a
    process it starts should inherit (each sizes its own pool)."""
    env = dict(os.environ)
    for key, value in _BEFORE.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env
