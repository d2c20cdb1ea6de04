"""Highlighter: type or paste text, see its entities inline and in a table as you type.

The model loads in a worker thread; each edit re-tags (debounced) in another, and
only the sentences that changed go through the model, so input never waits.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, RadioButton, RadioSet, Select, Static, TextArea
from textual.worker import get_current_worker

from workbench.highlight import percentile

from .widgets.entities import highlighted, legend, style_for

TAG_DELAY_S = 0.12  # debounce: a burst of keystrokes costs one tagging pass
MAX_TABLE_ROWS = 1000


class HighlighterScreen(Screen):
    DEFAULT_CSS = """
    HighlighterScreen #controls { height: auto; }
    HighlighterScreen #model { width: 1fr; }
    /* four engines a row: on one line the row clipped (at 120 columns tvm-int8 read
       "tvm-i", at 80 no TVM engine showed) */
    HighlighterScreen #engines { width: 1fr; height: auto; layout: grid; grid-size: 4; grid-columns: 1fr; grid-rows: 1; }
    HighlighterScreen #engines RadioButton { width: 1fr; height: 1; }
    HighlighterScreen #input { height: 5; }
    HighlighterScreen #rendered-box { height: 1fr; border: round $panel; }
    HighlighterScreen #status { height: auto; padding: 0 1; }
    HighlighterScreen #entities { height: 1fr; }
    """
    BINDINGS = [Binding("ctrl+l", "clear", "Clear text", priority=True)]

    def __init__(self) -> None:
        super().__init__()
        self.tagger = None
        self.model_label = ""
        self.result = None  # the last TagResult shown
        self.highlighted_text: Text | None = None
        self.run_ids: list[str] = []  # the runs offered in the model picker
        self._model_key: tuple[str, str] | None = None  # (run, engine) loaded or loading
        self._timer = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="controls"):
            yield Select([], prompt="model (run)", id="model")
            with RadioSet(id="engines"):
                for e in self.app.backend.engines():
                    label = e.name if e.available else f"{e.name} (n/a)"
                    yield RadioButton(label, value=e.name == "torch", disabled=not e.available, name=e.name)
        yield Static(legend(), id="legend")
        yield TextArea(id="input", soft_wrap=True)
        with Vertical():
            with VerticalScroll(id="rendered-box"):
                yield Static("", id="rendered")
            yield Static("pick a model", id="status")
            yield DataTable(id="entities", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#entities", DataTable)
        for title in ("type", "text", "span", "confidence"):
            table.add_column(title)
        self._load_runs()
        self.query_one("#input", TextArea).focus()

    def on_screen_resume(self) -> None:
        self._load_runs()

    def use_selected_run(self) -> None:
        if self.is_mounted:  # else on_mount loads the runs (and picks app.selected_run) itself
            self._load_runs()

    # -- model -------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="runs")
    def _load_runs(self) -> None:
        try:
            runs = self.app.backend.runs()
        except Exception as err:  # noqa: BLE001
            self.app.call_from_thread(self._status, f"cannot read the run store: {err}", "red")
            return
        self.app.call_from_thread(self._set_runs, runs)

    def _set_runs(self, runs: list) -> None:
        select = self.query_one("#model", Select)
        options = [(f"{r.id}" + ("" if r.has_model else " (no model)"), r.id) for r in runs]
        wanted = self.app.selected_run
        current = select.value
        select.set_options(options)
        ids = self.run_ids = [r.id for r in runs]
        choice = wanted if wanted in ids else (current if current in ids else next((r.id for r in runs if r.has_model), None))
        self.app.selected_run = None
        if choice is not None:
            select.value = choice  # fires Select.Changed, which loads the model
        elif not runs:
            self._status("no runs yet: train one (Runs screen: s starts the quickstart)", "yellow")

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "model" and event.value is not Select.NULL:
            self._open_model()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        self._open_model()

    def _engine(self) -> str:
        pressed = self.query_one("#engines", RadioSet).pressed_button
        return pressed.name if pressed is not None and pressed.name else "torch"

    def _open_model(self) -> None:
        run = self.query_one("#model", Select).value
        if run is Select.NULL or (str(run), self._engine()) == self._model_key:
            return  # e.g. the engine radio set announcing its initial choice
        self._model_key = (str(run), self._engine())
        self.tagger = None
        self._status(f"loading {run} ({self._engine()})…", "yellow")
        self._load_model(str(run), self._engine())

    @work(thread=True, exclusive=True, group="model")
    def _load_model(self, run: str, engine: str) -> None:
        try:
            tagger = self.app.backend.open_tagger(run, engine)
        except Exception as err:  # noqa: BLE001 - missing/incomplete model dir, no export, …
            self.app.call_from_thread(self._load_failed, run, engine, err)
            return
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._model_ready, tagger, f"{run} · {engine}")

    def _load_failed(self, run: str, engine: str, err: Exception) -> None:
        if self._model_key != (run, engine):
            return  # superseded by another choice
        self._model_key = None  # picking it again retries
        self._status(f"cannot open {run} with {engine}: {err}", "red")

    def _model_ready(self, tagger, label: str) -> None:
        self.tagger = tagger
        self.model_label = label
        self._status(f"model {label} ready", "green")
        self._tag_now()

    # -- tagging -----------------------------------------------------------------
    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(TAG_DELAY_S, self._tag_now)

    def _tag_now(self) -> None:
        text = self.query_one("#input", TextArea).text
        if self.tagger is None:
            return
        self._tag(self.tagger, text)

    @work(thread=True, exclusive=True, group="tag")
    def _tag(self, tagger, text: str) -> None:
        worker = get_current_worker()
        try:
            result = tagger.tag_text(text, cancelled=lambda: worker.is_cancelled)
        except Exception as err:  # noqa: BLE001 - the app stays up whatever the text
            self.app.call_from_thread(self._status, f"tagging failed: {err}", "red")
            return
        if not result.cancelled and not worker.is_cancelled:
            self.app.call_from_thread(self._show, text, result)

    def _show(self, text: str, result) -> None:
        self.result = result
        self.highlighted_text = highlighted(text, result.entities)
        self.query_one("#rendered", Static).update(self.highlighted_text)
        table = self.query_one("#entities", DataTable)
        table.clear()
        for e in result.entities[:MAX_TABLE_ROWS]:
            table.add_row(Text(e.type, style=style_for(e.type)), e.text, f"{e.start}–{e.end}", f"{e.confidence:.3f}")
        self._status(self._summary(result), "")

    def _summary(self, result) -> str:
        if not result.sentences:
            return f"{self.model_label} ready · type or paste text"
        parts = [self.model_label, f"{result.sentences} sentence{'s' if result.sentences != 1 else ''}", f"{len(result.entities)} entities"]
        if result.latencies_ms:
            p50 = percentile(result.latencies_ms, 50)
            parts.append(f"{p50:.1f} ms/sentence (p50 of {len(result.latencies_ms)} tagged, max {max(result.latencies_ms):.1f})")
        elif result.sentences:
            parts.append("cached")
        if len(result.entities) > MAX_TABLE_ROWS:
            parts.append(f"table shows the first {MAX_TABLE_ROWS}")
        return " · ".join(parts)

    def _status(self, message: str, style: str) -> None:
        self.query_one("#status", Static).update(Text(message, style=style))

    def action_clear(self) -> None:
        self.query_one("#input", TextArea).clear()
