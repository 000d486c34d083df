"""One receiver of the receive benchmark (run by rx_flood.py, one process each).

    rx_consumer.py MODE CHANNEL EXPECT IDLE_S

MODE: canx (Listener.receive() per frame in a Python loop), canx-batch
(Listener.receive_many()), python-can (can.Bus(interface="socketcan").recv()),
python-can-canx (can.Bus(interface="canx").recv(), canx as python-can plugin),
python-can-gs_usb (can.Bus(interface="gs_usb", channel=INDEX)), python-can-slcan
(can.Bus(interface="slcan", channel=TTY)); usb_bench.py runs the last two and
canx on gs_usb:/slcan: channels. Bitrate: $RX_BITRATE (default 500000) where
the adapter takes one.
Prints READY once listening, then one JSON line: received, t_first, t_last
(wall clock of the first and last frame consumed), cpu_s (user+sys of this
process), kernel_dropped (where the receiver can tell).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def main() -> None:
    mode, channel, expect, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    n = 0
    t_first = t_last = 0.0
    dropped = None
    bitrate = int(os.environ.get("RX_BITRATE", "500000"))
    if mode in ("canx", "canx-batch"):
        import canx

        adapter = channel.startswith(("gs_usb:", "slcan:"))
        bus = canx.CAN(channel=channel, baudrate=bitrate) if adapter else canx.CAN(channel=channel)
        lis = bus.listen(timeout=idle)
        print("READY", flush=True)
        if mode == "canx":
            while n < expect:
                m = lis.receive()
                if m is None:
                    break
                n += 1
                if n == 1:
                    t_first = time.time()
            t_last = time.time()
        else:
            while n < expect:
                batch = lis.receive_many(4096)
                if not batch:
                    break
                if n == 0:
                    t_first = time.time()
                n += len(batch)
            t_last = time.time()
        st = bus.stats()
        dropped = st["backend_dropped"] + st["listener_dropped"]
        bus.deinit()
    elif mode in ("python-can", "python-can-canx", "python-can-gs_usb", "python-can-slcan"):
        import can

        if mode == "python-can-gs_usb":
            bus = can.Bus(interface="gs_usb", channel=int(channel), bitrate=bitrate)
        elif mode == "python-can-slcan":
            bus = can.Bus(interface="slcan", channel=channel, bitrate=bitrate)
        else:
            bus = can.Bus(interface="socketcan" if mode == "python-can" else "canx", channel=channel)
        print("READY", flush=True)
        while n < expect:
            m = bus.recv(timeout=idle)
            if m is None:
                break
            n += 1
            if n == 1:
                t_first = time.time()
        t_last = time.time()
        bus.shutdown()
    else:
        raise SystemExit(f"unknown mode {mode}")
    if n < expect:
        t_last -= idle  # the loop ended on an idle timeout after the last frame
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"received": n, "t_first": t_first, "t_last": t_last,
                      "cpu_s": ru.ru_utime + ru.ru_stime, "kernel_dropped": dropped}), flush=True)


if __name__ == "__main__":
    main()
