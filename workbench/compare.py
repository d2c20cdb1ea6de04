"""The comparison table: one row per (run, split, engine) evaluation, shaped for any UI.

A run holds eval scores per split and engine (``eval/<split>-<engine>.json``) and,
once benchmarked, ``bench.json`` (latency, throughput, artifact size, compile time
per engine and shape). What a run lacks stays ``None`` and is shown as "—";
"int8 kept" is the number of linear layers a tvm-int8 artifact kept in fp32.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from pipelines.files import read_json

# Engine name -> numeric precision it runs at (TVM engines arrive with the compile stage).
PRECISION = {
    "torch": "fp32", "torchscript": "fp32", "ort": "fp32", "ort-int8": "int8", "ort-int8-static": "int8",
    "tvm-fp32": "fp32", "tvm-fp16": "fp16", "tvm-int8": "int8",
}
ENTITY_TYPES = ("PER", "LOC", "ORG")


def precision_of(engine: str) -> str:
    """An engine's precision, on this machine or on an RPC device (``tvm-fp32+rpc-KEY``)."""
    from pipelines.runtime.remote import split_remote

    return PRECISION.get(split_remote(engine)[0], "?")
NO_BENCH_NOTE = "latency, throughput, compile time: no data for a run until its bench stage has run (compile first for TVM engines)"
NOT_BUILT_NOTE = "int8 layers kept: tvm-int8 not built yet (compile --precision int8)"


@dataclass
class CompareRow:
    run_id: str
    run_name: str
    split: str
    engine: str
    precision: str
    f1: float | None = None
    accuracy: float | None = None
    per_type_f1: dict[str, float] = field(default_factory=dict)
    eval_sentences_per_s: float | None = None  # end-to-end eval, batch 64: not a benchmark
    artifact_bytes: int | None = None
    # Filled by the bench / compile stages once they exist.
    bench_shape: str | None = None  # BATCHxSEQ the latency was measured at
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    throughput: float | None = None  # sentences/s at that shape
    corpus_sentences_per_s: float | None = None  # the whole eval split, one instance (bench.json's corpus)
    compile_s: float | None = None
    int8_layers_kept: int | None = None  # linear layers a tvm-int8 artifact kept in fp32
    # Against the fp32 torch row of the same run and split.
    delta_f1: float | None = None
    delta_accuracy: float | None = None
    is_reference: bool = False

    def value(self, key: str) -> Any:
        if key.startswith("f1_"):
            return self.per_type_f1.get(key[3:])
        return getattr(self, key)


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: str  # text | score | delta | ms | rate | bytes | seconds | count


COLUMNS: tuple[Column, ...] = (
    Column("run_name", "run", "text"),
    Column("split", "split", "text"),
    Column("engine", "engine", "text"),
    Column("precision", "prec", "text"),
    Column("f1", "F1", "score"),
    Column("delta_f1", "ΔF1", "delta"),
    *(Column(f"f1_{t}", f"{t} F1", "score") for t in ENTITY_TYPES),
    Column("accuracy", "tok acc", "score"),
    Column("delta_accuracy", "Δacc", "delta"),
    Column("bench_shape", "shape", "text"),
    Column("latency_p50_ms", "p50 ms", "ms"),
    Column("latency_p99_ms", "p99 ms", "ms"),
    Column("throughput", "sent/s", "rate"),
    Column("eval_sentences_per_s", "eval sent/s", "rate"),
    Column("artifact_bytes", "size", "bytes"),
    Column("compile_s", "compile", "seconds"),
    Column("int8_layers_kept", "int8 kept", "count"),
)
# The report's engine table adds the whole-test-set throughput after the shape's.
REPORT_COLUMNS: tuple[Column, ...] = tuple(
    c for col in COLUMNS for c in ((col, Column("corpus_sentences_per_s", "split sent/s", "rate")) if col.key == "throughput" else (col,))
)


def collect_rows(runs: Iterable[tuple[str, str, str]]) -> list[CompareRow]:
    """Rows for every eval result of ``runs`` given as (run id, run name, run dir)."""
    rows: list[CompareRow] = []
    for run_id, name, run_dir in runs:
        run_rows = [r for r in (_row(run_id, name, run_dir, path) for path in _eval_files(run_dir)) if r is not None]
        bench = bench_by_engine(run_dir)
        corpus = corpus_by_engine(run_dir)
        evaluated = {r.engine for r in run_rows}
        for engine in (e for e in bench if e not in evaluated):  # benchmarked, never evaluated
            run_rows.append(CompareRow(run_id, name, "—", engine, precision_of(engine)))
        for row in run_rows:
            _add_bench(row, bench.get(row.engine))
            row.corpus_sentences_per_s = _num(corpus.get(row.engine))
        rows.extend(with_deltas(run_rows))
    return rows


