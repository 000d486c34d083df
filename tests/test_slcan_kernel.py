"""canx's slcan backend against the Linux kernel's slcan line discipline
(VM, marked vcan): two pty pairs joined by a relay in this process; can-utils'
``slcand`` attaches ``N_SLCAN`` to one end (giving a SocketCAN interface),
canx opens the other as its serial port. ``cansend`` on the interface reaches
canx, canx's frames reach ``candump``: standard, extended, RTR, every length
0..8. The commands slcand and the kernel write (``C``, ``S6``, ``O``) are
tolerated; garbage written into canx's pty is counted and the next good
frame still arrives. A J1939 address claim runs over it against the kernel's
J1939 stack (``j1939acd``).

Kernel facts: Linux 6.1 ``drivers/net/can/slcan/slcan-core.c`` (see
docs/research/usb-adapters.md §3.4, §4b)."""

from __future__ import annotations

import itertools
import os
import select
import shutil
import subprocess
import threading
import time
import tty
from pathlib import Path
from typing import Iterator, Optional

import pytest
from conftest import TIMEOUT_SCALE, CanUtils

import canx
from canx import j1939

pytestmark = pytest.mark.vcan

_names = itertools.count()


class PtyRelay:
    """Two pty pairs joined at their masters: ``kernel_path`` for slcand,
    ``canx_path`` for canx. ``inject`` writes bytes towards canx as if the
    kernel side had sent them."""

    def __init__(self) -> None:
        self.m_kernel, self.s_kernel = os.openpty()
        self.m_canx, self.s_canx = os.openpty()
        # Raw before anything flows (a cooked pty would echo lines back).
        tty.setraw(self.s_kernel)
        tty.setraw(self.s_canx)
        self.kernel_path = os.ttyname(self.s_kernel)
        self.canx_path = os.ttyname(self.s_canx)
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        peer = {self.m_kernel: self.m_canx, self.m_canx: self.m_kernel}
        while not self._stop:
            try:
                ready, _, _ = select.select(list(peer), [], [], 0.05)
                for fd in ready:
                    data = os.read(fd, 65536)
                    with self._lock:
                        os.write(peer[fd], data)
            except OSError:
                time.sleep(0.01)  # a side not open yet, or closing

    def inject(self, data: bytes) -> None:
        with self._lock:
            os.write(self.m_canx, data)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        for fd in (self.m_kernel, self.s_kernel, self.m_canx, self.s_canx):
            os.close(fd)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10 * TIMEOUT_SCALE)


