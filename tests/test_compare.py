import csv
import io
import json

from workbench.compare import (
    COLUMNS, collect_rows, empty_columns, format_cell, latency_by_precision, sort_rows, to_csv, to_markdown,
)


def write_eval(run_dir, split, engine, f1, accuracy=0.9, per_type=None, seconds=2.0, sentences=100):
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    scores = {
        "f1": f1, "precision": f1, "recall": f1, "accuracy": accuracy, "split": split, "engine": engine,
        "per_type": per_type or {"PER": {"f1": f1, "precision": 1, "recall": 1, "support": 3}},
        "seconds": seconds, "sentences": sentences,
    }
    (run_dir / "eval" / f"{split}-{engine}.json").write_text(json.dumps(scores))
    (run_dir / "eval" / f"{split}-{engine}.predictions.jsonl").write_text("")


def test_rows_from_eval_files_with_deltas_against_fp32_torch(tmp_path):
    a = tmp_path / "a"
    write_eval(a, "test", "torch", 0.80, accuracy=0.95)
    write_eval(a, "test", "torchscript", 0.79, accuracy=0.96)
    write_eval(a, "conll-pd_sample", "torch", 0.50)
    (a / "model").mkdir()
    (a / "model" / "model.safetensors").write_bytes(b"x" * 2048)
    rows = collect_rows([("a-id", "a", str(a))])
    by = {(r.split, r.engine): r for r in rows}
    assert set(by) == {("test", "torch"), ("test", "torchscript"), ("conll-pd_sample", "torch")}
    ts = by["test", "torchscript"]
    assert ts.precision == "fp32" and abs(ts.delta_f1 + 0.01) < 1e-9 and abs(ts.delta_accuracy - 0.01) < 1e-9
    assert by["test", "torch"].is_reference and by["test", "torch"].artifact_bytes == 2048
    assert by["test", "torch"].eval_sentences_per_s == 50.0
    assert ts.artifact_bytes is None  # no export/model.ts
    assert by["test", "torch"].per_type_f1 == {"PER": 0.80}


def test_broken_or_foreign_files_are_skipped(tmp_path):
    a = tmp_path / "a"
    write_eval(a, "test", "torch", 0.8)
    (a / "eval" / "dev-torch.json").write_text("{torn")
    (a / "eval" / "notes.json").write_text('["not scores"]')
    rows = collect_rows([("a", "a", str(a)), ("missing", "m", str(tmp_path / "nope"))])
    assert [(r.split, r.engine) for r in rows] == [("test", "torch")]


def test_not_built_columns_are_empty_and_shown_as_dash(tmp_path):
    a = tmp_path / "a"
    write_eval(a, "test", "torch", 0.8)
    rows = collect_rows([("a", "a", str(a))])
    empty = empty_columns(rows)
    assert {"latency_p50_ms", "latency_p99_ms", "throughput", "compile_s", "int8_layers_kept"} <= empty
    assert "f1" not in empty
    p50 = next(c for c in COLUMNS if c.key == "latency_p50_ms")
    assert format_cell(rows[0], p50) == "—"
    delta = next(c for c in COLUMNS if c.key == "delta_f1")
    assert format_cell(rows[0], delta) == "ref"


def test_bench_results_fill_latency_and_add_benchmarked_engines(tmp_path):
    a = tmp_path / "a"
    write_eval(a, "test", "torch", 0.8)
    result = lambda engine, p50, batch=1: {  # noqa: E731
        "engine": engine, "batch": batch, "seq": 128, "latency_ms": {"p50": p50, "p99": p50 * 2},
        "throughput": {"sentences_per_s": 1000 / p50}, "artifact_mb": 2.0, "compile_s": 30.5 if engine.startswith("tvm") else None,
    }
    report = {"results": [result("torch", 8.0, batch=8), result("torch", 4.0), result("tvm-fp16", 1.0), result("ort-int8", 2.0)]}
    (a / "bench.json").write_text(json.dumps(report))
    rows = {r.engine: r for r in collect_rows([("a", "a", str(a))])}
    assert set(rows) == {"torch", "tvm-fp16", "ort-int8"}
    torch = rows["torch"]
    assert (torch.bench_shape, torch.latency_p50_ms, torch.latency_p99_ms, torch.throughput) == ("1x128", 4.0, 8.0, 250.0)
    assert torch.artifact_bytes == 2 * 1024 * 1024 and torch.compile_s is None
    fp16 = rows["tvm-fp16"]
    assert fp16.split == "—" and fp16.precision == "fp16" and fp16.f1 is None and fp16.compile_s == 30.5
    assert latency_by_precision(str(a)) == {"fp32": 4.0, "fp16": 1.0, "int8": 2.0}
    assert "latency_p50_ms" not in empty_columns(list(rows.values()))


def test_sort_puts_missing_values_last(tmp_path):
    for name, f1 in (("a", 0.5), ("b", 0.9), ("c", 0.7)):
        write_eval(tmp_path / name, "test", "torch", f1)
    rows = collect_rows([(n, n, str(tmp_path / n)) for n in "abc"])
    rows[1].per_type_f1 = {}
    assert [r.run_name for r in sort_rows(rows, "f1", descending=True)] == ["b", "c", "a"]
    assert [r.run_name for r in sort_rows(rows, "f1_PER")] == ["a", "c", "b"]


def test_markdown_and_csv_exports(tmp_path):
    write_eval(tmp_path / "a", "test", "torch", 0.8)
    write_eval(tmp_path / "a", "test", "torchscript", 0.8)
    rows = collect_rows([("a-id", "a|b", str(tmp_path / "a"))])
    md = to_markdown(rows)
    lines = md.splitlines()
    assert lines[0].startswith("| run | split | engine | prec | F1 | ΔF1 |")
    assert "a\\|b" in lines[2] and "| ref |" in lines[2] and "+0.0000" in lines[3]
    assert "not built yet" in md
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert parsed[0]["run_id"] == "a-id" and float(parsed[0]["f1"]) == 0.8 and parsed[0]["latency_p50_ms"] == ""


def test_a_compiled_engine_shows_its_size_and_compile_time_before_any_bench(tmp_path):
    a = tmp_path / "a"
    write_eval(a, "test", "torch", 0.80)
    write_eval(a, "test", "tvm-fp32", 0.80)
    write_eval(a, "test", "tvm-fp16", 0.79)
    for shape, size, seconds in (("1x128", 1000, 3.5), ("1x256", 4096, 4.25)):
        art = a / "compiled" / f"tvm-fp32-{shape}"
        art.mkdir(parents=True)
        (art / "model.so").write_bytes(b"x" * size)
        (art / "artifact.json").write_text(json.dumps({"library": "model.so", "compile_s": seconds}))
    by = {r.engine: r for r in collect_rows([("a-id", "a", str(a))])}
    assert (by["tvm-fp32"].artifact_bytes, by["tvm-fp32"].compile_s) == (4096, 4.25)  # the longest sequence
    assert (by["tvm-fp16"].artifact_bytes, by["tvm-fp16"].compile_s) == (None, None)  # evaluated, artifact gone
