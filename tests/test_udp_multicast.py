"""The ``udp_multicast`` channel: a bus shared between processes.

canx's processes and python-can's ``udp_multicast`` interface (in separate
processes, as users run them) on one IP multicast group: ``canx dump`` sees
``canx send``, python-can sees canx and canx sees python-can (standard,
extended, remote, CAN FD frames), garbage datagrams are counted, a J1939 ECU
in one process claims its address and takes a TP transfer from an ECU in
another, and python-can's back-to-back suite (``test_pycan.BackToBack``)
passes over it. Each test has its own group, on a port drawn per run, so
concurrent runs on one host do not meet. Where this host cannot join a
multicast group (no multicast route), every test skips and says so.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import IO, Iterator, List

import pytest

import canx

can = pytest.importorskip("can")

from test_pycan import BackToBack, _same  # noqa: E402

#: One port per test run (groups differ per test).
PORT = random.randrange(20000, 60000)
_groups = itertools.count(1)
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _probe() -> str:
    """Why this host cannot use udp_multicast, or ""."""
    try:
        canx.CAN(channel=f"udp_multicast:239.255.44.250:{PORT}").deinit()
    except canx.CanxError as e:
        return str(e)
    return ""


_CANNOT = _probe()
pytestmark = pytest.mark.skipif(bool(_CANNOT), reason=f"no IP multicast on this host: {_CANNOT}")


@pytest.fixture
def group() -> str:
    """A fresh IPv4 group and this run's port, ``"239.255.44.N:PORT"``."""
    return f"239.255.44.{next(_groups)}:{PORT}"


def _lines(stream: IO[str]) -> "queue.Queue[str]":
    """The lines of `stream`, read by a thread (so waits can time out)."""
    q: "queue.Queue[str]" = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return q


@contextlib.contextmanager
def _spawn(args: List[str]) -> Iterator["subprocess.Popen[str]"]:
    """A process with piped output; killed and its pipes closed at exit."""
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) as proc:
        try:
            yield proc
        finally:
            proc.kill()


def _stderr(proc: "subprocess.Popen[str]") -> str:
    """What `proc` wrote to stderr, once it has ended (else "")."""
    return proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else "" if proc.stderr is not None and proc.poll() is not None else ""


class TestUdpMulticastBackToBack(BackToBack):
    """python-can's back-to-back suite with both buses on one group."""

    @pytest.fixture
    def channel(self) -> str:
        return f"udp_multicast:239.255.44.{next(_groups)}:{PORT}"


def test_canx_dump_sees_canx_send_in_another_process(group: str, timeout_scale: float) -> None:
    channel = f"udp_multicast:{group}"
    with _spawn([sys.executable, "-m", "canx", "dump", "-L", channel]) as dump:
        lines = _lines(dump.stdout)  # type: ignore[arg-type]
        # Ping until the dump is listening (its first line), then the frames.
        for _ in range(int(50 * timeout_scale)):
            subprocess.run([sys.executable, "-m", "canx", "send", channel, "7FF#"], check=True, env=ENV)
            try:
                first = lines.get(timeout=0.2)
                break
            except queue.Empty:
                pass
        else:
            pytest.fail(f"canx dump never printed a frame: {_stderr(dump)}")
        assert first.endswith(f" {channel} 7FF#"), first
        frames = ["123#DEADBEEF", "1ABCDEF0#0102030405060708", "321#R3", "456##1" + "AB" * 64, "00000042##2"]
        subprocess.run([sys.executable, "-m", "canx", "send", channel, *frames], check=True, env=ENV)
        got: List[str] = []
        while len(got) < len(frames):
            line = lines.get(timeout=5 * timeout_scale)
            if not line.endswith("7FF#"):  # late pings
                got.append(line.split(" ", 2)[2])
        assert got == frames


def test_canx_log_records_another_process(group: str, tmp_path, timeout_scale: float) -> None:
    """``canx log`` (with a candump filter) records frames another process sends."""
    channel = f"udp_multicast:{group}"
    out = tmp_path / "bus.log"
    with _spawn([sys.executable, "-m", "canx", "log", f"{channel},123:7FF", "-n", "3", "-f", str(out)]) as log, \
            canx.CAN(channel=channel) as bus:
        # Until the logger has its 3 frames: it may start listening at any one.
        for i in range(int(400 * timeout_scale)):
            bus.send(canx.Message(0x124, b"other"))
            bus.send(canx.Message(0x123, i.to_bytes(2, "big")))
            if log.poll() is not None:
                break
            time.sleep(0.05)
        assert log.wait(10 * timeout_scale) == 0, _stderr(log)
    lines = out.read_text().splitlines()
    assert len(lines) == 3, lines
    counters = [int(line.rsplit("#", 1)[1], 16) for line in lines]
    assert counters == list(range(counters[0], counters[0] + 3))
    assert all(line.split(" ")[1] == channel and "123#" in line for line in lines), lines


