"""What this machine's CPU can do, from ``/proc/cpuinfo`` (the kernel's word, not a
compiler's guess): the compiler's target and the training precision read it."""

from __future__ import annotations

CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo: str = CPUINFO) -> set[str]:
    """The first CPU's feature flags; empty where there is no ``/proc/cpuinfo`` (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()
