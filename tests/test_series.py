"""Plot series from events and bench reports, against hand-made events."""

from pipelines.events import Event
from workbench.series import Curves, curves_of, f1_by_type, first_shape, latency_samples, p50_series, p50_sweep


def progress(stage, n, unit="steps", **data):
    return Event("progress", stage, time=float(n), n=n, total=100, unit=unit, data=data)


def metric(stage, name, value):
    return Event("metric", stage, time=0.0, name=name, value=value)


def test_training_curves_put_each_dev_score_at_the_step_it_was_measured():
    curves = curves_of([
        progress("train", 10, loss=2.0), progress("train", 20, loss=1.5),
        metric("train", "dev_f1", 0.5), metric("train", "parameters", 3_000_000),
        progress("train", 30, loss=1.0), metric("train", "dev_f1", 0.7),
        progress("pretrain", 5, loss=7.0), metric("pretrain", "mlm_accuracy", 0.1),
    ])
    loss, dev = curves.series("train")
    assert (loss.x, loss.y) == ([10, 20, 30], [2.0, 1.5, 1.0])
    assert (dev.x, dev.y, dev.y_label) == ([20, 30], [0.5, 0.7], "dev F1")
    assert [s.y_label for s in curves.series("pretrain")] == ["loss", "MLM accuracy"]
    assert curves.stages() == ["train", "pretrain"]


def test_feeding_reports_whether_a_series_grew():
    curves = Curves()
    assert curves.feed([Event("log", "train", time=0.0, message="hello")]) is False
    assert curves.feed([progress("train", 10, loss=2.0)]) is True


def test_tuning_plots_the_sum_of_best_kernel_times_once_every_kernel_was_measured():
    events = [
        progress("compile", 8, "trials", task="dense", best_us=100.0, tasks=2),  # one of two kernels: no point yet
        progress("compile", 16, "trials", task="softmax", best_us=10.0, tasks=2),
        progress("compile", 24, "trials", task="dense", best_us=80.0, tasks=2),
        progress("compile", 32, "trials", task="dense", best_us=90.0, tasks=2),  # worse than its best: the best stays
    ]
    [kernels] = curves_of(events).series("compile")
    assert (kernels.x, kernels.y) == ([16, 24, 32], [110.0, 90.0, 90.0])


def _result(engine, batch, seq, p50, samples=None):
    r = {"engine": engine, "batch": batch, "seq": seq, "latency_ms": {"p50": p50}}
    if samples is not None:
        r["samples_ms"] = samples
    return r


def test_bench_series_distribution_and_sweeps():
    report = {"results": [
        _result("torch", 1, 128, 5.0, [4.9, 5.0, 5.2]), _result("ort", 1, 128, 4.0, [4.0]),
        _result("torch", 1, 256, 9.0), _result("torch", 8, 128, 30.0), _result("ort", 1, 256, 8.0),
    ]}
    assert latency_samples(report) == {"torch": [4.9, 5.0, 5.2], "ort": [4.0]}
    assert latency_samples(report, 1, 256) == {}  # no samples kept there
    assert p50_sweep(report, "seq") == {"torch": [(128, 5.0), (256, 9.0)], "ort": [(128, 4.0), (256, 8.0)]}
    assert p50_sweep(report, "batch") == {"torch": [(1, 5.0), (8, 30.0)], "ort": [(1, 4.0)]}
    assert p50_sweep({"results": []}, "seq") == {}


def test_p50_series_only_for_dimensions_with_a_curve():
    report = {"results": [
        _result("torch", 1, 128, 5.0), _result("torch", 1, 256, 9.0), _result("ort", 1, 128, 4.0), _result("torch", 8, 128, 30.0),
    ]}
    seq, batch = p50_series(report)["seq"], p50_series(report)["batch"]
    assert [(s.name, s.x, s.y, s.x_label, s.y_label) for s in seq] == [
        ("torch", [128, 256], [5.0, 9.0], "seq at batch 1", "p50 (ms)"), ("ort", [128], [4.0], "seq at batch 1", "p50 (ms)"),
    ]
    assert [(s.name, s.x) for s in batch] == [("torch", [1, 8]), ("ort", [1])]
    assert p50_series({"results": [_result("torch", 1, 128, 5.0)]}) == {}  # one shape: no curve
    assert first_shape(report) == (1, 128) and first_shape({"results": []}) is None


def test_f1_by_type_names_bars_by_engine_and_precision():
    from workbench.compare import CompareRow

    def row(run, engine, precision, f1, split="test", **per_type):
        return CompareRow(run, run, split, engine, precision, f1=f1, per_type_f1=per_type)

    rows = [row("a", "torch", "fp32", 0.8, LOC=0.85, PER=0.9, ORG=0.6), row("a", "tvm-int8", "int8", 0.7, PER=0.8, LOC=0.7, ORG=0.5, MISC=0.1),
            CompareRow("a", "a", "—", "ort", "fp32")]  # benchmarked, never scored: no bar
    groups, bars = f1_by_type(rows)
    assert groups == ["PER", "LOC", "ORG", "MISC", "all"]
    assert bars == {"torch fp32": {"PER": 0.9, "LOC": 0.85, "ORG": 0.6, "all": 0.8}, "tvm-int8": {"PER": 0.8, "LOC": 0.7, "ORG": 0.5, "MISC": 0.1, "all": 0.7}}
    _, bars = f1_by_type([*rows, row("b", "torch", "fp32", 0.5, "dev")])
    assert list(bars) == ["a · torch fp32 · test", "a · tvm-int8 · test", "b · torch fp32 · dev"]
    assert f1_by_type([]) == ([], {})
