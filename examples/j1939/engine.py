"""A J1939 engine ECU: the application the testing guide (docs/testing.md) tests.

    python examples/j1939/engine.py [channel]     # e.g. vcan0; default virtual:engine

It claims source address 0x00, broadcasts EEC1 (engine speed, PGN 61444)
every 10 ms as J1939-71 specifies for EEC1, and answers Requests for the
VIN (PGN 65260, 18 bytes: by TP.CM RTS/CTS or BAM).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional

from canx import j1939

VIN = b"1M8GDM9AXKP042788*"
EEC1_PERIOD = 0.010  # s, J1939-71 EEC1 transmission repetition rate


class Engine:
    """``Engine(channel, address=0x00)``: ``start()`` claims and starts EEC1,
    ``rpm`` is what it reports, ``close()`` stops it."""

    def __init__(self, channel: str, address: int = 0x00) -> None:
        self.rpm = 800.0
        self.ecu = j1939.ECU(channel=channel, address=address,
                             name=j1939.Name(identity_number=0x1234, manufacturer_code=0x123, function=0))
        self.ecu.set_response(j1939.PGN_VEHICLE_IDENTIFICATION, VIN)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self, claim_timeout: float = 2.0) -> None:
        self.ecu.claim_address(timeout=claim_timeout)
        self._thread = threading.Thread(target=self._broadcast, name="eec1", daemon=True)
        self._thread.start()

    def _broadcast(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            self.ecu.send_engine_speed(self.rpm)
            due += EEC1_PERIOD
            now = time.monotonic()
            if due < now:
                # Late (the thread was stalled): skip the missed slots, keep
                # the phase; catching up would send a burst of EEC1 frames.
                due += (now - due) // EEC1_PERIOD * EEC1_PERIOD + EEC1_PERIOD
            self._stop.wait(max(0.0, due - now))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.ecu.close()


if __name__ == "__main__":
    engine = Engine(sys.argv[1] if len(sys.argv) > 1 else "virtual:engine")
    engine.start()
    print("engine at 0x00, EEC1 every 10 ms; Ctrl-C stops")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        engine.close()
