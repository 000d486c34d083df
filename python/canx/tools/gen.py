"""``canx gen``: generate frames like cangen.

    canx gen vcan0                         # random ids/lengths/data every 200 ms, forever
    canx gen vcan0 -g 0 -n 100000 -I 123 -L 8 -D i    # a flood of 100k counting frames
    canx gen vcan0 --rate 1000 -e -f -b    # 1000 frames/s, extended ids, CAN FD with BRS
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from typing import Callable, Optional

from ..errors import CanxError, SendTimeoutError
from ._common import Progress, ToolError, frame_text, open_bus, parse_hex

_FD_LENS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64]


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("gen", help="generate frames (like cangen)",
                       description="Send generated frames: ids, lengths and data random ('r'), "
                                   "incrementing ('i') or fixed.")
    p.add_argument("channel", help="vcan0, can0, virtual:NAME or slcan:PORT")
    p.add_argument("-g", dest="gap_ms", type=float, default=200.0, help="gap between frames in ms (default 200)")
    p.add_argument("--rate", type=float, help="frames per second (instead of -g)")
    p.add_argument("-n", dest="count", type=int, help="stop after this many frames (default: run until Ctrl-C)")
    p.add_argument("-I", dest="id_mode", default="r", help="id: r random, i increment, or a hex id (default r)")
    p.add_argument("-L", dest="len_mode", default="r", help="length: r random, i increment, or bytes (default r)")
    p.add_argument("-D", dest="data_mode", default="r", help="data: r random, i increment, or hex bytes (default r)")
    p.add_argument("-e", dest="extended", action="store_true", help="extended (29-bit) ids")
    p.add_argument("-f", dest="fd", action="store_true", help="CAN FD frames")
    p.add_argument("-b", dest="brs", action="store_true", help="CAN FD bit rate switch")
    p.add_argument("-R", dest="remote", action="store_true", help="remote frames")
    p.add_argument("-v", dest="verbose", action="store_true", help="print each frame sent")
    p.add_argument("--seed", type=int, help="random seed (repeatable runs)")


def _id_source(mode: str, extended: bool, rnd: random.Random) -> Callable[[int], int]:
    limit = 0x1FFFFFFF if extended else 0x7FF
    if mode == "r":
        return lambda i: rnd.randint(0, limit)
    if mode == "i":
        return lambda i: i % (limit + 1)
    fixed = parse_hex(mode, "id (-I)", limit)
    return lambda i: fixed


def _len_source(mode: str, fd: bool, rnd: random.Random) -> Callable[[int], int]:
    lens = _FD_LENS if fd else list(range(9))
    if mode == "r":
        return lambda i: rnd.choice(lens)
    if mode == "i":
        return lambda i: lens[i % len(lens)]
    try:
        n = int(mode)
    except ValueError:
        raise ToolError(f"bad length (-L) {mode!r}: expected r, i or a number") from None
    if n not in lens:
        raise ToolError(f"bad length (-L) {mode!r}: must be one of {', '.join(map(str, lens))}")
    return lambda i: n


def _data_source(mode: str, rnd: random.Random) -> Callable[[int, int], bytes]:
    if mode == "r":
        return lambda i, n: rnd.getrandbits(8 * n).to_bytes(n, "little") if n else b""
    if mode == "i":
        return lambda i, n: ((i % 256).to_bytes(1, "little") * n)
    try:
        fixed = bytes.fromhex(mode)
    except ValueError:
        raise ToolError(f"bad data (-D) {mode!r}: expected r, i or hex bytes") from None
    return lambda i, n: (fixed + bytes(64))[:n]


def run(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise ToolError(f"-n must be at least 1, not {args.count}")
    if args.rate is not None and not args.rate > 0:
        raise ToolError(f"--rate must be positive, not {args.rate}")
    if args.gap_ms < 0:
        raise ToolError(f"-g must be >= 0, not {args.gap_ms}")
    if args.remote and args.fd:
        raise ToolError("-R and -f: CAN FD has no remote frames")
    rnd = random.Random(args.seed)
    ids = _id_source(args.id_mode, args.extended, rnd)
    lens = _len_source(args.len_mode, args.fd, rnd)
    data = _data_source(args.data_mode, rnd)
    gap = 1.0 / args.rate if args.rate else args.gap_ms / 1000.0
    bus = open_bus(args.channel, fd=args.fd)
    send = bus.send
    ext, rtr, fd, brs = args.extended, args.remote, args.fd, args.brs
    t_next = time.perf_counter()
    i = 0
    progress = Progress("canx gen", enabled=False if args.verbose else None)
    try:
        while args.count is None or i < args.count:
            n = lens(i)
            payload = b"" if rtr else data(i, n)
            fid = ids(i)
            try:
                send(fid, ext, rtr, fd, brs, False, n, payload, 1.0)
            except SendTimeoutError:
                continue  # the queue stays full: try the same frame again
            if args.verbose:
                print(f"  {args.channel}  {frame_text((fid, ext, rtr, False, fd, brs, False, n, payload))}")
            i += 1
            progress.add()
            if gap > 0:
                t_next += gap
                delay = t_next - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -1.0:
                    t_next = time.perf_counter()  # far behind: do not burst
    except CanxError as e:
        raise ToolError(f"cannot send on {args.channel!r}: {e}") from None
    except BrokenPipeError:
        sys.stderr.close()
        os._exit(0)
    finally:
        progress.close()
        bus.shutdown()
    return 0
