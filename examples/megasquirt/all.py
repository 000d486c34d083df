"""The three MegaSquirt examples together in one process: the ECU simulator
(board 0), the GPIO fan board (board 1) and the dash. A ``virtual:`` bus
lives inside one process, so this is how they meet on the virtual bus; on
vcan0 they can also run as separate processes.

    python examples/megasquirt/all.py --channel virtual:ms --duration 5
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dash  # noqa: E402
import gpio_fan  # noqa: E402
import simulator  # noqa: E402


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channel", default="virtual:ms", help="vcan0, can0 or virtual:NAME")
    p.add_argument("--duration", type=float, default=5.0, help="stop after this many seconds")
    p.add_argument("--poll", choices=["read", "outmsg"], default="read", help="how the GPIO board polls clt")
    a = p.parse_args(argv)
    lock = threading.Lock()

    def out(s: str) -> None:
        with lock:
            print(s, flush=True)

    stop = threading.Event()
    errors = []

    def guard(f, *args, **kw):
        def go():
            try:
                f(*args, out=out, stop=stop, **kw)
            except BaseException as e:  # report, and stop the others
                errors.append(e)
                stop.set()
        return threading.Thread(target=go, name=f.__module__)

    threads = [
        guard(simulator.run, a.channel, a.duration),
        guard(gpio_fan.run, a.channel, a.duration, poll=a.poll),
        guard(dash.run, a.channel, a.duration),
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        stop.set()
    for e in errors:
        print(f"error: {e!r}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
