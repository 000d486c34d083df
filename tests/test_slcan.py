"""The slcan backend against a fake adapter on a pty pair (host, no kernel
CAN needed): the open sequence per dialect, frames both ways, garbage lines
counted without losing the next frame, python-can's plugin, ``canx send`` and
``canx dump`` on an slcan channel, and an adapter that disappears. Against
the Linux kernel's slcan line discipline: tests/test_slcan_kernel.py (VM)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Iterator

import pytest
from conftest import TIMEOUT_SCALE
from slcan_helpers import FakeAdapter, lines, wait_until

import canx
from canx.cli import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pty pairs need a unix")


@pytest.fixture
def adapter() -> Iterator[FakeAdapter]:
    a = FakeAdapter(TIMEOUT_SCALE)
    try:
        yield a
    finally:
        a.close()


def test_open_sequence_and_frames_both_ways(adapter: FakeAdapter) -> None:
    bus = canx.CAN(channel=f"slcan:{adapter.path}", baudrate=500_000)
    try:
        assert lines(adapter.wait_for(b"O\r")) == [b"C", b"S6", b"M0", b"O"]
        listener = bus.listen(timeout=2 * TIMEOUT_SCALE)
        adapter.write(b"t1233112233\rT1ABCDEF00\r\nr7FF5\rR000000010\r")
        got = [listener.receive() for _ in range(4)]
        assert [(m.id, m.extended) for m in got] == [(0x123, False), (0x1ABCDEF0, True), (0x7FF, False), (0x1, True)]
        assert isinstance(got[0], canx.Message) and got[0].data == b"\x11\x22\x33"
        assert isinstance(got[2], canx.RemoteTransmissionRequest) and got[2].length == 5
        start = len(adapter.received)
        bus.send(canx.Message(0x7FF, b"\x01\xab"))
        bus.send(canx.Message(0x1234567, bytes(range(8)), extended=True))
        bus.send(canx.RemoteTransmissionRequest(0x10, 3))
        sent = adapter.wait_for(b"r0103\r", start=start)[start:]
        assert lines(sent) == [b"t7FF201AB", b"T012345678" + b"0001020304050607", b"r0103"]
    finally:
        bus.deinit()
    # deinit closes the adapter's channel.
    adapter.wait_for(b"C\r", start=start)


@pytest.mark.parametrize(
    "options, baudrate, silent, expected",
    [
        (",dialect=kernel", 800_000, False, [b"C", b"S7", b"O"]),
        ("", 750_000, False, [b"C", b"S7", b"M0", b"O"]),
        ("", 125_000, True, [b"C", b"S4", b"M1", b"O"]),
        (",dialect=kernel", 1_000_000, True, [b"C", b"S8", b"L"]),
        ("@921600,dialect=kernel,btr=031C", 250_000, False, [b"C", b"s031C", b"O"]),
        (",bitrate=20000", 250_000, False, [b"C", b"S1", b"M0", b"O"]),
    ],
)
def test_open_sequence_per_dialect(adapter: FakeAdapter, options: str, baudrate: int, silent: bool,
                                   expected: list[bytes]) -> None:
    bus = canx.CAN(channel=f"slcan:{adapter.path}{options}", baudrate=baudrate, silent=silent)
    try:
        assert lines(adapter.wait_for(b"\r".join(expected[-1:]) + b"\r")) == expected
    finally:
        bus.deinit()


def test_garbage_is_counted_and_the_next_frame_arrives(adapter: FakeAdapter) -> None:
    bus = canx.CAN(channel=f"slcan:{adapter.path}")
    try:
        adapter.wait_for(b"O\r")
        listener = bus.listen(timeout=2 * TIMEOUT_SCALE)
        adapter.write(b"hello\rt12\rt1239\r" + b"x" * 300 + b"\r\0t0011FF\r")
        m = listener.receive()
        assert m is not None and (m.id, m.data) == (0x001, b"\xff")
        wait_until(lambda: bus.stats()["slcan_frame_lines"] == 1, 2, "the frame line counted", TIMEOUT_SCALE)
        s = bus.stats()
        assert (s["slcan_malformed_lines"], s["slcan_other_lines"], s["slcan_skipped_bytes"]) == (3, 1, 1)
        assert s["backend_dropped"] == 0
    finally:
        bus.deinit()


def test_loopback_delivers_own_frames(adapter: FakeAdapter) -> None:
    bus = canx.CAN(channel=f"slcan:{adapter.path}", loopback=True)
    try:
        adapter.wait_for(b"O\r")
        listener = bus.listen(timeout=2 * TIMEOUT_SCALE)
        bus.send(canx.Message(0x55, b"own"))
        m = listener.receive()
        assert m is not None and (m.id, m.data) == (0x55, b"own")
        adapter.wait_for(b"t0553")
    finally:
        bus.deinit()


def test_the_adapter_disappears(adapter: FakeAdapter) -> None:
    bus = canx.CAN(channel=f"slcan:{adapter.path}")
    try:
        adapter.wait_for(b"O\r")
        adapter.hang_up()
        wait_until(lambda: bus.state == canx.BusState.BUS_OFF, 5, "BUS_OFF after the hang-up", TIMEOUT_SCALE)
        assert bus.link_error is not None and "slcan:" in bus.link_error
        with pytest.raises(canx.InterfaceDownError):
            bus.send(canx.Message(0x1, b""))
        # The receive thread gives up after its error limit: no hang, a clear state.
        wait_until(lambda: bus.stats()["receive_thread_stopped"] == 1, 10, "the receive thread to stop",
                   TIMEOUT_SCALE)
    finally:
        bus.deinit()


def test_bad_channels_and_settings() -> None:
    with pytest.raises(canx.ChannelError, match="unknown dialect"):
        canx.CAN(channel="slcan:/dev/null,dialect=pcan")
    with pytest.raises(canx.ChannelError, match="no serial port"):
        canx.CAN(channel="slcan:@115200")
    # 800 kbit/s has no S code on CANable firmware (S7 is 750k there).
    with pytest.raises(canx.UnsupportedError, match="800000"):
        canx.CAN(channel="slcan:/dev/null", baudrate=800_000)
    with pytest.raises(canx.UnsupportedError, match="FD"):
        canx.CAN(channel="slcan:/dev/null,dialect=lawicel", fd=True)
    with pytest.raises(canx.InterfaceError, match="opening serial port /nonexistent/tty"):
        canx.CAN(channel="slcan:/nonexistent/tty")


def test_python_can_plugin(adapter: FakeAdapter) -> None:
    can = pytest.importorskip("can")
    with can.Bus(interface="canx", channel=f"slcan:{adapter.path}", bitrate=125_000) as bus:
        assert lines(adapter.wait_for(b"O\r")) == [b"C", b"S4", b"M0", b"O"]
        start = len(adapter.received)
        bus.send(can.Message(arbitration_id=0x18FEF100, is_extended_id=True, data=[1, 2]))
        assert lines(adapter.wait_for(b"\r", start=start)[start:]) == [b"T18FEF10020102"]
        adapter.write(b"t1232BEEF\r")
        msg = bus.recv(2 * TIMEOUT_SCALE)
        assert msg is not None and (msg.arbitration_id, bytes(msg.data)) == (0x123, b"\xbe\xef")


def test_canx_send_and_dump(adapter: FakeAdapter, capsys: pytest.CaptureFixture[str]) -> None:
    # dialect=kernel has no FD: the tools' FD-first open falls back to classic.
    chan = f"slcan:{adapter.path},dialect=kernel"
    assert main(["send", chan, "123#DEADBEEF", "12345678#R2"]) == 0
    assert lines(adapter.wait_for(b"R123456782\r")) == [b"C", b"S5", b"O", b"t1234DEADBEEF", b"R123456782", b"C"]
    start = len(adapter.received)
    rc: list[int] = []
    # The filter after the channel's options: only 0x321 is printed.
    dump = threading.Thread(target=lambda: rc.append(main(["dump", "-n", "1", "-T", "20000", f"{chan},321:7FF"])),
                            daemon=True)
    dump.start()
    adapter.wait_for(b"O\r", start=start)
    # dump adds its listener just after opening the port: repeat until it has printed one.
    deadline = time.monotonic() + 10 * TIMEOUT_SCALE
    while dump.is_alive() and time.monotonic() < deadline:
        adapter.write(b"t1230\rt3212ABCD\r")
        dump.join(0.1)
    assert rc == [0]
    out = capsys.readouterr().out
    assert "321" in out and "AB CD" in out.upper() and "123" not in out.replace(adapter.path, "")


def test_canable_fd_frames(adapter: FakeAdapter) -> None:
    bus = canx.CAN(channel=f"slcan:{adapter.path},data_bitrate=2000000", baudrate=1_000_000, fd=True)
    try:
        assert lines(adapter.wait_for(b"O\r")) == [b"C", b"S8", b"Y2", b"M0", b"O"]
        start = len(adapter.received)
        bus.send(canx.Message(0x123, bytes(range(12)), fd=True, bitrate_switch=True))
        bus.send(canx.Message(0x1234, b"\xaa" * 64, extended=True, fd=True))
        sent = lines(adapter.wait_for(b"AA\r", start=start)[start:])
        assert sent == [b"b1239" + bytes(range(12)).hex().upper().encode(), b"D00001234F" + b"AA" * 64]
        listener = bus.listen(timeout=2 * TIMEOUT_SCALE)
        adapter.write(b"d7FFA" + b"01" * 16 + b"\r")
        m = listener.receive()
        assert isinstance(m, canx.Message) and (m.id, m.fd, m.bitrate_switch, len(m.data)) == (0x7FF, True, False, 16)
    finally:
        bus.deinit()


def _usbtin(line: bytes) -> bytes:
    """USBtin's answers (frontend.c): z/Z after frames, CR after commands."""
    if line[:1] in (b"t", b"r"):
        return b"z\r"
    if line[:1] in (b"T", b"R"):
        return b"Z\r"
    return b"\r"


