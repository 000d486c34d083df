"""canx monitor: the model alone (rates, period, jitter, changed bytes, J1939
grouping and TP reassembly against canx's J1939 engine), and the full-screen
view in tmux fed from another process over udp_multicast."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Callable, List, Optional

import pytest

import canx
from canx import j1939
from canx._canx import RawBus
from canx.tools._common import Fields
from canx.tools.monitor import (GAIN, MonitorModel, TpReassembler, frame_bits, j1939_fields, parse_id_filter)


def fr(aid: int, data: bytes, ts: float, ext: bool = False) -> Fields:
    return (aid, ext, False, False, False, False, False, len(data), data, ts, False)


# ------------------------------------------------------------------------------------------ model

def test_period_rate_and_zero_jitter_for_a_regular_frame() -> None:
    m = MonitorModel()
    m.add([fr(0x123, b"\x00", 100.0 + 0.010 * i) for i in range(50)])
    r = m.rows[(0x123, False)]
    assert r.count == 50
    assert r.period == pytest.approx(0.010, abs=1e-9)
    assert r.rate == pytest.approx(100.0, rel=1e-6)
    assert r.jitter == pytest.approx(0.0, abs=1e-9)
    assert r.first == 100.0 and r.last == pytest.approx(100.49)


def test_jitter_follows_rfc3550() -> None:
    # Intervals alternate 9 ms and 11 ms: the period settles at 10 ms, jitter near 1 ms.
    m = MonitorModel()
    t = 0.0
    frames = []
    for i in range(400):
        frames.append(fr(0x10, b"", t))
        t += 0.009 if i % 2 else 0.011
    m.add(frames)
    r = m.rows[(0x10, False)]
    assert r.period == pytest.approx(0.010, abs=2e-4)
    assert 0.0007 < r.jitter < 0.0013
    # One step by hand: J += (|D| - J) / 16 with D the interval minus the running period.
    j, p = r.jitter, r.period
    m.add([fr(0x10, b"", r.last + 0.020)])
    d = 0.020 - p
    assert r.jitter == pytest.approx(j + (abs(d) - j) * GAIN)
    assert r.period == pytest.approx(p + d * GAIN)


def test_single_frame_has_no_period_and_batches_equal_one_by_one() -> None:
    a, b = MonitorModel(), MonitorModel()
    frames = [fr(0x1 + i % 3, bytes([i % 5]), i * 0.003) for i in range(90)]
    a.add(frames)
    for f in frames:
        b.add([f])
    for k in a.rows:
        ra, rb = a.rows[k], b.rows[k]
        assert (ra.count, ra.period, ra.jitter, ra.data) == (rb.count, rb.period, rb.jitter, rb.data)
    one = MonitorModel()
    one.add([fr(0x7, b"\x01", 5.0)])
    assert one.rows[(0x7, False)].period == 0.0 and one.rows[(0x7, False)].rate == 0.0


def test_changed_byte_masks() -> None:
    m = MonitorModel()
    m.add([fr(0x100, b"\x01\x02\x03\x04", 10.0)])
    r = m.rows[(0x100, False)]
    assert r.changed_mask(10.5, 1.0) == 0b1111  # the first frame: everything is new
    assert r.changed_mask(11.5, 1.0) == 0
    m.add([fr(0x100, b"\x01\xff\x03\x05", 12.0)])
    assert r.changed_mask(12.1, 1.0) == 0b1010
    m.add([fr(0x100, b"\x01\xff\x03\x05", 12.5)])  # same data: nothing new
    assert r.changed_mask(12.6, 1.0) == 0b1010 and r.changed_mask(13.2, 1.0) == 0
    assert r.last_change == 12.0
    m.add([fr(0x100, b"\x01\xff", 14.0)])  # a new length: all bytes changed
    assert r.changed_mask(14.0, 0.1) == 0b11 and r.data == b"\x01\xff"


def test_same_id_standard_and_extended_are_separate_rows_and_errors_are_counted() -> None:
    m = MonitorModel()
    err = (0x4, False, False, True, False, False, False, 8, bytes(8), 1.0, False)
    m.add([fr(0x123, b"", 1.0), fr(0x123, b"", 1.0, ext=True), err])
    assert set(m.rows) == {(0x123, False), (0x123, True)}
    assert m.frames == 2 and m.error_frames == 1


def test_bus_load_and_frames_per_second() -> None:
    m = MonitorModel(bitrate=125_000)
    m.snapshot(0.0)
    # 500 standard 8-byte frames (135 bits each, worst-case stuffing) in one second at 125 kbit/s: 54 %.
    m.add([fr(0x100, bytes(8), i / 500) for i in range(500)])
    s = m.snapshot(1.0)
    assert s.frames_per_s == pytest.approx(500)
    assert s.bus_load == pytest.approx(100 * 500 * 135 / 125_000)
    # The same numbers as canx.busload (which canx plot uses), for every id kind and length.
    from canx import busload
    for ext in (False, True):
        for n in range(9):
            assert frame_bits(ext, False, n) == busload.frame_bits(0, ext, data=bytes(n))
        assert frame_bits(ext, True, 8) == busload.frame_bits(0, ext, data=bytes(8), is_remote_frame=True)
    m.clear()
    assert not m.rows and m.frames == 0


def test_sort_and_filter() -> None:
    m = MonitorModel()
    m.add([fr(0x300, b"\x00", 0.0), fr(0x300, b"\x01", 0.01), fr(0x300, b"\x02", 0.02),
           fr(0x100, b"\x00", 0.0), fr(0x100, b"\x00", 0.5),
           fr(0x1ABCDE00, b"", 0.1, ext=True)])
    assert [r.arbitration_id for r in m.select("id")] == [0x100, 0x300, 0x1ABCDE00]
    assert [r.arbitration_id for r in m.select("count")][0] == 0x300
    assert [r.arbitration_id for r in m.select("rate")][0] == 0x300
    assert [r.arbitration_id for r in m.select("change")][0] == 0x300
    assert [r.arbitration_id for r in m.select("id", parse_id_filter("100"))] == [0x100]
    assert [r.arbitration_id for r in m.select("id", parse_id_filter("100:700 1abcde00"))] == [0x100, 0x1ABCDE00]
    with pytest.raises(ValueError):
        parse_id_filter("12G")
    with pytest.raises(ValueError):
        m.select("colour")


def test_j1939_ids() -> None:
    assert j1939_fields(0x0CF00400) == (0xF004, 0x00, 0xFF)      # EEC1 from 0x00, PDU2
    assert j1939_fields(0x18EA0017) == (0xEA00, 0x17, 0x00)      # Request to 0x00, PDU1


def test_j1939_grouping_by_pgn_and_source() -> None:
    m = MonitorModel(j1939=True)
    m.add([fr(0x0CF00400, bytes(8), 0.0, ext=True), fr(0x18F00400, bytes(8), 0.01, ext=True),  # same PGN, SA 0
           fr(0x0CF00401, bytes(8), 0.02, ext=True),                                            # SA 1
           fr(0x18EA0017, b"\xec\xfe\x00", 0.03, ext=True), fr(0x18EA2117, b"\xec\xfe\x00", 0.04, ext=True),
           fr(0x123, b"", 0.0)])                                                                 # 11-bit: by id
    assert set(m.rows) == {("j", 0xF004, 0x00), ("j", 0xF004, 0x01), ("j", 0xEA00, 0x17), (0x123, False)}
    assert m.rows[("j", 0xF004, 0x00)].count == 2
    req = m.rows[("j", 0xEA00, 0x17)]
    assert req.count == 2 and req.destination == 0x21
    assert [r.pgn for r in m.select("id")][-3:] == [0xEA00, 0xF004, 0xF004]
    assert [r.source for r in m.select("id", parse_id_filter("F004"))] == [0, 1]


def _bam(sa: int, pgn: int, payload: bytes, t0: float) -> List[Fields]:
    n = (len(payload) + 6) // 7
    cm = bytes([32, len(payload) & 0xFF, len(payload) >> 8, n, 0xFF, pgn & 0xFF, (pgn >> 8) & 0xFF, pgn >> 16])
    out = [fr(0x1CECFF00 | sa, cm, t0, ext=True)]
    for i in range(n):
        chunk = payload[7 * i:7 * i + 7].ljust(7, b"\xff")
        out.append(fr(0x1CEBFF00 | sa, bytes([i + 1]) + chunk, t0 + 0.05 * (i + 1), ext=True))
    return out


def test_tp_bam_reassembly_and_timeouts() -> None:
    m = MonitorModel(j1939=True)
    payload = bytes(range(20))
    m.add(_bam(0x42, 0xFECA, payload, 1.0))
    row = m.rows[("tp", 0xFECA, 0x42)]
    assert row.transport and row.data == payload and row.count == 1 and row.destination == 0xFF
    assert m.tp.completed == 1
    # A gap over T1 (750 ms) ends the session: nothing is completed.
    frames = _bam(0x43, 0xFECA, payload, 5.0)
    frames[-1] = frames[-1][:9] + (6.0, False)
    m.add(frames)
    assert ("tp", 0xFECA, 0x43) not in m.rows and m.tp.timeouts == 1
    # Out-of-range sequence numbers and short frames are ignored, never raise.
    tp = TpReassembler()
    assert tp.feed(0xEB00, 1, 2, b"", 0.0) is None
    assert tp.feed(0xEC00, 1, 2, b"\x10\x05", 0.0) is None
    assert tp.feed(0xEC00, 1, 2, bytes([16, 20, 0, 3, 3, 0, 0xEF, 0]), 0.0) is None
    assert tp.feed(0xEB00, 1, 2, bytes([9]) + bytes(7), 0.0) is None
    assert tp.feed(0xEC00, 2, 1, bytes([255, 0, 0, 0, 0, 0, 0xEF, 0]), 0.0) is None  # abort from the receiver
    assert tp.aborted == 1


@pytest.mark.parametrize("destination", [0xFF, 0x90])
def test_tp_reassembly_of_canx_j1939_transfers(destination: int) -> None:
    """BAM (to all) and RTS/CTS (to 0x90) sent by canx's J1939 engine, seen by a passive monitor."""
    ch = f"virtual:mon-tp-{destination}"
    tap = RawBus(ch)
    a = j1939.ECU(channel=ch, name=j1939.Name(identity_number=1), address=0x80)
    b = j1939.ECU(channel=ch, name=j1939.Name(identity_number=2), address=0x90)
    got = []
    b.on_pgn(0xEF00 if destination != 0xFF else 0xFECA, lambda msg: got.append(msg.data))
    try:
        a.claim_address()
        b.claim_address()
        payload = bytes((i * 7) & 0xFF for i in range(100))
        a.send_pgn(0xEF00 if destination != 0xFF else 0xFECA, payload, destination=destination)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got == [payload]
        time.sleep(0.1)
        m = MonitorModel(j1939=True)
        while True:
            batch = tap.recv_many(4096, 0.1)
            if not batch:
                break
            m.add(batch)
        pgn = 0xEF00 if destination != 0xFF else 0xFECA
        row = m.rows[("tp", pgn, 0x80)]
        assert row.data == payload and row.destination == destination
        assert m.rows[("j", 0xEC00, 0x80)].count >= 1 and m.rows[("j", 0xEB00, 0x80)].count == 15
    finally:
        a.close()
        b.close()
        tap.shutdown()


