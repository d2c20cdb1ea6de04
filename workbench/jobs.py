"""Jobs: one CLI command in its own process, followed through its files.

A job directory holds ``job.json`` (what runs), ``events.jsonl`` (the pipeline
events, followed live), ``output.log`` (stdout and stderr) and, once the command
has ended, ``exit.json``. A small supervisor process starts the command, waits for
it and writes ``exit.json`` even when the command segfaults or is killed, so a
crash never goes unrecorded and jobs outlive the app that started them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from pipelines.events import Event, follow_events
from pipelines.files import read_json, write_json
from pipelines.runtime.tvm_threads import environment_for_children

from .store import pid_alive as _alive

EVENTS_ENV = "NER_WORKBENCH_EVENTS"  # the CLI also writes its events there when set
CANCEL_FILE = "cancel.json"  # a cancel request, for a command whose pid is not known yet
STARTING_S = 10.0  # a job this young without a supervisor pid is starting, not crashed


@dataclass
class JobState:
    status: str  # running | done | failed | cancelled | crashed
    returncode: int | None
    message: str = ""


class Job:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.spec = read_json(os.path.join(directory, "job.json"), {})
        self.id = os.path.basename(directory)
        self._offset = 0

    @property
    def argv(self) -> list[str]:
        return self.spec.get("argv", [])

    @property
    def events_path(self) -> str:
        return os.path.join(self.dir, "events.jsonl")

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "output.log")

    def state(self) -> JobState:
        done = read_json(os.path.join(self.dir, "exit.json"))
        if done is not None:
            rc = done["returncode"]
            if rc == 0:
                return JobState("done", rc)
            if rc in (130, -signal.SIGTERM, -signal.SIGINT) or done.get("cancelled"):
                return JobState("cancelled", rc, "cancelled")
            if rc < 0:
                return JobState("crashed", rc, f"killed by signal {signal.Signals(-rc).name}")
            return JobState("failed", rc, self.log_tail(1))
        spec = read_json(os.path.join(self.dir, "job.json"), self.spec)  # the supervisor's pid lands after the start
        if _alive(spec.get("supervisor_pid")):
            return JobState("running", None)
        if "supervisor_pid" not in spec and time.time() - spec.get("created", 0) < STARTING_S:
            return JobState("running", None, "starting")  # between the spawn and recording its pid
        return JobState("crashed", None, "the job's supervisor died before the command ended")

    def new_events(self) -> list[Event]:
        """Events written since the last call (whole lines only)."""
        events, self._offset = follow_events(self.events_path, self._offset)
        return events

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 64 * 1024))
                text = f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def cancel(self) -> None:
        """SIGTERM to the command (it records the stage as interrupted and exits). Asked
        before the command has started, the supervisor sees the request and stops it:
        the request is written first, then the command's pid read, and the supervisor
        writes the pid first, then reads the request, so one of the two always acts."""
        write_json(os.path.join(self.dir, CANCEL_FILE), {"requested": time.time()})
        pid = read_json(os.path.join(self.dir, "child.json"), {}).get("pid")
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)

    def wait(self, timeout: float | None = None, poll: float = 0.1) -> JobState:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.state()
            if state.status != "running" or (deadline is not None and time.monotonic() > deadline):
                return state
            time.sleep(poll)


def start_job(argv: list[str], jobs_dir: str, title: str | None = None) -> Job:
    """Start ``ner-workbench ARGV`` as a job; returns at once."""
    os.makedirs(jobs_dir, exist_ok=True)
    job_id = time.strftime("%Y%m%d-%H%M%S-") + f"{time.time_ns() % 10**6:06d}"
    directory = os.path.join(jobs_dir, job_id)
    os.makedirs(directory)
    write_json(os.path.join(directory, "job.json"), {"argv": argv, "title": title or " ".join(argv), "created": time.time()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.jobs", directory],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # survives the app; Ctrl-C in the app does not reach it
        env=environment_for_children(),  # not the thread settings the app's own engines made
    )
    spec = read_json(os.path.join(directory, "job.json"))
    spec["supervisor_pid"] = proc.pid
    write_json(os.path.join(directory, "job.json"), spec)
    return Job(directory)


def list_jobs(jobs_dir: str) -> list[Job]:
    if not os.path.isdir(jobs_dir):
        return []
    return [Job(os.path.join(jobs_dir, d)) for d in sorted(os.listdir(jobs_dir), reverse=True) if not d.startswith(".")]


def _supervise(directory: str) -> int:
    spec = read_json(os.path.join(directory, "job.json"))
    env = dict(os.environ, **{EVENTS_ENV: os.path.join(directory, "events.jsonl"), "PYTHONUNBUFFERED": "1"})
    with open(os.path.join(directory, "output.log"), "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", *spec["argv"]], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
        )
        write_json(os.path.join(directory, "child.json"), {"pid": child.pid})
        # The supervisor ignores SIGTERM/SIGINT: cancelling goes to the command.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if os.path.exists(os.path.join(directory, CANCEL_FILE)):
            child.terminate()  # cancelled before its pid was there to signal
        rc = child.wait()
    write_json(os.path.join(directory, "exit.json"), {"returncode": rc, "finished": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(_supervise(sys.argv[1]))

