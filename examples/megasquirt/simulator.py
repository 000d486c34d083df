"""An MS-II / MS3 ECU simulator (board 0) for testing add-on boards without an engine.

It serves the realtime table ``outpc`` (table 7, read-only, MS3 layout: rpm
at 6, map at 18, mat at 20, clt at 22, tps at 24; see
``canx.megasquirt.OUTPC``) and a writable config table 1, answers OUTMSG 0
with rpm/map/mat/clt/tps (10 bytes), and sends the simplified dash broadcast
(0x5E8..0x5EC). The native server answers every request; Python only
updates the numbers every 20 ms.

The engine is fake but reacts: coolant warms up by 10 degF/s, and cools by
15 degF/s while the fan output of the GPIO board (board 1, table 2, byte 0,
polled every 100 ms) is on, as an MS3 polls a remote port.

    python examples/megasquirt/simulator.py --channel virtual:ms --duration 10
    python examples/megasquirt/simulator.py --channel vcan0
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from typing import Callable, Optional

from canx import megasquirt as ms

#: OUTMSG 0: rpm, map, mat, clt, tps (byte offsets into outpc).
OUTMSG0 = [o for k in ("rpm", "map_kpa", "mat_degF", "clt_degF", "tps_pct")
           for o in range(ms.OUTPC[k].offset, ms.OUTPC[k].offset + 2)]


def run(channel: str, duration: Optional[float], can_id: int = 0, gpio_board: Optional[int] = 1,
        broadcast_hz: float = 20.0, clt_start: float = 180.0, out: Callable[[str], None] = print,
        stop: Optional[threading.Event] = None) -> None:
    stop = stop or threading.Event()
    with ms.Node(channel=channel, can_id=can_id) as ecu:
        outpc = ecu.serve_table(ms.OUTPC_BLK, 256)  # read-only: the bus may not write it
        ecu.serve_table(1, 64, writable=True)
        ecu.set_outmsg(0, OUTMSG0)
        out(f"simulator: serving outpc (table 7) and table 1 as board {can_id} on {channel}")
        fan = threading.Event()  # the GPIO board's fan output, as last polled

        def poll_gpio() -> None:
            while gpio_board is not None and not stop.is_set():
                try:
                    if ecu.read(gpio_board, 2, 0, 1)[0]:
                        fan.set()
                    else:
                        fan.clear()
                except TimeoutError:
                    pass  # no GPIO board (yet): keep the last state
                stop.wait(0.1)

        poller = threading.Thread(target=poll_gpio, name="poll-gpio", daemon=True)
        poller.start()
        t0 = prev = time.monotonic()
        clt, last_bc, last_print = clt_start, 0.0, 0.0
        while not stop.is_set() and (duration is None or time.monotonic() - t0 < duration):
            now = time.monotonic()
            dt, prev = now - prev, now
            t = now - t0
            clt = max(60.0, min(240.0, clt + (-15.0 if fan.is_set() else 10.0) * dt))
            rpm = 2500 + 1500 * math.sin(t * 1.3)
            tps = max(0.0, min(100.0, 30 + 25 * math.sin(t * 1.3)))
            values = {"seconds": int(t), "rpm": rpm, "map_kpa": 30 + tps * 0.7, "mat_degF": 75.0,
                      "clt_degF": clt, "tps_pct": tps, "baro_kpa": 101.3, "batt_v": 13.8}
            outpc.write(0, ms.encode_outpc(values, size=128))
            if broadcast_hz > 0 and now - last_bc >= 1.0 / broadcast_hz:
                last_bc = now
                dash = {k: values[k] for k in ("rpm", "map_kpa", "mat_degF", "clt_degF", "tps_pct", "batt_v")}
                for m in ms.encode_dash(dash):
                    ecu.can.send(m)
            if now - last_print >= 1.0:
                last_print = now
                out(f"simulator: t={t:4.1f}s rpm={rpm:5.0f} clt={clt:5.1f}degF fan={'on' if fan.is_set() else 'off'}"
                    f" replies={ecu.stats()['replies']}")
            stop.wait(0.02)
        stop.set()
        poller.join(2.0)
        out(f"simulator: done, {ecu.stats()['replies']} replies sent")


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channel", default="virtual:ms", help="vcan0, can0 or virtual:NAME")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--can-id", type=int, default=0)
    p.add_argument("--gpio-board", type=int, default=1, help="board whose table 2 byte 0 is the fan (-1: none)")
    p.add_argument("--broadcast-hz", type=float, default=20.0, help="dash broadcast rate (0: off)")
    a = p.parse_args(argv)
    try:
        run(a.channel, a.duration, a.can_id, None if a.gpio_board < 0 else a.gpio_board, a.broadcast_hz,
            out=lambda s: print(s, flush=True))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
