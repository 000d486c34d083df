"""``canx dump --dbc`` on the virtual bus and ``canx plot`` on log files:
decoded values checked against cantools (the peer), PNGs checked for size
and content."""

from __future__ import annotations

import io
import itertools
import re
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

import canx
from canx.cli import main

cantools = pytest.importorskip("cantools", reason="cantools not installed (pip install canx[dbc])")

import canx.dbc as dbc  # noqa: E402

DATA = Path(__file__).parent / "data"
_names = itertools.count()


@pytest.fixture
def chan() -> str:
    return f"virtual:dbccli-{next(_names)}"


def _wait_for_node(channel: str, timeout: float = 5.0) -> None:
    name = channel.split(":", 1)[1]
    deadline = time.time() + timeout
    while name not in canx.virtual_channels():
        assert time.time() < deadline, f"nobody joined {channel}"
        time.sleep(0.01)
    time.sleep(0.2)  # the node joins before the tool adds its listener


class Dump:
    """``canx dump ARGS`` in a thread, capturing what it prints."""

    def __init__(self, argv: List[str]) -> None:
        from canx.cli import _parser
        from canx.tools import dump

        self.out = io.StringIO()
        self.rc: Optional[int] = None
        args = _parser().parse_args(argv)

        def target() -> None:
            self.rc = dump.run(args, self.out)

        self.t = threading.Thread(target=target, daemon=True)
        self.t.start()

    def join(self, timeout: float = 10.0) -> str:
        self.t.join(timeout)
        assert not self.t.is_alive(), "canx dump did not finish"
        return self.out.getvalue()


def _peer_line(frame_id: int, data: bytes) -> str:
    """What the decoded line should say, from cantools alone."""
    db = cantools.database.load_file(dbc.SAMPLE)
    m = db.get_message_by_frame_id(frame_id)
    parts = [m.name]
    for k, v in m.decode(data).items():
        unit = m.get_signal_by_name(k).unit
        parts.append(f"{k}={v} {unit}" if unit else f"{k}={v}")
    return "    " + " ".join(parts)


def test_dump_dbc_prints_signals_after_frames(chan: str) -> None:
    bg = Dump(["dump", "--dbc", dbc.SAMPLE, "-n", "5", chan])
    _wait_for_node(chan)
    eec1 = "F07D7D403800FF7D"
    assert main(["send", chan, f"0CF00417#{eec1}", "123#DEADBEEF", "5E8#03BB0708070800FA",
                 "18FEEE00#R", "0CF00433#F07D"]) == 0
    lines = bg.join().splitlines()
    assert bg.rc == 0
    assert lines[0].endswith(f"{chan}  0CF00417   [8]  F0 7D 7D 40 38 00 FF 7D")
    assert lines[1] == _peer_line(0x0CF00400, bytes.fromhex(eec1))
    assert "EngineSpeed=1800.0 rpm" in lines[1]
    assert lines[2].endswith("123   [4]  DE AD BE EF")                  # no DBC message: no line
    assert lines[3].endswith("5E8   [8]  03 BB 07 08 07 08 00 FA")
    assert lines[4] == _peer_line(0x5E8, bytes.fromhex("03BB0708070800FA"))
    assert "MAP=95.5 kPa" in lines[4] and "RPM=1800 rpm" in lines[4]
    assert lines[5].endswith("18FEEE00   [0]  remote request")            # remote: not decoded
    assert lines[6].endswith("0CF00433   [2]  F0 7D")
    assert lines[7].startswith("    cannot decode 2 bytes as EEC1")
    assert len(lines) == 8


def test_dump_dbc_with_log_format(chan: str) -> None:
    bg = Dump(["dump", "-L", "--dbc", dbc.SAMPLE, "-n", "1", chan])
    _wait_for_node(chan)
    main(["send", chan, "18FEEE2A#8255FFFFFFFFFFFF"])
    lines = bg.join().splitlines()
    assert re.fullmatch(r"\(\d+\.\d{6}\) " + re.escape(chan) + " 18FEEE2A#8255FFFFFFFFFFFF", lines[0])
    assert lines[1] == "    ET1 EngineCoolantTemperature=90 degC EngineFuelTemperature1=45 degC EngineOilTemperature1=n/a"


