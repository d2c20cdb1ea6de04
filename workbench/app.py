"""The Textual app: six screens (modes) over one :class:`~workbench.backend.Backend`.

Nothing here computes: screens load data and models in worker threads, and jobs
run as subprocesses. Importing this module never imports torch (``scripts/measure_tui.py``).
"""

from __future__ import annotations

from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from screens.compare import CompareScreen
from screens.config_editor import ConfigEditorScreen
from screens.devices import DevicesScreen
from screens.help import HelpScreen
from screens.highlighter import HighlighterScreen
from screens.jobs import JobsScreen
from screens.runs import RunsScreen

from .backend import Backend

SCREEN_TITLES = {"runs": "Runs", "config": "Config", "jobs": "Jobs", "tag": "Highlighter", "compare": "Compare", "devices": "Devices"}


class WorkbenchApp(App):
    TITLE = "ner-workbench"
    CSS = """
    .muted { color: $text-muted; }
    .error { color: $error; }
    .ok { color: $success; }
    .section { text-style: bold; margin-top: 1; }
    """
    MODES = {
        "runs": RunsScreen,
        "config": ConfigEditorScreen,
        "jobs": JobsScreen,
        "tag": HighlighterScreen,
        "compare": CompareScreen,
        "devices": DevicesScreen,
    }
    DEFAULT_MODE = "runs"
    # Function keys are priority bindings so that text areas never swallow them.
    BINDINGS = [
        Binding("f1", "help", "Help", priority=True),
        Binding("f2", "switch_mode('runs')", "Runs", priority=True),
        Binding("f3", "switch_mode('config')", "Config", priority=True),
        Binding("f4", "switch_mode('jobs')", "Jobs", priority=True),
        Binding("f5", "switch_mode('tag')", "Tag", priority=True),
        Binding("f6", "switch_mode('compare')", "Compare", priority=True),
        Binding("f7", "switch_mode('devices')", "Devices", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, backend: Backend | None = None, runs_dir: str | None = None, configs_dir: str | None = None) -> None:
        super().__init__()
        self.backend = backend or Backend(runs_dir, configs_dir)
        # Set by one screen for another (e.g. "open this job", "tag with this run").
        self.selected_job: str | None = None
        self.selected_run: str | None = None
        self.poll_interval = 0.5

    def on_mount(self) -> None:
        self.sub_title = SCREEN_TITLES[self.current_mode]

    def action_switch_mode(self, mode: str) -> None:
        self.sub_title = SCREEN_TITLES.get(mode, mode)
        self.switch_mode(mode)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        else:
            self.push_screen(HelpScreen())

    def open_job(self, job_id: str) -> None:
        self.selected_job = job_id
        self.action_switch_mode("jobs")
        if isinstance(self.screen, JobsScreen):
            self.screen.show_selected()

    def open_in_highlighter(self, run_id: str) -> None:
        self.selected_run = run_id
        self.action_switch_mode("tag")
        if isinstance(self.screen, HighlighterScreen):
            self.screen.use_selected_run()

    def start_quickstart(self) -> None:
        try:
            job = self.backend.start_quickstart()
        except Exception as err:  # noqa: BLE001 - reported, never fatal
            self.notify(f"could not start the quickstart: {err}", severity="error")
            return
        self.notify(f"started job {job.id}: {job.spec.get('title', '')}")
        self.open_job(job.id)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, title in SCREEN_TITLES.items():
            yield SystemCommand(f"Go to {title}", f"switch to the {title} screen", lambda m=mode: self.action_switch_mode(m))
        yield SystemCommand("Start the quickstart", "run configs/quickstart.yaml as a job", self.start_quickstart)
        yield SystemCommand("Key bindings", "show the help screen", self.action_help)
        if isinstance(screen, CompareScreen):
            yield SystemCommand("Export comparison as Markdown", "write compare.md to the runs directory", lambda: screen.export("md"))
            yield SystemCommand("Export comparison as CSV", "write compare.csv to the runs directory", lambda: screen.export("csv"))


def run_app(runs_dir: str | None = None, configs_dir: str | None = None) -> int:
    WorkbenchApp(runs_dir=runs_dir, configs_dir=configs_dir).run()
    return 0