def bench_by_engine(run_dir: str) -> dict[str, dict]:
    """The first (smallest-batch) bench result of each engine in ``bench.json``."""
    try:
        report = read_json(os.path.join(run_dir, "bench.json"), {}) or {}
    except ValueError:
        return {}
    found: dict[str, dict] = {}
    results = report.get("results") if isinstance(report, dict) else None
    for result in sorted(results or [], key=lambda r: (r.get("batch") or 0)):
        if isinstance(result, dict) and result.get("engine"):
            found.setdefault(result["engine"], result)
    return found


def corpus_by_engine(run_dir: str) -> dict[str, float]:
    """Sentences/s of each engine over the whole eval split, one instance (bench.json's ``corpus``)."""
    try:
        report = read_json(os.path.join(run_dir, "bench.json"), {}) or {}
    except ValueError:
        return {}
    rows = report.get("corpus") if isinstance(report, dict) else None
    return {
        r["engine"]: r.get("sentences_per_s")
        for r in rows or []
        if isinstance(r, dict) and r.get("engine") and r.get("instances", 1) == 1
    }


def latency_by_precision(run_dir: str) -> dict[str, float]:
    """The fastest bench p50 (ms) per precision, for the run list: this machine's (an RPC
    device's rows, ``tvm-fp32+rpc-KEY``, have no entry in ``PRECISION``)."""
    best: dict[str, float] = {}
    for engine, result in bench_by_engine(run_dir).items():
        p50 = _num((result.get("latency_ms") or {}).get("p50"))
        precision = PRECISION.get(engine)
        if p50 is not None and precision and p50 < best.get(precision, float("inf")):
            best[precision] = p50
    return best


def _add_bench(row: CompareRow, result: dict | None) -> None:
    if not result:
        return
    latency = result.get("latency_ms") or {}
    row.bench_shape = f"{result.get('batch')}x{result.get('seq')}"
    row.latency_p50_ms = _num(latency.get("p50"))
    row.latency_p99_ms = _num(latency.get("p99"))
    row.throughput = _num((result.get("throughput") or {}).get("sentences_per_s"))
    row.compile_s = _num(result.get("compile_s"))
    if _num(result.get("artifact_mb")) is not None:
        row.artifact_bytes = int(result["artifact_mb"] * 1024 * 1024)


def _eval_files(run_dir: str) -> list[str]:
    eval_dir = os.path.join(run_dir, "eval")
    try:
        names = sorted(os.listdir(eval_dir))
    except OSError:
        return []
    # Scores under another decoding than the run's (test-torch@argmax.json) are left
    # out: the table compares engines under one decoding.
    return [os.path.join(eval_dir, n) for n in names if n.endswith(".json") and not n.startswith(".") and "@" not in n]


def _row(run_id: str, name: str, run_dir: str, path: str) -> CompareRow | None:
    try:
        scores = read_json(path)
    except ValueError:  # a torn or hand-edited file: skip it, never fail the table
        return None
    if not isinstance(scores, dict) or "f1" not in scores:
        return None
    from pipelines.evaluate.scoring import parse_stem  # the file's own name, for scores that lack the fields
    from pipelines.runtime.remote import split_remote

    stem = os.path.basename(path)[: -len(".json")]
    split, engine = parse_stem(stem)
    engine = scores.get("engine") or engine
    split = scores.get("split") or split or stem
    per_type = {t: float(v["f1"]) for t, v in (scores.get("per_type") or {}).items() if isinstance(v, dict) and "f1" in v}
    seconds, sentences = scores.get("seconds"), scores.get("sentences")
    compiled = compiled_artifact(run_dir, split_remote(engine)[0]) if engine.startswith("tvm-") else {}
    return CompareRow(
        run_id=run_id,
        run_name=name,
        split=split,
        engine=engine,
        precision=precision_of(engine),
        f1=_num(scores.get("f1")),
        accuracy=_num(scores.get("accuracy")),
        per_type_f1=per_type,
        eval_sentences_per_s=round(sentences / seconds, 1) if seconds and sentences else None,
        artifact_bytes=compiled.get("bytes") if compiled else artifact_size(run_dir, engine),
        compile_s=_num(compiled.get("compile_s")),  # known once compiled; bench results override both
        int8_layers_kept=compiled.get("int8_kept"),
    )


