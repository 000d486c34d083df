"""canx against the real kernel stack and can-utils (marked vcan: run in the
VM by scripts/test-vm, or directly on a machine with vcan)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import canx

pytestmark = pytest.mark.vcan

ROOT = Path(__file__).resolve().parent.parent


def recv(listener: "canx.Listener", scale: float, timeout: float = 2.0):
    listener.timeout = timeout * scale
    return listener.receive()


def test_canx_receives_from_cansend(vcan_channel, can_utils, timeout_scale) -> None:
    with canx.CAN(channel=vcan_channel, fd=True) as can:
        lis = can.listen()
        can_utils.cansend(vcan_channel, "123#1122")
        can_utils.cansend(vcan_channel, "12345678#DEADBEEF01020304")
        can_utils.cansend(vcan_channel, "321#R3")
        can_utils.cansend(vcan_channel, "7FF##1" + "AB" * 12)
        got = [recv(lis, timeout_scale) for _ in range(4)]
    assert got[0] == canx.Message(0x123, b"\x11\x22")
    assert got[1] == canx.Message(0x12345678, bytes.fromhex("DEADBEEF01020304"), extended=True)
    assert got[2] == canx.RemoteTransmissionRequest(0x321, 3)
    assert got[3] == canx.Message(0x7FF, b"\xab" * 12, fd=True, bitrate_switch=True)
    assert all(m.timestamp is not None and abs(m.timestamp - time.time()) < 60 for m in got)


def test_cansend_frames_seen_by_candump_when_canx_sends(vcan_channel, can_utils) -> None:
    with canx.CAN(channel=vcan_channel, fd=True) as can, can_utils.candump(vcan_channel) as cap:
        can.send(canx.Message(0x123, b"\x11\x22"))
        can.send(canx.Message(0x1ABCDEF0, b"", extended=True))
        can.send(canx.RemoteTransmissionRequest(0x42, 8))
        can.send(canx.Message(0x100, bytes(range(64)), fd=True))
        cap.wait(4, timeout=3)
        frames = [f for _, f in cap.frames]
    assert frames[0] == "123#1122"
    assert frames[1] == "1ABCDEF0#"
    assert frames[2] in ("042#R", "042#R8")
    assert frames[3].startswith("100##") and frames[3].endswith(bytes(range(64)).hex().upper())


def test_kernel_filters_keep_unmatched_frames_out(vcan_channel, can_utils, timeout_scale) -> None:
    with canx.CAN(channel=vcan_channel) as can:
        lis = can.listen([canx.Match(0x123), canx.Match(0x10000, mask=0x1FFF0000, extended=True)])
        can_utils.cangen(vcan_channel, "-I", "124", "-L", "1", count=50)
        can_utils.cansend(vcan_channel, "123#01")
        can_utils.cansend(vcan_channel, "00010005#02")
        can_utils.cansend(vcan_channel, "00020005#03")
        a = recv(lis, timeout_scale)
        b = recv(lis, timeout_scale)
        assert recv(lis, timeout_scale, 0.3) is None
        # The 50 frames on 0x124 never reached the receive thread: the kernel filtered them.
        assert can.stats()["received"] == 2
    assert (a.id, a.data, b.id, b.extended) == (0x123, b"\x01", 0x10005, True)


def test_timestamps_are_monotonic_and_nothing_is_lost(vcan_channel, can_utils, timeout_scale) -> None:
    with canx.CAN(channel=vcan_channel) as can:
        lis = can.listen(timeout=2 * timeout_scale)
        can_utils.cangen(vcan_channel, "-I", "i", "-L", "8", "-D", "i", count=500, timeout=60)
        got = []
        while len(got) < 500:
            batch = lis.receive_many(500)
            if not batch:
                break
            got.extend(batch)
    assert len(got) == 500
    stamps = [m.timestamp for m in got]
    assert stamps == sorted(stamps)
    assert [m.id for m in got] == [i % 0x800 for i in range(500)]


def test_loopback_receives_own_frames(vcan_channel, timeout_scale) -> None:
    with canx.CAN(channel=vcan_channel, loopback=True) as a, canx.CAN(channel=vcan_channel) as b:
        la, lb = a.listen(), b.listen()
        a.send(canx.Message(0x55, b"x"))
        own = recv(la, timeout_scale)
        other = recv(lb, timeout_scale)
        assert own == other == canx.Message(0x55, b"x")
        assert own.is_own and not other.is_own
        b.send(canx.Message(0x56, b"y"))
        assert recv(la, timeout_scale) == canx.Message(0x56, b"y")
        assert recv(lb, timeout_scale, 0.3) is None, "without loopback a node does not hear itself"


def _ip(*args: str) -> None:
    subprocess.run(["ip", "link", "set", *args], check=True, timeout=30)


def test_interface_down_is_reported_and_up_recovers(vcan_pair, can_utils, timeout_scale) -> None:
    ch = vcan_pair[1]
    with canx.CAN(channel=ch) as can:
        lis = can.listen()
        results: list = []

        def receiver() -> None:
            results.append(recv(lis, timeout_scale, 1.0))

        t = threading.Thread(target=receiver)
        t.start()
        _ip(ch, "down")
        try:
            t.join(5 * timeout_scale)
            assert not t.is_alive(), "receive() hung while the interface went down"
            assert results == [None]
            deadline = time.monotonic() + 3 * timeout_scale
            while can.state != canx.BusState.BUS_OFF and time.monotonic() < deadline:
                time.sleep(0.05)
            assert can.state == canx.BusState.BUS_OFF
            assert "down" in (can.link_error or "")
            with pytest.raises(canx.InterfaceDownError):
                can.send(canx.Message(1, b""))
        finally:
            _ip(ch, "up")
        deadline = time.monotonic() + 3 * timeout_scale
        while can.state != canx.BusState.ERROR_ACTIVE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert can.state == canx.BusState.ERROR_ACTIVE and can.link_error is None
        can_utils.cansend(ch, "321#AA")
        assert recv(lis, timeout_scale) == canx.Message(0x321, b"\xaa")
        can.send(canx.Message(0x322, b"\xbb"))


def test_guide_scripts_across_processes_with_candump(vcan_channel, can_utils, timeout_scale) -> None:
    ex = ROOT / "examples" / "circuitpython"
    dur = str(6 * timeout_scale)
    with can_utils.candump(vcan_channel) as cap:
        lst = subprocess.Popen([sys.executable, "-m", "canx", "run", str(ex / "listener_ack.py"),
                                "--channel", vcan_channel, "--duration", dur],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5 * timeout_scale)
        snd = subprocess.run([sys.executable, "-m", "canx", "run", str(ex / "sender_ack.py"),
                              "--channel", vcan_channel, "--duration", str(4 * timeout_scale)],
                             capture_output=True, text=True, timeout=60 * timeout_scale)
        lout, lerr = lst.communicate(timeout=60 * timeout_scale)
    assert snd.returncode == 0, snd.stderr
    assert lst.returncode == 0, lerr
    assert snd.stdout.count("Received ACK") >= 2, snd.stdout
    assert re.search(r"received message: count=1 ", lout), lout
    ids = {f.split("#")[0] for _, f in cap.frames}
    assert {"408", "409"} <= ids


def test_demo_on_vcan(vcan_channel, can_utils) -> None:
    with can_utils.candump(vcan_channel) as cap:
        r = subprocess.run([sys.executable, "-m", "canx", "demo", "--channel", vcan_channel, "--count", "3"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "summary: 3/3 messages acknowledged" in r.stdout
        cap.wait(6)
    assert sum(1 for _, f in cap.frames if f.startswith("408#")) >= 3
