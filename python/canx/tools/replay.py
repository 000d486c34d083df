"""``canx replay``: send the frames of a log file with their original timing.

    canx replay run.log                     # each frame to the channel named on its line
    canx replay run.log --channel vcan1     # everything to vcan1
    canx replay run.log --speed 10          # 10x faster;  --no-timing: as fast as possible
    canx replay run.asc --channel virtual:x # other formats through python-can's LogReader

Lines marked ``T`` (sent) are replayed too; error frames are skipped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple

from .._canx import RawBus, parse_log_line
from ..errors import CanxError
from ._common import Fields, Progress, ToolError, frame_text, open_bus, send_fields


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("replay", help="replay a candump .log (or python-can formats) with its timing",
                       description="Send the frames of a log file, keeping the time between them.")
    p.add_argument("file", help="candump .log (other suffixes through python-can)")
    p.add_argument("--channel", "-c", help="send everything here (default: the channel on each line)")
    p.add_argument("--map", action="append", default=[], metavar="LOGCH=CHANNEL",
                   help="send frames logged on LOGCH to CHANNEL (repeatable), like canplayer's vcan0=can1")
    p.add_argument("--speed", type=float, default=1.0, help="replay this many times faster (default 1)")
    p.add_argument("--no-timing", action="store_true", help="send as fast as possible")
    p.add_argument("-l", dest="loops", type=int, default=1, help="play the file this many times (default 1)")
    p.add_argument("-v", dest="verbose", action="store_true", help="print each frame sent")


def _read_log(path: Path) -> Iterator[Tuple[float, str, Fields]]:
    try:
        fh = open(path)
    except OSError as e:
        raise ToolError(f"cannot read {str(path)!r}: {e.strerror}") from None
    with fh:
        for no, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#") or text.startswith("***"):
                continue
            try:
                ts, channel, fields, _ = parse_log_line(text)
            except ValueError as e:
                raise ToolError(f"{path}:{no}: unreadable log line {text!r}: {e}") from None
            yield ts, channel, fields


def _read_other(path: Path) -> Iterator[Tuple[float, str, Fields]]:
    try:
        import can
    except ImportError:
        raise ToolError(f"cannot read {str(path)!r}: only .log is built in; other formats need python-can") from None
    try:
        reader = can.LogReader(str(path))
    except (ValueError, OSError) as e:
        raise ToolError(f"cannot read {str(path)!r}: {e}") from None
    for m in reader:
        ch = str(m.channel) if m.channel is not None else "vcan0"
        if ch.isdigit():
            ch = f"can{ch}"
        yield m.timestamp, ch, (m.arbitration_id, m.is_extended_id, m.is_remote_frame, m.is_error_frame,
                                m.is_fd, m.bitrate_switch, m.error_state_indicator, m.dlc, bytes(m.data),
                                m.timestamp, not m.is_rx)


def run(args: argparse.Namespace) -> int:
    if not args.speed > 0:
        raise ToolError(f"--speed must be positive, not {args.speed}")
    if args.loops < 1:
        raise ToolError(f"-l must be at least 1, not {args.loops}")
    path = Path(args.file)
    mapping: Dict[str, str] = {}
    for m in args.map:
        src, sep, dst = m.partition("=")
        if not sep or not src or not dst:
            raise ToolError(f"bad --map {m!r}: expected LOGCH=CHANNEL")
        mapping[src] = dst
    reader = _read_log if path.suffix.lower() == ".log" else _read_other
    # Read (and check) the whole file first: a bad line is reported before anything is sent.
    frames = list(reader(path))
    buses: Dict[str, RawBus] = {}
    progress = Progress("canx replay", enabled=False if args.verbose else None)
    try:
        for _ in range(args.loops):
            t0_log = None
            t0 = time.perf_counter()
            for ts, channel, f in frames:
                if f[3]:
                    continue
                target = args.channel or mapping.get(channel, channel)
                bus = buses.get(target)
                if bus is None:
                    bus = buses[target] = open_bus(target, fd=True)
                if not args.no_timing:
                    if t0_log is None:
                        t0_log = ts
                    delay = t0 + (ts - t0_log) / args.speed - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                try:
                    send_fields(bus, f)
                except (CanxError, ValueError) as e:
                    raise ToolError(f"cannot send {frame_text(f)} on {target!r}: {e}") from None
                progress.add()
                if args.verbose:
                    print(f"({ts:.6f}) {target} {frame_text(f)}")
    finally:
        progress.close()
        for b in buses.values():
            b.shutdown()
    return 0
