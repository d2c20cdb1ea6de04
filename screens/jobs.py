"""Jobs: launch a stage as a subprocess, follow its progress and log, cancel it.

Jobs are directories under <runs_dir>/jobs, so they (and their logs) outlive the
app; the files are read in a worker thread, never in the UI thread.
"""

from __future__ import annotations

import os
import threading

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, OptionList, RichLog, Select, Static
from textual.widgets.option_list import Option

from workbench.progress import JobWatch

from .widgets.job_progress import STATE_STYLES, JobProgress
from .widgets.plots import CurveCharts

# Below this width of the job's column, or this height of the screen, the curves hide:
# the log needs the room more than a chart too small to read. Above it, the loss and the
# dev F1 sit side by side, so that the log keeps its height.
CURVES_MIN_WIDTH, CURVES_MIN_HEIGHT = 56, 30


class JobsScreen(Screen):
    DEFAULT_CSS = """
    JobsScreen #side { width: 56; }
    JobsScreen #actions { height: auto; max-height: 14; }
    JobsScreen #target, JobsScreen #engine { margin: 0; }
    JobsScreen #launch { margin: 0 1; }
    JobsScreen #jobs { height: 1fr; }
    JobsScreen #log { height: 1fr; border: round $panel; }
    JobsScreen #buttons { height: auto; }
    JobsScreen #curves { display: none; padding: 0 1; }
    JobsScreen #curves Chart { height: 12; }
    JobsScreen #curves-note { display: none; padding: 0 1; }
    """
    BINDINGS = [
        Binding("l", "launch", "Launch"),
        Binding("x", "cancel_job", "Cancel job"),
        Binding("o", "output_log", "output.log"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.watch: JobWatch | None = None
        self.action_name = "run"
        self._poll_lock = threading.Lock()

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="side"):
                yield Static("Launch", classes="section")
                yield OptionList(id="actions")
                yield Select([], prompt="config or run", id="target")
                engines = [(f"engine: {e.name}", e.name) for e in self.app.backend.engines() if e.available]
                yield Select(engines, id="engine", allow_blank=False)
                yield Button("Launch", id="launch", variant="primary")
                yield Static("Jobs", classes="section")
                yield DataTable(id="jobs", cursor_type="row")
            with Vertical():
                yield JobProgress(id="progress")
                yield CurveCharts(id="curves", min_width=CURVES_MIN_WIDTH // 2)
                yield Static("curves: enlarge window", id="curves-note", classes="muted")
                yield RichLog(id="log", wrap=True, markup=False, highlight=False, max_lines=5000)
                with Horizontal(id="buttons"):
                    yield Button("Cancel job", id="cancel", variant="error")
        yield Footer()

    def on_mount(self) -> None:
        actions = self.query_one("#actions", OptionList)
        for a in self.app.backend.actions():
            actions.add_option(Option(a.title if a.available else f"{a.name} — {a.note}", id=a.name, disabled=not a.available))
        actions.highlighted = 0
        table = self.query_one("#jobs", DataTable)
        table.add_column("job", key="job")
        table.add_column("status", key="status")
        table.add_column("what", key="what")
        self._load_targets()
        self.show_selected()
        self.set_interval(self.app.poll_interval, self._tick)

    def _tick(self) -> None:
        if self.is_current:  # no polling while another screen is showing
            self.poll()

    def on_screen_resume(self) -> None:
        self._load_targets()
        self.show_selected()

    # -- launching ---------------------------------------------------------------
    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.action_name = event.option.id
        self._load_targets()

    @work(thread=True, exclusive=True, group="targets")
    def _load_targets(self) -> None:
        backend = self.app.backend
        action = next((a for a in backend.actions() if a.name == self.action_name), None)
        try:
            if action is not None and action.needs == "run":
                options = [(f"{r.id} ({r.status})", r.id) for r in backend.runs()]
            else:
                options = [(os.path.basename(p), p) for p in backend.config_files()]
        except Exception as err:  # noqa: BLE001
            self.app.call_from_thread(self.notify, f"cannot list targets: {err}", severity="error")
            return
        self.app.call_from_thread(self._set_targets, options, action is not None and action.name == "eval")

    def _set_targets(self, options: list, wants_engine: bool) -> None:
        target = self.query_one("#target", Select)
        keep = target.value
        target.set_options(options)
        if any(value == keep for _, value in options):
            target.value = keep
        elif options:
            target.value = options[0][1]
        self.query_one("#engine", Select).display = wants_engine

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "launch":
            self.action_launch()
        elif event.button.id == "cancel":
            self.action_cancel_job()

    def action_launch(self) -> None:
        backend = self.app.backend
        target = self.query_one("#target", Select).value
        if target is Select.NULL:
            self.notify("pick a config or a run to launch on", severity="warning")
            return
        engine = self.query_one("#engine", Select).value
        try:
            argv = backend.job_argv(self.action_name, str(target), str(engine) if engine is not Select.NULL else "torch")
            title = f"{self.action_name} {os.path.basename(str(target))}"
            job = backend.start_job(argv, title)
        except Exception as err:  # noqa: BLE001 - e.g. an action that isn't built
            self.notify(f"not launched: {err}", severity="error")
            return
        self.notify(f"started job {job.id}")
        self.app.selected_job = job.id
        self.show_selected()

    # -- following ---------------------------------------------------------------
    def show_selected(self) -> None:
        """Follow the job the app asked for (else keep the current one, else the newest)."""
        if not self.is_mounted:
            return
        wanted = self.app.selected_job
        if wanted and (self.watch is None or self.watch.job.id != wanted):
            self._follow(wanted)
        self.poll()

    def _follow(self, job_id: str) -> None:
        self.watch = JobWatch(self.app.backend.job(job_id))
        self.app.selected_job = job_id
        self.query_one("#log", RichLog).clear()
        self._show_curves([])

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        job_id = event.row_key.value
        if job_id and (self.watch is None or self.watch.job.id != job_id):
            self._follow(job_id)
            self.poll()

    @work(thread=True, group="poll")
    def poll(self) -> None:
        if not self._poll_lock.acquire(blocking=False):
            return  # the previous poll is still reading
        try:
            jobs = [(j.id, j.state().status, j.spec.get("title", " ".join(j.argv))) for j in self.app.backend.jobs()]
            watch = self.watch
            update = watch.poll() if watch is not None else None
        except Exception as err:  # noqa: BLE001 - a torn job directory must not stop following
            self.app.call_from_thread(self.notify, f"cannot read jobs: {err}", severity="error")
            return
        finally:
            self._poll_lock.release()
        self.app.call_from_thread(self._show_update, jobs, watch, update)

    def _show_update(self, jobs: list, watch: JobWatch | None, update) -> None:
        table = self.query_one("#jobs", DataTable)
        current = [table.get_row_at(i)[0] for i in range(table.row_count)]
        if [j[0] for j in jobs] != current:
            table.clear()
            for job_id, status, title in jobs:
                table.add_row(job_id, Text(status, style=STATE_STYLES.get(status, "")), title, key=job_id)
        else:
            for job_id, status, _ in jobs:
                table.update_cell(job_id, "status", Text(status, style=STATE_STYLES.get(status, "")))
        if watch is None and jobs:
            self._follow(jobs[0][0])  # nothing chosen yet: the newest job
            return
        if watch is None or update is None or watch is not self.watch:
            return
        if watch.job.id in {j[0] for j in jobs}:
            row = table.get_row_index(watch.job.id)
            if table.cursor_row != row:
                table.move_cursor(row=row)
        log = self.query_one("#log", RichLog)
        for line in update.lines:
            log.write(Text(line, style="red" if line.startswith("✘") else ""))
        if update.log_tail:
            log.write(Text("── output.log (last lines) ──", style="bold red"))
            log.write(Text(update.log_tail, style="red"))
        if update.curves is not None:
            self._show_curves(update.curves)
        title = watch.job.spec.get("title") or " ".join(watch.job.argv)
        self.query_one(JobProgress).show(f"{watch.job.id} · {title}", update.status, update.message, update.elapsed_s, watch.tracker)
        self.query_one("#cancel", Button).disabled = update.status != "running"

    # -- curves ------------------------------------------------------------------
    def _show_curves(self, series: list) -> None:
        self.query_one("#curves", CurveCharts).show(series)
        self._place_curves()

    def on_resize(self) -> None:
        self._place_curves()

    def _place_curves(self) -> None:
        """Curves where the job has some and they fit, else a line saying they are hidden."""
        curves = self.query_one("#curves", CurveCharts)
        column = self.size.width - self.query_one("#side").outer_size.width
        fits = column >= CURVES_MIN_WIDTH and self.size.height >= CURVES_MIN_HEIGHT
        curves.display = fits and bool(curves.charts())
        self.query_one("#curves-note", Static).display = not fits and bool(curves.charts())

    def action_cancel_job(self) -> None:
        if self.watch is None:
            return
        try:
            self.watch.job.cancel()
        except Exception as err:  # noqa: BLE001
            self.notify(f"cannot cancel: {err}", severity="error")
            return
        self.notify(f"cancelling job {self.watch.job.id}")

    def action_output_log(self) -> None:
        """The command's raw stdout/stderr (last 200 lines) into the log pane."""
        if self.watch is not None:
            log = self.query_one("#log", RichLog)
            log.write(Text(f"── {self.watch.job.log_path} ──", style="bold"))
            log.write(self.watch.job.log_tail(200) or "(empty)")
