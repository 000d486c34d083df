# A canx reliable sender that talks to the canio Learn guide's unmodified
# `listener-ack` program (examples/circuitpython/listener_ack.py): data on
# 0x408 as struct.pack("<II", count, now_ms), ACK on 0x409 echoing the count,
# resend after 0.1 s without an ACK. The ACK wait and the resends run in the
# native engine; Python only waits for each message's outcome.
#
#   canx run examples/circuitpython/listener_ack.py examples/reliable_guide_sender.py --duration 5
#   canx run examples/reliable_guide_sender.py --channel vcan0      (listener on the same vcan0)
import os
import time

import canx
from canx import reliable

bus = canx.CAN(channel=os.environ.get("CANX_CHANNEL", "virtual:default"))
sender = reliable.GuideSender(bus, timeout=0.1, retries=None)  # as the guide: resend forever

while True:
    outcome = sender.send().result()
    print(f"delivered count={outcome.count} tries={outcome.tries}", flush=True)
    time.sleep(float(os.environ.get("CANX_EXAMPLE_PERIOD", "0.2")))