EEC1 = bytes([0x00, 0x7D, 0x7D, 0x40, 0x38, 0x00, 0x00, 0x7D])  # EngineSpeed 0x3840 * 0.125 = 1800 rpm


def test_dbc_decoding_of_rows_single_frames_and_tp_payloads() -> None:
    pytest.importorskip("cantools", reason="cantools not installed (pip install canx[dbc])")
    from canx import dbc
    from canx.tools.monitor import dbc_decoder
    decode = dbc_decoder(dbc.SAMPLE)
    for j in (False, True):
        m = MonitorModel(j1939=j)
        m.add([fr(0x0CF00401, EEC1, 1.0, ext=True), fr(0x7FF, b"\x01", 1.0)])
        rows = {r.arbitration_id: r for r in m.select()}
        text = decode(rows[0x0CF00401])
        assert text.startswith("EEC1 ") and "EngineSpeed=1800.0 rpm" in text
        assert decode(rows[0x7FF]) == ""  # no DBC message: nothing shown
    # DM1 with 2 DTCs (10 bytes) by BAM, decoded by PGN from the reassembled payload.
    dm1 = bytes([0x04, 0xFF, 0x6E, 0x00, 0x05, 0x01, 0x6F, 0x00, 0x03, 0x02])
    m = MonitorModel(j1939=True)
    m.add(_bam(0x00, 0xFECA, dm1, 2.0))
    text = decode(m.rows[("tp", 0xFECA, 0x00)])
    assert text.startswith("DM1 ") and "DTC1_SPN_Low=110" in text and "DTC1_FMI=5" in text
    # Too short for its message: shown as such, never raised.
    m.add([fr(0x0CF00402, b"\x00", 3.0, ext=True)])
    assert decode(m.rows[("j", 0xF004, 0x02)]) == "(not decodable)"


