"""The bench's whole-test-set throughput: the eval split through eval's batching, engines
interleaved pass by pass, and N instances at once (on a copy of the toy run)."""

import io
import json
import os
import shutil

import numpy as np
import pytest

from conftest import TOY_TEST


@pytest.fixture
def run_copy(toy_run, tmp_path):
    """The toy run's directory, copied: the bench writes bench.json (and nothing else) into it.
    Without the TVM artifacts other test modules may have compiled into the toy run."""
    run = toy_run[0]
    path = str(tmp_path / "run")
    shutil.copytree(run.dir, path, ignore=shutil.ignore_patterns("compiled"))
    return path


def toy_config(run_dir):
    from pipelines.config import load_config

    return load_config(os.path.join(run_dir, "config.yaml"))


def test_the_bench_stage_measures_the_whole_split_through_each_engine(run_copy):
    """torch (any shape) and torchscript (traced at 1x16: every row padded to it)."""
    from pipelines.events import Reporter
    from pipelines.stages import stage_bench

    cfg = toy_config(run_copy)
    cfg.bench = cfg.bench.model_copy(
        update={"engines": ["torch", "torchscript"], "batch": [1], "seq": [16], "warmup": 1, "iterations": 2, "corpus_passes": 2, "threads": 2}
    )
    metrics = stage_bench(cfg, run_copy, Reporter())
    with open(os.path.join(run_copy, "bench.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert len(report["results"]) == metrics["results"] == 2  # the latency rounds are still there
    assert report["corpus_split"] == "test" and report["corpus_skipped"] == []
    rows = {r["engine"]: r for r in report["corpus"]}
    assert sorted(rows) == ["torch", "torchscript"] and metrics["corpus"] == 2

    texts = [text for text, _ in TOY_TEST]
    chars = sum(len(t) for t in texts)
    for row in rows.values():
        assert (row["instances"], row["threads"], row["passes"], row["batch_size"]) == (1, 2, 2, 64)
        assert row["sentences"] == len(texts) == 8
        assert row["characters"] == chars
        assert row["seconds"] == pytest.approx(float(np.median(row["pass_seconds"])), abs=2e-6)
        assert row["sentences_per_s"] == pytest.approx(8 / row["seconds"], rel=1e-3)
        assert row["chars_per_s"] == pytest.approx(chars / row["seconds"], rel=1e-3)
    # Padding: one batch of 8 windows ([CLS] chars [SEP]) padded to the longest (torch),
    # or each window padded to the traced 1x16 (torchscript).
    real = sum(len(t) + 2 for t in texts)
    assert rows["torch"]["padding_efficiency"] == pytest.approx(real / (8 * (max(map(len, texts)) + 2)), abs=1e-4)
    assert rows["torchscript"]["padding_efficiency"] == pytest.approx(real / (8 * 16), abs=1e-4)

    from rich.console import Console

    from workbench.cli import _print_bench

    out = io.StringIO()
    _print_bench(report, Console(file=out, width=200))
    text = out.getvalue()
    assert "whole-test-set throughput: test, 8 sentences" in text
    assert f"{rows['torch']['sentences_per_s']:,.1f}" in text


def test_two_instances_each_run_the_whole_split_at_once_on_half_the_threads(run_copy):
    from pipelines.evaluate.bench import corpus_throughput

    texts = [list(text) for text, _ in TOY_TEST]
    chars = sum(len(t) for t in texts)
    rows, skipped = corpus_throughput(run_copy, ["torchscript"], texts, passes=2, instances=2, threads=2)
    assert skipped == []
    one, two = sorted(rows, key=lambda r: r["instances"])
    assert (one["instances"], one["threads"], two["instances"], two["threads"]) == (1, 2, 2, 1)
    assert two["sentences"] == 8 and two["characters"] == chars  # each instance runs the whole split
    # Aggregate: 2 x the split over the wall time from the first start to the last end (median pass).
    assert two["seconds"] == pytest.approx(float(np.median(two["pass_seconds"])), abs=2e-6)
    assert two["sentences_per_s"] == pytest.approx(2 * 8 / two["seconds"], rel=1e-3)
    assert two["chars_per_s"] == pytest.approx(2 * chars / two["seconds"], rel=1e-3)
    assert len(two["instance_seconds"]) == 2
    assert all(0 < s <= two["seconds"] + 1e-6 for s in two["instance_seconds"])  # the wall spans each instance


def test_an_instance_that_cannot_open_its_engine_is_skipped_with_its_reason(run_copy):
    from pipelines.evaluate import bench

    texts = [list(text) for text, _ in TOY_TEST]
    rows, skipped = bench.corpus_throughput(run_copy, ["tvm-fp32"], texts, passes=1, instances=2, threads=2)
    assert rows == [] and [(s["engine"], s["instances"]) for s in skipped] == [("tvm-fp32", 1)]
    assert "ner-workbench compile" in skipped[0]["reason"]


def test_the_corpus_cap_takes_the_first_sentences(run_copy):
    from pipelines.evaluate.bench import corpus_throughput

    texts = [list(text) for text, _ in TOY_TEST]
    rows, skipped = corpus_throughput(run_copy, ["torch", "tvm-fp32"], texts[:5], batch_size=2, passes=1)
    assert [s["engine"] for s in skipped] == ["tvm-fp32"] and "compile" in skipped[0]["reason"]
    [row] = rows
    assert (row["engine"], row["instances"], row["sentences"]) == ("torch", 1, 5)
    assert row["characters"] == sum(len(t) for t in texts[:5])
    assert row["sentences_per_s"] == pytest.approx(5 / row["seconds"], rel=1e-3)


class RecordingEngine:
    fixed_shape = None

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def logits(self, ids, mask):
        self.calls.append(self.name)
        return np.zeros((*ids.shape, 7), dtype=np.float32)


def test_the_passes_alternate_engines_in_rotated_order(run_copy, monkeypatch):
    import pipelines.evaluate.bench as bench

    calls = []
    monkeypatch.setattr(bench, "open_engine", lambda name, run_dir, threads=None: RecordingEngine(name, calls))
    texts = [list(text) for text, _ in TOY_TEST]
    rows, _ = bench.corpus_throughput(run_copy, ["a", "b", "c"], texts, batch_size=64, passes=3)
    # One call per pass (8 sentences, batch 64): the warm-ups, then a round each, its order rotated.
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert [(r["engine"], r["passes"], r["padding_efficiency"] is not None) for r in rows] == [("a", 3, True), ("b", 3, True), ("c", 3, True)]


def test_the_report_and_compare_rows_take_the_one_instance_split_throughput(tmp_path):
    from workbench.compare import REPORT_COLUMNS, collect_rows, to_markdown

    run = tmp_path / "a"
    run.mkdir()
    result = {"engine": "ort", "batch": 1, "seq": 32, "latency_ms": {"p50": 1.0, "p99": 2.0}, "throughput": {"sentences_per_s": 1000.0}}
    corpus = [{"engine": "ort", "instances": 1, "sentences_per_s": 812.5}, {"engine": "ort", "instances": 2, "sentences_per_s": 1400.0}]
    (run / "bench.json").write_text(json.dumps({"results": [result], "corpus": corpus}))
    [row] = collect_rows([("a", "a", str(run))])
    assert row.corpus_sentences_per_s == 812.5 and row.throughput == 1000.0
    table = to_markdown([row], REPORT_COLUMNS)
    assert "split sent/s" in table.splitlines()[0] and "812.5" in table


def test_the_cli_sets_instances_and_the_cap_and_prints_the_second_table(run_copy, monkeypatch, capsys):
    """`bench --instances 2 --corpus-sentences 3` reaches the bench config; the stage
    itself is faked here (the stage test above runs it)."""
    from types import SimpleNamespace

    import workbench.cli as cli

    seen = {}
    corpus = [
        {"engine": "ort", "instances": n, "threads": 2 // n, "batch_size": 64, "passes": 3, "sentences": 3, "characters": 30,
         "seconds": s, "sentences_per_s": round(n * 3 / s, 2), "chars_per_s": round(n * 30 / s, 1), "padding_efficiency": 0.5}
        for n, s in ((1, 0.01), (2, 0.015))
    ]

    def execute(args, run, cfg, stages):
        seen.update(stages=stages, bench=cfg.bench)
        with open(os.path.join(run.dir, "bench.json"), "w", encoding="utf-8") as f:
            json.dump({"results": [], "machine": {"cpu": "Test CPU", "cores": 2}, "corpus_split": "test", "corpus": corpus}, f)

    monkeypatch.setattr(cli, "_run_of", lambda args, verb: (SimpleNamespace(dir=run_copy), toy_config(run_copy)))
    monkeypatch.setattr(cli, "_execute", execute)
    assert cli.main(["bench", "--model", "toy", "--engines", "ort", "--instances", "2", "--corpus-sentences", "3"]) == 0
    assert seen["stages"] == ["bench"]
    assert (seen["bench"].instances, seen["bench"].corpus, seen["bench"].corpus_sentences) == (2, True, 3)
    out = capsys.readouterr().out
    assert "whole-test-set throughput: test, 3 sentences" in out
    assert "1.33x" in out  # 400 sentences/s from two instances against 300 from one
    assert cli.main(["bench", "--model", "toy", "--corpus-sentences", "0"]) == 0
    assert seen["bench"].corpus is False
