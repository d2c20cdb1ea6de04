"""Plots in the TUI: a run's curves and bench, the Compare screen's F1 bars, a job's live
curves. Runs are made by hand (events.jsonl, bench.json, eval JSONs), never trained; what
a chart shows is read back from what it drew (``Chart.drawn``), not from its pixels."""

import asyncio
import json
import os

from textual.widgets import DataTable, Static

from pipelines.config import parse_config
from pipelines.events import Event
from screens.run_detail import RunDetailScreen
from screens.widgets.plots import Chart, CurveCharts, ticks
from workbench.app import WorkbenchApp
from workbench.progress import JobWatch
from workbench.store import RunStore

from tui_helpers import copy_configs, static_text, wait_until

SIZE = (140, 40)
TRAIN_EVENTS = [
    Event("started", "train", time=0.0),
    Event("progress", "train", time=1.0, n=10, total=30, unit="steps", data={"loss": 2.0}),
    Event("progress", "train", time=2.0, n=20, total=30, unit="steps", data={"loss": 1.5}),
    Event("metric", "train", time=2.1, name="dev_f1", value=0.5),
    Event("progress", "train", time=3.0, n=30, total=30, unit="steps", data={"loss": 1.0}),
    Event("metric", "train", time=3.1, name="dev_f1", value=0.7),
    Event("finished", "train", time=3.2),
]


def make_run(runs_dir: str, name: str) -> str:
    """A run recorded as done, with no files yet; returns its id."""
    store = RunStore(runs_dir)
    try:
        run = store.create_run(parse_config({"name": name}))
        store.run_finished(run.id)
        return run.id
    finally:
        store.close()


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def bench_result(engine: str, batch: int, seq: int, p50: float, samples=None) -> dict:
    result = {"engine": engine, "batch": batch, "seq": seq, "latency_ms": {"p50": p50, "p99": p50 * 2}, "throughput": {"sentences_per_s": 1000 / p50}}
    if samples:
        result["samples_ms"] = samples
    return result


def scores(f1: float, per_type: dict, engine: str) -> dict:
    return {"f1": f1, "precision": f1, "recall": f1, "accuracy": 0.97, "engine": engine, "split": "test",
            "per_type": {t: {"f1": v, "precision": v, "recall": v, "support": 10} for t, v in per_type.items()}}


def workspace(tmp_path) -> dict:
    """Runs: "full" (curves, a bench of 2 engines × seq 32, 64 × batch 1, 4 with samples at
    the first shape, evals of torch and ort-int8), "bare" (nothing), "old" (a bench without
    samples, one shape; one eval)."""
    runs_dir = str(tmp_path / "runs")
    full, bare, old = (make_run(runs_dir, name) for name in ("full", "bare", "old"))
    full_dir, old_dir = os.path.join(runs_dir, full), os.path.join(runs_dir, old)
    write(os.path.join(full_dir, "events.jsonl"), "".join(e.to_json() + "\n" for e in TRAIN_EVENTS))
    results = [
        bench_result("torch", 1, 32, 5.0, [4.0, 5.0, 6.0, 40.0]), bench_result("ort", 1, 32, 1.0, [0.9, 1.0, 1.1, 1.2]),
        bench_result("torch", 1, 64, 8.0), bench_result("ort", 1, 64, 2.0),
        bench_result("torch", 4, 32, 12.0), bench_result("ort", 4, 32, 3.0),
    ]
    write(os.path.join(full_dir, "bench.json"), json.dumps({"results": results}))
    write(os.path.join(full_dir, "eval", "test-torch.json"), json.dumps(scores(0.8, {"PER": 0.9, "LOC": 0.85, "ORG": 0.6}, "torch")))
    write(os.path.join(full_dir, "eval", "test-ort-int8.json"), json.dumps(scores(0.78, {"PER": 0.88, "LOC": 0.84, "ORG": 0.55}, "ort-int8")))
    write(os.path.join(old_dir, "bench.json"), json.dumps({"results": [bench_result("torch", 1, 128, 6.0)]}))
    write(os.path.join(old_dir, "eval", "test-torch.json"), json.dumps(scores(0.5, {"PER": 0.4, "LOC": 0.6, "ORG": 0.3}, "torch")))
    return {"runs_dir": runs_dir, "configs": copy_configs(tmp_path / "configs"), "full": full, "bare": bare, "old": old}


def app_for(ws) -> WorkbenchApp:
    return WorkbenchApp(runs_dir=ws["runs_dir"], configs_dir=ws["configs"])


def drawn(chart: Chart):
    d = chart.drawn
    return (d.kind, d.labels, d.x, d.y, d.x_label, d.y_label) if d else None


def legend(chart: Chart) -> str:
    return static_text(chart.query_one(".legend", Static)) if chart.query_one(".legend").display else ""


