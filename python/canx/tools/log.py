"""``canx log``: record frames to a file.

    canx log vcan0                        # candump-YYYY-MM-DD_HHMMSS.log, like candump -l
    canx log vcan0,123:7FF -f run.log     # candump .log lines (canx's Rust codec)
    canx log virtual:x -f run.asc         # other formats (asc, blf, csv, trc, mf4, ...) via python-can

Stops on Ctrl-C (exit 0), after ``-n`` frames or ``-T`` ms of silence.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

from .._canx import format_log_line
from ._common import Fields, Progress, ToolError, bus_drops, open_bus, parse_channel_spec, receive_batches


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("log", help="record frames to a candump .log (or python-can formats)",
                       description="Record received frames. .log files are written by canx's Rust codec "
                                   "(candump -L lines); other suffixes go through python-can's can.Logger.")
    p.add_argument("channels", nargs="+", metavar="CHANNEL[,FILTER...]",
                   help="vcan0, can0, virtual:NAME or slcan:PORT, optionally with candump filters")
    p.add_argument("-f", "--file", help="output file (default candump-<date>_<time>.log)")
    p.add_argument("-n", dest="count", type=int, help="stop after this many frames")
    p.add_argument("-T", dest="timeout_ms", type=int, help="stop after this many ms without frames")
    p.add_argument("-e", dest="errors", action="store_true", help="also record error frames")
    p.add_argument("-x", dest="extra", action="store_true", help="write the direction mark (R/T) on each line")


def _python_can_writer(path: Path) -> Callable[[str, Fields], None]:
    try:
        import can
    except ImportError:
        raise ToolError(f"cannot write {str(path)!r}: only .log is built in; other formats need python-can "
                        "(pip install python-can)") from None
    try:
        logger = can.Logger(str(path))
    except ValueError as e:
        raise ToolError(f"cannot write {str(path)!r}: {e}") from None
    writer: Any = logger

    def write(channel: str, f: Fields) -> None:
        writer.on_message_received(can.Message(
            timestamp=f[9], arbitration_id=f[0], is_extended_id=f[1], is_remote_frame=f[2],
            is_error_frame=f[3], is_fd=f[4], bitrate_switch=f[5], error_state_indicator=f[6],
            dlc=f[7], data=f[8], channel=channel, is_rx=not f[10]))

    write.close = logger.stop  # type: ignore[attr-defined]
    return write


def run(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise ToolError(f"-n must be at least 1, not {args.count}")
    path = Path(args.file or time.strftime("candump-%Y-%m-%d_%H%M%S.log"))
    specs = [parse_channel_spec(c) for c in args.channels]
    if path.suffix.lower() == ".log":
        try:
            fh = open(path, "w", buffering=1 << 16)
        except OSError as e:
            raise ToolError(f"cannot write {str(path)!r}: {e.strerror}") from None
        extra = args.extra

        def write_log(channel: str, f: Fields) -> None:
            fh.write(format_log_line(f[9], channel, *f[:9], (not f[10]) if extra else None) + "\n")

        write: Callable[[str, Fields], None] = write_log
        close: Callable[[], None] = fh.close
    else:
        write = _python_can_writer(path)
        close = write.close  # type: ignore[attr-defined]
    buses: List[Any] = []
    try:
        for s in specs:
            if args.errors:
                s.error_mask = 0x1FFFFFFF
            buses.append(open_bus(s.channel, filters=s.kernel_filters(), error_frames=bool(s.error_mask)))
        idle: Optional[float] = args.timeout_ms / 1000 if args.timeout_ms else None
        n = 0
        progress = Progress("canx log", bus_drops(buses))
        try:
            for spec, frames in receive_batches(buses, specs, idle, 4096):
                for f in frames:
                    write(spec.channel, f)
                    n += 1
                    progress.add()
                    if args.count and n >= args.count:
                        return 0
            return 0
        except KeyboardInterrupt:
            return 0
        finally:
            progress.close()
    finally:
        for b in buses:
            b.shutdown()
        close()
