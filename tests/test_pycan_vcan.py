"""The python-can plugin on vcan (run in the VM: scripts/test-vm -q tests/test_pycan_vcan.py):
the back-to-back suite of test_pycan.py on vcan0, canx paired with python-can's
own ``socketcan`` interface on the same vcan, and python-can's tools with ``-i canx``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

can = pytest.importorskip("can")

from test_pycan import BackToBack, _same  # noqa: E402

pytestmark = pytest.mark.vcan


class TestVcan(BackToBack):
    @pytest.fixture
    def channel(self, vcan_channel: str) -> str:
        return vcan_channel

    def test_detect_lists_vcan(self, vcan_channel: str) -> None:
        assert {"interface": "canx", "channel": vcan_channel} in can.detect_available_configs("canx")


def test_send_periodic_uses_the_kernel_bcm(vcan_channel: str, can_utils, timeout_scale: float) -> None:
    """On SocketCAN, send_periodic is the kernel's broadcast manager: candump
    sees the frames at the period, a duration becomes a frame count, modify
    and stop work, and nothing passes through canx's receive thread."""
    with can.Bus(interface="canx", channel=vcan_channel) as bus, can_utils.candump(f"{vcan_channel},0AB:7FF") as cap:
        task = bus.send_periodic(can.Message(arbitration_id=0xAB, is_extended_id=False, data=[1]), 0.05,
                                 duration=0.5)
        assert task.mechanism == "bcm"
        cap.wait(10, timeout=3)
        time.sleep(0.3 * timeout_scale)
        assert [f for _, f in cap.frames] == ["0AB#01"] * 10, "duration 0.5 s at 50 ms: exactly 10 frames"
        assert bus._raw.stats()[1] == 0, "the kernel sent them, not canx"
        task.start()
        cap.wait(11, timeout=3)
        task.modify_data(can.Message(arbitration_id=0xAB, is_extended_id=False, data=[2]))
        cap.wait(13, timeout=3)
        task.stop()
        time.sleep(0.2 * timeout_scale)
        n = len(cap.frames)
        time.sleep(0.2 * timeout_scale)
        assert len(cap.frames) == n, "stopped"
        assert cap.frames[-1][1] == "0AB#02"
        ts = [float(line.split(")")[0].strip("(")) for line in cap.lines[:10]]
        mean_gap = (ts[-1] - ts[0]) / (len(ts) - 1)
        assert 0.045 <= mean_gap <= 0.05 + 0.02 * timeout_scale, ts


def _kinds() -> list:
    return [
        can.Message(arbitration_id=0x123, is_extended_id=False, data=b"\x01\x02\x03"),
        can.Message(arbitration_id=0x7FF, is_extended_id=False, data=bytes(8)),
        can.Message(arbitration_id=0x0, is_extended_id=False),
        can.Message(arbitration_id=0x1FFFFFFF, is_extended_id=True, data=b"\xff" * 8),
        can.Message(arbitration_id=0x321, is_extended_id=False, is_remote_frame=True, dlc=4),
        can.Message(arbitration_id=0x54321, is_extended_id=True, is_remote_frame=True, dlc=8),
        can.Message(arbitration_id=0x10, is_extended_id=False, is_fd=True, data=bytes(range(64))),
        can.Message(arbitration_id=0x10, is_extended_id=True, is_fd=True, bitrate_switch=True,
                    error_state_indicator=True, data=bytes(range(12))),
    ]


@pytest.mark.parametrize("direction", ["canx->socketcan", "socketcan->canx"])
def test_canx_and_python_can_socketcan_interoperate(vcan_channel: str, timeout_scale: float, direction: str) -> None:
    with can.Bus(interface="canx", channel=vcan_channel, fd=True) as cx, \
            can.Bus(interface="socketcan", channel=vcan_channel, fd=True) as sc:
        tx, rx = (cx, sc) if direction == "canx->socketcan" else (sc, cx)
        t0 = time.time()
        for m in _kinds():
            tx.send(m)
            got = rx.recv(2 * timeout_scale)
            assert got is not None, f"{m} lost"
            _same(m, got)
            assert t0 - 1 < got.timestamp < time.time() + 1
            if rx is cx:
                # canx: is_rx False only for this bus's own frames. (python-can's socketcan
                # reports is_rx False for every frame sent from this host: MSG_DONTROUTE.)
                assert got.is_rx


def test_python_can_logger_with_i_canx(vcan_channel: str, can_utils, tmp_path, timeout_scale: float) -> None:
    log = tmp_path / "out.log"
    p = subprocess.Popen([sys.executable, "-m", "can.logger", "-i", "canx", "-c", vcan_channel, "--fd", "-f", str(log)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert "Connected to CanxBus" in p.stdout.readline()
        assert "Can Logger" in p.stdout.readline()
        time.sleep(0.5 * timeout_scale)
        for text in ("123#DEADBEEF", "12345678#R", "321##1AABB"):
            can_utils.cansend(vcan_channel, text)
        time.sleep(0.5 * timeout_scale)
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=10 * timeout_scale)
    assert "Traceback" not in err
    frames = [ln.split()[2] for ln in log.read_text().splitlines()]
    assert frames == ["123#DEADBEEF", "12345678#R", "321##1AABB"]


def test_python_can_bridge_and_player_with_i_canx(vcan_pair, can_utils, tmp_path, timeout_scale: float) -> None:
    a, b = vcan_pair
    p = subprocess.Popen([sys.executable, "-m", "can.bridge", "--bus1-interface", "canx", "--bus1-channel", a,
                          "--bus2-interface", "canx", "--bus2-channel", b],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3 * timeout_scale)  # python-can's startup under emulation
        assert p.poll() is None, p.communicate()
        with can_utils.candump(b) as cap:
            can_utils.cansend(a, "123#C0FFEE")
            got = cap.wait(1, timeout=5)
        assert got[0].split()[1:] == [b, "123#C0FFEE"]
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10 * timeout_scale)
    log = tmp_path / "play.log"
    log.write_text("(1.000000) vcan0 100#01\n(1.050000) vcan0 12345678#0203\n(1.100000) vcan0 101#R\n")
    with can_utils.candump(a) as cap:
        r = subprocess.run([sys.executable, "-m", "can.player", "-i", "canx", "-c", a, str(log)],
                           capture_output=True, text=True, timeout=30 * timeout_scale)
        assert r.returncode == 0, r.stderr
        got = cap.wait(3, timeout=5)
    assert [ln.split()[2] for ln in got] == ["100#01", "12345678#0203", "101#R"]