def note(screen, selector: str) -> str:
    widget = screen.query_one(selector, Static)
    return static_text(widget) if widget.display else ""


def test_run_detail_shows_the_training_curves_and_the_bench(tmp_path):
    ws = workspace(tmp_path)

    async def scenario():
        app = app_for(ws)
        async with app.run_test(size=SIZE) as pilot:
            await app.push_screen(RunDetailScreen(ws["full"]))
            screen = app.screen
            await wait_until(pilot, lambda: screen.query(CurveCharts) and screen.query_one(CurveCharts).charts(), what="curves")
            loss, quality = screen.query_one(CurveCharts).charts()
            assert drawn(loss) == ("lines", ["train loss"], [[10, 20, 30]], [[2.0, 1.5, 1.0]], "steps", "loss")
            assert drawn(quality) == ("lines", ["train dev F1"], [[20, 30]], [[0.5, 0.7]], "step", "dev F1")
            assert legend(loss) == ""  # one line: its name is the title
            latency = screen.query_one("#latency", Chart)
            await wait_until(pilot, lambda: latency.drawn is not None, what="latency")
            assert drawn(latency) == ("boxes", ["torch", "ort"], [], [[4.0, 5.0, 6.0, 40.0], [0.9, 1.0, 1.1, 1.2]], "latency per call (ms)", "")
            assert latency.drawn.title == "latency per call at batch 1 × seq 32" and latency.drawn.log  # 0.9 … 40 ms
            seq, batch = screen.query_one("#p50-seq", Chart), screen.query_one("#p50-batch", Chart)
            assert drawn(seq) == ("lines", ["torch", "ort"], [[32, 64], [32, 64]], [[5.0, 8.0], [1.0, 2.0]], "seq at batch 1", "p50 (ms)")
            assert drawn(batch) == ("lines", ["torch", "ort"], [[1, 4], [1, 4]], [[5.0, 12.0], [1.0, 3.0]], "batch at seq 32", "p50 (ms)")
            assert legend(seq) == "━━ torch   ━━ ort"
            assert note(screen, "#curves-note") == note(screen, "#bench-note") == ""

    asyncio.run(scenario())


def test_run_detail_says_what_is_missing(tmp_path):
    ws = workspace(tmp_path)

    async def scenario():
        app = app_for(ws)
        async with app.run_test(size=SIZE) as pilot:
            await app.push_screen(RunDetailScreen(ws["bare"]))
            screen = app.screen
            await wait_until(pilot, lambda: note(screen, "#bench-note"), what="bench note")
            assert note(screen, "#curves-note").startswith("no curves: events.jsonl has no training or tuning progress")
            assert note(screen, "#bench-note") == f"no bench: run `ner-workbench bench --model {ws['bare']} --runs-dir {ws['runs_dir']}`"
            assert not screen.query(CurveCharts) and not any(c.display for c in screen.query(Chart))
            app.pop_screen()

            await app.push_screen(RunDetailScreen(ws["old"]))
            screen = app.screen
            await wait_until(pilot, lambda: note(screen, "#bench-note"), what="bench note")
            assert note(screen, "#bench-note").splitlines() == [
                f"no per-call latencies in bench.json (benched before they were kept): rerun `ner-workbench bench --model {ws['old']} --runs-dir {ws['runs_dir']}`",
                "no p50 curves: one shape benched (bench.seq and bench.batch list the shapes)",
            ]
            assert not any(c.display for c in screen.query(Chart))

    asyncio.run(scenario())


def test_compare_bars_follow_the_run_of_the_cursor_row(tmp_path):
    ws = workspace(tmp_path)

    async def scenario():
        app = app_for(ws)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f6")
            screen = app.screen
            table, bars = screen.query_one("#table", DataTable), screen.query_one("#bars", Chart)
            await wait_until(pilot, lambda: table.row_count == 4 and bars.drawn is not None, what="table and bars")
            runs = [screen.shown[i].run_id for i in range(table.row_count)]
            expected = {
                ws["full"]: (["ort-int8", "torch fp32"], [[0.88, 0.84, 0.55, 0.78], [0.9, 0.85, 0.6, 0.8]]),  # the table's order
                ws["old"]: (["torch fp32"], [[0.4, 0.6, 0.3, 0.5]]),
            }
            for row, run_id in enumerate(runs):
                table.move_cursor(row=row)
                await wait_until(pilot, lambda run_id=run_id: screen.plotted_run == run_id, what=f"bars of {run_id}")
                labels, values = expected[run_id]
                assert drawn(bars) == ("bars", labels, [["PER", "LOC", "ORG", "all"]] * len(labels), values, "", "F1")
                assert bars.drawn.title.endswith(f"({run_id})")
                assert legend(bars) == "   ".join(f"██ {label}" for label in labels)

    asyncio.run(scenario())


