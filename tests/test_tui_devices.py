"""Devices screen (F7): a real TVM RPC tracker with one device, one that nobody runs,
one that never answers, a malformed address, and the screen at 80x24."""

import asyncio
import socket
import time

import pytest
from textual.widgets import Button, DataTable, Input, Static

from workbench.app import WorkbenchApp
from workbench.backend import RPC_ENV

from conftest import free_port, rpc_tracker
from tui_helpers import copy_configs, static_text, wait_until

SIZE = (120, 40)
KEY = "tui"


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    """An RPC tracker with one device of key "tui"."""
    with rpc_tracker(tmp_path_factory.mktemp("rpc"), servers=1, key=KEY) as rpc:
        yield rpc


@pytest.fixture
def make_app(tmp_path, monkeypatch):
    monkeypatch.delenv(RPC_ENV, raising=False)
    return lambda: WorkbenchApp(runs_dir=str(tmp_path / "runs"), configs_dir=copy_configs(tmp_path / "configs"))


async def open_devices(pilot):
    await pilot.press("f7")
    await wait_until(pilot, lambda: pilot.app.current_mode == "devices" and pilot.app.screen.query_one("#devices"), what="devices screen")
    return pilot.app.screen


def status(screen) -> Static:
    return screen.query_one("#devices-status", Static)


def rows(screen) -> list[list[str]]:
    table = screen.query_one("#devices", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def wait_error(pilot, screen, timeout: float) -> str:
    await wait_until(pilot, lambda: status(screen).has_class("error"), timeout=timeout, what="an error line",
                     shown=lambda: static_text(status(screen)))
    return static_text(status(screen))


def test_lists_the_key_with_its_device(tracker, make_app):
    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_devices(pilot)
            address = screen.query_one("#address", Input)
            assert address.value == "" and address.placeholder == "127.0.0.1:9190" and app.focused is address
            assert [c.label.plain for c in screen.query_one("#devices", DataTable).columns.values()] == ["key", "devices", "free", "requests waiting"]
            await pilot.press(*tracker.tracker)
            assert address.value == tracker.tracker
            await pilot.press("tab")  # off the input: there r is a letter of the address
            assert app.focused is not address
            await pilot.press("r")
            await wait_until(pilot, lambda: rows(screen), timeout=10, what="the device listed", shown=lambda: static_text(status(screen)))
            assert rows(screen) == [[KEY, "1", "1", "0"]]
            line = static_text(status(screen))
            assert status(screen).has_class("ok") and f"RPC tracker {tracker.tracker}: 1 key(s), 1 device(s), 1 free" in line

    asyncio.run(scenario())


def test_a_tracker_nobody_runs_is_one_line_with_its_address(make_app):
    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_devices(pilot)
            address = f"127.0.0.1:{free_port()}"  # nothing listens there
            await pilot.press(*address)
            t0 = time.monotonic()
            assert await pilot.click("#refresh")
            line = await wait_error(pilot, screen, timeout=10)
            assert time.monotonic() - t0 < 8
            assert line == f"RPC tracker {address} unreachable (connection refused)"
            assert rows(screen) == []
            # Still at the keys: another screen and back, the address kept.
            await pilot.press("f2")
            await wait_until(pilot, lambda: app.current_mode == "runs", what="runs screen")
            await pilot.press("f7")
            await wait_until(pilot, lambda: app.current_mode == "devices", what="devices again")
            assert screen.query_one("#address", Input).value == address and status(screen).has_class("error")

    asyncio.run(scenario())


def test_a_tracker_that_never_answers_leaves_the_screen_at_the_keys(make_app):
    """The tracker's port takes the connection but says nothing: the question runs out
    its timeout (about 5 s) in a worker while the input still takes keys."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"

        async def scenario():
            app = make_app()
            async with app.run_test(size=SIZE) as pilot:
                screen = await open_devices(pilot)
                field = screen.query_one("#address", Input)
                await pilot.press(*address, "enter")
                await wait_until(pilot, lambda: "asking" in static_text(status(screen)), timeout=2, what="asking")
                t0 = time.monotonic()
                await pilot.press("end", "backspace", "x")  # typed while the worker waits
                await wait_until(pilot, lambda: field.value == address[:-1] + "x", timeout=1, what="keys taken")
                assert time.monotonic() - t0 < 1 and not status(screen).has_class("error")
                line = await wait_error(pilot, screen, timeout=15)
                assert line.startswith(f"{address} is not an RPC tracker that answers") and "\n" not in line

        asyncio.run(scenario())


def test_a_malformed_address_shows_the_parse_error(make_app):
    async def scenario():
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_devices(pilot)
            await pilot.press(*"localhost", "enter")
            line = await wait_error(pilot, screen, timeout=5)
            assert line == "RPC: tracker: must be HOST:PORT, e.g. 127.0.0.1:9190 (got 'localhost')"

    asyncio.run(scenario())


def test_small_terminal_shows_the_input_and_the_table_from_the_environment(tracker, make_app, monkeypatch):
    """At 80x24, with $NER_WORKBENCH_RPC set: the address is filled in and asked at once."""
    monkeypatch.setenv(RPC_ENV, tracker.tracker)

    async def scenario():
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_devices(pilot)
            await wait_until(pilot, lambda: rows(screen), timeout=10, what="the device listed", shown=lambda: static_text(status(screen)))
            await pilot.pause()
            assert screen.query_one("#address", Input).value == tracker.tracker
            assert rows(screen) == [[KEY, "1", "1", "0"]]
            table = screen.query_one("#devices", DataTable)
            for widget in (screen.query_one("#address", Input), screen.query_one("#refresh", Button), table, status(screen)):
                assert widget.region.area > 0 and screen.region.contains_region(widget.region), (widget, widget.region)
            assert table.region.height >= 3  # the header and the key's row

    asyncio.run(scenario())
