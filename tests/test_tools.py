"""canx dump/send/gen/log/replay and the candump .log codec, on the virtual
bus (in-process: a virtual channel lives in one process). Bad input: one
line, exit status 2, no traceback. Against real can-utils: test_tools_vcan.py
style tests at the end (marked vcan, run in the VM)."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest

import canx
from canx import _canx
from canx.cli import main
from canx.tools._common import parse_channel_spec

DATA = Path(__file__).parent / "data"
_names = itertools.count()


@pytest.fixture
def chan() -> str:
    return f"virtual:tools-{next(_names)}"


def _wait_for_node(channel: str, timeout: float = 5.0) -> None:
    name = channel.split(":", 1)[1]
    deadline = time.time() + timeout
    while name not in canx.virtual_channels():
        assert time.time() < deadline, f"nobody joined {channel}"
        time.sleep(0.01)
    # The node joins before the tool adds its listener: give it that moment.
    time.sleep(0.2)


def _collect(bus, n: int, timeout: float = 2.0) -> list:
    """Frames from a RawBus until `n` arrived or `timeout` s passed."""
    got: list = []
    deadline = time.time() + timeout
    while len(got) < n and time.time() < deadline:
        got += bus.recv_many(1000, 0.05)
    return got


class Bg:
    """Runs `canx ARGS` in a thread, capturing what it prints."""

    def __init__(self, argv: List[str]) -> None:
        from canx.tools import dump

        self.out = io.StringIO()
        self.rc = None

        def target() -> None:
            from canx.cli import _parser

            args = _parser().parse_args(argv)
            self.rc = dump.run(args, self.out) if args.command == "dump" else main(argv)

        self.t = threading.Thread(target=target, daemon=True)
        self.t.start()

    def join(self, timeout: float = 10.0) -> str:
        self.t.join(timeout)
        assert not self.t.is_alive(), "the tool did not finish"
        return self.out.getvalue()


# ------------------------------------------------------------------ log codec


def test_log_files_round_trip_line_for_line() -> None:
    for name in ("candump_kinds.log", "candump_python_can.log"):
        for line in (DATA / name).read_text().splitlines():
            ts, ch, f, is_rx = _canx.parse_log_line(line)
            assert _canx.format_log_line(ts, ch, *f[:9], is_rx) == line


def test_log_line_fields() -> None:
    lines = (DATA / "candump_kinds.log").read_text().splitlines()
    ts, ch, f, is_rx = _canx.parse_log_line(lines[0])
    assert (ts, ch, is_rx) == (1700000000.0, "vcan0", None)
    assert f[:9] == (0x123, False, False, False, False, False, False, 4, b"\xde\xad\xbe\xef")
    _, _, f, _ = _canx.parse_log_line(lines[5])
    assert f[:9] == (0x321, False, True, False, False, False, False, 4, b"")
    _, _, f, _ = _canx.parse_log_line(lines[7])
    assert f[:9] == (0x12345678, True, False, False, True, True, True, 64, bytes(range(64)))
    _, _, f, _ = _canx.parse_log_line(lines[9])
    assert f[3] and f[0] == 4 and f[8] == b"\x00\x04" + bytes(6)
    assert _canx.parse_log_line(lines[10])[3] is True and _canx.parse_log_line(lines[11])[3] is False


def test_python_can_reads_what_canx_writes_and_back(tmp_path: Path) -> None:
    can = pytest.importorskip("can")
    msgs = list(can.LogReader(str(DATA / "candump_python_can.log")))
    assert [(m.arbitration_id, m.is_remote_frame, m.is_fd, m.is_rx) for m in msgs] == \
        [(0xC8, False, False, True), (0x18FF1234, True, False, False), (0xC9, False, True, True)]
    out = tmp_path / "pc.log"
    with can.Logger(str(out)) as w:
        for m in msgs:
            w.on_message_received(m)
    assert out.read_text().splitlines() == (DATA / "candump_python_can.log").read_text().splitlines()


@pytest.mark.parametrize("text, problem", [
    ("vcan0 123#11", "timestamp"), ("(1.0) vcan0 123#1", "hex digits"), ("(1.0) vcan0 1234#11", "CAN id"),
    ("(1.0) vcan0 123#R9", "remote"), ("(1.0) vcan0 123##", "FD flags"), ("(1.0) vcan0 123#11 X", "after the frame"),
])
def test_bad_log_lines_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _canx.parse_log_line(text)


def test_candump_filter_syntax() -> None:
    s = parse_channel_spec("vcan0,123:7FF,12345678~1FFFFFFF,#4,j")
    assert s.channel == "vcan0" and s.join and s.error_mask == 4
    assert s.filters == [(0x123, 0x7FF, False), (0x80000000 | 0x12345678, 0x1FFFFFFF, True)]
    assert s.kernel_filters() is None, "join is applied in Python"
    data = (0x123, False, False, False, False, False, False, 0, b"", 0.0, False)
    assert s.accepts(data)
    assert not s.accepts((0x124,) + data[1:])
    assert s.accepts((4, False, False, True) + data[4:]) and not s.accepts((8, False, False, True) + data[4:])
    assert parse_channel_spec("virtual:x").kernel_filters() is None


# ------------------------------------------------------------------ dump / send


def test_dump_log_format_and_send(chan: str) -> None:
    bg = Bg(["dump", "-L", "-n", "4", chan])
    _wait_for_node(chan)
    assert main(["send", chan, "123#DEADBEEF", "12345678#R", "321##1AABB", "7FF#11.22"]) == 0
    lines = bg.join().splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == [
        f"{chan} 123#DEADBEEF", f"{chan} 12345678#R", f"{chan} 321##1AABB", f"{chan} 7FF#1122"]
    assert abs(float(lines[0][1:18]) - time.time()) < 10


def test_dump_default_format_filters_and_relative_times(chan: str) -> None:
    bg = Bg(["dump", "-t", "z", "-n", "3", f"{chan},100:700,12345678:1FFFFFFF"])
    _wait_for_node(chan)
    main(["send", chan, "123#0102", "223#FF", "12345678#R3", "1ff##1" + "00" * 12])
    lines = bg.join().splitlines()
    assert lines[0] == f" (000.000000)  {chan}  123   [2]  01 02"
    assert lines[1].endswith(f"{chan}  12345678   [3]  remote request")
    assert lines[2].endswith(f"{chan}  1FF  [12]  " + " ".join(["00"] * 12))


def test_dump_stops_after_idle_timeout(chan: str) -> None:
    t0 = time.time()
    assert main(["dump", "-T", "200", chan]) == 0
    assert 0.15 < time.time() - t0 < 5


# ------------------------------------------------------------------ gen


def test_gen_count_ids_lengths(chan: str) -> None:
    bus = _canx.RawBus(chan, fd=True)
    try:
        assert main(["gen", chan, "-g", "0", "-n", "50", "-I", "i", "-L", "i", "-D", "i", "-f", "-e"]) == 0
        got = _collect(bus, 50)
    finally:
        bus.shutdown()
    assert [f[0] for f in got] == list(range(50))
    assert all(f[1] and f[4] for f in got)
    lens = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64]
    assert [len(f[8]) for f in got] == [lens[i % 16] for i in range(50)]
    assert got[7][8] == bytes([7]) * 7


def test_gen_rate(chan: str) -> None:
    bus = _canx.RawBus(chan)
    t0 = time.time()
    main(["gen", chan, "--rate", "100", "-n", "20", "-I", "42", "-L", "1", "-D", "AB"])
    elapsed = time.time() - t0
    got = _collect(bus, 20)
    bus.shutdown()
    assert 0.15 < elapsed < 2.0
    assert len(got) == 20 and {f[0] for f in got} == {0x42} and {f[8] for f in got} == {b"\xab"}


# ------------------------------------------------------------------ log / replay


def test_log_then_replay_with_timing(chan: str, tmp_path: Path) -> None:
    out = tmp_path / "rec.log"
    bg = Bg(["log", chan, "-f", str(out), "-n", "3", "-x"])
    _wait_for_node(chan)
    sender = _canx.RawBus(chan)
    for i in range(3):
        sender.send(0x100 + i, False, False, False, False, False, 1, bytes([i]))
        time.sleep(0.1)
    assert bg.join() == ""
    lines = out.read_text().splitlines()
    assert [ln.split()[2:] for ln in lines] == [["100#00", "R"], ["101#01", "R"], ["102#02", "R"]]
    target = f"virtual:replay-{next(_names)}"
    rx = _canx.RawBus(target)
    t0 = time.time()
    assert main(["replay", str(out), "--channel", target]) == 0
    real = time.time() - t0
    got = _collect(rx, 3)
    t1 = time.time()
    assert main(["replay", str(out), "--channel", target, "--speed", "10"]) == 0
    fast = time.time() - t1
    got += _collect(rx, 3)
    rx.shutdown()
    sender.shutdown()
    assert [f[0] for f in got] == [0x100, 0x101, 0x102] * 2
    assert 0.15 < real < 1.0, f"original timing: ~0.2 s, took {real}"
    assert fast < 0.15, f"--speed 10 took {fast}"


def test_replay_maps_channels_and_reads_python_can_formats(tmp_path: Path) -> None:
    pytest.importorskip("can")
    a, b = f"virtual:map-{next(_names)}", f"virtual:map-{next(_names)}"
    rx_a, rx_b = _canx.RawBus(a, fd=True), _canx.RawBus(b, fd=True)
    assert main(["replay", str(DATA / "candump_kinds.log"), "--no-timing", "--map", f"vcan0={a}",
                 "--map", f"vcan1={b}"]) == 0
    ga, gb = _collect(rx_a, 8), _collect(rx_b, 3)
    assert rx_a.recv_many(100, 0.1) == [] and rx_b.recv_many(100, 0) == []
    assert len(ga) == 8 and len(gb) == 3, "error frames are not replayed"
    # write .asc through python-can, replay it
    asc = tmp_path / "x.asc"
    c = f"virtual:asc-{next(_names)}"
    bg = Bg(["log", c, "-f", str(asc), "-n", "2"])
    _wait_for_node(c)
    main(["send", c, "123#0102", "12345678#AA"])
    bg.join()
    assert main(["replay", str(asc), "--channel", a, "--no-timing"]) == 0
    got = _collect(rx_a, 2)
    rx_a.shutdown()
    rx_b.shutdown()
    assert [(f[0], f[1], f[8]) for f in got] == [(0x123, False, b"\x01\x02"), (0x12345678, True, b"\xaa")]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("argv, words", [
    (["send", "virtual:x", "12#11"], ["'12#11'", "CAN id"]),
    (["send", "virtual:x", "123#1"], ["'123#1'", "hex"]),
    (["send", "virtual:x", "123#112233445566778899"], ["too many"]),
    (["send", "pcan:x", "123#11"], ["'pcan:x'", "unknown interface"]),
    (["send", "nosuchcan0", "123#11"], ["'nosuchcan0'"]),
    (["dump", "virtual:x,12:zz"], ["'12:zz'", "hexadecimal"]),
    (["dump", "virtual:x", "-n", "0"], ["-n"]),
    (["gen", "virtual:x", "-I", "800"], ["'800'", "7FF"]),
    (["gen", "virtual:x", "-L", "9", "-n", "1"], ["'9'"]),
    (["replay", str(DATA / "candump_bad.log")], ["candump_bad.log:2", "'(1700000000.000100) vcan0 123#DEADBEE'"]),
    (["replay", "/nonexistent/x.log"], ["'/nonexistent/x.log'"]),
])
def test_bad_input_one_line_exit_2(argv: List[str], words: List[str], capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"canx {argv[0]}: ")
    for w in words:
        assert w in err


def test_bad_input_in_a_real_process_has_no_traceback() -> None:
    r = subprocess.run([sys.executable, "-m", "canx", "send", "vcan0", "xyz"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == "canx send: bad frame 'xyz': expected '#' after the CAN id"


# ------------------------------------------------------------------ against can-utils on vcan (VM)

_KINDS = ["123#DEADBEEF", "7FF#", "000#0011223344556677", "1FFFFFFF#AA", "12345678#R", "321#R4",
          "010##0000102030405060708090A0B", "12345678##3" + "".join(f"{i:02X}" for i in range(64)), "456##1"]


def _canon(text: str) -> tuple:
    """Frame text -> fields (FD flag digits may carry FDF in newer can-utils)."""
    return _canx.parse_frame_text(text)[:9]


@pytest.mark.vcan
def test_real_candump_log_is_read_by_the_core(vcan_channel: str, can_utils, tmp_path: Path) -> None:
    with can_utils.candump(vcan_channel) as cap:
        for k in _KINDS:
            can_utils.cansend(vcan_channel, k)
        lines = cap.wait(len(_KINDS), timeout=5)
    (tmp_path / "real.log").write_text("\n".join(lines) + "\n")
    parsed = [_canx.parse_log_line(ln) for ln in lines]
    assert [p[1] for p in parsed] == [vcan_channel] * len(_KINDS)
    assert [p[2][:9] for p in parsed] == [_canon(k) for k in _KINDS]
    # and the file replays through canx, arriving intact at candump
    with can_utils.candump(vcan_channel) as cap:
        assert main(["replay", str(tmp_path / "real.log"), "--no-timing"]) == 0
        again = cap.wait(len(_KINDS), timeout=5)
    assert [_canon(ln.split()[2]) for ln in again] == [_canon(k) for k in _KINDS]


@pytest.mark.vcan
def test_canx_dump_matches_candump(vcan_channel: str, can_utils) -> None:
    bg = Bg(["dump", "-L", "-n", str(len(_KINDS)), vcan_channel])
    time.sleep(0.5 * can_utils.scale)
    with can_utils.candump(vcan_channel) as cap:
        for k in _KINDS:
            can_utils.cansend(vcan_channel, k)
        theirs = cap.wait(len(_KINDS), timeout=5)
    ours = bg.join(10 * can_utils.scale).splitlines()
    assert [_canon(ln.split()[2]) for ln in ours] == [_canon(ln.split()[2]) for ln in theirs]
    # same kernel timestamps (canx carries them as float seconds: within a microsecond)
    for a, b in zip(ours, theirs):
        assert abs(float(a.split()[0][1:-1]) - float(b.split()[0][1:-1])) <= 1.5e-6


@pytest.mark.vcan
def test_canx_send_and_gen_reach_candump(vcan_channel: str, can_utils) -> None:
    with can_utils.candump(vcan_channel) as cap:
        assert main(["send", vcan_channel, *_KINDS]) == 0
        got = cap.wait(len(_KINDS), timeout=5)
    assert [_canon(ln.split()[2]) for ln in got] == [_canon(k) for k in _KINDS]
    with can_utils.candump(vcan_channel) as cap:
        assert main(["gen", vcan_channel, "-g", "0", "-n", "200", "-I", "i", "-L", "8", "-D", "i"]) == 0
        got = cap.wait(200, timeout=10)
    assert [int(ln.split()[2].split("#")[0], 16) for ln in got] == list(range(200))


def test_file_written_by_real_candump_in_the_vm() -> None:
    """tests/data/candump_real_can-utils-2020.11.log: `candump -L vcan0` (can-utils 2020.11,
    kernel 6.1, in scripts/test-vm) while cansend sent these frames. The kernel's FD lines
    carry the FDF flag (##4, ##5, ##7): accepted and not needed."""
    sent = ["123#DEADBEEF", "7FF#", "000#0011223344556677", "1FFFFFFF#AA", "12345678#R", "321#R",
            "010##0000102030405060708090A0B", "12345678##3" + "".join(f"{i:02X}" for i in range(64)), "456##1",
            "123#11.22.33"]
    lines = (DATA / "candump_real_can-utils-2020.11.log").read_text().splitlines()
    parsed = [_canx.parse_log_line(ln) for ln in lines]
    assert [p[2][:9] for p in parsed] == [_canx.parse_frame_text(k)[:9] for k in sent]
    assert all(p[1] == "vcan0" and p[3] is None for p in parsed)
    assert parsed[0][0] == 1795319843.958953
    for ln, (ts, ch, f, rx) in zip(lines, parsed):
        again = _canx.parse_log_line(_canx.format_log_line(ts, ch, *f[:9], rx))
        assert again[:3] == (ts, ch, f)


def test_progress_on_a_terminal_only() -> None:
    """Long runs report frames, rate and drops on stderr when it is a
    terminal, and stay silent on pipes and files."""
    import io

    from canx.tools._common import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    p = Progress("canx gen", drops=lambda: 3, stream=tty, interval=0.0)
    for _ in range(5):
        p.add()
    p.close()
    lines = tty.getvalue().split("\r")
    assert lines[-1].startswith("canx gen: 5 frames, ") and "3 dropped" in lines[-1]
    assert tty.getvalue().endswith("\n")
    pipe = io.StringIO()
    q = Progress("canx gen", stream=pipe, interval=0.0)
    q.add(10)
    q.close()
    assert pipe.getvalue() == "" and q.count == 10


def test_gen_shows_progress_under_a_pty(tmp_path) -> None:
    """`canx gen` under a real terminal (pty) prints its progress line."""
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "canx", "gen", "virtual:progress", "-g", "1", "-n", "1500"],
                           stdout=subprocess.DEVNULL, stderr=slave, timeout=60)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert r.returncode == 0
    assert b"canx gen: 1500 frames" in out
