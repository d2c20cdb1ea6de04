"""Jobs screen: launch a tiny run, follow it to 100 %, survive a restart, show failures."""

import asyncio
import json
import os

from textual.widgets import DataTable, OptionList, ProgressBar, RichLog, Select

from workbench.app import WorkbenchApp

from conftest import write_toy_corpus
from tui_helpers import copy_configs, static_text, wait_until

SIZE = (140, 40)


def log_text(screen) -> str:
    return "\n".join(line.text for line in screen.query_one("#log", RichLog).lines)


def tiny_config(configs_dir, corpus) -> str:
    path = os.path.join(configs_dir, "tiny-job.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            "name: tiny-job\nstages: [train, eval]\n"
            f"data: {{source: conll, train: {corpus}, dev: {corpus}, test: {corpus}}}\n"
            "model: {preset: tiny, max_length: 16}\n"
            "train: {epochs: 2, batch_size: 8, threads: 1}\n"
        )
    return path


def test_launch_a_tiny_run_to_100_percent_then_restart(tmp_path):
    corpus = str(tmp_path / "toy.txt")
    write_toy_corpus(corpus, copies=2)
    configs = copy_configs(tmp_path / "configs")
    config = tiny_config(configs, corpus)
    runs_dir = str(tmp_path / "runs")

    async def launch():
        app = WorkbenchApp(runs_dir=runs_dir, configs_dir=configs)
        app.poll_interval = 0.2
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f4")
            screen = app.screen
            actions = screen.query_one("#actions", OptionList)
            disabled = {o.id for o in actions.options if o.disabled}
            assert not {"run", "eval", "infer", "compile", "bench", "pretrain", "distill"} & disabled
            target = screen.query_one("#target", Select)
            await wait_until(pilot, lambda: target.value is not Select.NULL, what="targets")
            target.value = config
            await pilot.click("#launch")
            await wait_until(pilot, lambda: screen.watch is not None, what="job followed")
            bar = screen.query_one("#progress-bar", ProgressBar)
            await wait_until(pilot, lambda: "done" in static_text(screen.query_one("#state")), timeout=120, what="job done\n" + log_text(screen))
            await pilot.pause(0.3)
            assert bar.percentage == 1.0
            log = log_text(screen)
            assert "✔ train" in log and "✔ eval" in log and "eval test_f1 = " in log
            assert "elapsed" in static_text(screen.query_one("#state"))
            return screen.watch.job.id

    job_id = asyncio.run(launch())

    async def restart():
        app = WorkbenchApp(runs_dir=runs_dir, configs_dir=configs)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f4")
            screen = app.screen
            await wait_until(pilot, lambda: "✔ eval" in log_text(screen), what="log replayed")
            table = screen.query_one("#jobs", DataTable)
            assert table.get_row_at(0)[0] == job_id and str(table.get_row_at(0)[1]) == "done"
            assert screen.query_one("#progress-bar", ProgressBar).percentage == 1.0
            await pilot.press("f2")  # the run it made is on the home screen
            runs = app.screen.query_one("#runs", DataTable)
            await wait_until(pilot, lambda: runs.row_count == 1, what="run listed")
            assert str(runs.get_row_at(0)[2]) == "done"

    asyncio.run(restart())


def test_cancel_a_running_job(tmp_path):
    corpus = str(tmp_path / "toy.txt")
    write_toy_corpus(corpus, copies=50)
    config = tmp_path / "long.yaml"
    config.write_text(
        f"name: long\nstages: [train]\ndata: {{source: conll, train: {corpus}, dev: {corpus}}}\n"
        "model: {preset: tiny, max_length: 16}\ntrain: {epochs: 100, batch_size: 8, threads: 1, max_minutes: 1}\n"
    )

    async def scenario():
        app = WorkbenchApp(runs_dir=str(tmp_path / "runs"), configs_dir=copy_configs(tmp_path / "configs"))
        app.poll_interval = 0.2
        async with app.run_test(size=SIZE) as pilot:
            job = app.backend.start_job(app.backend.job_argv("run", str(config)), "run long.yaml")
            try:
                app.open_job(job.id)
                await wait_until(pilot, lambda: "steps" in static_text(app.screen.query_one("#unit")), timeout=90, what="training progress")
                assert "eta" in static_text(app.screen.query_one("#unit"))
                await pilot.press("x")
                await wait_until(
                    pilot,
                    lambda: "cancelled" in static_text(app.screen.query_one("#state")),
                    timeout=60,
                    what="cancelled",
                    shown=lambda: f"{static_text(app.screen.query_one('#state'))!r}, log: {log_text(app.screen)[-600:]!r}",
                )
                assert "✘ train: cancelled" in log_text(app.screen)
            finally:
                job.cancel()  # never leave a training job behind if the test fails

    asyncio.run(scenario())


def test_failed_and_crashed_jobs_show_their_log_tail(tmp_path):
    runs_dir = tmp_path / "runs"
    crashed = runs_dir / "jobs" / "20260101-000000-000001"
    crashed.mkdir(parents=True)
    (crashed / "job.json").write_text(json.dumps({"argv": ["run", "x.yaml"], "title": "run x.yaml", "created": 1.0}))
    (crashed / "output.log").write_text("loading…\nFatal Python error: Segmentation fault\n")
    (crashed / "exit.json").write_text(json.dumps({"returncode": -11, "finished": 5.0}))

    async def scenario():
        app = WorkbenchApp(runs_dir=str(runs_dir), configs_dir=copy_configs(tmp_path / "configs"))
        app.poll_interval = 0.2
        async with app.run_test(size=SIZE) as pilot:
            job = app.backend.start_job(["validate", "missing.yaml"], "validate missing.yaml")
            app.open_job(job.id)
            await wait_until(pilot, lambda: app.screen.query_one("#state"), what="jobs screen")
            screen = app.screen
            await wait_until(pilot, lambda: "failed" in static_text(screen.query_one("#state")), timeout=60, what="failed")
            await wait_until(pilot, lambda: "output.log" in log_text(screen), what="log tail")
            assert "missing.yaml: no such config file" in log_text(screen)
            app.open_job(crashed.name)
            await wait_until(pilot, lambda: "crashed" in static_text(screen.query_one("#state")), what="crashed")
            await wait_until(pilot, lambda: "Segmentation fault" in log_text(screen), what="segfault tail")
            assert "SIGSEGV" in static_text(screen.query_one("#state"))
            assert "0:04" in static_text(screen.query_one("#state"))  # elapsed from the job's own files
            assert screen.query_one("#cancel").disabled
            assert app.is_running

    asyncio.run(scenario())
