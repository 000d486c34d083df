"""Reliable delivery and CAN-X on a real SocketCAN interface (vcan0): the
guide programs run by ``canx run`` in another process, and candump showing
the frames. Run with ``scripts/test-vm -q tests/test_reliable_vcan.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import canx
from canx import canxproto, reliable

pytestmark = pytest.mark.vcan

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "examples" / "circuitpython"


class Script:
    """``canx run SCRIPT --channel CH`` in the background, its output collected."""

    def __init__(self, script: Path, channel: str, scale: float) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "canx", "run", str(script), "--channel", channel, "--duration", str(60 * scale)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"{text!r} not printed; output: {self.lines!r}")
                self._cond.wait(min(left, 0.1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._t.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def test_canx_guide_sender_against_guide_listener_under_canx_run(vcan_channel, timeout_scale):
    listener = Script(GUIDE / "listener_ack.py", vcan_channel, timeout_scale)
    try:
        listener.wait_for("Bus state changed", 30 * timeout_scale)
        with canx.CAN(channel=vcan_channel) as bus, reliable.GuideSender(bus, timeout=0.1 * timeout_scale) as tx:
            outcomes = [tx.send().result(30 * timeout_scale) for _ in range(3)]
        assert [(o.delivered, o.count) for o in outcomes] == [(True, 0), (True, 1), (True, 2)]
        for i in range(3):
            listener.wait_for(f"received message: count={i} ", 10 * timeout_scale)
    finally:
        listener.stop()


def test_guide_sender_under_canx_run_against_canx_guide_listener(vcan_channel, timeout_scale):
    with canx.CAN(channel=vcan_channel) as bus, reliable.GuideListener(bus, timeout=30 * timeout_scale) as rx:
        sender = Script(GUIDE / "sender_ack.py", vcan_channel, timeout_scale)
        try:
            got = [rx.receive() for _ in range(3)]
            assert [m.count for m in got if m is not None] == [0, 1, 2]
            sender.wait_for("Received ACK", 10 * timeout_scale)
            assert rx.stats()["ack_sent"] >= 3
        finally:
            sender.stop()


def test_general_mode_frames_on_candump(vcan_channel, can_utils, timeout_scale):
    with can_utils.candump(vcan_channel) as cap:
        with canx.CAN(channel=vcan_channel) as a, canx.CAN(channel=vcan_channel) as b:
            with reliable.Receiver(b, matches=[canx.Match(0x123)], timeout=5 * timeout_scale) as rx, reliable.Sender(
                a, timeout=0.2 * timeout_scale
            ) as tx:
                out = tx.send(0x123, b"\x01\x02").result(10 * timeout_scale)
                assert out.delivered
                assert rx.receive().data == b"\x01\x02"
        cap.wait(2)
    frames = [f for _, f in cap.frames]
    assert frames[:2] == ["123#000102", "124#AC00"], cap.lines


def test_canx_exchange_on_candump(vcan_channel, can_utils, timeout_scale):
    body = bytes(i % 251 for i in range(1000))
    with can_utils.candump(vcan_channel) as cap:
        with canx.CAN(channel=vcan_channel) as a, canx.CAN(channel=vcan_channel) as b:
            host = canxproto.Endpoint(a, timeout=10 * timeout_scale)
            dev = canxproto.Endpoint(b, direction=canxproto.FROM_DEVICE, device=5, timeout=10 * timeout_scale)
            with host, dev:
                host.send(5, 300, 0x42, body, priority=1)
                m = dev.receive()
                assert m is not None and (m.device, m.stream, m.msg_id, m.body) == (5, 300, 0x42, body)
                dev.send(5, 300, 0x43, b"thanks")
                r = host.receive()
                assert r is not None and (r.direction, r.body) == (canxproto.FROM_DEVICE, b"thanks")
        cap.wait(127, timeout=10)
    frames = [f for _, f in cap.frames]
    ids = [int(f.split("#")[0], 16) for f in frames]
    # 1000-byte body: ceil(1008 / 8) = 126 frames, then the 1-frame answer.
    assert len(frames) == 127, cap.lines
    assert all(len(f.split("#")[0]) == 8 for f in frames), "extended identifiers"
    first = ids[0]
    assert (first >> 27, (first >> 26) & 1, (first >> 18) & 0xFF, (first >> 8) & 0x3FF, first & 1) == (1, 0, 5, 300, 0)
    assert frames[0].split("#")[1].startswith("4200007E")  # msg_id 0x42, PID 0, N = 126
    assert [(i >> 1) & 0x7F for i in ids[:126]] == [k % 128 for k in range(126)]
    assert all(i & 1 for i in ids[1:126]), "continue bit on following frames"
    assert (ids[126] >> 26) & 1 == 1 and frames[126].endswith("#43" + b"thanks".hex().upper())
