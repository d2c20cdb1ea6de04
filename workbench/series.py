"""What the plots show, as plain data: series from a stage's events and from a bench
report. UI-free: the TUI's plots and ``ner-workbench report`` draw the same series.

From events (a run's ``events.jsonl``, or a job's events as they arrive):
- the training loss against the step (train, pretrain, distill progress ``loss``);
- the quality a training stage measures as it goes, against the step of the last
  progress before it: train's ``dev_f1``, pretrain's ``mlm_accuracy``, distill's
  ``teacher_agreement``;
- while tuning, the sum of every kernel's best measured time against the trials,
  from the moment each kernel has been measured once (before that a sum would
  only grow as kernels are added).

From a bench report (``bench.json``): each engine's latencies at a shape (their
distribution), and p50 against the sequence length and against the batch size.

From the comparison's rows (``workbench/compare.py``): F1 per entity type and engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from pipelines.events import Event

from .compare import ENTITY_TYPES, CompareRow

QUALITY = {"dev_f1": "dev F1", "mlm_accuracy": "MLM accuracy", "teacher_agreement": "agreement with the teacher"}


@dataclass
class Series:
    name: str
    x_label: str
    y_label: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def add(self, x: float, y: float) -> None:
        self.x.append(x)
        self.y.append(y)


class Curves:
    """Feed it events in order; ``series(stage)`` gives that stage's curves so far."""

    def __init__(self) -> None:
        self.by_stage: dict[str, dict[str, Series]] = {}
        self._step: dict[str, float] = {}
        self._kernel_best: dict[str, dict[str, float]] = {}

    def feed(self, events: Iterable[Event]) -> bool:
        """Returns whether any series grew (a UI redraws only then)."""
        grew = False
        for event in events:
            grew |= self._apply(event)
        return grew

    def series(self, stage: str) -> list[Series]:
        return [s for s in self.by_stage.get(stage, {}).values() if s.x]

    def stages(self) -> list[str]:
        """Stages with at least one point, in the order they first reported."""
        return [stage for stage, found in self.by_stage.items() if any(s.x for s in found.values())]

    def _get(self, stage: str, key: str, x_label: str, y_label: str) -> Series:
        found = self.by_stage.setdefault(stage, {})
        if key not in found:
            found[key] = Series(f"{stage} {y_label}", x_label, y_label)
        return found[key]

    def _apply(self, event: Event) -> bool:
        stage = event.stage or ""
        if event.kind == "progress" and event.n is not None:
            data = event.data or {}
            self._step[stage] = event.n
            if event.unit == "trials":
                return self._tuning(stage, event.n, data)
            if isinstance(data.get("loss"), (int, float)):
                self._get(stage, "loss", event.unit or "step", "loss").add(event.n, float(data["loss"]))
                return True
        elif event.kind == "metric" and event.name in QUALITY and isinstance(event.value, (int, float)):
            step = self._step.get(stage, 0)
            self._get(stage, event.name, "step", QUALITY[event.name]).add(step, float(event.value))
            return True
        return False

    def _tuning(self, stage: str, trials: float, data: dict) -> bool:
        task, best, tasks = data.get("task"), data.get("best_us"), data.get("tasks")
        if task is None or not isinstance(best, (int, float)) or best <= 0:
            return False
        kernels = self._kernel_best.setdefault(stage, {})
        kernels[task] = min(kernels.get(task, float("inf")), float(best))
        if not tasks or len(kernels) < tasks:
            return False
        self._get(stage, "kernels", "trials", "sum of best kernel times (µs)").add(trials, round(sum(kernels.values()), 1))
        return True


def curves_of(events: Iterable[Event]) -> Curves:
    curves = Curves()
    curves.feed(events)
    return curves


def latency_samples(report: dict, batch: int | None = None, seq: int | None = None) -> dict[str, list[float]]:
    """Each engine's measured latencies (ms) at one shape (the first shape of the report if
    none is given). Reports written before samples were kept give nothing."""
    if batch is None or seq is None:
        shape = first_shape(report)
        if shape is None:
            return {}
        batch, seq = shape
    results = report.get("results") or []
    return {r["engine"]: list(r["samples_ms"]) for r in results if r["batch"] == batch and r["seq"] == seq and r.get("samples_ms")}


def first_shape(report: dict) -> tuple[int, int] | None:
    """The (batch, seq) of the report's first result: the shape its distribution is shown at."""
    results = report.get("results") or []
    return (results[0]["batch"], results[0]["seq"]) if results else None


def p50_sweep(report: dict, over: str) -> dict[str, list[tuple[int, float]]]:
    """p50 per engine against ``over`` ("seq" or "batch"), the other dimension at its
    smallest value in the report: how latency grows with length, or with batch."""
    other = "batch" if over == "seq" else "seq"
    results = report.get("results") or []
    if not results:
        return {}
    fixed = min(r[other] for r in results)
    sweep: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r[other] == fixed:
            sweep.setdefault(r["engine"], []).append((r[over], r["latency_ms"]["p50"]))
    return {engine: sorted(points) for engine, points in sweep.items()}


def p50_series(report: dict) -> dict[str, list[Series]]:
    """``p50_sweep`` as line series, one per engine, for each dimension ("seq", "batch")
    where some engine was benched at more than one value (one point is not a curve)."""
    found = {}
    for over, other in (("seq", "batch"), ("batch", "seq")):
        lines = p50_sweep(report, over)
        if any(len(points) > 1 for points in lines.values()):
            fixed = min(r[other] for r in report["results"])
            found[over] = [
                Series(engine, f"{over} at {other} {fixed}", "p50 (ms)", [x for x, _ in points], [y for _, y in points])
                for engine, points in lines.items()
            ]
    return found


def f1_by_type(rows: Sequence[CompareRow]) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Grouped bars of the comparison's scored rows: the groups (the entity types, PER / LOC /
    ORG first, then "all") and each row's F1 per group, named by its engine and precision
    (and its run, or split, when the rows hold more than one)."""
    scored = [r for r in rows if r.f1 is not None]
    many_runs, many_splits = len({r.run_id for r in scored}) > 1, len({r.split for r in scored}) > 1
    bars: dict[str, dict[str, float]] = {}
    for row in scored:
        engine = row.engine if row.precision in row.engine else f"{row.engine} {row.precision}"
        label = " · ".join([*([row.run_name] if many_runs else []), engine, *([row.split] if many_splits else [])])
        bars[label] = {**row.per_type_f1, "all": row.f1}
    known = [t for t in ENTITY_TYPES if any(t in r.per_type_f1 for r in scored)]
    others = sorted({t for r in scored for t in r.per_type_f1} - set(ENTITY_TYPES))
    return [*known, *others, "all"] if scored else [], bars