#: A python-can udp_multicast node in its own process: answers every frame
#: with an even id by the same frame with id | 1 and prints what it got as
#: JSON; stops at id 0x7FE. (python-can's bus also receives its own frames:
#: the odd ids it sent come back to it and are skipped.)
RESPONDER = textwrap.dedent("""
    import json, sys
    import can
    kw = {"channel": sys.argv[1], "port": int(sys.argv[2])} if len(sys.argv) > 1 else {}
    try:
        bus = can.Bus(interface="udp_multicast", fd=True, **kw)
    except can.CanInitializationError as e:
        sys.exit(print("cannot open:", e, repr(e.__cause__), flush=True))
    with bus:
        print("ready", flush=True)
        while True:
            m = bus.recv(30)
            if m is None:
                break
            if m.arbitration_id & 1:
                continue
            print(json.dumps(dict(id=m.arbitration_id, ext=m.is_extended_id, rtr=m.is_remote_frame, fd=m.is_fd,
                                  brs=m.bitrate_switch, esi=m.error_state_indicator, dlc=m.dlc,
                                  data=bytes(m.data).hex(), ts=m.timestamp)), flush=True)
            if m.arbitration_id == 0x7FE:
                break
            m.arbitration_id |= 1
            bus.send(m)
""")

MESSAGES = [
    dict(arbitration_id=0x100, is_extended_id=False, data=b"\x01\x02\x03"),
    dict(arbitration_id=0x7FC, is_extended_id=False, data=bytes(range(8))),
    dict(arbitration_id=0x1ABCDEF0, is_extended_id=True, data=b"\xAA" * 8),
    dict(arbitration_id=0x200, is_extended_id=False, is_remote_frame=True, dlc=5),
    dict(arbitration_id=0x18EAFF00, is_extended_id=True, is_remote_frame=True, dlc=0),
    dict(arbitration_id=0x300, is_extended_id=False, is_fd=True, bitrate_switch=True, data=bytes(range(64))),
    dict(arbitration_id=0x12345678, is_extended_id=True, is_fd=True, error_state_indicator=True, data=b"\x55" * 12),
    dict(arbitration_id=0x302, is_extended_id=False, is_fd=True, data=b""),
]


def _exchange_with_python_can(channel: str, responder_args: List[str], timeout_scale: float) -> None:
    pytest.importorskip("msgpack")  # python-can's udp_multicast needs it
    with _spawn([sys.executable, "-c", RESPONDER, *responder_args]) as proc:
        lines = _lines(proc.stdout)  # type: ignore[arg-type]
        first = lines.get(timeout=20 * timeout_scale)
        if first.startswith("cannot open:"):
            # python-can joins on the interface of the route to the group, and
            # has no loopback fallback (canx does, for IPv4).
            pytest.skip(f"python-can's udp_multicast cannot work on this host: {first}")
        assert first == "ready", _stderr(proc)
        with can.Bus(interface="canx", channel=channel, fd=True) as bus:
            for kw in MESSAGES:
                sent = can.Message(**kw)
                t0 = time.time()
                bus.send(sent)
                # python-can received it as sent ...
                seen = json.loads(lines.get(timeout=5 * timeout_scale))
                assert (seen["id"], seen["ext"], seen["rtr"], seen["fd"], seen["brs"], seen["esi"], seen["dlc"],
                        seen["data"]) == (sent.arbitration_id, sent.is_extended_id, sent.is_remote_frame,
                                          sent.is_fd, sent.bitrate_switch, sent.error_state_indicator, sent.dlc,
                                          bytes(sent.data).hex())
                assert t0 - 1 < seen["ts"] < t0 + 5 * timeout_scale
                # ... and canx receives python-can's answer as python-can sent it.
                got = bus.recv(5 * timeout_scale)
                assert got is not None, f"no answer to {sent}"
                sent.arbitration_id |= 1
                _same(sent, got)
                assert got.is_rx and t0 - 1 < got.timestamp
                assert bus.recv(0) is None, "canx received its own frame"
            bus.send(can.Message(arbitration_id=0x7FE, is_extended_id=False))
            assert json.loads(lines.get(timeout=5 * timeout_scale))["id"] == 0x7FE
        proc.wait(10 * timeout_scale)
        assert proc.returncode == 0, _stderr(proc)


def test_python_can_udp_multicast_both_ways(group: str, timeout_scale: float) -> None:
    address, port = group.rsplit(":", 1)
    _exchange_with_python_can(f"udp_multicast:{group}", [address, port], timeout_scale)


def test_python_cans_default_group_is_canxs(timeout_scale: float) -> None:
    """``udp_multicast:`` and python-can's ``udp_multicast`` without channel
    or port meet (IPv6 group ff15:7079:7468:6f6e:6465:6d6f:6d63:6173, port
    43113). Skips where this host has no IPv6 multicast."""
    try:
        canx.CAN(channel="udp_multicast:").deinit()
    except canx.CanxError as e:
        pytest.skip(f"no IPv6 multicast here: {e}")
    _exchange_with_python_can("udp_multicast:", [], timeout_scale)


