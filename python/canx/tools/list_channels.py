"""``canx list``: the channels that can be opened now, one per line.

    canx list           # CHANNEL  SCHEME  DESCRIPTION
    canx list --json    # [{"channel": ..., "scheme": ..., "description": ...}, ...]

SocketCAN interfaces (state, driver), gs_usb devices (``gs_usb:N``; USB
``VID:PID``, serial number, manufacturer, product: ``gs_usb:SERIAL`` opens the
same device), USB serial ports as ``slcan:PORT`` (any of them may be an slcan
adapter), the open virtual channels and python-can's ``udp_multicast`` default
groups (``runtime::available_channel_details``).
"""

from __future__ import annotations

import argparse
import json
import sys

from .._canx import RawBus


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("list", help="list the channels that can be opened now",
                       description="List the channels that can be opened now (SocketCAN interfaces, gs_usb "
                                   "devices, USB serial ports for slcan, virtual channels, udp_multicast groups).")
    p.add_argument("--json", action="store_true",
                   help='print a JSON list of {"channel", "scheme", "description"} objects')


def run(args: argparse.Namespace) -> int:
    rows = RawBus.available_channel_details()
    if args.json:
        json.dump([{"channel": c, "scheme": s, "description": d} for c, s, d in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    width = max((len(c) for c, _, _ in rows), default=0)
    for channel, scheme, description in rows:
        print(f"{channel:<{width}}  {scheme:<13}  {description}".rstrip())
    return 0