def make_job(runs_dir: str, job_id: str) -> str:
    """A job that looks running (its supervisor is this test's process) with no events yet."""
    job_dir = os.path.join(runs_dir, "jobs", job_id)
    write(os.path.join(job_dir, "job.json"), json.dumps({"argv": ["train", "x.yaml"], "title": "train x.yaml", "created": 0.0, "supervisor_pid": os.getpid()}))
    write(os.path.join(job_dir, "events.jsonl"), "")
    return job_dir


def append_events(job_dir: str, events: list) -> None:
    with open(os.path.join(job_dir, "events.jsonl"), "a", encoding="utf-8") as f:
        f.writelines(e.to_json() + "\n" for e in events)


def test_jobs_screen_curves_grow_as_the_events_arrive(tmp_path):
    ws = workspace(tmp_path)
    job_dir = make_job(ws["runs_dir"], "20260101-000000-000001")

    async def scenario():
        app = app_for(ws)
        app.poll_interval = 0.1
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f4")
            screen = app.screen
            curves = screen.query_one("#curves", CurveCharts)
            await wait_until(pilot, lambda: screen.watch is not None, what="job followed")
            assert not curves.display  # no curves yet: no empty chart either
            append_events(job_dir, TRAIN_EVENTS[:2])
            await wait_until(pilot, lambda: curves.display and curves.charts(), what="first point")
            [loss] = curves.charts()
            assert drawn(loss)[1:4] == (["train loss"], [[10]], [[2.0]])
            append_events(job_dir, TRAIN_EVENTS[2:5])
            await wait_until(pilot, lambda: len(curves.charts()) == 2, what="dev F1")
            loss, quality = curves.charts()
            assert drawn(loss)[2:4] == ([[10, 20, 30]], [[2.0, 1.5, 1.0]]) and drawn(quality)[2:4] == ([[20]], [[0.5]])
            assert "-side-by-side" in curves.classes  # so the log keeps its height

            await pilot.resize_terminal(90, 24)  # too small: the curves hide, a line says so
            await wait_until(pilot, lambda: not curves.display, what="curves hidden")
            assert note(screen, "#curves-note") == "curves: enlarge window"
            await pilot.resize_terminal(*SIZE)
            await wait_until(pilot, lambda: curves.display, what="curves back")
            assert note(screen, "#curves-note") == ""

    asyncio.run(scenario())


class FakeJob:
    """Just what JobWatch reads: state, events, spec."""

    def __init__(self, batches):
        self.batches, self.spec, self.dir = list(batches), {}, "/nonexistent"

    def state(self):
        from workbench.jobs import JobState

        return JobState("running", None)

    def new_events(self):
        return self.batches.pop(0) if self.batches else []


def test_job_watch_hands_out_curves_only_when_they_grew():
    tuning = [Event("progress", "compile", time=4.0, n=n, total=64, unit="trials", data={"task": t, "best_us": b, "tasks": 2})
              for n, t, b in ((8, "dense", 100.0), (16, "softmax", 10.0), (24, "dense", 80.0))]
    eval_events = [Event("started", "eval", time=3.5), Event("progress", "eval", time=3.6, n=1, total=2, unit="batches")]
    watch = JobWatch(FakeJob([TRAIN_EVENTS[:3], [Event("log", "train", time=2.5, message="hi")], eval_events, tuning]))
    first = watch.poll(now=10.0).curves
    assert [(s.name, s.x, s.y) for s in first] == [("train loss", [10, 20], [2.0, 1.5])]
    assert watch.poll(now=10.0).curves is None  # a log line: nothing to redraw
    assert watch.poll(now=10.0).curves is None  # eval draws nothing: train's curves stay
    assert [s.name for s in watch.plotted()] == ["train loss"]
    [kernels] = watch.poll(now=10.0).curves  # the running stage when it has curves
    assert (kernels.x, kernels.y, kernels.y_label) == ([16, 24], [110.0, 90.0], "sum of best kernel times (µs)")
    first[0].x.append(99)  # a copy: the UI's series never change under the watch
    assert watch.curves.series("train")[0].x == [10, 20]


def test_ticks_are_round_numbers_in_the_plotted_scale():
    assert ticks(10, 9024, 5, log=False) == ([2000.0, 4000.0, 6000.0, 8000.0], ["2000", "4000", "6000", "8000"])
    positions, labels = ticks(0.4, 8.2, 4, log=True)
    assert labels == ["0.5", "1", "2", "5"] and positions[1] == 0.0  # log10(1)
    assert ticks(0.033, 1.8, 2, log=True)[1] == ["0.1", "1"]  # fewer per decade when they don't fit
