"""Print every J1939 frame on a bus (claims, requests, TP/ETP frames too).

    python examples/j1939/monitor.py vcan0
"""

import sys

from canx import j1939

with j1939.bus_monitor(sys.argv[1] if len(sys.argv) > 1 else "vcan0", timeout=3600) as mon:
    for f in mon:
        print(f"{f.timestamp:.6f} {f.kind:<16} prio {f.priority} PGN {f.pgn:5d} "
              f"{f.source:02X} -> {f.destination:02X}  {f.data.hex(' ')}")
