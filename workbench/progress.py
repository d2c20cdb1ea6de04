"""Pipeline events folded into what a progress view shows: the current stage, its
bar, ETA and extras, and log lines. UI-free: the TUI's job screen renders it, the
same events the CLI's Rich renderer prints.

ETAs use the events' own timestamps, so a job replayed after an app restart
shows the same numbers it showed live.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from pipelines.events import Event
from pipelines.files import read_json

from .series import Curves, Series

# Progress extras shown next to the bar, in this order (as the CLI does).
# Progress data worth showing beside a bar: training, tagging, then tuning (kernel and its best time).
EXTRAS = ("epoch", "loss", "lr", "tokens_per_s", "sentences_per_s", "task", "best_us")


@dataclass
class StageProgress:
    stage: str
    n: float = 0
    total: float | None = None
    unit: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    first_n: float | None = None
    first_time: float | None = None
    last_time: float | None = None
    status: str = "running"  # running | done | failed

    @property
    def fraction(self) -> float | None:
        if self.status == "done":
            return 1.0
        if not self.total:
            return None
        return max(0.0, min(1.0, self.n / self.total))

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate seen so far in this stage, or less when the stage
        says its time budget ends first (``time_left_s``)."""
        if self.status != "running":
            return None
        budget = self.data.get("time_left_s")
        budget = max(0.0, budget) if isinstance(budget, (int, float)) else None
        if not self.total or self.first_time is None or self.last_time is None:
            return budget
        done = self.n - (self.first_n or 0)
        elapsed = self.last_time - self.first_time
        if done <= 0 or elapsed <= 0:
            return budget
        by_rate = max(0.0, (self.total - self.n) * elapsed / done)
        return by_rate if budget is None else min(by_rate, budget)

    def extras(self) -> str:
        return "  ".join(f"{k} {format_extra(self.data[k])}" for k in EXTRAS if k in self.data)


def format_extra(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def describe(event: Event) -> str | None:
    """The log line for an event (None for progress, which the bar shows)."""
    stage = event.stage or "-"
    if event.kind == "started":
        return f"▶ {stage} {event.message or ''}".rstrip()
    if event.kind == "log":
        level = f"[{event.level}] " if event.level and event.level != "info" else ""
        return f"{stage} {level}{event.message or ''}"
    if event.kind == "metric":
        value = f"{event.value:.4f}" if isinstance(event.value, float) else str(event.value)
        return f"{stage} {event.name} = {value}"
    if event.kind == "artifact":
        return f"{stage} artifact {event.name or ''} → {event.path}"
    if event.kind == "finished":
        return f"✔ {stage} {event.message or ''}".rstrip()
    if event.kind == "failed":
        return f"✘ {stage}: {event.message or ''}"
    return None


class ProgressTracker:
    """Feed it events in order; read ``current``, ``stages`` and the returned log lines."""

    def __init__(self) -> None:
        self.stages: dict[str, StageProgress] = {}
        self.current: StageProgress | None = None
        self.first_time: float | None = None
        self.last_time: float | None = None

    def feed(self, events: Iterable[Event]) -> list[str]:
        lines = []
        for event in events:
            self._apply(event)
            line = describe(event)
            if line is not None:
                lines.append(line)
        return lines

    def _apply(self, event: Event) -> None:
        if self.first_time is None:
            self.first_time = event.time
        self.last_time = event.time
        stage = self.stages.get(event.stage)
        if stage is None:
            stage = self.stages[event.stage] = StageProgress(event.stage)
        if event.kind in ("started", "progress"):
            self.current = stage
        if event.kind == "progress":
            if stage.first_time is None:
                stage.first_time, stage.first_n = event.time, event.n or 0
            stage.last_time = event.time
            stage.n = event.n or 0
            stage.total = event.total
            stage.unit = event.unit or ""
            stage.data = dict(event.data or {})
        elif event.kind == "finished":
            stage.status = "done"
        elif event.kind == "failed":
            stage.status = "failed"


@dataclass
class JobUpdate:
    lines: list[str]
    status: str
    message: str
    elapsed_s: float | None
    log_tail: str = ""  # output.log's last lines, once, when the job has failed or crashed
    # When the job's curves grew: a copy of the series to plot (the watch keeps feeding
    # its own in the worker thread while the UI draws these).
    curves: list[Series] | None = None


class JobWatch:
    """Follows one job's files: call ``poll()`` from a worker thread, render the update."""

    def __init__(self, job) -> None:
        self.job = job
        self.tracker = ProgressTracker()
        self.curves = Curves()  # the same events as plot series (loss, dev F1, tuning)
        self.ended = False

    def poll(self, now: float | None = None) -> JobUpdate:
        state = self.job.state()  # before the events: a job that just ended has written them all
        events = self.job.new_events()
        lines = self.tracker.feed(events)
        grew = self.curves.feed(events)
        created = self.job.spec.get("created")
        finished = (read_json(os.path.join(self.job.dir, "exit.json")) or {}).get("finished")
        end = finished if finished is not None else (now if now is not None else time.time())
        elapsed = end - created if created is not None else None
        tail = ""
        if state.status != "running" and not self.ended:
            self.ended = True
            if state.status in ("failed", "crashed"):
                tail = self.job.log_tail(20)
        return JobUpdate(lines, state.status, state.message, elapsed, tail, self.plotted() if grew else None)

    def plotted(self) -> list[Series]:
        """A copy of the series of one stage: the running stage if it has curves, else the
        last one that had (a run's eval after its train still shows the training)."""
        stages = self.curves.stages()
        current = self.tracker.current.stage if self.tracker.current is not None else None
        stage = current if current in stages else (stages[-1] if stages else "")
        return [replace(s, x=list(s.x), y=list(s.y)) for s in self.curves.series(stage)]
