"""``data_bitrate`` from ``canx.CAN`` and the python-can plugin to the
backends (BusConfig.data_bitrate), on a fake slcan adapter (a pty) and the
gs_usb argument checks; and ``canx list``. The gs_usb FD path on an emulated
device: tests/test_gs_usb_emulator.py (test_canx_gs_usb_fd, VM)."""

from __future__ import annotations

import gc
import json
import sys
from typing import Iterator

import pytest
from conftest import TIMEOUT_SCALE
from slcan_helpers import FakeAdapter, lines

import canx
from canx.cli import main

can = pytest.importorskip("can")

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="pty-backed fake adapter")


@pytest.fixture
def adapter() -> Iterator[FakeAdapter]:
    a = FakeAdapter(TIMEOUT_SCALE)
    try:
        yield a
    finally:
        a.close()


@posix_only
def test_canx_can_data_bitrate_programs_slcan(adapter: FakeAdapter) -> None:
    with canx.CAN(channel=f"slcan:{adapter.path}", baudrate=500_000, fd=True, data_bitrate=2_000_000):
        assert lines(adapter.wait_for(b"O\r")) == [b"C", b"S6", b"Y2", b"M0", b"O"]


@posix_only
def test_python_can_data_bitrate_and_fd(adapter: FakeAdapter) -> None:
    with can.Bus(interface="canx", channel=f"slcan:{adapter.path}", fd=True, bitrate=1_000_000,
                 data_bitrate=5_000_000):
        assert lines(adapter.wait_for(b"O\r")) == [b"C", b"S8", b"Y5", b"M0", b"O"]


@posix_only
def test_python_can_data_bitrate_without_fd_is_not_sent(adapter: FakeAdapter) -> None:
    # python-can configurations often carry data_bitrate for classic buses too.
    with can.Bus(interface="canx", channel=f"slcan:{adapter.path}", bitrate=500_000, data_bitrate=2_000_000):
        assert lines(adapter.wait_for(b"O\r")) == [b"C", b"S6", b"M0", b"O"]


@posix_only
def test_unsupported_data_bitrates_are_clear_errors(adapter: FakeAdapter) -> None:
    with pytest.raises(canx.UnsupportedError, match="3000000"):
        canx.CAN(channel=f"slcan:{adapter.path}", fd=True, data_bitrate=3_000_000)
    with pytest.raises(can.CanInitializationError, match="3000000"):
        can.Bus(interface="canx", channel=f"slcan:{adapter.path}", fd=True, data_bitrate=3_000_000)
    with pytest.raises(ValueError, match="data_bitrate"):
        canx.CAN(channel=f"slcan:{adapter.path}", fd=True, data_bitrate=0)


def test_gs_usb_fd_needs_a_data_bitrate() -> None:
    # Checked before the device is looked for, so this holds without a device.
    with pytest.raises(canx.ChannelError, match="data_bitrate"):
        canx.CAN(channel="gs_usb:0", fd=True)
    with pytest.raises(can.CanInitializationError, match="data_bitrate"):
        can.Bus(interface="canx", channel="gs_usb:0", fd=True)
    # With it, the error (no such device here) is about the device, not the rate.
    with pytest.raises(can.CanInitializationError) as e:
        can.Bus(interface="canx", channel="gs_usb:NOSUCHSERIAL", fd=True, data_bitrate=2_000_000)
    assert "data_bitrate" not in str(e.value)


def test_canx_list_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    gc.collect()  # buses of earlier tests still waiting for collection would leave the listing between calls
    with canx.CAN(channel="virtual:list-me"):
        assert main(["list", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert main(["list"]) == 0
        text = capsys.readouterr().out.splitlines()
    assert all(set(r) == {"channel", "scheme", "description"} and all(isinstance(v, str) for v in r.values())
               for r in rows), rows
    assert {"channel": "virtual:list-me", "scheme": "virtual", "description": "in-process virtual bus"} in rows
    udp = [r for r in rows if r["scheme"] == "udp_multicast"]
    assert [r["channel"] for r in udp] == ["udp_multicast:ff15:7079:7468:6f6e:6465:6d6f:6d63:6173",
                                           "udp_multicast:239.74.163.2"], udp
    # One line per channel, in the same order, channel first, then scheme and description.
    assert len(text) == len(rows)
    for line, r in zip(text, rows):
        assert line.split()[:2] == [r["channel"], r["scheme"]], line
        assert line.endswith(r["description"]), line
