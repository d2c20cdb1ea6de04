"""Runs the stages of a run in this process, recording them in the store and events file."""

from __future__ import annotations

import os
import traceback
from typing import Iterable

from pipelines.config import RunConfig
from pipelines.events import JsonlSink, Reporter, Sink
from pipelines.faults import fail_point
from pipelines.stages import STAGES, record_metrics

from .store import RunRecord, RunStore

EVENTS_FILE = "events.jsonl"


class StageFailed(RuntimeError):
    """A stage raised; ``str()`` is its one-line reason (the traceback is in error.log)."""


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def execute(cfg: RunConfig, store: RunStore, run: RunRecord, stages: Iterable[str], sinks: Iterable[Sink] = ()) -> dict:
    """Run ``stages`` in order; returns ``{stage: metrics}``. Raises StageFailed or KeyboardInterrupt."""
    stages = list(stages)
    events = JsonlSink(os.path.join(run.dir, EVENTS_FILE))
    reporter = Reporter(events, *sinks)
    results = {}
    store.run_started(run.id, stages)
    try:
        for stage in stages:
            rep = reporter.for_stage(stage)
            store.stage_started(run.id, stage)
            rep.started(f"run {run.id}")
            try:
                metrics = STAGES[stage](cfg, run.dir, rep)
            except KeyboardInterrupt:
                store.stage_failed(run.id, stage, "cancelled", "interrupted")
                rep.failed("cancelled")
                raise
            except Exception as err:  # noqa: BLE001 - every failure is recorded, then re-raised
                with open(os.path.join(run.dir, "error.log"), "a", encoding="utf-8") as f:
                    f.write(traceback.format_exc())
                store.stage_failed(run.id, stage, one_line(err))
                for action in store.clear_leftovers(run.id):  # e.g. of a compiler child killed mid-write
                    rep.log(action, level="warning")
                rep.failed(one_line(err))
                raise StageFailed(f"{stage}: {one_line(err)}") from err
            record_metrics(run.dir, stage, metrics)
            store.stage_finished(run.id, stage, metrics)
            rep.finished()
            results[stage] = metrics
        fail_point("run.stages_finished", run.id)
        store.run_finished(run.id)
    finally:
        events.close()
    return results
