"""TVM compile, the shared engine interface, and the bench stage, on the toy model."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipelines.config import parse_config
from pipelines.runtime.engines import EngineError, compiled_artifacts, open_engine
from pipelines.events import Reporter
from pipelines.isolate import ChildFailed, run_isolated
from pipelines.stages import stage_bench, stage_compile
from pipelines.runtime.tagger import Tagger

from conftest import evaluate_run


@pytest.fixture(scope="module")
def compiled(toy_run):
    run, *_ = toy_run
    cfg = parse_config({"export": {"shape": [1, 16]}, "compile": {"precisions": ["fp32", "fp16"]}})
    events = []
    results = stage_compile(cfg, run.dir, Reporter(events.append, stage="compile"))
    return run, results, events


def _ids(batch=3, seq=16):
    rng = np.random.default_rng(1)
    ids = rng.integers(672, 7992, size=(batch, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 10:] = 0
    return ids, mask


def test_fp32_and_fp16_artifacts_match_eager(compiled):
    run, results, events = compiled
    assert set(results) == {"tvm-fp32-1x16", "tvm-fp16-1x16"}
    ids, mask = _ids()
    ref = open_engine("torch", run.dir).logits(ids, mask)
    real = mask.astype(bool)
    fp32 = open_engine("tvm-fp32", run.dir).logits(ids, mask)
    assert np.abs(fp32 - ref)[real].max() < 1e-4
    assert (fp32.argmax(-1) == ref.argmax(-1))[real].all()
    fp16 = open_engine("tvm-fp16", run.dir).logits(ids, mask)
    assert np.abs(fp16 - ref)[real].max() < 5e-2
    assert any(e.kind == "progress" and e.n == e.total for e in events)
    # Every kernel of BERT takes its default schedule without an unexpected fallback.
    assert not [e.message for e in events if e.kind == "log" and (e.message or "").startswith("schedules:")]


def test_artifact_is_self_describing(compiled):
    run, results, _ = compiled
    [art] = compiled_artifacts(run.dir, "tvm-fp32")
    meta = json.load(open(os.path.join(art, "artifact.json")))
    assert meta["precision"] == "fp32" and meta["labels"][0] == "O"
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask"]
    assert meta["inputs"][0]["shape"] == [1, 16] and meta["inputs"][0]["dtype"] == "int64"
    assert meta["output"]["shape"] == [1, 16, len(meta["labels"])]
    assert meta["compile_s"] > 0 and os.path.isfile(os.path.join(art, "vocab.txt"))


RELOAD = """
import json, sys
sys.modules["torch"] = None  # as if torch were not installed: any import of it fails
import numpy as np
from pipelines.runtime.engines import TVMEngine
engine = TVMEngine(sys.argv[1])
ids = np.array([json.loads(sys.argv[2])], dtype=np.int64)
out = engine.logits(ids, np.ones_like(ids))
print(json.dumps({"argmax": out.argmax(-1).tolist()}))
"""


def test_artifact_reloads_in_a_fresh_process_without_torch(compiled):
    run, _, _ = compiled
    [art] = compiled_artifacts(run.dir, "tvm-fp32")
    ids = [101, 2476, 676, 1762, 1266, 776, 2339, 868, 102]  # [CLS]张三在北京工作[SEP]
    done = subprocess.run([sys.executable, "-c", RELOAD, art, json.dumps(ids)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    expected = open_engine("torch", run.dir).logits(np.array([ids]), np.ones((1, len(ids)), dtype=np.int64)).argmax(-1)
    assert result["argmax"] == expected.tolist()


def test_eval_through_tvm_reports_agreement_with_torch(compiled, toy_run):
    """On the held-out test split: the fp32 artifact tags as eager PyTorch does, so it scores the same."""
    torch_f1 = toy_run[1]["eval"]["f1"]
    scores = evaluate_run(compiled[0].dir, "tvm-fp32")
    assert scores["agreement_with_torch"] == 1.0 and scores["f1"] == torch_f1


def test_fp16_f1_on_the_held_out_test_split_is_within_a_tolerance_of_fp32(compiled, toy_run):
    """Measured (three seeds): fp16 tags all 70 test characters as eager does, so the
    same F1. Allowed: one character and one entity of the 18 (0.056 F1) astray. An
    fp16 build gone wrong scores as an untrained model does, ~0."""
    torch_f1 = toy_run[1]["eval"]["f1"]
    scores = evaluate_run(compiled[0].dir, "tvm-fp16")
    assert abs(scores["f1"] - torch_f1) <= 0.06 and scores["agreement_with_torch"] >= 0.98


def test_tagging_through_the_compiled_model(compiled):
    ents = Tagger.open(compiled[0].dir, "tvm-fp32").tag("张三在北京工作")
    assert [(e.type, e.text) for e in ents] == [("PER", "张三"), ("LOC", "北京")]


def test_missing_artifact_says_which_stage_to_run(tmp_path, toy_run):
    with pytest.raises(EngineError, match="run `ner-workbench compile --model RUN --precision fp32` first"):
        open_engine("tvm-fp32", _empty_run(tmp_path, toy_run))


def _empty_run(tmp_path, toy_run):
    """A run directory with a model but nothing compiled."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(os.path.join(toy_run[0].dir, "model"), run_dir / "model")
    return str(run_dir)


