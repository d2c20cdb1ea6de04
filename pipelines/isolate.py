"""Run a pipelines module in a child process and relay its JSON-line events.

Used where a library can take its process down (TVM segfaults): the child's crash
becomes one failed stage with the tail of its log, and the caller lives on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

from pipelines.events import Event, Reporter


class ChildFailed(RuntimeError):
    pass


def run_isolated(module: str, request: dict, reporter: Reporter, log_path: str) -> dict:
    """``python -m MODULE REQUEST.json``; returns the data of its final ``finished`` event."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(request, f)
        request_path = f.name
    result: dict | None = None
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, request_path], stdout=subprocess.PIPE, stderr=log, text=True
            )
            try:
                for line in proc.stdout:
                    try:
                        event = Event.from_json(line)
                    except (json.JSONDecodeError, TypeError, KeyError):
                        # A library printing to stdout, or an event torn by a crash: shown, not lost.
                        if line.strip():
                            reporter.log(f"{module}: {line.strip()[:300]}", level="warning")
                        continue
                    if event.kind == "finished":
                        result = event.data or {}
                        continue
                    event.stage = reporter.stage or event.stage
                    reporter.emit(event)
                rc = proc.wait()
            except BaseException:
                proc.kill()  # a cancel of the parent must not leave the child running
                proc.wait()
                raise
    finally:
        os.unlink(request_path)
    if rc != 0:
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        raise ChildFailed(f"{module} failed ({how}): {_tail(log_path)}")
    if result is None:  # it exited 0 but its last word (the result) never arrived whole
        raise ChildFailed(f"{module} ended without its result (no final event): {_tail(log_path)}")
    return result


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = [l.strip() for l in f.read().splitlines() if l.strip()]
    except FileNotFoundError:
        return "no log"
    return " | ".join(text[-lines:]) or "no output"
