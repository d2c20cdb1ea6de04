"""Config editor: break the YAML, see the key named; saves are refused or atomic."""

import asyncio
import os
import re

from textual.widgets import Input, OptionList, TextArea

from workbench.app import WorkbenchApp

from tui_helpers import copy_configs, static_text, wait_until

SIZE = (120, 36)


def test_errors_name_the_key_and_invalid_saves_are_refused(tmp_path):
    configs = copy_configs(tmp_path / "configs")
    quick = os.path.join(configs, "quickstart.yaml")
    original = open(quick, encoding="utf-8").read()

    async def scenario():
        app = WorkbenchApp(runs_dir=str(tmp_path / "runs"), configs_dir=configs)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f3")
            screen = app.screen
            problem = screen.query_one("#problem")
            editor = screen.query_one("#editor", TextArea)
            await wait_until(pilot, lambda: screen.path is not None and "valid config" in static_text(problem), what="opened")
            assert screen.path.endswith("peoples_daily_bert_base.yaml")  # first file, alphabetically
            screen.open(quick)
            await wait_until(pilot, lambda: editor.text == original, what="quickstart open")
            # a bad key as the first one of the train section, typed character by character
            row = original.splitlines().index("train:") + 1
            editor.insert("\n", (row, 0))
            editor.move_cursor((row, 0))
            editor.focus()
            await pilot.press(*"  lr: 0.1")
            await wait_until(pilot, lambda: "train.lr" in static_text(problem), what="key error")
            text = static_text(problem)
            assert f"line {row + 1}" in text and "unknown key (allowed: epochs, batch_size" in text
            assert "modified" in static_text(screen.query_one("#path"))
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert open(quick, encoding="utf-8").read() == original  # refused: the file is untouched
            # broken YAML syntax
            editor.load_text("train: [1,\n")
            await wait_until(pilot, lambda: "invalid YAML" in static_text(problem), what="yaml error")
            # a wrong value names the allowed ones
            editor.load_text(original.replace("preset: bilstm", "preset: huge"))
            await wait_until(pilot, lambda: "model.preset" in static_text(problem), what="value error")
            assert "'tiny', 'mini'" in static_text(problem)
            # fixed and saved
            fixed = re.sub(r"epochs: [0-9.]+", "epochs: 2", original, count=1)
            assert fixed != original
            editor.load_text(fixed)
            await wait_until(pilot, lambda: "valid config" in static_text(problem), what="valid again")
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert "epochs: 2" in open(quick, encoding="utf-8").read()
            assert sorted(os.listdir(configs)) == ["peoples_daily_bert_base.yaml", "quickstart.yaml"]  # no temp files left

    asyncio.run(scenario())


def test_new_config_from_template(tmp_path):
    configs = copy_configs(tmp_path / "configs")

    async def scenario():
        app = WorkbenchApp(runs_dir=str(tmp_path / "runs"), configs_dir=configs)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f3")
            screen = app.screen
            templates = screen.query_one("#templates", OptionList)
            assert not [o.id for o in templates.options if o.disabled]
            assert "int8" in str(templates.get_option("compile_int8").prompt)
            await pilot.press("ctrl+n")
            assert templates.has_focus
            templates.highlighted = 0
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.screen.query(Input), what="name prompt")
            await pilot.press(*"my-run", "enter")
            path = os.path.join(configs, "my-run.yaml")
            await wait_until(pilot, lambda: screen.path == path, what="new file open")
            assert "name: my-run" in open(path, encoding="utf-8").read()
            await wait_until(pilot, lambda: "valid config" in static_text(screen.query_one("#problem")), what="valid")

    asyncio.run(scenario())
