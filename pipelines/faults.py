"""Fail points: named places where a test can SIGKILL the running process.

The crash-safety tests (tests/test_faults.py) start a real stage process with
``NER_WORKBENCH_KILL_AT=POINT[@N][~TEXT]`` in its environment: the N-th time (default
the first) the process reaches ``POINT`` with a detail containing ``TEXT``, it kills
itself with SIGKILL, exactly as ``kill -9`` or the OOM killer would, at a moment a
timer could never hit reliably. Unset (always, outside those tests) a point costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "NER_WORKBENCH_KILL_AT"
_hits: dict[str, int] = {}


def _parse(spec: str) -> tuple[str, int, str]:
    point, _, text = spec.partition("~")
    point, _, nth = point.partition("@")
    return point.strip(), int(nth or 1), text


def fail_point(point: str, detail: str = "") -> None:
    """SIGKILL this process here if ``NER_WORKBENCH_KILL_AT`` names ``point`` (see the module doc)."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    name, nth, text = _parse(spec)
    if name != point or text not in detail:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
