# A canx listener that answers the canio Learn guide's unmodified
# `sender-ack` program (examples/circuitpython/sender_ack.py). The ACK on
# 0x409 is sent by the native engine in the receive thread, without a Python
# round trip; Python only sees each count once.
#
#   canx run examples/circuitpython/sender_ack.py examples/reliable_guide_listener.py --duration 5
#   canx run examples/reliable_guide_listener.py --channel vcan0
import os
import time

import canx
from canx import reliable

bus = canx.CAN(channel=os.environ.get("CANX_CHANNEL", "virtual:default"))
listener = reliable.GuideListener(bus)

for msg in listener:  # no timeout: forever
    gap_ms = ((time.monotonic_ns() // 1_000_000) & 0xFFFFFFFF) - msg.now_ms
    print(f"received message: count={msg.count} now_ms={msg.now_ms} latency {gap_ms}ms", flush=True)