def compiled_artifact(run_dir: str, engine: str) -> dict:
    """A TVM engine's compiled artifact (longest sequence): its library's ``bytes``,
    ``compile_s`` and, for int8, ``int8_kept`` (linear layers the accuracy budget kept
    in fp32), so they show before any bench; {} if not built."""
    from pipelines.runtime.engines import compiled_artifacts

    for art in compiled_artifacts(run_dir, engine):
        meta = read_json(os.path.join(art, "artifact.json"), {}) or {}
        library = os.path.join(art, meta.get("library") or "model.so")
        if os.path.isfile(library):
            kept = (meta.get("quantization") or {}).get("keep_fp32")
            return {"bytes": os.path.getsize(library), "compile_s": meta.get("compile_s"), "int8_kept": None if kept is None else len(kept)}
    return {}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def artifact_size(run_dir: str, engine: str) -> int | None:
    """Bytes of what the engine loads: the model directory, or the TorchScript file."""
    if engine == "torch":
        return _dir_size(os.path.join(run_dir, "model"))
    if engine == "torchscript":
        path = os.path.join(run_dir, "export", "model.ts")
        return os.path.getsize(path) if os.path.isfile(path) else None
    return None


def _dir_size(path: str) -> int | None:
    if not os.path.isdir(path):
        return None
    return sum(e.stat().st_size for e in os.scandir(path) if e.is_file())


def with_deltas(rows: list[CompareRow]) -> list[CompareRow]:
    """Fill deltas of one run's rows against its fp32 torch row of the same split."""
    refs = {r.split: r for r in rows if r.engine == "torch"}
    for row in rows:
        ref = refs.get(row.split)
        if ref is None:
            continue
        row.is_reference = row is ref
        row.delta_f1 = _delta(row.f1, ref.f1)
        row.delta_accuracy = _delta(row.accuracy, ref.accuracy)
    return rows


def _delta(value: float | None, ref: float | None) -> float | None:
    return None if value is None or ref is None else value - ref


def empty_columns(rows: Sequence[CompareRow], columns: Sequence[Column] = COLUMNS) -> set[str]:
    """Keys of the columns that no row has data for."""
    return {c.key for c in columns if all(r.value(c.key) is None for r in rows)}


def sort_rows(rows: Sequence[CompareRow], key: str, descending: bool = False) -> list[CompareRow]:
    """Sorted by one column; rows without a value always come last."""
    present = [r for r in rows if r.value(key) is not None]
    missing = [r for r in rows if r.value(key) is None]
    return sorted(present, key=lambda r: r.value(key), reverse=descending) + missing


def format_cell(row: CompareRow, column: Column) -> str:
    value = row.value(column.key)
    if column.kind == "delta" and row.is_reference:
        return "ref"
    return format_value(value, column.kind)


def format_value(value: Any, kind: str) -> str:
    if value is None:
        return "—"
    formats: dict[str, Callable[[Any], str]] = {
        "score": lambda v: f"{v:.4f}",
        "delta": lambda v: f"{v:+.4f}",
        "ms": lambda v: f"{v:.2f}",
        "rate": lambda v: f"{v:,.1f}",
        "bytes": human_bytes,
        "seconds": lambda v: f"{v:.1f} s",
        "count": str,
    }
    return formats.get(kind, str)(value)


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def to_markdown(rows: Sequence[CompareRow], columns: Sequence[Column] = COLUMNS) -> str:
    lines = ["| " + " | ".join(c.title for c in columns) + " |"]
    lines.append("|" + "|".join("---" if c.kind == "text" else "---:" for c in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row, c).replace("|", "\\|") for c in columns) + " |")
    notes = [n for key, n in (("latency_p50_ms", NO_BENCH_NOTE), ("int8_layers_kept", NOT_BUILT_NOTE)) if key in empty_columns(rows, columns)]
    if notes:
        lines.append("")
        lines.extend(f"— {n}." for n in notes)
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[CompareRow], columns: Sequence[Column] = COLUMNS) -> str:
    """Raw values (empty where there is no data), one header row of column keys."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["run_id", *(c.key for c in columns)])
    for row in rows:
        values = [row.value(c.key) for c in columns]
        writer.writerow([row.run_id, *("" if v is None else v for v in values)])
    return out.getvalue()
