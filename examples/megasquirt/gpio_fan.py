"""The GPIO board of the MegaSquirt CAN document: board 1 polls the ECU's
coolant temperature and switches a radiator fan with hysteresis.

Every 100 ms it reads clt (outpc table 7, offset 22, s16 degF x10) from the
ECU (board 0) with MSG_REQ -- or, with ``--poll outmsg``, asks for OUTMSG 0
and lets the reply land in its own table 3, as the document's GPIO board
does. The fan goes on above ``--on`` degF and off below ``--off`` degF. The
board serves its outputs as table 2 (byte 0 = fan), which the ECU can poll.

    python examples/megasquirt/gpio_fan.py --channel virtual:ms --duration 10
    python examples/megasquirt/gpio_fan.py --channel vcan0 --on 195 --off 185
"""

from __future__ import annotations

import argparse
import struct
import sys
import threading
from typing import Callable, Optional

from canx import megasquirt as ms

CLT = ms.OUTPC["clt_degF"]


def run(channel: str, duration: Optional[float], can_id: int = 1, ecu: int = 0, on: float = 195.0,
        off: float = 185.0, poll: str = "read", out: Callable[[str], None] = print,
        stop: Optional[threading.Event] = None) -> None:
    if off >= on:
        raise SystemExit("--off must be below --on (hysteresis)")
    stop = stop or threading.Event()
    with ms.Node(channel=channel, can_id=can_id) as gpio:
        ports = gpio.serve_table(2, 8)                   # outputs, read by the ECU
        inbox = gpio.serve_table(3, 16, writable=True)   # where OUTMSG 0 lands
        out(f"gpio: board {can_id} polling clt of board {ecu} on {channel} (fan on > {on}, off < {off})")
        fan = False
        timer = threading.Timer(duration, stop.set) if duration else None
        if timer:
            timer.start()
        try:
            while not stop.is_set():
                try:
                    if poll == "outmsg":
                        # rpm, map, mat, clt, tps -> table 3 bytes 0..9; clt at 6
                        gpio.request_outmsg(ecu, 0, 10, into=(3, 0))
                        clt = struct.unpack(">h", inbox.read(6, 2))[0] / 10
                    else:
                        clt = CLT.decode(bytes(CLT.offset) + gpio.read(ecu, 7, CLT.offset, 2))
                except TimeoutError:
                    out("gpio: ECU did not answer")
                    stop.wait(0.5)
                    continue
                if not fan and clt > on:
                    fan = True
                    out(f"gpio: fan ON  (clt {clt:.1f} degF)")
                elif fan and clt < off:
                    fan = False
                    out(f"gpio: fan OFF (clt {clt:.1f} degF)")
                ports[0] = int(fan)
                stop.wait(0.1)
        finally:
            if timer:
                timer.cancel()
        st = gpio.stats()
        out(f"gpio: done, {st['client_replies']} read replies and {st['frames']} frames to this board received")


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channel", default="virtual:ms", help="vcan0, can0 or virtual:NAME")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--can-id", type=int, default=1)
    p.add_argument("--ecu", type=int, default=0, help="the ECU's board id")
    p.add_argument("--on", type=float, default=195.0, help="fan on above this clt, degF")
    p.add_argument("--off", type=float, default=185.0, help="fan off below this clt, degF")
    p.add_argument("--poll", choices=["read", "outmsg"], default="read")
    a = p.parse_args(argv)
    try:
        run(a.channel, a.duration, a.can_id, a.ecu, a.on, a.off, a.poll, out=lambda s: print(s, flush=True))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