def test_a_crashing_child_fails_the_stage_with_its_log_tail(tmp_path, monkeypatch):
    (tmp_path / "crashy.py").write_text(
        "import os, signal, sys\nprint('building kernels', file=sys.stderr, flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with pytest.raises(ChildFailed, match=r"crashy failed \(killed by SIGSEGV\): building kernels"):
        run_isolated("crashy", {}, Reporter(), str(tmp_path / "log.txt"))


def test_a_child_whose_result_is_torn_fails_and_its_stray_output_is_shown(tmp_path, monkeypatch):
    """Exit 0 with the final event cut mid-line (a crash while printing it) used to read
    as success with an empty result; stdout that is not an event used to vanish."""
    (tmp_path / "torn.py").write_text(
        "print('loading weights')\n"
        "print('{\"kind\": \"finished\", \"stage\": \"compile\", \"data\": {\"compile_s\": 1', flush=True)\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    events = []
    with pytest.raises(ChildFailed, match=r"torn ended without its result \(no final event\)"):
        run_isolated("torn", {}, Reporter(events.append), str(tmp_path / "log.txt"))
    assert [e.message for e in events if e.kind == "log"][0] == "torn: loading weights"


def test_bench_reports_every_field(compiled):
    run, _, _ = compiled
    cfg = parse_config({"bench": {"engines": ["torch", "ort", "tvm-fp32", "tvm-int8x"], "batch": [1], "seq": [16], "iterations": 3, "warmup": 1,
                                  "corpus_sentences": 20, "corpus_passes": 1}})  # the corpus pass: tests/test_bench_corpus.py
    stage_bench(cfg, run.dir, Reporter())
    report = json.load(open(os.path.join(run.dir, "bench.json")))
    assert {r["engine"] for r in report["results"]} == {"torch", "ort", "tvm-fp32"}
    assert [s["engine"] for s in report["skipped"]] == ["tvm-int8x"]
    for r in report["results"]:
        assert set(r) >= {"engine", "batch", "seq", "latency_ms", "throughput", "peak_memory_mb", "artifact_mb", "compile_s"}
        assert set(r["latency_ms"]) == {"mean", "p50", "p90", "p95", "p99"}
        assert r["latency_ms"]["p50"] > 0 and r["throughput"]["tokens_per_s"] > 0
        assert r["iterations"] == 3
        assert_timings_are_their_samples(r)
        assert r["artifact_mb"] > 0
    tvm = next(r for r in report["results"] if r["engine"] == "tvm-fp32")
    assert tvm["compile_s"] > 0
    assert report["machine"]["cores"] >= 1


def assert_timings_are_their_samples(r: dict) -> None:
    """A bench result's numbers are those of its own recorded calls: every call is kept
    (the distribution plots), the percentiles and mean are theirs (each rounded to
    0.001 ms, so within 0.001), and throughput is the batch over the median call."""
    samples, latency = np.asarray(r["samples_ms"]), r["latency_ms"]
    assert len(samples) == r["iterations"] and (samples > 0).all()
    rounding = 0.001 + 1e-9  # samples and statistics are each rounded to 0.001 ms
    for q in (50, 90, 95, 99):
        assert abs(latency[f"p{q}"] - np.percentile(samples, q)) <= rounding, (q, latency, samples)
    assert abs(latency["mean"] - samples.mean()) <= rounding
    assert samples.min() <= latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"] <= samples.max()
    # Throughput is computed from the unrounded median, known to within 0.0005 ms.
    p50_range = (latency["p50"] + 0.0005 + 1e-9, latency["p50"] - 0.0005 - 1e-9)
    for key, items, ndigits in (("sentences_per_s", r["batch"], 2), ("tokens_per_s", r["batch"] * r["seq"], 1)):
        low, high = (round(items * 1000 / p, ndigits) for p in p50_range)
        assert low <= r["throughput"][key] <= high, (key, r["throughput"], latency)


def test_bench_numbers_are_those_of_the_timed_calls(compiled):
    from pipelines.evaluate.bench import benchmark

    run, _, _ = compiled
    report = benchmark(run.dir, ["torch", "ort", "tvm-fp32"], [1, 2], [16], warmup=1, iterations=10)
    timed = {(r["engine"], r["batch"]) for r in report["results"]}
    # The artifact was built for 1x16: at batch 2 it is skipped, not timed padded to a wrong shape.
    assert timed == {("torch", 1), ("ort", 1), ("tvm-fp32", 1), ("torch", 2), ("ort", 2)}
    assert [(s["engine"], s["batch"]) for s in report["skipped"]] == [("tvm-fp32", 2)]
    for r in report["results"]:
        assert r["iterations"] == 10  # 5 rounds of 2 calls, well inside max_seconds
        assert_timings_are_their_samples(r)


def test_tuning_reports_live_progress_stops_at_its_time_budget_and_is_reused(toy_run, tmp_path):
    run, *_ = toy_run
    run_dir = tmp_path / "run"
    shutil.copytree(os.path.join(run.dir, "model"), run_dir / "model")  # the shared toy run keeps its artifacts
    database = str(tmp_path / "tuning-db")

    def compile_with(tuning):
        cfg = parse_config({"export": {"shape": [1, 16]}, "compile": {"tuning": {**tuning, "database": database}}})
        events = []
        stage_compile(cfg, str(run_dir), Reporter(events.append, stage="compile"))
        [art] = compiled_artifacts(str(run_dir), "tvm-fp32")
        return events, json.load(open(os.path.join(art, "artifact.json")))["tuning"]

    # A budget of 40 trials but only a moment: tuning stops after its first round.
    events, tuning = compile_with({"trials": 40, "max_minutes": 1e-4})
    trials = [e for e in events if e.kind == "progress" and e.unit == "trials"]
    assert trials and trials[-1].total == 40 and 0 < trials[-1].n < 40
    assert {"task", "tasks", "best_us", "time_left_s"} <= set(trials[-1].data)
    # Each kernel's default schedule is measured and stored too, so records > trials;
    # the GEMMs whose default packs their weights are left out of tuning altogether.
    assert tuning["trials"] == 40 and tuning["records"] > trials[-1].n
    logs = [e.message for e in events if e.kind == "log"]
    assert not [m for m in logs if "not measured" in m]
    assert any(m.endswith("keep their default schedule (weights packed into panels), not tuned") for m in logs)
    # The tuned build is kept only if it beats the default one end to end.
    assert set(tuning["p50_ms"]) == {"tuned", "default"}
    assert tuning["p50_ms"][tuning["kept"]] == min(tuning["p50_ms"].values())
    assert any(m.startswith("end to end: ") and m.endswith(f"keeping the {tuning['kept']} build") for m in logs)
    ids, mask = _ids()
    ref = open_engine("torch", str(run_dir)).logits(ids, mask)
    tuned = open_engine("tvm-fp32", str(run_dir)).logits(ids, mask)
    assert np.abs(tuned - ref)[mask.astype(bool)].max() < 1e-4

    events, reused = compile_with({"trials": 0})
    assert not any(e.kind == "progress" and e.unit == "trials" for e in events)
    assert reused["records"] == tuning["records"]  # nothing new measured, everything reused


def test_only_kernels_that_just_move_data_are_left_out_of_tuning():
    from pipelines.compile.tuning import LAYOUT_ONLY_KERNEL

    layout = ["take1", "reshape21", "fused_cast_reshape1", "fused_reshape3_transpose1_broadcast_to3_reshape41"]
    compute = ["fused_matmul_add2_reshape1_add1", "fused_softmax_broadcast_to5_reshape71", "layer_norm1", "fused_bitwise_and1_broadcast_to2_where1"]
    assert [n for n in layout + compute if LAYOUT_ONLY_KERNEL.match(n)] == layout


def test_lookups_fused_with_their_sum_are_not_tuned():
    """MetaSchedule measures on random ids, which TVM's lookups read outside the table."""
    from pipelines.compile.tuning import LOOKUP_KERNEL

    lookups = ["fused_cast_reshape_take_reshape1_add_add1", "fused_expand_dims1_broadcast_to_gather_reshape21", "take31"]
    others = ["fused_matmul_add2_reshape1_add1", "fused_reshape4_add71", "fused_takeover_add1"]
    assert [n for n in lookups + others if LOOKUP_KERNEL.search(n)] == lookups


def test_only_the_budgets_own_stop_is_taken_for_the_end_of_tuning():
    """Past the budget, an error that is not the budget's own stop is a failure, not
    'tuning stopped at its time budget' (it was swallowed whatever it was)."""
    from pipelines.compile.tuning import BUDGET_STOP, TimeBudgetReached, stopped_by_budget

    wrapped = RuntimeError(f"Traceback (most recent call last): ... TimeBudgetReached: {BUDGET_STOP} after 64 trials")
    assert stopped_by_budget(TimeBudgetReached(BUDGET_STOP), out_of_time=True)
    assert stopped_by_budget(wrapped, out_of_time=True)  # as the FFI re-raises it
    assert not stopped_by_budget(RuntimeError("InternalError: Check failed: (n_loops > 0)"), out_of_time=True)
    assert not stopped_by_budget(wrapped, out_of_time=False)
