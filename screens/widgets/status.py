"""Colours for run and stage statuses, shared by the run screens."""

from __future__ import annotations

from rich.text import Text

STATUS_STYLES = {"done": "green", "failed": "red", "interrupted": "yellow", "running": "cyan", "created": "dim"}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))
