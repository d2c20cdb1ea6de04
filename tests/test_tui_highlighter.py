"""Highlighter screen, driven with the pilot on the toy model."""

import asyncio
import os
import shutil

from textual import events
from textual.widgets import DataTable, RadioButton, Select, TextArea

from pipelines.config import parse_config
from workbench.app import WorkbenchApp
from workbench.store import RunStore

from tui_helpers import copy_configs, static_text, wait_until

SIZE = (120, 40)


async def open_highlighter(app, pilot):
    """F5, then wait until the first run's model is loaded; returns the screen."""
    await pilot.press("f5")
    screen = app.screen
    await wait_until(pilot, lambda: screen.tagger is not None, what="model loaded")
    return screen


def test_typing_highlights_the_entities(toy_run, tmp_path):
    run, _, _, _, runs_dir = toy_run

    async def scenario():
        app = WorkbenchApp(runs_dir=runs_dir, configs_dir=copy_configs(tmp_path / "configs"))
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_highlighter(app, pilot)
            assert screen.query_one("#model", Select).value == run.id
            await pilot.press(*"张三在北京工作")
            await wait_until(pilot, lambda: screen.result is not None and len(screen.result.entities) == 2, what="entities")
            found = {(e.type, e.text, e.start, e.end) for e in screen.result.entities}
            assert found == {("PER", "张三", 0, 2), ("LOC", "北京", 3, 5)}
            # inline: the entity characters carry their type's colour
            styles = {(s.start, s.end): str(s.style) for s in screen.highlighted_text.spans}
            assert "#f4a261" in styles[(0, 2)] and "#8ecae6" in styles[(3, 5)]
            table = screen.query_one("#entities", DataTable)
            assert table.row_count == 2
            assert {str(table.get_row_at(i)[1]) for i in range(2)} == {"张三", "北京"}
            assert "ms/sentence" in static_text(screen.query_one("#status"))
            # every engine is offered, int8 ones included (they need their compile / calibration first)
            buttons = {b.name: b for b in screen.query(RadioButton)}
            assert {"torch", "torchscript", "tvm-fp32", "tvm-fp16", "tvm-int8", "ort-int8-static"} <= set(buttons)
            assert not buttons["tvm-int8"].disabled and not buttons["torchscript"].disabled

    asyncio.run(scenario())


def test_bad_text_never_crashes(toy_run, tmp_path):
    _, _, _, _, runs_dir = toy_run

    async def scenario():
        app = WorkbenchApp(runs_dir=runs_dir, configs_dir=copy_configs(tmp_path / "configs"))
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_highlighter(app, pilot)
            area = screen.query_one("#input", TextArea)
            # a 10,000-character paste of Chinese, Latin and emoji (one long "sentence" is windowed)
            chunk = "张三在北京工作 Hello wörld 👋🏽👨‍👩‍👧 " * 5
            big = (chunk * (10_000 // len(chunk) + 1))[:10_000]
            area.post_message(events.Paste(big))
            await wait_until(pilot, lambda: screen.result is not None and screen.result.sentences >= 1, timeout=60, what="paste tagged")
            assert any(e.text == "张三" for e in screen.result.entities)
            await pilot.press("ctrl+l")  # empty text
            await wait_until(pilot, lambda: screen.result.sentences == 0, what="empty text")
            assert screen.query_one("#entities", DataTable).row_count == 0
            await pilot.press(*"   ")  # blank
            await pilot.pause(0.3)
            assert app.is_running

    asyncio.run(scenario())


def test_missing_and_incomplete_models_show_an_error(tmp_path):
    store = RunStore(str(tmp_path / "runs"))
    empty = store.create_run(parse_config({"name": "untrained"}))
    broken = store.create_run(parse_config({"name": "broken"}))
    os.makedirs(os.path.join(broken.dir, "model"))
    with open(os.path.join(broken.dir, "model", "config.json"), "w") as f:
        f.write("{}")
    store.close()

    async def scenario():
        app = WorkbenchApp(runs_dir=str(tmp_path / "runs"), configs_dir=copy_configs(tmp_path / "configs"))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f5")
            screen = app.screen
            select = screen.query_one("#model", Select)
            await wait_until(pilot, lambda: len(screen.run_ids) == 2, what="runs listed")
            status = screen.query_one("#status")
            select.value = empty.id
            await wait_until(pilot, lambda: f"cannot open {empty.id}" in static_text(status), what="error for untrained run")
            assert "holds no trained model" in static_text(status)
            select.value = broken.id
            await wait_until(pilot, lambda: "missing workbench.json" in static_text(status), what="error for broken run")
            shutil.rmtree(broken.dir)  # the directory vanishes under the app
            select.value = empty.id
            await pilot.press(*"张三")
            await pilot.pause(0.3)
            assert app.is_running and screen.tagger is None

    asyncio.run(scenario())