def test_usbtin_acks_and_adapter_timestamps() -> None:
    adapter = FakeAdapter(TIMEOUT_SCALE, answer=_usbtin)
    bus = canx.CAN(channel=f"slcan:{adapter.path},dialect=usbtin,timestamps=1", baudrate=800_000)
    try:
        assert lines(adapter.wait_for(b"O\r")) == [b"C", b"S7", b"Z1", b"O"]
        for i in range(40):  # more than the window of frames in flight: the acks let them through
            bus.send(canx.Message(i, bytes([i]), extended=bool(i % 2)))
        wait_until(lambda: bus.stats()["slcan_tx_acks"] == 40, 5, "40 acknowledgements", TIMEOUT_SCALE)
        assert bus.stats()["slcan_ack_lost"] == 0
        listener = bus.listen(timeout=2 * TIMEOUT_SCALE)
        # Adapter clock: 59.990 s, then 0.020 s after its 60000 ms wrap (30 ms later).
        adapter.write(b"t1231AAEA56\rt1231BB0014\r")
        a, b = listener.receive(), listener.receive()
        assert a is not None and b is not None and a.timestamp is not None and b.timestamp is not None
        assert b.timestamp - a.timestamp == pytest.approx(0.030, abs=1e-6)
    finally:
        bus.deinit()
        adapter.close()


def test_a_lawicel_device_that_refuses_the_bitrate() -> None:
    adapter = FakeAdapter(TIMEOUT_SCALE, answer=lambda line: b"\x07" if line.startswith(b"S") else b"\r")
    try:
        with pytest.raises(canx.UnsupportedError, match="refused \"S6\""):
            canx.CAN(channel=f"slcan:{adapter.path},dialect=lawicel", baudrate=500_000)
        # The port was released: it opens again.
        adapter.answer = lambda line: b"\r"
        canx.CAN(channel=f"slcan:{adapter.path},dialect=lawicel", baudrate=500_000).deinit()
    finally:
        adapter.close()
