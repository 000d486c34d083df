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
    assert lines[1] == "    ET1 EngineCoolantTemperature=90 degC EngineFuelTemperature1=45 degC " \
                       "EngineOilTemperature1=1774.96875 degC"


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
