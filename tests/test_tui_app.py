"""The app shell and the Runs / Compare / Help screens, driven with the pilot."""

import asyncio
import os

from textual.widgets import Button, DataTable

from workbench import app as app_module
from workbench.app import WorkbenchApp
from workbench.cli import main

from tui_helpers import copy_configs, static_text, wait_until

SIZE = (140, 40)


def test_no_arguments_and_tui_open_the_app(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(app_module, "run_app", lambda runs_dir=None: calls.append(runs_dir) or 0)
    assert main([]) == 0 and main(["tui", "--runs-dir", str(tmp_path)]) == 0
    assert calls == [None, str(tmp_path)]


def test_empty_history_offers_the_quickstart(tmp_path, monkeypatch):
    async def scenario():
        app = WorkbenchApp(runs_dir=str(tmp_path / "runs"), configs_dir=copy_configs(tmp_path / "configs"))
        started = []
        # The real quickstart trains for minutes: record the launch, start a cheap job instead.
        monkeypatch.setattr(app.backend, "start_quickstart", lambda: started.append(1) or app.backend.start_job(["validate", "configs/quickstart.yaml"], "run quickstart"))
        async with app.run_test(size=SIZE) as pilot:
            empty = app.screen.query_one("#empty")
            await wait_until(pilot, lambda: empty.display, what="empty state")
            assert not app.screen.query_one("#runs").display
            # A click lands where the button was last laid out: wait until it has a place on screen.
            button = app.screen.query_one("#quickstart", Button)
            await wait_until(pilot, lambda: button.region.area > 0, what="quickstart button laid out")
            await pilot.pause()
            assert await pilot.click("#quickstart"), "the click missed the quickstart button"
            await wait_until(pilot, lambda: app.current_mode == "jobs", what="jobs screen")
            assert started == [1] and app.selected_job

    asyncio.run(scenario())


def test_runs_list_and_run_detail(toy_run, tmp_path):
    run, _, _, _, runs_dir = toy_run

    async def scenario():
        app = WorkbenchApp(runs_dir=runs_dir, configs_dir=copy_configs(tmp_path / "configs"))
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            await wait_until(pilot, lambda: table.row_count == 1, what="runs")
            row = [str(c) for c in table.get_row_at(0)]
            assert row[0] == run.id and row[2] == "done" and row[7] == "tiny" and row[9] == "train export eval"
            # F1 and ms per precision (bench.json, if another test benched it) before the long columns
            assert row[3].endswith("(test)") and len(row) == 10
            table.focus()
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.screen.query("#stages"), what="run detail")
            stages = app.screen.query_one("#stages", DataTable)
            await wait_until(pilot, lambda: stages.row_count == 3, what="stages")
            assert [str(stages.get_row_at(i)[1]) for i in range(3)] == ["done"] * 3
            artifacts = {str(app.screen.query_one("#artifacts", DataTable).get_row_at(i)[0]) for i in range(app.screen.query_one("#artifacts", DataTable).row_count)}
            assert {"config.yaml", "metrics.json", "export/model.ts", "eval/test-torch.json"} <= artifacts
            await pilot.press("escape")
            assert app.screen.query("#runs")
            await pilot.press("t")  # tag with the highlighted run
            await wait_until(pilot, lambda: app.current_mode == "tag", what="highlighter")

    asyncio.run(scenario())


def test_compare_table_sort_and_export(toy_run, tmp_path):
    run, _, _, _, runs_dir = toy_run
    export_dir = tmp_path / "export-here"

    async def scenario():
        app = WorkbenchApp(runs_dir=runs_dir, configs_dir=copy_configs(tmp_path / "configs"))
        app.backend.export_dir = str(export_dir)  # not into the shared toy store
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f6")
            screen = app.screen
            table = screen.query_one("#table", DataTable)
            await wait_until(pilot, lambda: table.row_count >= 1, what="rows")
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
            row = next(r for r in rows if r[1:3] == ["test", "torch"])  # other tests may add splits
            assert row[0] == "toy" and row[3] == "fp32" and row[5] == "ref"
            note = static_text(screen.query_one("#note"))
            assert "not built yet" in note
            table.focus()
            await pilot.press("s")
            assert "sorted by run" in static_text(screen.query_one("#note"))
            await pilot.press("m", "c")
            assert (export_dir / "compare.md").read_text().startswith("| run | split |")
            assert "run_id,run_name" in (export_dir / "compare.csv").read_text()

    asyncio.run(scenario())


def test_help_footer_and_command_palette(tmp_path):
    async def scenario():
        app = WorkbenchApp(runs_dir=str(tmp_path / "runs"), configs_dir=copy_configs(tmp_path / "configs"))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f1")
            assert type(app.screen).__name__ == "HelpScreen"
            await pilot.press("escape")
            assert type(app.screen).__name__ == "RunsScreen"
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"Go to Compare")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.current_mode == "compare", what="palette command")
            assert app.sub_title == "Compare"

    asyncio.run(scenario())


def test_cold_import_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, workbench.app, workbench.cli; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__))).returncode == 0


def test_delete_a_run_from_the_history_after_confirming(tmp_path):
    from conftest import finished_run
    from screens.widgets.confirm import ConfirmPrompt
    from workbench.store import RunStore

    runs_dir = str(tmp_path / "runs")
    store = RunStore(runs_dir)
    older, newer = finished_run(store, "older"), finished_run(store, "newer")

    async def scenario():
        app = WorkbenchApp(runs_dir=runs_dir, configs_dir=copy_configs(tmp_path / "configs"))
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            await wait_until(pilot, lambda: table.row_count == 2, what="runs")
            table.focus()
            await pilot.press("d")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmPrompt), what="the confirmation")
            assert newer.id in str(app.screen.query_one("#question").render())
            await pilot.press("n")  # changed my mind: nothing goes
            await wait_until(pilot, lambda: app.screen.query("#runs"), what="back to the runs")
            assert os.path.isdir(newer.dir)
            await pilot.press("d", "y")
            await wait_until(pilot, lambda: app.screen.query("#runs") and table.row_count == 1, what="one run left")
            assert str(table.get_row_at(0)[0]) == older.id
            assert not os.path.exists(newer.dir) and os.path.isdir(older.dir)

    asyncio.run(scenario())
