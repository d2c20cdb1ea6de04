"""Rich rendering of pipeline events for the CLI (the TUI renders the same events)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pipelines.events import Event

from .progress import EXTRAS, format_extra


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
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("[dim]{task.fields[extra]}"),
            console=self.console,
            transient=False,
            disable=quiet,
        )
        self.tasks: dict[str, int] = {}
        self.progress.start()

    def __call__(self, event: Event) -> None:
        stage = event.stage or "-"
        if event.kind == "progress":
            task = self.tasks.get(stage)
            extra = "  ".join(f"{k} {format_extra(event.data[k])}" for k in EXTRAS if event.data and k in event.data)
            if task is None:
                task = self.tasks[stage] = self.progress.add_task(
                    "", total=event.total, stage=stage, unit=event.unit or "", extra=extra
                )
            self.progress.update(task, completed=event.n, total=event.total, unit=event.unit or "", extra=extra)
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
