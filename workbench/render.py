"""Rich rendering of pipeline events for the CLI (the TUI renders the same events)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipelines.events import Event

from .progress import ProgressTracker, format_duration


class RichRenderer:
    """An event sink: one progress bar per stage, logs and metrics printed above it."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold cyan]{task.fields[stage]:<7}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TextColumn("eta {task.fields[eta]}"),
            TextColumn("[dim]{task.fields[extra]}"),
            console=self.console,
            transient=False,
            disable=quiet,
        )
        self.tasks: dict[str, int] = {}
        self.tracker = ProgressTracker()  # the TUI's ETA and extras, so both show the same
        self.progress.start()

    def __call__(self, event: Event) -> None:
        stage = event.stage or "-"
        self.tracker.feed([event])
        if event.kind == "progress":
            task = self.tasks.get(stage)
            fields = {"unit": event.unit or "", "extra": self.tracker.current.extras(), "eta": format_duration(self.tracker.current.eta_s)}
            if task is None:
                task = self.tasks[stage] = self.progress.add_task("", total=event.total, stage=stage, **fields)
            self.progress.update(task, completed=event.n, total=event.total, **fields)
        elif event.kind == "log" and not self.quiet:
            style = {"warning": "yellow", "error": "red"}.get(event.level or "", "")
            self.progress.console.print(f"[dim]{stage}[/] {escape(event.message or '')}", style=style, markup=True, highlight=False)
        elif event.kind == "metric" and not self.quiet and isinstance(event.value, float):
            self.progress.console.print(f"[dim]{stage} {event.name} = {event.value:.4f}[/]")
        elif event.kind == "started" and not self.quiet:
            self.progress.console.print(f"[bold]▶ {stage}[/] {escape(event.message or '')}")
        elif event.kind == "finished" and not self.quiet:
            self.progress.console.print(f"[green]✔ {stage}[/] {escape(event.message or '')}")
        elif event.kind == "failed":
            self.progress.console.print(f"[red]✘ {stage}: {escape(event.message or '')}[/]")

    def close(self) -> None:
        self.progress.stop()
