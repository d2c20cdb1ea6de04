"""Devices: a TVM RPC tracker's devices per key (as ``ner-workbench devices --rpc``).

The tracker is asked in a worker thread, never in the UI thread: one that cannot be
reached takes up to the connect timeout (about 5 s) and shows as one line.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Static
from textual.worker import get_current_worker

PLACEHOLDER = "127.0.0.1:9190"
HOW_TO = (
    "type a TVM RPC tracker's HOST:PORT, then enter or r (a tracker: python -m tvm.exec.rpc_tracker; "
    "a device: python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY)"
)


class DevicesScreen(Screen):
    DEFAULT_CSS = """
    DevicesScreen #bar { height: auto; }
    DevicesScreen #address { width: 1fr; }
    DevicesScreen #refresh { margin: 0 1; }
    DevicesScreen #devices { height: 1fr; }
    DevicesScreen #devices-status { height: auto; padding: 0 1; }
    """
    BINDINGS = [Binding("r", "refresh", "Refresh")]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="bar"):
            yield Input(self.app.backend.default_tracker(), placeholder=PLACEHOLDER, id="address")
            yield Button("Refresh", id="refresh", variant="primary")
        yield DataTable(id="devices", cursor_type="row", zebra_stripes=True)
        yield Static(HOW_TO, id="devices-status", classes="muted", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#devices", DataTable)
        for title, key in (("key", "key"), ("devices", "total"), ("free", "free"), ("requests waiting", "pending")):
            table.add_column(title, key=key)
        if self.query_one("#address", Input).value:
            table.focus()
            self.action_refresh()
        else:
            self.query_one("#address", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "refresh":
            self.action_refresh()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "address":
            self.action_refresh()

    def action_refresh(self) -> None:
        address = self.query_one("#address", Input).value.strip()
        if not address:
            self._status(HOW_TO, "muted")
            return
        self._status(f"asking {address} …", "muted")
        self._ask(address)

    @work(thread=True, exclusive=True, group="devices")
    def _ask(self, address: str) -> None:
        try:
            devices, error = self.app.backend.tracker_devices(address), None
        except Exception as err:  # noqa: BLE001 - unreachable, malformed, not a tracker: one line, never fatal
            devices, error = None, (str(err).strip().splitlines() or [type(err).__name__])[0]
        if get_current_worker().is_cancelled:
            return  # a newer refresh asks again
        self.app.call_from_thread(self._show, address, devices, error)

    def _show(self, address: str, devices: list[dict] | None, error: str | None) -> None:
        table = self.query_one("#devices", DataTable)
        table.clear()
        if error is not None:
            self._status(error, "error")
            return
        for d in devices:
            free = Text(str(d["free"]), style="green" if d["free"] else "")
            table.add_row(d["key"], str(d["total"]), free, str(d["pending"]), key=d["key"])
        at = time.strftime("%H:%M:%S")
        if devices:
            total, free = sum(d["total"] for d in devices), sum(d["free"] for d in devices)
            self._status(f"RPC tracker {address}: {len(devices)} key(s), {total} device(s), {free} free · {at}", "ok")
        else:
            self._status(f"RPC tracker {address}: no devices · {at}", "muted")

    def _status(self, message: str, kind: str) -> None:
        status = self.query_one("#devices-status", Static)
        status.update(message)
        status.set_classes(kind)
