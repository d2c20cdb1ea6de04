"""Error browser: a run's saved predictions, sentence by sentence. Each sentence with
entity errors is listed with their kinds (missed, spurious, wrong type / boundary);
against a second predictions file of the same split ("compare with"), the sentences
where the two differ are listed instead, with the entities the second lost or gained.

Opened from the run detail (x). Files are read and classified in a worker thread
(``Backend.error_report`` / ``engine_diff``); the filters only re-list what is loaded.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Select, Static

from .widgets.entities import highlighted, style_for

# Short enough for the filter at 80 columns; the JSON and the CLI keep the full names.
KIND_LABELS = {
    "correct": "correct",
    "missed": "missed",
    "spurious": "spurious",
    "wrong_type": "wrong type",
    "wrong_boundary": "wrong boundary",
    "wrong_type_and_boundary": "type+boundary",
}
KIND_STYLES = {"missed": "red", "spurious": "yellow", "wrong_type": "magenta", "wrong_boundary": "cyan", "wrong_type_and_boundary": "blue"}
CHANGE_STYLES = {"lost": "red", "gained": "green", "changed": "dim", "dropped": "yellow", "added": "yellow"}
ANY = ""  # the filters' "all" choice
CONTEXT = 20  # characters shown either side of the errors of a long sentence
MAX_ROWS = 2000  # a DataTable of every MSRA test sentence would be slow to fill and no easier to read


class ErrorBrowserScreen(Screen):
    DEFAULT_CSS = """
    ErrorBrowserScreen #controls { height: auto; padding: 0 1; }
    ErrorBrowserScreen #controls Select { width: 1fr; margin-right: 1; }
    ErrorBrowserScreen #controls #type { width: 16; margin-right: 0; }
    ErrorBrowserScreen #summary { height: auto; padding: 0 1; }
    ErrorBrowserScreen #sentences { height: 1fr; min-height: 5; }
    ErrorBrowserScreen #detail-box { height: 1fr; max-height: 14; border: round $panel; padding: 0 1; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.files: list = []  # the run's PredictionsFile list
        self.report = None  # ErrorReport of the chosen file
        self.diff = None  # PredictionsDiff against the "compare with" file, or None
        self.rows: dict[str, object] = {}  # table row key -> the Sentence / SentenceDiff it lists
        self._wanted: tuple | None = None  # (file, compare with) loaded or loading
        self._types: tuple[str, ...] = ()  # the entity types the type filter offers

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="controls"):
            yield Select([], prompt="predictions", id="file", compact=True)
            yield Select([], prompt="compare with…", id="against", compact=True)
            yield Select([("all kinds", ANY)], allow_blank=False, id="kind", compact=True)
            yield Select([("all types", ANY)], allow_blank=False, id="type", compact=True)
        yield Static("loading…", id="summary")
        yield DataTable(id="sentences", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="detail-box"):
            yield Static("", id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"errors · {self.run_id}"
        self._load_files()

    # -- loading -----------------------------------------------------------------
    @work(thread=True, exclusive=True, group="files")
    def _load_files(self) -> None:
        try:
            files = self.app.backend.predictions_files(self.run_id)
        except Exception as err:  # noqa: BLE001 - e.g. a run deleted under us
            self.app.call_from_thread(self._summary, Text(f"cannot open run {self.run_id}: {err}", style="red"))
            return
        self.app.call_from_thread(self._set_files, files)

    def _set_files(self, files: list) -> None:
        self.files = files
        if not files:
            self._summary(Text("no predictions in this run yet: run eval on it (v on the run screen)", style="yellow"))
            return
        select = self.query_one("#file", Select)
        select.set_options([(f.name, f.path) for f in files])
        select.value = files[0].path  # fires Select.Changed, which loads it

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "file" and event.value is not Select.NULL:
            chosen = next(f for f in self.files if f.path == event.value)
            others = [(f.name, f.path) for f in self.files if f.split == chosen.split and f.path != chosen.path]
            self.query_one("#against", Select).set_options(others)  # back to "compare with…"
            self._request()
        elif event.select.id == "against":
            self._request()
        elif self.report is not None:  # a filter
            self._fill()

    def _request(self) -> None:
        path, against = self._value("#file"), self._value("#against")
        if path is None or (path, against) == self._wanted:
            return  # e.g. "compare with" announcing its reset
        self._wanted = (path, against)
        self._summary(Text("reading and classifying…", style="yellow"))
        self._load(path, against)

    @work(thread=True, exclusive=True, group="load")
    def _load(self, path: str, against: str | None) -> None:
        try:
            report = self.app.backend.error_report(path)
            diff = self.app.backend.engine_diff(path, against) if against else None
        except Exception as err:  # noqa: BLE001 - a broken file or two different splits
            self.app.call_from_thread(self._failed, (path, against), err)
            return
        self.app.call_from_thread(self._loaded, (path, against), report, diff)

    def _failed(self, key: tuple, err: Exception) -> None:
        if key == self._wanted:  # nothing stale stays listed under the message
            self.query_one("#sentences", DataTable).clear()
            self.rows = {}
            self._detail(None)
            self._summary(Text(str(err), style="red"))

    def _loaded(self, key: tuple, report, diff) -> None:
        if key != self._wanted:
            return  # superseded by another choice
        diff_mode_changed = (diff is None) != (self.diff is None) or self.report is None
        self.report, self.diff = report, diff
        if diff_mode_changed:
            kinds = [("all changes", ANY), ("lost", "lost"), ("gained", "gained")] if diff else [
                ("all kinds", ANY), *((KIND_LABELS[k], k) for k in report.as_json()["counts"])]
            self.query_one("#kind", Select).set_options(kinds)
        if tuple(report.by_type) != self._types:  # else keep the type chosen
            self._types = tuple(report.by_type)
            self.query_one("#type", Select).set_options([("all types", ANY), *((t, t) for t in self._types)])
        self._fill()

    # -- showing -----------------------------------------------------------------
    def _value(self, selector: str):
        value = self.query_one(selector, Select).value
        return None if value in (Select.NULL, ANY) else value

    def on_resize(self) -> None:
        if self.report is not None:
            self._fill()  # the columns' widths follow the screen's

    def _fill(self) -> None:
        kind, entity_type = self._value("#kind"), self._value("#type")
        listed = self.diff.filtered(kind, entity_type) if self.diff else self.report.filtered(kind, entity_type)
        table = self.query_one("#sentences", DataTable)
        current = self._current_key()
        table.clear(columns=True)
        # Fixed widths, so a long sentence is cut at the screen's edge (the detail shows the
        # part around its errors) rather than widening the table past it.
        width = self.size.width - 3 * 2 - 2  # the columns' padding, the scrollbar
        marks = 13 if self.diff else max(14, min(34, width // 3))
        table.add_column("line", width=5)
        table.add_column("change" if self.diff else "errors", width=marks)
        table.add_column("text", width=max(10, width - 5 - marks))
        self.rows = {}
        for row in listed[:MAX_ROWS]:
            key = str(row.index)
            self.rows[key] = row
            table.add_row(str(row.index + 1), self._marks(row), Text(row.text, no_wrap=True, overflow="ellipsis"), key=key)
        self._summary(self._diff_summary(len(listed)) if self.diff else self._error_summary(len(listed), entity_type))
        if current in self.rows:  # still listed (a resize, a wider filter): stay on it
            table.move_cursor(row=table.get_row_index(current))
        self._detail(self.rows.get(current) or (listed[0] if listed else None))

    def _current_key(self) -> str | None:
        table = self.query_one("#sentences", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _marks(self, row) -> Text:
        if self.diff:
            return Text(row.mark, style=CHANGE_STYLES[row.mark.split()[0]])  # "lost + gained": lost's colour
        marks = Text(", ").join(Text(KIND_LABELS[k], style=KIND_STYLES[k]) for k in row.kinds)
        marks.overflow, marks.no_wrap = "ellipsis", True
        return marks

    def _error_summary(self, listed: int, entity_type: str | None) -> Text:
        report = self.report
        counts = report.by_type.get(entity_type, {}) if entity_type else report.counts
        head = f"{self._file_name(self._value('#file'))} · {report.sentences} sentences, {len(report.with_errors)} with errors · listed {_listed(listed)}"
        text = Text(head + "\n")
        if entity_type:
            text.append(f" {entity_type} ", style=style_for(entity_type)).append(" ")
        parts = [Text.assemble(f"{KIND_LABELS[k]} ", (str(n), f"bold {KIND_STYLES.get(k, 'green')}")) for k, n in counts.items()]
        return text.append_text(Text(" · ").join(parts))

    def _diff_summary(self, listed: int) -> Text:
        a, b, diff = self._file_name(self._value("#file")), self._file_name(self._value("#against")), self.diff
        net = diff.gained - diff.lost
        return Text.assemble(
            f"{a} → {b} · {diff.sentences} sentences, {len(diff.differing)} differ · listed {_listed(listed)}\n",
            "entities ", ("lost " + str(diff.lost), "bold red"), " · ", ("gained " + str(diff.gained), "bold green"), f" (net {net:+d})",
        )

    def _file_name(self, path: str | None) -> str:
        return next((f.name for f in self.files if f.path == path), "")

    def _summary(self, text: Text) -> None:
        self.query_one("#summary", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value in self.rows:
            self._detail(self.rows[event.row_key.value])

    def _detail(self, row) -> None:
        detail = self.query_one("#detail", Static)
        if row is None:
            detail.update(Text("no sentence matches the filters", style="dim"))
        elif self.diff:
            detail.update(self._diff_detail(row))
        else:
            detail.update(self._error_detail(row))

    def _error_detail(self, sentence) -> Table:
        grid = _grid(Text.assemble((f"line {sentence.index + 1}", "bold"), " · ", self._marks(sentence)))
        wrong = sentence.errors
        focus = [s for o in wrong for s in (o.gold, o.pred) if s is not None]
        window = _window(sentence.text, focus, [*sentence.gold, *sentence.pred])
        grid.add_row("gold", _excerpt(sentence.text, sentence.gold, focus, window))
        grid.add_row("pred", _excerpt(sentence.text, sentence.pred, focus, window))
        for o in wrong:
            grid.add_row(Text(KIND_LABELS[o.kind], style=KIND_STYLES[o.kind]), _describe(o))
        return grid

    def _diff_detail(self, row) -> Table:
        a, b = self._file_name(self._value("#file")), self._file_name(self._value("#against"))
        grid = _grid(Text.assemble((f"line {row.index + 1}", "bold"), " · ", self._marks(row)))
        changed = sorted(set(row.pred_a) ^ set(row.pred_b), key=lambda s: (s.start, s.end))
        window = _window(row.text, changed, [*row.gold, *row.pred_a, *row.pred_b])
        grid.add_row("gold", _excerpt(row.text, row.gold, [], window))
        grid.add_row(a, _excerpt(row.text, row.pred_a, changed, window))
        grid.add_row(b, _excerpt(row.text, row.pred_b, changed, window))
        for s in changed:
            if s in row.lost:
                name, note = "lost", f"right in {a}, not in {b}"
            elif s in row.gained:
                name, note = "gained", f"right in {b}, not in {a}"
            else:  # a wrong prediction that one of them makes and the other does not
                name, note = ("dropped", f"predicted by {a} only") if s in row.pred_a else ("added", f"predicted by {b} only")
            grid.add_row(Text(name, style=CHANGE_STYLES[name]), Text.assemble(_entity(s), (f"  {note}", "dim")))
        return grid


def _listed(n: int) -> str:
    return f"{MAX_ROWS} of {n}" if n > MAX_ROWS else str(n)


def _grid(title: Text) -> Table:
    """Label | text rows; a long sentence wraps inside its column, under itself."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_row("", title)
    return grid


def _window(text: str, focus, entities) -> tuple[int, int]:
    """The part of a long sentence worth showing: CONTEXT characters either side of the
    errors (or changes), widened so that no entity is cut. The same for every line shown,
    so gold and predictions stay aligned."""
    if not focus:
        return 0, len(text)
    start = max(0, min(s.start for s in focus) - CONTEXT)
    end = min(len(text), max(s.end for s in focus) + CONTEXT)
    cut = True
    while cut:  # widening to one entity can cut an overlapping one (gold against predicted)
        cut = False
        for s in entities:
            if s.start < start < s.end or s.start < end < s.end:
                start, end, cut = min(start, s.start), max(end, s.end), True
    return start, end


def _excerpt(text: str, spans, focus, window: tuple[int, int]) -> Text:
    """Entities in their type's colour, the ones in an error (or a change) underlined too,
    cut to ``window`` (… where cut)."""
    styled = highlighted(text, spans)
    for s in focus:
        styled.stylize("underline", s.start, s.end)
    start, end = window
    shown = Text.assemble("…" if start > 0 else "", styled[start:end], "…" if end < len(text) else "")
    shown.overflow = "fold"  # Chinese has no spaces to wrap at: fold, never cut
    return shown


def _entity(span) -> Text:
    return Text.assemble((f" {span.type} ", style_for(span.type)), f" {span.text} ", (f"{span.start}–{span.end}", "dim"))


def _describe(outcome) -> Text:
    if outcome.gold is None or outcome.pred is None:
        return _entity(outcome.gold or outcome.pred)
    return Text.assemble(_entity(outcome.gold), " → ", _entity(outcome.pred))
