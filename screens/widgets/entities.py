"""Entity colours, the legend, and text with its entities highlighted inline."""

from __future__ import annotations

from typing import Iterable

from rich.text import Text

# The same colours as `ner-workbench tag` prints.
ENTITY_STYLES = {"PER": "bold black on #f4a261", "LOC": "bold black on #8ecae6", "ORG": "bold black on #b5e48c"}
OTHER_STYLE = "bold black on #e0e0e0"


def style_for(entity_type: str) -> str:
    return ENTITY_STYLES.get(entity_type, OTHER_STYLE)


def legend() -> Text:
    text = Text("entities: ")
    for name in ENTITY_STYLES:
        text.append(f" {name} ", style=style_for(name))
        text.append(" ")
    return text


def highlighted(text: str, spans: Iterable) -> Text:
    """``text`` with each span (anything with type/start/end) styled by its type."""
    styled = Text(text, no_wrap=False)
    for span in spans:
        styled.stylize(style_for(span.type), span.start, span.end)
    return styled
