"""``canx send``: send one frame in cansend syntax.

    canx send vcan0 123#DEADBEEF       # classic, standard id
    canx send vcan0 12345678#11.22     # extended id ('.' between bytes allowed)
    canx send vcan0 123#R / 123#R4     # remote frame (requested length)
    canx send vcan0 123##1AABBCC       # CAN FD, flags 1 = bit rate switch
"""

from __future__ import annotations

import argparse

from ..errors import CanxError
from ._common import ToolError, open_bus, parse_frame, send_fields


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("send", help="send one frame (like cansend)",
                       description="Send one frame written in cansend syntax: <id>#<data>, <id>#R[len], "
                                   "<id>##<flags><data> (CAN FD). 3 hex digits: standard id, 8: extended.")
    p.add_argument("channel", help="vcan0, can0, virtual:NAME or slcan:PORT")
    p.add_argument("frames", nargs="+", metavar="FRAME", help="frame text; several are sent in order")


def run(args: argparse.Namespace) -> int:
    frames = [parse_frame(t) for t in args.frames]
    if any(f[3] for f in frames):
        raise ToolError(f"cannot send error frames: {args.frames[[f[3] for f in frames].index(True)]!r}")
    bus = open_bus(args.channel, fd=any(f[4] for f in frames))
    try:
        for f in frames:
            send_fields(bus, f)
    except ToolError:
        raise
    except (CanxError, ValueError) as e:  # interface down, bus off, FD on a classic interface
        raise ToolError(f"cannot send on {args.channel!r}: {e}") from None
    finally:
        bus.shutdown()
    return 0
