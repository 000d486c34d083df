"""A transmit queue that never drains (review B3, issue 11 part 6), on the
virtual bus's test fault ``CAN._jam_tx``: an engine's sends time out while
Python keeps running, and engine calls return within one send timeout per
batch, not one per frame (no kernel CAN needed)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

import canx
from canx import j1939

from conftest import TIMEOUT_SCALE

_n = itertools.count()


def wait_until(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


class Counter:
    """A Python thread counting its own progress."""

    def __init__(self) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.count += 1
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5 * TIMEOUT_SCALE)


def test_jam_hook_makes_sends_time_out_and_is_virtual_only():
    bus = canx.CAN(channel=f"virtual:jam-{next(_n)}", send_timeout=0.01)
    try:
        bus._jam_tx(True)
        with pytest.raises(canx.SendTimeoutError):
            bus.send(canx.Message(id=0x10, data=b"x"))
        assert bus.stats()["sent"] == 0
        bus._jam_tx(False)
        bus.send(canx.Message(id=0x10, data=b"x"))
        assert bus.stats()["sent"] == 1
    finally:
        bus.deinit()


def test_jammed_bus_during_a_large_j1939_transfer_does_not_freeze_python():
    ch = f"virtual:jam-{next(_n)}"
    bus_a = canx.CAN(channel=ch)
    try:
        # An ETP transfer of 8 MB (1.2 million data packets in windows of up
        # to 255, sent in batches by the receive thread): long enough that a
        # release build is still sending when the jam comes (100 kB take
        # about 3 ms there); jam the sender once it is under way.
        size = 8 << 20
        a = j1939.ECU(bus=bus_a, name=j1939.Name(identity_number=1), address=0x10, etp_buffer=size)
        b = j1939.ECU(channel=ch, name=j1939.Name(identity_number=2), address=0x20, etp_buffer=size)
        assert a.claim_address() == 0x10 and b.claim_address() == 0x20
        transfer = a.send_pgn(0xEF00, bytes(size), destination=0x20)
        assert wait_until(lambda: bus_a.stats()["sent"] >= 300)
        bus_a._jam_tx(True)
        counter = Counter()
        counted_at_jam = counter.count
        try:
            # Engine calls contend with the receive thread's timed-out
            # batches for the engine: each waits for at most one timed-out
            # batch (100 ms) and its own frame's timeout (100 ms), never one
            # timeout per frame of a batch (64 frames: 6.4 s).
            for i in range(5):
                before = counter.count
                t0 = time.monotonic()
                a.send_pgn(0xEF00, bytes([i]) * 8, destination=0x20).result(5 * TIMEOUT_SCALE)
                took = time.monotonic() - t0
                assert took < 2.0 * TIMEOUT_SCALE, f"engine call {i} took {took:.2f} s on a jammed bus"
                # Whether the call waited a send timeout (without the GIL) or
                # its frame waits for the next round, Python kept running.
                assert counter.count >= before
                if i == 0:  # a batch in flight when the jam began is counted by now
                    sent_at_jam = bus_a.stats()["sent"]
            # The transfer ends (the receiver aborts it or the sender gives
            # up waiting for a CTS) instead of hanging.
            with pytest.raises(canx.TransferAborted):
                transfer.result(10 * TIMEOUT_SCALE)
            # The receive thread spent the jam in timed-out sends (100 ms
            # each) until the receiver's T1 (750 ms) aborted the transfer:
            # the other Python thread ran all along (1 ms per count).
            assert counter.count - counted_at_jam >= 50, counter.count - counted_at_jam
        finally:
            counter.stop()
        assert bus_a.stats()["sent"] == sent_at_jam, "nothing left the jammed node"
        bus_a._jam_tx(False)
        # Unjammed, the ECU sends again.
        got = []
        b.on_pgn(0xEF00, lambda m: got.append(m.data))
        a.send_pgn(0xEF00, b"unjammed", destination=0x20).result(5 * TIMEOUT_SCALE)
        assert wait_until(lambda: b"unjammed" in got)
        a.close()
        b.close()
    finally:
        bus_a.deinit()


def test_claim_address_on_a_jammed_bus_fails_and_succeeds_once_unjammed():
    """J1939-81 4.4.4.3: the address is usable 250 ms after the Address
    Claimed message was *transmitted*; a claim that never left claims
    nothing (before the fix, claim_address returned 0x30 here)."""
    ch = f"virtual:jam-{next(_n)}"
    bus = canx.CAN(channel=ch)
    try:
        bus._jam_tx(True)
        ecu = j1939.ECU(bus=bus, name=j1939.Name(identity_number=7), address=0x30)
        with pytest.raises(j1939.AddressClaimError):
            ecu.claim_address(timeout=1.0 * TIMEOUT_SCALE)
        assert ecu.address is None and ecu.state == "claiming"
        assert bus.stats()["sent"] == 0, "nothing left the jammed node"
        bus._jam_tx(False)
        # The claim is sent again (every 250 ms) and then waits its 250 ms.
        assert ecu.claim_address(timeout=3.0 * TIMEOUT_SCALE) == 0x30
        assert bus.stats()["sent"] >= 1, "the claim left once unjammed"
        ecu.close()
    finally:
        bus.deinit()