@pytest.mark.parametrize("argv, words", [
    (["dump", "--dbc", "/nonexistent/x.dbc", "virtual:x"], ["--dbc /nonexistent/x.dbc", "no such DBC file"]),
    (["dump", "--dbc", str(DATA / "candump_kinds.log"), "virtual:x"], ["candump_kinds.log", "Invalid syntax"]),
])
def test_dump_dbc_bad_file_one_line_exit_2(argv: List[str], words: List[str], capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("canx dump: ")
    for w in words:
        assert w in err


# ------------------------------------------------------------ canx plot

def _write_log(path: Path, seconds: float = 3.0) -> List[str]:
    """A candump .log: EEC1 from SA 0x00 and 0x01 every 10 ms (a sine of
    engine speed), ET1 every 100 ms, MegaSquirt dash frame 0 every 20 ms."""
    import math
    import struct

    lines = []
    t = 1_700_000_000.0
    for i in range(int(seconds * 100)):
        ts = t + i * 0.01
        rpm = 1500 + 700 * math.sin(i / 50)
        for sa in (0x00, 0x01):
            data = bytes([0xF0, 0x7D, 0x7D]) + struct.pack("<H", int(rpm / 0.125) + sa * 800) + b"\x00\xff\x7d"
            lines.append(f"({ts:.6f}) vcan0 0CF004{sa:02X}#{data.hex().upper()}")
        if i % 10 == 0:
            lines.append(f"({ts + 0.001:.6f}) vcan0 18FEEE00#{bytes([110 + i // 30, 80]).hex().upper()}FFFFFFFFFFFF")
        if i % 2 == 0:
            lines.append(f"({ts + 0.002:.6f}) vcan0 5E8#{struct.pack('>hHhh', 955, int(rpm), 1802, 250).hex().upper()}")
    lines.append(f"({t + seconds:.6f}) vcan0 123#R")
    path.write_text("\n".join(lines) + "\n")
    return lines


def _png_checks(path: Path, width: int, height: int) -> None:
    """The image exists, has the size asked for, and is not blank: its pixels
    vary and the first line color (matplotlib's tab:blue) is drawn."""
    import matplotlib.image
    import numpy as np

    assert path.is_file() and path.stat().st_size > 10_000
    img = matplotlib.image.imread(str(path))
    assert img.shape[:2] == (height, width)
    rgb = img[:, :, :3]
    assert float(rgb.std()) > 0.05
    assert float((rgb.mean(axis=2) < 0.9).mean()) > 0.01       # more than 1 % is not white
    blue = np.abs(rgb - np.array([0x1F, 0x77, 0xB4]) / 255).max(axis=2) < 0.08
    assert int(blue.sum()) > 500                                 # a line was drawn


def test_plot_collect_equals_cantools(tmp_path: Path) -> None:
    from canx.tools.plot import collect, read_frames, resolve_signals

    log = tmp_path / "run.log"
    lines = _write_log(log)
    db = dbc.load(dbc.SAMPLE)
    wanted = resolve_signals(db, ["EngineSpeed", "MS_Dash0.RPM", "EngineCoolantTemperature"])
    assert wanted == {"EEC1": {"EngineSpeed"}, "MS_Dash0": {"RPM"}, "ET1": {"EngineCoolantTemperature"}}
    from canx.busload import LoadBins
    bins = LoadBins(bitrate=250_000, interval=1.0, stuffing="none")
    series, units, t0 = collect(read_frames(log), db, wanted, bins)
    assert t0 == 1_700_000_000.0 and bins.frames == len(lines)
    # per second: 200 EEC1 (131 bits) + 10 ET1 (131) + 50 MS_Dash0 (111), then one 11-bit remote frame (47 bits)
    assert [round(v, 6) for _, v in bins.result()] == pytest.approx(
        [100 * (210 * 131 + 50 * 111) / 250_000] * 3 + [100 * 47 / 250_000])
    assert set(series) == {("EEC1", "EngineSpeed", 0), ("EEC1", "EngineSpeed", 1), ("MS_Dash0", "RPM", None),
                           ("ET1", "EngineCoolantTemperature", 0)}
    assert units["EEC1.EngineSpeed"] == "rpm" and units["ET1.EngineCoolantTemperature"] == "degC"
    peer = cantools.database.load_file(dbc.SAMPLE)
    expect: dict = {}
    for ln in lines:
        ts, _, frame = ln.split(" ")
        fid, data = frame.split("#")
        can_id = int(fid, 16)
        if data.startswith("R"):
            continue
        try:
            msg = peer.get_message_by_frame_id(can_id & ~0xFF if len(fid) == 8 else can_id)
        except KeyError:
            continue
        sig = {"EEC1": "EngineSpeed", "MS_Dash0": "RPM", "ET1": "EngineCoolantTemperature"}[msg.name]
        sa = can_id & 0xFF if len(fid) == 8 else None
        xs, ys = expect.setdefault((msg.name, sig, sa), ([], []))
        xs.append(float(ts[1:-1]))
        ys.append(float(msg.decode(bytes.fromhex(data))[sig]))
    assert set(expect) == set(series)
    for key, (xs, ys) in expect.items():
        assert series[key][0] == pytest.approx(xs) and series[key][1] == pytest.approx(ys), key


def test_plot_png_signals_and_bus_load(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib not installed (pip install canx[plot])")
    log = tmp_path / "run.log"
    _write_log(log)
    out = tmp_path / "run.png"
    assert main(["plot", str(log), "--dbc", dbc.SAMPLE, "-s", "EngineSpeed", "-s", "EngineCoolantTemperature",
                 "-s", "MS_Dash0.RPM", "--bus-load", "--bitrate", "250000", "-o", str(out), "--size", "900x700"]) == 0
    _png_checks(out, 900, 700)


def test_plot_bus_load_only_default_size(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib not installed (pip install canx[plot])")
    log = tmp_path / "run.log"
    _write_log(log, seconds=1.0)
    out = tmp_path / "load.png"
    assert main(["plot", str(log), "--bus-load", "--stuffing", "exact", "--interval", "0.05", "-o", str(out)]) == 0
    import matplotlib.image
    img = matplotlib.image.imread(str(out))
    assert img.shape[:2] == (800, 1200)
    rgb = img[:, :, :3]
    red = ((rgb[:, :, 0] > 0.75) & (rgb[:, :, 1] < 0.3) & (rgb[:, :, 2] < 0.3)).sum()   # tab:red bus load line
    assert int(red) > 300


def test_plot_python_can_format(tmp_path: Path) -> None:
    """A log in another format (python-can's BLF writer) plots the same data."""
    can = pytest.importorskip("can")
    pytest.importorskip("matplotlib", reason="matplotlib not installed (pip install canx[plot])")
    from canx.tools.plot import collect, read_frames, resolve_signals

    log = tmp_path / "run.log"
    _write_log(log, seconds=0.5)
    blf = tmp_path / "run.blf"
    with can.BLFWriter(str(blf)) as w:
        for m in can.LogReader(str(log)):
            w.on_message_received(m)
    db = dbc.load(dbc.SAMPLE)
    wanted = resolve_signals(db, ["EngineSpeed"])
    a, _, _ = collect(read_frames(log), db, wanted)
    b, _, _ = collect(read_frames(blf), db, wanted)
    assert set(a) == set(b) and all(a[k][1] == b[k][1] for k in a)
    out = tmp_path / "blf.png"
    assert main(["plot", str(blf), "--dbc", dbc.SAMPLE, "-s", "EngineSpeed", "-o", str(out)]) == 0
    _png_checks(out, 1200, 800)


@pytest.mark.parametrize("extra, words", [
    (["-s", "EngineSpeed"], ["--signal needs --dbc"]),
    ([], ["nothing to plot"]),
    (["--dbc", dbc.SAMPLE, "-s", "EngineSped"], ["no signal 'EngineSped'", "did you mean EngineSpeed"]),
    (["--dbc", dbc.SAMPLE, "-s", "ET1.EngineSpeed"], ["no signal 'ET1.EngineSpeed'"]),
    (["--dbc", dbc.SAMPLE, "-s", "DTC1_FMI"], ["none of the signals DTC1_FMI occur"]),
    (["--bus-load", "--size", "12x"], ["bad --size '12x'"]),
    (["--bus-load", "--interval", "0"], ["--interval"]),
    (["--bus-load", "--bitrate", "0"], ["--bitrate"]),
])
def test_plot_bad_input_one_line_exit_2(tmp_path: Path, extra: List[str], words: List[str],
                                        capsys: pytest.CaptureFixture) -> None:
    log = tmp_path / "run.log"
    _write_log(log, seconds=0.2)
    assert main(["plot", str(log), *extra, "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("canx plot: "), err
    for w in words:
        assert w in err
    assert not (tmp_path / "x.png").exists()


def test_plot_missing_log_and_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plot", str(tmp_path / "nope.log"), "--bus-load", "-o", str(tmp_path / "x.png")]) == 2
    assert "nope.log" in capsys.readouterr().err
    assert main(["plot", str(DATA / "candump_bad.log"), "--bus-load", "-o", str(tmp_path / "x.png")]) == 2
    assert "candump_bad.log:2" in capsys.readouterr().err


def test_plot_without_display_asks_for_output(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib not installed (pip install canx[plot])")
    import matplotlib
    monkeypatch.setattr(matplotlib, "get_backend", lambda: "agg")
    log = tmp_path / "run.log"
    _write_log(log, seconds=0.2)
    assert main(["plot", str(log), "--bus-load"]) == 2
    assert "-o FILE" in capsys.readouterr().err


def test_plot_missing_matplotlib_names_the_extra(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    log = tmp_path / "run.log"
    _write_log(log, seconds=0.2)
    assert main(["plot", str(log), "--bus-load", "-o", str(tmp_path / "x.png")]) == 2
    assert "pip install canx[plot]" in capsys.readouterr().err


def test_plot_leaves_out_j1939_not_available(tmp_path: Path) -> None:
    from canx.tools.plot import collect, read_frames, resolve_signals

    log = tmp_path / "na.log"
    log.write_text("(1.000000) vcan0 0CF00400#F07D7D40380000FF\n"
                   "(1.010000) vcan0 0CF00400#F07D7DFFFF0000FF\n"      # EngineSpeed 0xFFFF: n/a
                   "(1.020000) vcan0 0CF00400#F07D7D00FE0000FF\n"      # 0xFE00: error
                   "(1.030000) vcan0 0CF00400#F07D7D80380000FF\n")
    db = dbc.load(dbc.SAMPLE)
    series, _, _ = collect(read_frames(log), db, resolve_signals(db, ["EngineSpeed"]))
    assert series == {("EEC1", "EngineSpeed", 0): ([1.0, 1.03], [1800.0, 1808.0])}
