"""The one progress interface between computing stages and whoever shows them.

A stage calls ``reporter.started(...)``, ``reporter.progress(...)`` and so on; a
reporter turns each call into an :class:`Event` and hands it to its sinks. The CLI
renders events with Rich, the TUI with Textual, and a job subprocess writes them
as JSON lines that another process follows. Stages never know which.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator

KINDS = ("started", "progress", "metric", "log", "artifact", "finished", "failed")


def time_left(deadline: float | None) -> dict:
    """Progress data for a stage whose time budget ends at ``deadline`` (a
    ``time.monotonic()`` value): the UIs' ETA is the sooner of it and the rate's."""
    return {"time_left_s": round(deadline - time.monotonic(), 1)} if deadline is not None else {}


@dataclass
class Event:
    kind: str
    stage: str
    time: float = field(default_factory=time.time)
    # progress
    n: float | None = None
    total: float | None = None
    unit: str | None = None
    # metric
    name: str | None = None
    value: Any = None
    # log / failed
    message: str | None = None
    level: str | None = None
    # artifact
    path: str | None = None
    # anything else a renderer may show (e.g. loss next to a progress bar)
    data: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> "Event":
        raw = json.loads(line)
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


Sink = Callable[[Event], None]


class Reporter:
    """Fans events out to sinks. ``stage`` names the stage the events belong to."""

    def __init__(self, *sinks: Sink, stage: str = "") -> None:
        self.sinks = list(sinks)
        self.stage = stage

    def for_stage(self, stage: str) -> "Reporter":
        return Reporter(*self.sinks, stage=stage)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    def started(self, message: str = "") -> None:
        self.emit(Event("started", self.stage, message=message or None))

    def progress(self, n: float, total: float | None, unit: str, **data: Any) -> None:
        self.emit(Event("progress", self.stage, n=n, total=total, unit=unit, data=data or None))

    def metric(self, name: str, value: Any) -> None:
        self.emit(Event("metric", self.stage, name=name, value=value))

    def log(self, message: str, level: str = "info") -> None:
        self.emit(Event("log", self.stage, message=message, level=level))

    def artifact(self, name: str, path: str | os.PathLike) -> None:
        self.emit(Event("artifact", self.stage, name=name, path=str(path)))

    def finished(self, message: str = "") -> None:
        self.emit(Event("finished", self.stage, message=message or None))

    def failed(self, message: str) -> None:
        self.emit(Event("failed", self.stage, message=message))


def null_reporter() -> Reporter:
    return Reporter()


class JsonlSink:
    """Appends each event as one JSON line, flushed at once so followers see it live."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        self._file.write(event.to_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_events(path: str | os.PathLike) -> list[Event]:
    """All complete events in a JSON-lines file (a torn last line is skipped)."""
    return follow_events(path)[0]


def follow_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[Event], int]:
    """Events appended since byte ``offset``, and the offset to continue from.

    Only whole lines are consumed, so a line still being written is read next time.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    lines = chunk[:end].decode("utf-8", errors="replace").splitlines()
    return list(_parse_lines(lines)), offset + end


def _parse_lines(lines: Iterable[str]) -> Iterator[Event]:
    for line in lines:
        if line.strip():
            try:
                yield Event.from_json(line)
            except (json.JSONDecodeError, TypeError):
                continue
