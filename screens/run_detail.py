"""One run: its config, stages with status and metrics, artifacts, and error tail."""

from __future__ import annotations

from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from workbench.backend import display_path
from workbench.compare import human_bytes

from .errors import ErrorBrowserScreen
from .widgets.plots import RunPlots
from .widgets.status import status_text



class RunDetailScreen(Screen):
    DEFAULT_CSS = """
    RunDetailScreen VerticalScroll { padding: 0 1; }
    RunDetailScreen DataTable { height: auto; max-height: 16; }
    RunDetailScreen #config { height: auto; border: round $panel; }
    RunDetailScreen #error { color: $error; }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("t", "tag", "Tag with this model"),
        Binding("e", "launch('export')", "Export job"),
        Binding("v", "launch('eval')", "Eval job"),
        Binding("r", "launch('report')", "Report job"),
        Binding("x", "errors", "Error browser"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static(f"run {self.run_id}", id="summary")
            yield Static("Stages", classes="section")
            yield DataTable(id="stages", cursor_type="row")
            yield RunPlots(id="plots")
            yield Static("Artifacts", classes="section")
            yield DataTable(id="artifacts", cursor_type="row")
            yield Static("", id="error")
            yield Static("Config", classes="section")
            yield Static("", id="config")
        yield Footer()

    def on_mount(self) -> None:
        stages = self.query_one("#stages", DataTable)
        for title in ("stage", "status", "time", "metrics"):
            stages.add_column(title)
        artifacts = self.query_one("#artifacts", DataTable)
        artifacts.add_column("path")
        artifacts.add_column("size")
        self.load()
        self.load_plots()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        try:
            detail = self.app.backend.run_detail(self.run_id)
        except Exception as err:  # noqa: BLE001 - e.g. a run deleted under us
            self.app.call_from_thread(self.query_one("#summary", Static).update, Text(f"cannot open run {self.run_id}: {err}", style="red"))
            return
        self.app.call_from_thread(self._show, detail)

    @work(thread=True, exclusive=True, group="plots")
    def load_plots(self) -> None:
        backend = self.app.backend
        try:
            curves, bench = backend.run_curves(self.run_id), backend.run_bench(self.run_id)
        except Exception as err:  # noqa: BLE001 - a torn events.jsonl or bench.json
            self.app.call_from_thread(self.notify, f"cannot read the run's plots: {err}", severity="error")
            return
        self.app.call_from_thread(self.query_one(RunPlots).show, curves, bench, backend.command_line("bench", self.run_id))

    def _show(self, detail) -> None:
        s = detail.summary
        f1 = f"{s.best_f1:.4f} ({s.f1_split})" if s.best_f1 is not None else "—"
        summary = Text.assemble(
            (s.id, "bold"), "  ", status_text(s.status),
            f"\nname {s.name} · model {s.model} · data {s.dataset} · best F1 {f1}\n{display_path(s.dir)}",
        )
        self.query_one("#summary", Static).update(summary)
        stages = self.query_one("#stages", DataTable)
        stages.clear()
        for row in detail.stages:
            seconds = f"{row.seconds:.1f} s" if row.seconds is not None else "—"
            metrics = row.metrics if row.status == "done" else (row.error or "")
            stages.add_row(row.stage, status_text(row.status), seconds, metrics)
        artifacts = self.query_one("#artifacts", DataTable)
        artifacts.clear()
        for path, size in detail.artifacts:
            artifacts.add_row(path, human_bytes(size))
        self.query_one("#error", Static).update(f"error.log (last lines):\n{detail.error_tail}" if detail.error_tail else "")
        config = Syntax(detail.config_text, "yaml", theme="ansi_dark", line_numbers=True) if detail.config_text else "(no config.yaml)"
        self.query_one("#config", Static).update(config)

    def action_tag(self) -> None:
        self.app.pop_screen()
        self.app.open_in_highlighter(self.run_id)

    def action_errors(self) -> None:
        self.app.push_screen(ErrorBrowserScreen(self.run_id))

    def action_launch(self, action: str) -> None:
        try:
            job = self.app.backend.start_job(self.app.backend.job_argv(action, self.run_id), f"{action} {self.run_id}")
        except Exception as err:  # noqa: BLE001
            self.notify(f"could not start {action}: {err}", severity="error")
            return
        self.app.pop_screen()
        self.app.open_job(job.id)
