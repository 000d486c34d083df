"""A dash: decodes the MegaSquirt realtime broadcast (simplified dash frames
at 0x5E8.., advanced groups at 0x5F0..) and prints rpm, map, clt and tps.

    python examples/megasquirt/dash.py --channel virtual:ms --duration 10
    python examples/megasquirt/dash.py --channel vcan0
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Callable, Optional

from canx import megasquirt as ms


def run(channel: str, duration: Optional[float], interval: float = 0.5, out: Callable[[str], None] = print,
        stop: Optional[threading.Event] = None) -> None:
    stop = stop or threading.Event()
    with ms.Broadcast(channel=channel, timeout=0.1) as bc:
        out(f"dash: listening for the broadcast on {channel}")
        t0 = last = time.monotonic()
        frames = 0
        while not stop.is_set() and (duration is None or time.monotonic() - t0 < duration):
            if bc.receive() is not None:
                frames += 1
            v = bc.values
            if time.monotonic() - last >= interval and "rpm" in v:
                last = time.monotonic()
                out(f"dash: rpm={v['rpm']:5.0f} map={v.get('map_kpa', 0):5.1f}kPa "
                    f"clt={v.get('clt_degF', 0):5.1f}degF tps={v.get('tps_pct', 0):4.1f}%")
        out(f"dash: done, {frames} broadcast frames decoded")


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channel", default="virtual:ms", help="vcan0, can0 or virtual:NAME")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between printed lines")
    a = p.parse_args(argv)
    try:
        run(a.channel, a.duration, a.interval, out=lambda s: print(s, flush=True))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
