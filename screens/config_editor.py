"""Config editor: YAML with syntax highlighting, checked as you type and on save.

Errors show under the editor as the CLI prints them (key path, allowed values) with
their line; saving an invalid config is refused, and a save is atomic.
"""

from __future__ import annotations

import os

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from workbench.backend import display_path

from .widgets.name_prompt import NamePrompt

CHECK_DELAY_S = 0.3


def yaml_editor(text: str = "") -> TextArea:
    """A YAML code editor; plain text if the tree-sitter grammar isn't installed."""
    try:
        return TextArea.code_editor(text, language="yaml", id="editor")
    except Exception:  # noqa: BLE001 - LanguageDoesNotExist without textual[syntax]
        return TextArea.code_editor(text, id="editor")


class ConfigEditorScreen(Screen):
    DEFAULT_CSS = """
    ConfigEditorScreen #side { width: 34; }
    ConfigEditorScreen #side OptionList { height: auto; max-height: 14; }
    ConfigEditorScreen #path { padding: 0 1; background: $panel; }
    ConfigEditorScreen #editor { height: 1fr; }
    ConfigEditorScreen #problem { height: auto; min-height: 1; padding: 0 1; }
    """
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+n", "new", "New from template", priority=True),
        Binding("ctrl+g", "goto_error", "Go to error"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.path: str | None = None
        self.saved_text = ""
        self.problem = None
        self._check_timer = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="side"):
                yield Static("Configs", classes="section")
                yield OptionList(id="files")
                yield Static("New from template", classes="section")
                yield OptionList(id="templates")
            with Vertical():
                yield Static("no file open", id="path")
                yield yaml_editor()
                yield Static("", id="problem")
        yield Footer()

    def on_mount(self) -> None:
        templates = self.query_one("#templates", OptionList)
        for t in self.app.backend.templates():
            label = t.title if t.available else f"{t.title} — {t.note or 'missing'}"
            templates.add_option(Option(label, id=t.name, disabled=not t.available))
        self.reload_files()
        self.query_one("#editor", TextArea).focus()

    def reload_files(self, select: str | None = None) -> None:
        files = self.query_one("#files", OptionList)
        files.clear_options()
        paths = self.app.backend.config_files()
        for path in paths:
            files.add_option(Option(os.path.basename(path), id=path))
        target = select or (self.path if self.path in paths else (paths[0] if paths else None))
        if target:
            files.highlighted = paths.index(target)
            if target != self.path:
                self.open(target)

    def open(self, path: str) -> None:
        self.path = path
        self.saved_text = self.app.backend.read_config(path)
        self.query_one("#editor", TextArea).load_text(self.saved_text)
        self._update_path()
        self.check_now()

    def _update_path(self) -> None:
        editor = self.query_one("#editor", TextArea)
        modified = self.path is not None and editor.text != self.saved_text
        label = Text(display_path(self.path) if self.path else "no file open")
        if modified:
            label.append("  ● modified", style="yellow")
        self.query_one("#path", Static).update(label)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id == "files":
            self.open(event.option.id)
        elif event.option_list.id == "templates":
            template = next(t for t in self.app.backend.templates() if t.name == event.option.id)
            self.app.push_screen(
                NamePrompt(f"New config from {template.title}", "my-config", "saved under the configs directory as NAME.yaml"),
                lambda name: self._create(template, name),
            )

    def _create(self, template, name: str | None) -> None:
        if not name:
            return
        try:
            path = self.app.backend.new_config(template, name)
        except Exception as err:  # noqa: BLE001 - bad name, file exists, template missing
            self.notify(str(err), severity="error")
            return
        self.notify(f"created {display_path(path)}")
        self.reload_files(select=path)
        self.open(path)

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        self._update_path()
        if self._check_timer is not None:
            self._check_timer.stop()
        self._check_timer = self.set_timer(CHECK_DELAY_S, self.check_now)

    def check_now(self) -> None:
        if self.path is not None:
            self._check(self.query_one("#editor", TextArea).text, os.path.basename(self.path))

    @work(thread=True, exclusive=True, group="check")
    def _check(self, text: str, source: str) -> None:
        try:
            problem = self.app.backend.check_config(text, source)
        except Exception as err:  # noqa: BLE001 - the checker itself must never take the app down
            self.app.call_from_thread(self._show_problem, None, f"checker error: {err}")
            return
        self.app.call_from_thread(self._show_problem, problem)

    def _show_problem(self, problem, note: str = "") -> None:
        self.problem = problem
        out = self.query_one("#problem", Static)
        if note:
            out.update(Text(note, style="red"))
        elif problem is None:
            out.update(Text("✔ valid config", style="green"))
        else:
            out.update(Text("✘ " + problem.summary + ("  (ctrl+g: go to line)" if problem.line else ""), style="bold red"))

    def action_save(self) -> None:
        if self.path is None:
            self.notify("no file open", severity="warning")
            return
        text = self.query_one("#editor", TextArea).text
        try:
            problem = self.app.backend.save_config(self.path, text)
        except OSError as err:
            self.notify(f"not saved: {err}", severity="error")
            return
        self._show_problem(problem)
        if problem is not None:
            self.notify(f"not saved: {problem.message}", severity="error", timeout=6)
            return
        self.saved_text = text
        self._update_path()
        self.notify(f"saved {os.path.basename(self.path)}")

    def action_new(self) -> None:
        self.query_one("#templates", OptionList).focus()

    def action_goto_error(self) -> None:
        if self.problem is not None and self.problem.line:
            editor = self.query_one("#editor", TextArea)
            editor.move_cursor((self.problem.line - 1, 0))
            editor.focus()
