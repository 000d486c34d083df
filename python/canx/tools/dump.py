"""``canx dump``: print received frames like candump.

    canx dump vcan0                      # "  vcan0  123   [4]  DE AD BE EF"
    canx dump -L vcan0,123:7FF           # "(1700000000.123456) vcan0 123#DEADBEEF"
    canx dump -t d virtual:x vcan1       # several channels, delta timestamps
    canx dump --dbc engine.dbc can0      # each frame, then "    EEC1 EngineSpeed=1800.0 rpm ..."

With ``--dbc FILE`` (needs cantools: ``pip install canx[dbc]``) each frame a
DBC message matches is followed by one line, indented by 4 spaces: the
message name and its signals as ``NAME=VALUE UNIT`` (see ``canx.dbc``: exact
id, then the PGN for J1939 messages). A frame too short for its message
gives ``    NAME: cannot decode ...`` instead. Remote and error frames are not
decoded. With ``-L`` the decoded lines are not log lines: keep ``--dbc`` for
reading, not for files to replay.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional, TextIO

from .._canx import format_log_line
from ..dbc import DecodeError
from ._common import Fields, Progress, ToolError, bus_drops, load_dbc, open_bus, parse_channel_spec, receive_batches


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("dump", help="print received frames (like candump)",
                       description="Print frames received on one or more channels, in candump's formats.")
    p.add_argument("channels", nargs="+", metavar="CHANNEL[,FILTER...]",
                   help="vcan0, can0, virtual:NAME or slcan:PORT, optionally followed by candump filters: "
                        "<id>:<mask> (match), <id>~<mask> (inverted), #<error_mask>, j (all must match)")
    p.add_argument("-L", dest="log", action="store_true", help="candump log format: (time) channel frame")
    p.add_argument("-t", dest="ts", choices=["a", "A", "d", "z"],
                   help="timestamps: a absolute, A absolute with date, d delta, z since start")
    p.add_argument("-n", dest="count", type=int, help="stop after this many frames")
    p.add_argument("-T", dest="timeout_ms", type=int, help="stop after this many ms without frames")
    p.add_argument("-e", dest="errors", action="store_true", help="also show error frames (all classes)")
    p.add_argument("-x", dest="extra", action="store_true", help="show direction (RX/TX; R/T in -L)")
    p.add_argument("--own", action="store_true", help="also show frames this process sends (none, usually)")
    p.add_argument("--dbc", metavar="FILE",
                   help="decode frames with this DBC (cantools; pip install canx[dbc]): "
                        "a line of signals after each frame a message matches")


def _long(f: Fields) -> str:
    fid = f"{f[0]:08X}" if (f[1] or f[3]) else f"{f[0]:03X}"
    if f[2]:
        return f"{fid}   [{f[7]}]  remote request"
    data = " ".join(f"{b:02X}" for b in f[8])
    if f[4]:
        return f"{fid}  [{len(f[8]):02d}]  {data}"
    line = f"{fid}   [{len(f[8])}]  {data}"
    return line + "   ERRORFRAME" if f[3] else line


def run(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    if args.count is not None and args.count < 1:
        raise ToolError(f"-n must be at least 1, not {args.count}")
    specs = [parse_channel_spec(c) for c in args.channels]
    db = load_dbc(args.dbc) if getattr(args, "dbc", None) else None
    buses = []
    for s in specs:
        if args.errors:
            s.error_mask = 0x1FFFFFFF
        buses.append(open_bus(s.channel, filters=s.kernel_filters(), error_frames=bool(s.error_mask),
                              receive_own=args.own))
    width = max(len(s.channel) for s in specs)
    n = 0
    progress = Progress("canx dump", bus_drops(buses), enabled=False if out is not sys.stdout or sys.stdout.isatty() else None)
    start: Optional[float] = None
    last: Optional[float] = None
    idle = args.timeout_ms / 1000 if args.timeout_ms else None
    try:
        for spec, frames in receive_batches(buses, specs, idle, 1024):
            for f in frames:
                ts = f[9]
                if args.log:
                    line = format_log_line(ts, spec.channel, *f[:9], (not f[10]) if args.extra else None)
                else:
                    prefix = ""
                    if args.ts == "a":
                        prefix = f" ({ts:017.6f}) "
                    elif args.ts == "A":
                        lt = time.localtime(ts)
                        prefix = f" ({time.strftime('%Y-%m-%d %H:%M:%S', lt)}.{int(ts % 1 * 1e6):06d}) "
                    elif args.ts == "d":
                        prefix = f" ({0.0 if last is None else ts - last:010.6f}) "
                    elif args.ts == "z":
                        start = ts if start is None else start
                        prefix = f" ({ts - start:010.6f}) "
                    direction = ("TX - -  " if f[10] else "RX - -  ") if args.extra else ""
                    line = f"{prefix} {spec.channel:>{width}}  {direction}{_long(f)}"
                last = ts
                out.write(line + "\n")
                if db is not None and not (f[2] or f[3]):
                    try:
                        decoded = db.decode(f[0], f[8], f[1])
                    except DecodeError as e:
                        out.write(f"    {e}\n")
                    else:
                        if decoded is not None:
                            out.write(f"    {decoded}\n")
                n += 1
                progress.add()
                if args.count and n >= args.count:
                    out.flush()
                    return 0
            out.flush()
        return 0
    except BrokenPipeError:
        return 0
    finally:
        progress.close()
        for b in buses:
            b.shutdown()
