"""Compare: every evaluated or benchmarked (run, split, engine) side by side, deltas against fp32.

The rows come from ``workbench.compare`` (UI-free); this screen colours, sorts
(click a header or press s on a column) and exports them, and plots F1 per entity
type for the run of the cursor's row.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from workbench.backend import display_path
from workbench.compare import COLUMNS, NO_BENCH_NOTE, NOT_BUILT_NOTE, empty_columns, format_cell, sort_rows
from workbench.series import f1_by_type

from .widgets.plots import Chart


def cell(row, column) -> Text:
    text = format_cell(row, column)
    if column.kind == "delta" and not row.is_reference and row.value(column.key) is not None:
        value = row.value(column.key)
        return Text(text, style="green" if value > 0 else "red" if value < 0 else "dim", justify="right")
    if text == "—":
        return Text(text, style="dim", justify="right")
    return Text(text, justify="left" if column.kind == "text" else "right")


class CompareScreen(Screen):
    DEFAULT_CSS = """
    CompareScreen #table { height: 1fr; }
    CompareScreen #bars { height: 1fr; min-height: 12; max-height: 20; }
    CompareScreen #note { padding: 0 1; color: $text-muted; height: auto; }
    """
    BINDINGS = [
        Binding("s", "sort", "Sort by column"),
        Binding("m", "export('md')", "Export Markdown"),
        Binding("c", "export('csv')", "Export CSV"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list = []
        self.shown: list = []  # the rows in the table's order
        self.plotted_run: str | None = None
        self.sort_key: str | None = None
        self.descending = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="table", cursor_type="cell", zebra_stripes=True)
        yield Chart(id="bars")
        yield Static("", id="note")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#table", DataTable)
        for column in COLUMNS:
            table.add_column(column.title, key=column.key)
        self.action_reload()

    def on_screen_resume(self) -> None:
        self.action_reload()

    @work(thread=True, exclusive=True)
    def action_reload(self) -> None:
        try:
            rows = self.app.backend.compare_rows()
        except Exception as err:  # noqa: BLE001
            self.app.call_from_thread(self.notify, f"cannot read results: {err}", severity="error")
            return
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows: list) -> None:
        self.rows = rows
        if self.sort_key:
            rows = sort_rows(rows, self.sort_key, self.descending)
        table = self.query_one("#table", DataTable)
        table.clear()
        for row in rows:
            table.add_row(*(cell(row, c) for c in COLUMNS))
        self.shown, self.plotted_run = rows, None
        self.show_bars(table.cursor_row)
        note = ["ΔF1 / Δacc: against the fp32 torch row of the same run and split (green: higher)."]
        empty = empty_columns(rows)
        if not rows:
            note.insert(0, "No evaluation results yet: run a config with the eval stage (Jobs screen).")
        if "latency_p50_ms" in empty:
            note.append(f"— {NO_BENCH_NOTE}.")
        if "int8_layers_kept" in empty:
            note.append(f"— {NOT_BUILT_NOTE}.")
        note.append("eval sent/s: end-to-end evaluation speed at batch 64, not a benchmark.")
        if self.sort_key:
            title = next(c.title for c in COLUMNS if c.key == self.sort_key)
            note.append(f"sorted by {title} {'↓' if self.descending else '↑'}")
        self.query_one("#note", Static).update("\n".join(note))

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        self.show_bars(event.coordinate.row)

    def show_bars(self, index: int) -> None:
        """F1 per entity type and engine for the run of the table's row ``index``."""
        run = self.shown[index] if 0 <= index < len(self.shown) else None
        if run is not None and run.run_id == self.plotted_run:
            return
        self.plotted_run = run.run_id if run is not None else None
        groups, bars = f1_by_type([r for r in self.rows if run is not None and r.run_id == run.run_id])
        chart = self.query_one("#bars", Chart)
        chart.display = bool(bars)
        if bars:
            chart.bars(groups, bars, "F1", f"F1 per entity type: {run.run_name} ({run.run_id})")

    def sort_by(self, key: str) -> None:
        if self.sort_key == key:
            self.descending = not self.descending
        else:
            # Scores read best-first; everything else smallest-first.
            self.sort_key, self.descending = key, next(c.kind for c in COLUMNS if c.key == key) in ("score", "delta", "rate")
        self._show(self.rows)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort_by(event.column_key.value)

    def action_sort(self) -> None:
        table = self.query_one("#table", DataTable)
        self.sort_by(COLUMNS[table.cursor_column].key)

    def export(self, fmt: str) -> None:
        rows = sort_rows(self.rows, self.sort_key, self.descending) if self.sort_key else self.rows
        try:
            path = self.app.backend.export_table(rows, fmt)
        except OSError as err:
            self.notify(f"export failed: {err}", severity="error")
            return
        self.notify(f"wrote {display_path(path)}")

    def action_export(self, fmt: str) -> None:
        self.export(fmt)
