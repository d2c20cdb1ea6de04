"""The report's two formats: Markdown tables, and the Markdown rendered to one HTML page
(markdown-it-py, already installed as rich's dependency) with its figures embedded as
data URIs, so the page needs no file beside it."""

from __future__ import annotations

import base64
import html
import os


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def _cell(value) -> str:
    return str(value).replace("|", "\\|")  # a pipe would split the cell


CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; }
img { max-width: 100%; display: block; margin: .5em 0 1.5em; }
"""


def to_html(markdown: str, figures: dict[str, bytes], title: str) -> str:
    """The Markdown report as one HTML page, its figures embedded as data URIs."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    for token in tokens:
        for child in token.children or []:
            name = os.path.basename(str(child.attrGet("src") or "")) if child.type == "image" else None
            if name in figures:
                child.attrSet("src", "data:image/png;base64," + base64.b64encode(figures[name]).decode("ascii"))
    body = md.renderer.render(tokens, md.options, {})
    head = f'<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>{CSS}</style>'
    return f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n{head}\n</head>\n<body>\n{body}</body>\n</html>\n"