def test_cli_refuses_bad_input_with_one_line() -> None:
    def run(*args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run([sys.executable, "-m", "canx", "monitor", *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)
    r = run()
    assert r.returncode == 2 and "CHANNEL or --replay" in r.stderr
    r = run("virtual:x", "--bitrate", "0")
    assert r.returncode == 2 and "--bitrate" in r.stderr
    r = run("virtual:x")  # stdin is not a terminal
    assert r.returncode == 2 and "needs a terminal" in r.stderr


def test_replay_source_keeps_the_log_intervals_at_full_speed(tmp_path: "os.PathLike[str]") -> None:
    from canx.tools.monitor import ReplaySource
    log = os.path.join(str(tmp_path), "r.log")
    with open(log, "w") as fh:
        fh.write("".join(f"({50 + i * 0.1:.6f}) can0 123#{i:02X}\n" for i in range(20)))
    src = ReplaySource(log, speed=0, loops=2)
    m = MonitorModel()
    while not src.done():
        m.add(src.read())
    r = m.rows[(0x123, False)]
    assert r.count == 40 and r.period == pytest.approx(0.1, abs=0.01) and r.data == b"\x13"


# ------------------------------------------------------------------------------------------ tmux

TMUX = shutil.which("tmux")


class Tmux:
    def __init__(self, argv: List[str]) -> None:
        assert TMUX is not None
        self.sock = f"canx-test-{os.getpid()}-{time.monotonic_ns()}"
        cmd = " ".join(argv) + "; echo MONITOR-EXIT $?; sleep 60"
        subprocess.run([TMUX, "-L", self.sock, "new-session", "-d", "-s", "m", "-x", "240", "-y", "40", cmd],
                       check=True, env={**os.environ, "TERM": "xterm-256color"})

    def keys(self, *keys: str) -> None:
        subprocess.run([TMUX, "-L", self.sock, "send-keys", "-t", "m", *keys], check=True)

    def screen(self) -> str:
        return subprocess.run([TMUX, "-L", self.sock, "capture-pane", "-p", "-t", "m"], check=True,
                              capture_output=True, text=True).stdout

    def wait(self, cond: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        s = ""
        while time.monotonic() < deadline:
            s = self.screen()
            if cond(s):
                return s
            time.sleep(0.1)
        raise AssertionError("screen never matched:\n" + s)

    def close(self) -> None:
        subprocess.run([TMUX, "-L", self.sock, "kill-server"], capture_output=True)


def _has_cantools() -> bool:
    try:
        import cantools  # noqa: F401
    except ImportError:
        return False
    return True


def _row(screen: str, ident: str) -> Optional[str]:
    for line in screen.splitlines():
        if line.startswith(f" {ident} "):
            return line
    return None


@pytest.mark.skipif(TMUX is None, reason="tmux not installed: scripts/test installs it (apt-get install tmux)")
def test_monitor_in_tmux() -> None:
    group = f"udp_multicast:239.74.163.9:{43300 + os.getpid() % 500}"
    argv = [sys.executable, "-m", "canx", "monitor", group, "--megasquirt"]
    use_dbc = _has_cantools()
    if use_dbc:
        from canx import dbc
        argv += ["--dbc", dbc.SAMPLE]
    t = Tmux(argv)
    tx = canx.CAN(channel=group)
    try:
        t.wait(lambda s: "canx monitor" in s and " ID " in s)
        for i in range(3):
            tx.send(canx.Message(0x123, bytes([0xDE, 0xAD, 0xBE, i])))
            tx.send(canx.Message(0x18FEF100, bytes(range(8)), extended=True))
            time.sleep(0.05)
        tx.send(canx.Message(0x0CF00400, EEC1, extended=True))
        from canx import megasquirt
        for m in megasquirt.encode_dash({"rpm": 3000, "map_kpa": 95.5}):
            tx.send(m)
        # capture-pane may catch a screen half drawn: wait until everything is there.
        t.wait(lambda s: " 3 " in (_row(s, "123") or "") and "DE AD BE 02" in (_row(s, "123") or "")
               and "00 01 02 03 04 05 06 07" in (_row(s, "18FEF100") or "")
               and "map_kpa=95.5" in (_row(s, "5E8") or "") and "rpm=3000" in (_row(s, "5E8") or "")
               and "pw1_us=0" in (_row(s, "5E9") or "") and "total 12" in s
               and (not use_dbc or "EngineSpeed=1800.0 rpm" in (_row(s, "0CF00400") or "")))

        # Pause: counting goes on, the rows stay as they were.
        t.keys("space")
        t.wait(lambda s: "PAUSED" in s)
        tx.send(canx.Message(0x123, b"\x11\x22\x33\x44"))
        time.sleep(0.5)
        s = t.wait(lambda s: "DE AD BE 02" in (_row(s, "123") or ""))
        assert "11 22 33 44" not in (_row(s, "123") or "")
        t.keys("space")
        t.wait(lambda s: "11 22 33 44" in (_row(s, "123") or "") and " 4 " in (_row(s, "123") or "")
               and " live " in s)

        # Filter by id, then clear the filter.
        t.keys("/")
        time.sleep(0.2)
        t.keys("18FEF100", "Enter")
        t.wait(lambda s: "filter 18FEF100" in s and _row(s, "123") is None and _row(s, "18FEF100") is not None)
        t.keys("/")
        time.sleep(0.2)
        t.keys("Enter")
        s = t.wait(lambda s: "filter none" in s and _row(s, "123") is not None)

        # Sort by count, clear, quit.
        t.keys("s")
        t.wait(lambda s: "sort count" in s)
        t.keys("c")
        s = t.wait(lambda s: "total 0" in s and _row(s, "123") is None)
        t.keys("q")
        t.wait(lambda s: "MONITOR-EXIT 0" in s)
    finally:
        tx.deinit()
        t.close()


@pytest.mark.skipif(TMUX is None, reason="tmux not installed: scripts/test installs it (apt-get install tmux)")
def test_monitor_replays_a_log_with_j1939(tmp_path: "os.PathLike[str]") -> None:
    log = os.path.join(str(tmp_path), "run.log")
    lines = []
    for i in range(10):
        lines.append(f"({100 + i * 0.01:.6f}) can0 0CF00400#{i:02X}00000000000000")
    for f in _bam(0x42, 0xFECA, bytes(range(20)), 100.2):
        lines.append(f"({f[9]:.6f}) can0 {f[0]:08X}#{f[8].hex().upper()}")
    with open(log, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    t = Tmux([sys.executable, "-m", "canx", "monitor", "--replay", log, "--j1939", "--speed", "0"])
    try:
        t.wait(lambda s: "replay done" in s and "TP done 1" in s and "F004 00 FF" in s
               and "FECA 42 FF TP" in s and "00 01 02 03 04 05 06 07 .." in s)
        t.keys("q")
        t.wait(lambda s: "MONITOR-EXIT 0" in s)
    finally:
        t.close()
