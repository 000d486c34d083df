"""canx.busload: frame bit lengths (ISO 11898-1) and bus load per interval;
the exact and no-stuffing counts against can-utils' canbusload on vcan (VM)."""

from __future__ import annotations

import re
import threading
import time
from typing import List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canx import _canx
from canx.busload import bus_load, frame_bits, frame_time
from canx.cli import main


def test_overhead_matches_linux_can_length_h() -> None:
    # include/linux/can/length.h: 47 bits (SFF) and 67 bits (EFF) of overhead, intermission included
    for n in range(9):
        assert frame_bits(0x123, False, data=bytes(n), stuffing="none") == 47 + 8 * n
        assert frame_bits(0x1234567, True, data=bytes(n), stuffing="none") == 67 + 8 * n


def test_worst_case_is_davis_2007() -> None:
    assert frame_bits(0x123, False, data=bytes(8)) == 135
    assert frame_bits(0x1234567, True, data=bytes(8)) == 160
    assert frame_bits(0x123, False, data=b"") == 47 + 33 // 4
    assert frame_bits(0x123, False, is_remote_frame=True, dlc=8, data=b"") == 47 + 33 // 4


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.integers(0, 0x1FFFFFFF), st.binary(max_size=8), st.booleans())
def test_exact_is_between_none_and_worst(ext: bool, can_id: int, data: bytes, rtr: bool) -> None:
    can_id = can_id if ext else can_id & 0x7FF
    kw = dict(data=data, is_remote_frame=rtr)
    none = frame_bits(can_id, ext, stuffing="none", **kw)  # type: ignore[arg-type]
    exact = frame_bits(can_id, ext, stuffing="exact", **kw)  # type: ignore[arg-type]
    worst = frame_bits(can_id, ext, stuffing="worst", **kw)  # type: ignore[arg-type]
    assert none <= exact <= worst


def test_exact_known_frames() -> None:
    # 0x7FF with all-ones data: runs of ones throughout; 0x555 / 0x55 alternates (almost no stuffing)
    assert frame_bits(0x555, False, data=b"\x55" * 8, stuffing="exact") - 111 <= 2
    assert frame_bits(0x000, False, data=bytes(8), stuffing="exact") > frame_bits(
        0x555, False, data=b"\x55" * 8, stuffing="exact") + 10


def test_fd_frame_time_uses_the_data_bitrate() -> None:
    slow = frame_time(0x123, False, data=bytes(64), is_fd=True, bitrate=500_000)
    fast = frame_time(0x123, False, data=bytes(64), is_fd=True, bitrate_switch=True, bitrate=500_000,
                      data_bitrate=2_000_000)
    assert fast < slow / 2
    bits = frame_bits(0x123, False, data=bytes(64), is_fd=True, stuffing="none")
    # 29 + 512 data bits + 4 stuff count + 21 CRC + 7 fixed stuff bits + 13 (std id, no dynamic stuffing)
    assert bits == 1 + 11 + 1 + 1 + 1 + 1 + 1 + 1 + 4 + 512 + 4 + 21 + 7 + 13
    with pytest.raises(ValueError):
        frame_bits(0x123, False, stuffing="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        frame_time(0x123, False, bitrate=0)


def test_bus_load_per_interval() -> None:
    # 100 frames of 111 bits (no stuffing) at 111,000 bit/s fill 0.1 s exactly: 100 %
    frames = [(10.0 + i * 0.001, 0x123, False, False, False, False, 8, bytes(8)) for i in range(100)]
    # then nothing for 0.25 s, then 10 frames: 10 %
    frames += [(10.35 + i * 0.001, 0x123, False, False, False, False, 8, bytes(8)) for i in range(10)]
    load = bus_load(frames, bitrate=111_000, interval=0.1, stuffing="none")
    assert [round(t, 6) for t, _ in load] == [10.0, 10.1, 10.2, 10.3]
    assert [round(v, 6) for _, v in load] == [100.0, 0.0, 0.0, 10.0]
    assert bus_load([], bitrate=500_000) == []
    with pytest.raises(ValueError):
        bus_load(frames, interval=0)


# ------------------------------------------------------------ against canbusload (VM)

_FRAMES = ["123#DEADBEEF", "7FF#FFFFFFFFFFFFFFFF", "000#0000000000000000", "555#5555555555555555",
           "1FFFFFFF#00", "00000000#", "18FEEE00#8255FFFFFFFFFFFF", "0CF00417#F07D7D403800FF7D",
           "5E8#03BB0708070800FA", "321#1122334455", "10000000#0F0F0F0F0F0F0F0F", "0AB#"] * 5


@pytest.mark.vcan
@pytest.mark.parametrize("mode, flag", [("exact", "-e"), ("none", "-i")])
def test_frame_bits_match_canbusload(vcan_channel: str, can_utils, mode: str, flag: str) -> None:
    """canbusload (can-utils) prints, once a second, the frames and bits it
    saw: the sum over our frames must equal frame_bits' sum."""
    lines: List[str] = []
    with can_utils.spawn("canbusload", flag, f"{vcan_channel}@500000", text=True) as proc:
        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)

        t = threading.Thread(target=read, daemon=True)
        t.start()
        time.sleep(1.2)  # let canbusload's first (empty) report pass
        assert main(["send", vcan_channel, *_FRAMES]) == 0
        pat = re.compile(r"^\s*" + re.escape(vcan_channel) + r"@500000\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)%")
        deadline = time.monotonic() + 10 * can_utils.scale
        while time.monotonic() < deadline:
            rows = [tuple(map(int, m.groups())) for m in map(pat.match, list(lines)) if m]
            if sum(r[0] for r in rows) >= len(_FRAMES):
                break
            time.sleep(0.1)
    assert rows, f"no report from canbusload: {lines!r}"
    assert sum(r[0] for r in rows) == len(_FRAMES)
    theirs = sum(r[1] for r in rows)
    ours = 0
    for text in _FRAMES:
        f = _canx.parse_frame_text(text)
        ours += frame_bits(f[0], f[1], data=f[8], stuffing=mode)  # type: ignore[arg-type]
    assert ours == theirs
