"""Help: the key bindings of every screen."""

from __future__ import annotations

from rich import box
from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = [
    ("F2 … F7", "everywhere", "Runs · Config · Jobs · Highlighter (Tag) · Compare · Devices"),
    ("F1", "everywhere", "this help (again, or escape: close)"),
    ("ctrl+p", "everywhere", "command palette: screens, quickstart, exports"),
    ("ctrl+q", "everywhere", "quit (jobs keep running; they show again next time)"),
    ("enter", "Runs", "open the run: config, stages, artifacts"),
    ("s", "Runs", "start the quickstart as a job"),
    ("d", "Runs", "delete the run (directory and history) after a y/n confirmation"),
    ("t", "Runs, run", "tag with this run's model in the highlighter"),
    ("e / v / r", "run", "launch an export / eval / report job for this run"),
    ("x", "run", "error browser: this run's eval errors by kind and type, two engines side by side"),
    ("escape", "run, dialogs", "back"),
    ("ctrl+s", "Config", "save (refused while invalid; written atomically)"),
    ("ctrl+n", "Config", "new config from a template"),
    ("ctrl+g", "Config", "move the cursor to the error's line"),
    ("l", "Jobs", "launch the chosen stage on the chosen config / run"),
    ("enter", "Jobs", "follow the highlighted job"),
    ("x", "Jobs", "cancel the followed job"),
    ("o", "Jobs", "show the job's raw output.log"),
    ("ctrl+l", "Highlighter", "clear the text"),
    ("s", "Compare", "sort by the cursor's column (again: reverse), or click a header"),
    ("m / c", "Compare", "export the table as Markdown / CSV into the runs directory"),
    ("r", "Runs, Compare", "reload"),
    ("enter / r", "Devices", "ask the RPC tracker (HOST:PORT) for its devices per key"),
]
NOTE = (
    "Every action runs as its own job (a subprocess): a crash or cancel never takes the app down. "
    "An engine that needs a missing artifact (the export or compile stage) is listed with what it needs."
)


def keys_table() -> Table:
    table = Table(title="ner-workbench — keys", box=box.SIMPLE_HEAD, expand=True, title_style="bold")
    table.add_column("keys", style="bold yellow", no_wrap=True)
    table.add_column("where", style="cyan", no_wrap=True)
    table.add_column("what")
    for row in KEYS:
        table.add_row(*row)
    return table


class HelpScreen(ModalScreen):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen VerticalScroll { width: 96; max-height: 90%; height: auto; border: round $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(keys_table())
            yield Static(NOTE, classes="muted")
