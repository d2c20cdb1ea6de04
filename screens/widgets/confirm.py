"""A small modal that asks yes or no before something that cannot be undone."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label


class ConfirmPrompt(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmPrompt { align: center middle; }
    ConfirmPrompt > Vertical { width: 72; height: auto; border: round $error; padding: 1 2; background: $surface; }
    ConfirmPrompt Label { width: 100%; }
    ConfirmPrompt #hint { color: $text-muted; margin-top: 1; }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, id="question")
            if self.detail:
                yield Label(self.detail, id="detail")
            yield Label("y: yes · n or escape: no", id="hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
