"""Snapshots of every screen on a fixed workspace (fixed ids, times, sizes; a fake tagger).

Update after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and look at the SVGs (or the HTML report pytest-textual-snapshot writes on failure).
"""

import pytest
from textual.widgets import TextArea

from workbench.app import WorkbenchApp

from tui_demo import DemoBackend, make_workspace
from tui_helpers import wait_until

SIZE = (130, 36)


@pytest.fixture
def demo_app(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths on screen are shown relative to here
    make_workspace(str(tmp_path))

    def make():
        app = WorkbenchApp(DemoBackend("runs", "configs"))
        app.poll_interval = 0.1
        return app

    return make


async def settle(pilot, predicate=lambda: True, what="screen"):
    await wait_until(pilot, predicate, what=what)
    await pilot.app.workers.wait_for_complete()
    for area in pilot.app.screen.query(TextArea):
        area.cursor_blink = False  # a blinking cursor would make the image depend on timing
    await pilot.pause(0.2)


def test_runs(snap_compare, demo_app):
    async def before(pilot):
        await settle(pilot, lambda: pilot.app.screen.query_one("#runs").row_count == 2, "runs")

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=before)


def test_run_detail(snap_compare, demo_app):
    async def before(pilot):
        await settle(pilot, lambda: pilot.app.screen.query_one("#runs").row_count == 2, "runs")
        pilot.app.screen.query_one("#runs").focus()
        await pilot.press("down", "enter")  # the older, finished run
        await settle(pilot, lambda: pilot.app.screen.query_one("#stages").row_count == 3, "stages")
        # The plots load in a worker of their own: a snapshot taken before they show differs.
        await settle(pilot, lambda: pilot.app.screen.query_one("#plots").loaded, "plots")
        # On a loaded machine the header once kept its widths from before the rows came
        # (the rows had theirs): repaint the table before the image is taken.
        pilot.app.screen.query_one("#stages").refresh()
        await pilot.pause(0.3)

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=before)


def test_config_editor_with_an_error(snap_compare, demo_app):
    async def before(pilot):
        await pilot.press("f3")
        await settle(pilot, lambda: pilot.app.screen.path is not None, "editor")
        editor = pilot.app.screen.query_one("#editor")
        editor.insert("  lr: 0.1\n", (9, 0))  # first key of the train section
        await settle(pilot, lambda: "train.lr" in str(pilot.app.screen.query_one("#problem").content), "error")

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=before)


def test_jobs(snap_compare, demo_app):
    async def before(pilot):
        pilot.app.selected_job = "20260101-090000-000001"
        await pilot.press("f4")
        await settle(pilot, lambda: "done" in str(pilot.app.screen.query_one("#state").content), "job shown")

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=before)


def test_highlighter(snap_compare, demo_app):
    async def before(pilot):
        await pilot.press("f5")
        await settle(pilot, lambda: pilot.app.screen.tagger is not None, "model")
        await pilot.press(*"新华社报道")  # typed; the rest arrives as one insert (punctuation and emoji)
        pilot.app.screen.query_one("#input").insert("：张三在北京工作。Hello 👋🏽 world")
        await settle(pilot, lambda: pilot.app.screen.result is not None and len(pilot.app.screen.result.entities) == 3, "tags")

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=before)


def test_compare(snap_compare, demo_app):
    async def before(pilot):
        await pilot.press("f6")
        await settle(pilot, lambda: pilot.app.screen.query_one("#table").row_count == 5, "rows")

    assert snap_compare(demo_app(), terminal_size=(190, 20), run_before=before)


def test_help(snap_compare, demo_app):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("f1")
        await settle(pilot)

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=before)