def test_ipv4_default_group_by_interface_and_channel(timeout_scale: float) -> None:
    """python-can's spelling: ``interface="udp_multicast", channel=GROUP``."""
    with canx.CAN(interface="udp_multicast", channel="239.74.163.2", loopback=True) as a:
        assert a.channel == "239.74.163.2"
        listener = a.listen(timeout=2 * timeout_scale)
        a.send(canx.Message(0x123, b"v4"))
        got = listener.receive()
        assert got is not None and got.data == b"v4" and got.is_own


def test_garbage_datagrams_are_counted(group: str, timeout_scale: float) -> None:
    address, port = group.rsplit(":", 1)
    with canx.CAN(channel=f"udp_multicast:{group}") as bus:
        listener = bus.listen(timeout=5 * timeout_scale)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        junk = [b"", b"hello", b"\xc1", b"\x81\xa3abc\x01" + b"\x00", b"\x93\x01\x02\x03",
                b"\x82\xaearbitration_id\xcd\x08\x00\xaeis_extended_id\xc2"]  # id 0x800 is not standard
        for j in junk:
            try:
                s.sendto(j, (address, int(port)))
            except OSError:  # no multicast route: canx joined on loopback
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
                s.sendto(j, (address, int(port)))
        with can.Bus(interface="canx", channel=f"udp_multicast:{group}") as other:
            other.send(can.Message(arbitration_id=0x42, is_extended_id=False, data=b"ok"))
        got = listener.receive()
        assert got is not None and got.id == 0x42 and got.data == b"ok"
        s.close()
        stats = bus.stats()
        assert stats["malformed"] == len(junk), stats
        assert stats["received"] == 1 and stats["receive_thread_stopped"] == 0


ECU = textwrap.dedent("""
    import sys, threading
    from canx import j1939
    got = threading.Event()
    name = j1939.Name(identity_number=7, manufacturer_code=100)
    with j1939.ECU(channel=sys.argv[1], name=name, address=0x80) as ecu:
        ecu.on_pgn(0xEF00, lambda m: (print(m.via, m.source, m.data.hex(), flush=True), got.set()))
        print("claimed", hex(ecu.claim_address(timeout=10)), flush=True)
        got.wait(30)
""")


def test_j1939_ecus_in_two_processes(group: str, timeout_scale: float) -> None:
    from canx import j1939

    channel = f"udp_multicast:{group}"
    with j1939.ECU(channel=channel, name=j1939.Name(identity_number=8, manufacturer_code=100), address=0x90) as ecu:
        assert ecu.claim_address(timeout=5 * timeout_scale) == 0x90
        with _spawn([sys.executable, "-c", ECU, channel]) as proc:
            lines = _lines(proc.stdout)  # type: ignore[arg-type]
            assert lines.get(timeout=30 * timeout_scale) == "claimed 0x80", _stderr(proc)
            # The other process's Address Claimed reached this one ...
            assert ecu.address_table().get(0x80) == j1939.Name(identity_number=7, manufacturer_code=100)
            # ... and an RTS/CTS transfer (J1939-21 5.10) goes across.
            data = bytes(range(40))
            assert ecu.send_pgn(0xEF00, data, destination=0x80).result(10 * timeout_scale) == len(data)
            assert lines.get(timeout=10 * timeout_scale) == f"tp 144 {data.hex()}"
            proc.wait(10 * timeout_scale)
        assert proc.returncode == 0, _stderr(proc)


def test_loss_is_counted_not_hidden(group: str) -> None:
    """A flood from another process: every frame is received or counted as
    dropped (by the kernel's socket buffer, Linux; or canx's inbox)."""
    n = 20000
    sender = textwrap.dedent(f"""
        import canx
        with canx.CAN(channel="udp_multicast:{group}") as bus:
            for i in range({n}):
                bus.send(canx.Message(0x10, i.to_bytes(4, "little")))
    """)
    with canx.CAN(channel=f"udp_multicast:{group}") as bus:
        listener = bus.listen(timeout=0.5)
        subprocess.run([sys.executable, "-c", sender], check=True, env=ENV, timeout=120)
        seen: List[int] = []
        while (m := listener.receive()) is not None:
            seen.append(int.from_bytes(m.data, "little"))
        stats = bus.stats()
        assert seen == sorted(seen), "one sender's frames arrive in order"
        assert len(seen) == stats["received"]
        if sys.platform == "linux":
            assert stats["received"] + stats["backend_dropped"] == n, stats
        else:
            assert stats["received"] + stats["backend_dropped"] <= n, stats


def test_bad_channels() -> None:
    for bad in ["udp_multicast:127.0.0.1", "udp_multicast:239.1.2.3:0", "udp_multicast:[ff15::1",
                "udp_multicast:nonsense"]:
        with pytest.raises(ValueError, match="multicast group"):
            canx.CAN(channel=bad)


def test_detect_available_configs_lists_the_default_groups() -> None:
    configs = can.detect_available_configs("canx")
    for ch in ("udp_multicast:ff15:7079:7468:6f6e:6465:6d6f:6d63:6173", "udp_multicast:239.74.163.2"):
        assert {"interface": "canx", "channel": ch} in configs
