"""Runs (home): the run history from the store; enter opens a run."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from .run_detail import RunDetailScreen
from .widgets.confirm import ConfirmPrompt
from .widgets.status import STATUS_STYLES, status_text

PRECISIONS = ("fp32", "fp16", "int8")


class RunsScreen(Screen):
    DEFAULT_CSS = """
    RunsScreen #empty { height: auto; padding: 1 2; border: round $accent; margin: 1 2; display: none; }
    RunsScreen #empty Button { margin-top: 1; }
    RunsScreen #runs { height: 1fr; }
    RunsScreen #runs-note { padding: 0 1; color: $text-muted; }
    """
    BINDINGS = [
        Binding("enter", "open", "Open run", show=False),
        Binding("t", "tag", "Tag with run"),
        Binding("s", "quickstart", "Start quickstart"),
        Binding("d", "delete", "Delete run"),
        Binding("r", "reload", "Reload"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="empty"):
            yield Static("No runs yet. The quickstart trains a BiLSTM tagger on the embedded MSRA corpus (about 11 minutes on 2 cores).")
            yield Button("Start the quickstart", id="quickstart", variant="primary")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("ms: bench p50 of the fastest engine per precision (— : not benchmarked) · enter: open a run · d: delete it", id="runs-note")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_column("run", key="id")
        # The scores before the long columns (a model label can run to 60 characters):
        # at 120 columns F1 and latency stay on screen.
        for title in ("name", "status", "best F1", *(f"{p} ms" for p in PRECISIONS), "model", "data", "stages"):
            table.add_column(title, key=title)
        self.action_reload()
        self.set_interval(2.0, self._tick)  # runs started by jobs appear by themselves

    def _tick(self) -> None:
        if self.is_current:  # no polling while another screen is showing
            self.action_reload()

    def on_screen_resume(self) -> None:
        self.action_reload()

    @work(thread=True, exclusive=True, group="runs")
    def action_reload(self) -> None:
        try:
            runs = self.app.backend.runs()
        except Exception as err:  # noqa: BLE001 - a broken store is shown, never fatal
            self.app.call_from_thread(self.notify, f"cannot read the run store: {err}", severity="error")
            return
        self.app.call_from_thread(self._show, runs)

    def _show(self, runs: list) -> None:
        table = self.query_one("#runs", DataTable)
        selected = self._selected_id()
        table.clear()
        for run in runs:
            stages = Text(" ").join(Text(s, style=STATUS_STYLES.get(st, "")) for s, st in run.stages)
            f1 = f"{run.best_f1:.4f} ({run.f1_split})" if run.best_f1 is not None else "—"
            latency = [f"{run.latency_ms[p]:.2f}" if run.latency_ms.get(p) is not None else "—" for p in PRECISIONS]
            table.add_row(run.id, run.name, status_text(run.status), f1, *latency, run.model, run.dataset, stages, key=run.id)
        if selected is not None and selected in {r.id for r in runs}:
            table.move_cursor(row=table.get_row_index(selected))
        self.query_one("#empty").display = not runs
        table.display = bool(runs)
        # Never leave focus on the hidden quickstart button: enter would start an 8-minute job.
        if runs and (self.focused is None or self.focused.id == "quickstart"):
            table.focus()

    def _selected_id(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(RunDetailScreen(event.row_key.value))

    def action_open(self) -> None:
        run_id = self._selected_id()
        if run_id:
            self.app.push_screen(RunDetailScreen(run_id))

    def action_tag(self) -> None:
        run_id = self._selected_id()
        if run_id:
            self.app.open_in_highlighter(run_id)

    def action_delete(self) -> None:
        run_id = self._selected_id()
        if not run_id:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(run_id)

        detail = "Its directory (model, exports, artifacts, scores) and its history entry go. This cannot be undone."
        self.app.push_screen(ConfirmPrompt(f"Delete run {run_id}?", detail), answered)

    @work(thread=True, group="runs-delete")
    def _delete(self, run_id: str) -> None:
        try:
            freed = self.app.backend.delete_run(run_id)
        except Exception as err:  # noqa: BLE001 - a refusal (still running) or I/O error is shown, never fatal
            self.app.call_from_thread(self.notify, f"cannot delete {run_id}: {err}", severity="error")
            return
        self.app.call_from_thread(self.notify, f"deleted {run_id} ({freed / 1e6:.1f} MB)")
        self.app.call_from_thread(self.action_reload)

    def action_quickstart(self) -> None:
        self.app.start_quickstart()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "quickstart":
            self.app.start_quickstart()
