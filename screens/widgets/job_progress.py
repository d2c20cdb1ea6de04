"""A job's progress: status, elapsed time, a bar with ETA and the current unit."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static

from workbench.progress import ProgressTracker, format_duration

STATE_STYLES = {"running": "cyan", "done": "green", "failed": "red", "crashed": "red", "cancelled": "yellow"}


class JobProgress(Vertical):
    DEFAULT_CSS = """
    JobProgress { height: auto; padding: 0 1; }
    JobProgress #progress-bar { width: 1fr; display: none; }
    JobProgress #progress-bar Bar { width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Static("no job selected", id="title")
        yield Static("", id="state")
        yield ProgressBar(total=None, show_eta=False, id="progress-bar")
        yield Static("", id="unit")

    def show(self, title: str, status: str, message: str, elapsed_s: float | None, tracker: ProgressTracker) -> None:
        self.query_one("#title", Static).update(Text(title, style="bold"))
        state = Text()
        state.append(f"{status} ", style=STATE_STYLES.get(status, ""))
        state.append(f"· elapsed {format_duration(elapsed_s)}")
        if message and status != "running":
            state.append(f" · {message}", style=STATE_STYLES.get(status, ""))
        self.query_one("#state", Static).update(state)
        bar = self.query_one("#progress-bar", ProgressBar)
        bar.display = True  # hidden until there is a job: an idle indeterminate bar animates forever
        stage = tracker.current
        if status == "done":
            bar.update(total=1, progress=1)  # a finished job is 100 %, whatever its last event said
        elif stage is not None and stage.total:
            bar.update(total=stage.total, progress=stage.n)
        else:
            bar.update(total=None)
        self.query_one("#unit", Static).update(self._unit_line(stage, status))

    @staticmethod
    def _unit_line(stage, status: str) -> Text:
        if stage is None:
            return Text("waiting for the first event…" if status == "running" else "", style="dim")
        line = Text.assemble((f"{stage.stage:<7}", "bold cyan"), " ")
        if stage.total:
            line.append(f"{stage.n:g}/{stage.total:g} {stage.unit}")
        elif stage.unit:
            line.append(f"{stage.n:g} {stage.unit}")
        if status == "running":
            line.append(f"  eta {format_duration(stage.eta_s)}")
        extras = stage.extras()
        if extras:
            line.append(f"  {extras}", style="dim")
        return line
