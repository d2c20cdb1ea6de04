"""The error browser, driven with the pilot on a tiny finished run with hand-made predictions."""

import asyncio
import io
import os

from rich.console import Console
from textual.widgets import DataTable, Select

from conftest import finished_run
from screens.errors import ErrorBrowserScreen
from test_errors import SENTENCES, second_engine, write_predictions
from tui_helpers import copy_configs, static_text, wait_until
from workbench.app import WorkbenchApp
from workbench.store import RunStore


def tiny_run(tmp_path, files: dict) -> tuple[str, object]:
    """A run recorded as done, with ``files`` (name -> sentences) as its eval/ predictions."""
    runs_dir = str(tmp_path / "runs")
    run = finished_run(RunStore(runs_dir), "tiny")
    os.makedirs(os.path.join(run.dir, "eval"))
    for name, sentences in files.items():
        write_predictions(os.path.join(run.dir, "eval", f"{name}.predictions.jsonl"), sentences)
    return runs_dir, run


def rows(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def shown(widget) -> str:
    """What a Static holding a Rich renderable (the detail grid) shows, as plain text."""
    console = Console(width=120, file=io.StringIO(), record=True)
    console.print(widget.content)
    return console.export_text()


async def open_browser(app, pilot, run_id: str) -> ErrorBrowserScreen:
    """Runs → the run (enter) → its error browser (x), as a person would."""
    runs = app.screen.query_one("#runs", DataTable)
    await wait_until(pilot, lambda: runs.row_count == 1, what="runs")
    runs.focus()
    await pilot.press("enter")
    await wait_until(pilot, lambda: app.screen.query("#stages"), what="run detail")
    await pilot.press("x")
    await wait_until(pilot, lambda: isinstance(app.screen, ErrorBrowserScreen), what="error browser")
    return app.screen


def test_error_counts_rows_filters_and_detail(tmp_path):
    runs_dir, run = tiny_run(tmp_path, {"test-torch": SENTENCES})

    async def scenario():
        app = WorkbenchApp(runs_dir=runs_dir, configs_dir=copy_configs(tmp_path / "configs"))
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_browser(app, pilot, run.id)
            table = screen.query_one("#sentences", DataTable)
            summary = screen.query_one("#summary")
            await wait_until(pilot, lambda: "with errors" in static_text(summary), what="counts", shown=lambda: static_text(summary))
            text = static_text(summary)
            assert "6 sentences, 4 with errors" in text
            for shown_count in ("correct 2", "missed 3", "spurious 2", "wrong type 1", "wrong boundary 1", "type+boundary 1"):
                assert shown_count in text
            assert [r[:2] for r in rows(table)] == [
                ["2", "wrong type, wrong boundary"], ["3", "missed, spurious, type+boundary"], ["4", "missed"], ["6", "spurious"]]

            # The first row's sentence, gold and predicted, with its errors.
            detail = shown(screen.query_one("#detail"))
            assert "line 2" in detail and detail.count("李四去了广州") == 2
            assert "LOC  广州 4–6 →  ORG  广州 4–6" in detail

            screen.query_one("#kind", Select).value = "missed"
            await wait_until(pilot, lambda: [r[0] for r in rows(table)] == ["3", "4"], what="missed rows", shown=lambda: rows(table))
            screen.query_one("#type", Select).value = "LOC"
            await wait_until(pilot, lambda: [r[0] for r in rows(table)] == ["4"], what="missed LOC rows", shown=lambda: rows(table))
            assert "missed 1 · spurious 1 · wrong type 1" in static_text(summary)  # LOC's counts
            screen.query_one("#kind", Select).value = "spurious"
            await wait_until(pilot, lambda: [r[0] for r in rows(table)] == ["6"], what="spurious LOC rows", shown=lambda: rows(table))
            assert "今天" in shown(screen.query_one("#detail"))

            screen.query_one("#kind", Select).value = ""  # all kinds, every type again
            screen.query_one("#type", Select).value = ""
            await wait_until(pilot, lambda: table.row_count == 4, what="all rows")
            assert table.cursor_row == 3 and "line 6" in shown(screen.query_one("#detail"))  # still on the row it was on
            table.focus()
            await pilot.press("up", "up")  # the cursor's row is the one shown
            await wait_until(pilot, lambda: "line 3" in shown(screen.query_one("#detail")), what="second row's detail")
            detail = shown(screen.query_one("#detail"))
            assert "missed" in detail and "王五" in detail and "记者" in detail

            await pilot.press("escape")
            await wait_until(pilot, lambda: app.screen.query("#stages"), what="back to the run")

    asyncio.run(scenario())


def test_compare_with_another_engine_lists_lost_and_gained(tmp_path):
    runs_dir, run = tiny_run(tmp_path, {"test-torch": SENTENCES, "test-ort-int8": second_engine(), "test-tvm-int8": SENTENCES[:2]})

    async def scenario():
        app = WorkbenchApp(runs_dir=runs_dir, configs_dir=copy_configs(tmp_path / "configs"))
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_browser(app, pilot, run.id)
            table = screen.query_one("#sentences", DataTable)
            summary = screen.query_one("#summary")
            await wait_until(pilot, lambda: table.row_count == 4, what="error rows")
            assert screen.query_one("#file", Select).value.endswith("test-torch.predictions.jsonl")  # torch first

            against = screen.query_one("#against", Select)
            against.value = os.path.join(run.dir, "eval", "test-ort-int8.predictions.jsonl")
            await wait_until(pilot, lambda: "differ" in static_text(summary), what="the diff", shown=lambda: static_text(summary))
            assert "test-torch → test-ort-int8 · 6 sentences, 3 differ" in static_text(summary)
            assert "lost 1 · gained 1 (net +0)" in static_text(summary)
            assert [r[:2] for r in rows(table)] == [["1", "lost"], ["2", "gained"], ["6", "changed"]]
            # Still on the sentence it showed (line 2): gold, both predictions, what changed.
            detail = shown(screen.query_one("#detail"))
            assert "line 2 · gained" in detail and detail.count("李四去了广州") == 3
            assert "PER  李四 0–2  right in test-ort-int8, not in test-torch" in detail
            assert "PER  李四去 0–3  predicted by test-torch only" in detail
            table.focus()
            await pilot.press("up")
            await wait_until(pilot, lambda: "line 1 · lost" in shown(screen.query_one("#detail")), what="line 1")
            assert "LOC  北京 3–5  right in test-torch, not in test-ort-int8" in shown(screen.query_one("#detail"))

            screen.query_one("#kind", Select).value = "gained"
            await wait_until(pilot, lambda: [r[0] for r in rows(table)] == ["2"], what="gained rows", shown=lambda: rows(table))

            # Predictions of other sentences: refused, by name, and the app stays up.
            against.value = os.path.join(run.dir, "eval", "test-tvm-int8.predictions.jsonl")
            await wait_until(pilot, lambda: "not predictions of the same sentences" in static_text(summary), what="refusal")
            against.value = Select.NULL  # back to the errors of one file
            await wait_until(pilot, lambda: "with errors" in static_text(summary) and table.row_count == 4, what="errors again")

    asyncio.run(scenario())


def test_a_run_without_predictions_says_how_to_make_them(tmp_path):
    runs_dir, run = tiny_run(tmp_path, {})

    async def scenario():
        app = WorkbenchApp(runs_dir=runs_dir, configs_dir=copy_configs(tmp_path / "configs"))
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_browser(app, pilot, run.id)
            summary = screen.query_one("#summary")
            await wait_until(pilot, lambda: "no predictions" in static_text(summary), what="the hint")
            assert "run eval" in static_text(summary)

    asyncio.run(scenario())
