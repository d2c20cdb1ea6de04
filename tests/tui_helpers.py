"""Helpers for driving the Textual app in tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import time

from conftest import REPO


async def wait_until(pilot, predicate, timeout: float = 30.0, what: str = "condition", shown=None) -> None:
    """Let the app (and its worker threads) run until ``predicate()`` holds.
    ``shown()``: what the app shows instead, for the failure message."""
    deadline = time.monotonic() + timeout
    while not _holds(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"; the app shows: {shown()}" if shown else ""))
        await pilot.pause(0.05)
        await asyncio.sleep(0)


def _holds(predicate) -> bool:
    from textual.css.query import NoMatches

    try:
        return bool(predicate())
    except NoMatches:  # the screen is still being composed
        return False


def copy_configs(dest) -> str:
    """The repo's configs in a scratch directory, so tests never edit the real ones."""
    os.makedirs(dest, exist_ok=True)
    for name in ("quickstart.yaml", "peoples_daily_bert_base.yaml"):
        shutil.copy(os.path.join(REPO, "configs", name), os.path.join(dest, name))
    return str(dest)


def static_text(widget) -> str:
    """The plain text a Static shows."""
    content = widget.content
    return content.plain if hasattr(content, "plain") else str(content)