class KernelSlcan:
    """slcand on the kernel end of a relay: the interface ``ifname``."""

    def __init__(self, relay: PtyRelay, bitrate: Optional[int]) -> None:
        if shutil.which("slcand") is None:
            pytest.fail("slcand (can-utils) is not installed")
        self.ifname = f"cxsl{next(_names)}"
        # -o/-c/-s6: slcand itself writes "C\rS6\rO\r" before attaching the ldisc.
        self.proc = subprocess.Popen(["slcand", "-F", "-o", "-c", "-s6", relay.kernel_path, self.ifname],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10 * TIMEOUT_SCALE
        while not Path(f"/sys/class/net/{self.ifname}").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read() if self.proc.stderr else b""
                self.close()
                pytest.fail(f"slcand did not create {self.ifname}: rc={self.proc.returncode} {err!r}")
            time.sleep(0.02)
        if bitrate is not None:
            # Linux >= 6.0: with a bitrate the kernel writes "C\rS<n>\rO\r" on up itself.
            _ip("link", "set", self.ifname, "type", "can", "bitrate", str(bitrate))
        _ip("link", "set", self.ifname, "up")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5 * TIMEOUT_SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in (self.proc.stdout, self.proc.stderr):
            if s:
                s.close()


@pytest.fixture
def relay() -> Iterator[PtyRelay]:
    r = PtyRelay()
    try:
        yield r
    finally:
        r.close()


def _frames() -> list[tuple[str, object]]:
    """(cansend text, canx message) pairs: std/ext data of every length 0..8, std/ext RTR."""
    out: list[tuple[str, object]] = []
    for n in range(9):
        data = bytes((0x11 * (i + 1)) & 0xFF for i in range(n))
        out.append((f"{0x100 + n:03X}#{data.hex().upper()}", canx.Message(0x100 + n, data)))
        out.append((f"{0x1ABCDE00 + n:08X}#{data.hex().upper()}", canx.Message(0x1ABCDE00 + n, data, extended=True)))
    out.append(("7FF#R", canx.RemoteTransmissionRequest(0x7FF, 0)))
    out.append(("123#R5", canx.RemoteTransmissionRequest(0x123, 5)))
    out.append(("1FFFFFFF#R8", canx.RemoteTransmissionRequest(0x1FFFFFFF, 8, extended=True)))
    return out


def _same(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, canx.Message) and isinstance(b, canx.Message):
        return (a.id, a.extended, bytes(a.data)) == (b.id, b.extended, bytes(b.data))
    if isinstance(a, canx.RemoteTransmissionRequest) and isinstance(b, canx.RemoteTransmissionRequest):
        return (a.id, a.extended, a.length) == (b.id, b.extended, b.length)
    return False


@pytest.mark.parametrize("bitrate", [None, 500_000], ids=["slcand-commands", "kernel-commands"])
def test_frames_both_ways_with_the_kernel(relay: PtyRelay, can_utils: CanUtils, bitrate: Optional[int]) -> None:
    bus = canx.CAN(channel=f"slcan:{relay.canx_path},dialect=kernel", baudrate=500_000)
    kernel = KernelSlcan(relay, bitrate)
    try:
        listener = bus.listen(timeout=5 * TIMEOUT_SCALE)
        # kernel -> canx
        for text, want in _frames():
            can_utils.cansend(kernel.ifname, text)
            got = listener.receive()
            assert got is not None and _same(got, want), (text, got)
        # canx -> kernel
        with can_utils.candump(kernel.ifname) as cap:
            for _, msg in _frames():
                bus.send(msg)  # type: ignore[arg-type]
            cap.wait(len(_frames()), timeout=10)
        assert [f for _, f in cap.frames] == [text for text, _ in _frames()]
        s = bus.stats()
        # slcand's "C", "S6", "O" (and the kernel's own when a bitrate is set): tolerated, counted.
        assert s["slcan_other_lines"] >= 3, s
        assert s["slcan_malformed_lines"] == 0 and s["backend_dropped"] == 0, s
        assert s["slcan_frame_lines"] == len(_frames()), s
    finally:
        kernel.close()
        bus.deinit()


def test_garbage_is_counted_and_the_next_frame_arrives(relay: PtyRelay, can_utils: CanUtils) -> None:
    bus = canx.CAN(channel=f"slcan:{relay.canx_path},dialect=kernel")
    kernel = KernelSlcan(relay, None)
    try:
        listener = bus.listen(timeout=5 * TIMEOUT_SCALE)
        relay.inject(b"t12\rT1234\r\xff\xfegarbage\r" + b"x" * 400 + b"\rt1239\r")
        can_utils.cansend(kernel.ifname, "321#CAFE")
        got = listener.receive()
        assert isinstance(got, canx.Message) and (got.id, bytes(got.data)) == (0x321, b"\xca\xfe")
        s = bus.stats()
        assert s["slcan_malformed_lines"] == 4, s  # t12, T1234, the overlong line, t1239
        assert s["slcan_other_lines"] >= 4, s  # the garbage line, slcand's C, S6, O
        assert s["slcan_frame_lines"] == 1, s
    finally:
        kernel.close()
        bus.deinit()


def test_canx_status_lines_become_kernel_error_frames(relay: PtyRelay, can_utils: CanUtils) -> None:
    """canx's decoder and the kernel's agree on the e/s lines: what canx
    reads as error-passive with counters, the kernel reads the same way."""
    bus = canx.CAN(channel=f"slcan:{relay.canx_path},dialect=kernel")
    kernel = KernelSlcan(relay, None)
    try:
        # "#FFFFFFFF": candump's error mask (all classes); -e does not combine with -L.
        with can_utils.candump(f"{kernel.ifname},#FFFFFFFF") as cap:
            # Sent towards the kernel ldisc by writing into the kernel side of the relay.
            os.write(relay.m_kernel, b"sp130140\r")
            cap.wait(1, timeout=5)
        frame = cap.frames[0][1]
        can_id, data = frame.split("#")
        assert int(can_id, 16) & 0x20000000  # CAN_ERR_FLAG
        assert bytes.fromhex(data)[6:8] == bytes([140, 130])  # TEC, REC
        listener = bus.listen(timeout=5 * TIMEOUT_SCALE, error_frames=True)
        relay.inject(b"sp130140\r")
        e = listener.receive()
        assert isinstance(e, canx.ErrorFrame), e
        assert e.state == canx.BusState.ERROR_PASSIVE and e.data[6:8] == bytes([140, 130])
    finally:
        kernel.close()
        bus.deinit()


def test_j1939_address_claim_over_slcan(relay: PtyRelay, can_utils: CanUtils, tmp_path: Path) -> None:
    """The kernel's J1939 stack (j1939acd on the slcan interface) holds 0x60
    with a lower NAME; canx's ECU on the slcan channel claims 0x60, loses
    (J1939-81 4.4.3) and moves on, and sees j1939acd's claim."""
    bus = canx.CAN(channel=f"slcan:{relay.canx_path},dialect=kernel")
    kernel = KernelSlcan(relay, None)
    acd_name = 0x0000000000000010
    try:
        with can_utils.spawn("j1939acd", "-r", "96", "-c", str(tmp_path / "c"), f"{acd_name:016x}", kernel.ifname,
                             ready=False):
            time.sleep(1.0 * TIMEOUT_SCALE)
            name = j1939.Name(identity_number=0x1234, manufacturer_code=0x3FF, arbitrary_address_capable=True)
            with j1939.ECU(bus=bus, name=name, address=0x60) as ecu:
                addr = ecu.claim_address(timeout=10.0 * TIMEOUT_SCALE)
                assert addr != 0x60
                ecu.request_address_claims()
                deadline = time.monotonic() + 5 * TIMEOUT_SCALE
                while ecu.address_table().get(0x60) != j1939.Name(acd_name) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert ecu.address_table().get(0x60) == j1939.Name(acd_name)
    finally:
        kernel.close()
        bus.deinit()
