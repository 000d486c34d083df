"""A TP answer (EoMA) that arrives after its transfer was given up must not
acknowledge the next transfer of the same PGN to the same peer.

Seen in the soak (docs/reliability.md, "Soak"): under a flood the sender's
receive queue fell seconds behind; a transfer timed out (T3), the sender
started the next one, and the first one's late End of Message Ack was taken
for the second's, so ``send_pgn`` reported a transfer the receiver never got.
J1939-21 5.10.3 gives TP.CM frames no transfer identity; canx drops a CTS,
EoMA or abort received before its RTS of the same (SA, DA, PGN) went out,
on backends whose timestamps are this host's clock (virtual, SocketCAN).

Here a raw peer plays the receiver and the test's fault rule holds its first
EoMA for 2 s (``can_faults.delay``, which keeps the frame's receive time).
"""

from __future__ import annotations

import time

import pytest

import canx
from canx import j1939
from canx.pytest_plugin import Faults

PGN = 0xEF00
DATA = bytes(range(20))  # 3 packets


def _next(lst, want, timeout: float = 5.0) -> canx.Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = lst.receive()
        if m is not None and want(m):
            return m
    raise AssertionError("peer: no matching frame")


def _tp_cm_from_ecu(m: canx.Message) -> bool:
    return m.extended and (m.id & 0x00FFFFFF) == 0x00EC2010


def _receive_transfer(peer: canx.CAN, lst) -> None:
    """Acts the receiver 0x20 up to the last DT: RTS -> CTS -> 3 DTs."""
    rts = _next(lst, lambda m: _tp_cm_from_ecu(m) and m.data[0] == 16)
    n = rts.data[3]
    peer.send(canx.Message(id=0x1CEC1020, data=bytes([17, n, 1, 0xFF, 0xFF, 0x00, 0xEF, 0x00]), extended=True))
    for _ in range(n):
        _next(lst, lambda m: m.extended and (m.id & 0x00FFFFFF) == 0x00EB2010)


def _eoma() -> canx.Message:
    return canx.Message(id=0x1CEC1020, data=bytes([19, len(DATA), 0, 3, 0xFF, 0x00, 0xEF, 0x00]), extended=True)


def test_a_late_eoma_of_an_abandoned_transfer_does_not_acknowledge_the_next() -> None:
    # Always on a virtual bus of its own (not the configurable can_bus): the
    # 2 s hold must land inside transfer 2's T3 window, which holds at the
    # virtual bus's latency on any machine, not under qemu's 10x slowdown.
    can_bus = canx.CAN(channel="virtual:stale-eoma")
    can_faults = Faults(can_bus)
    tx = j1939.ECU(bus=can_bus, name=j1939.Name(identity_number=1), address=0x10)
    peer = canx.CAN(channel=can_bus.channel)
    lst = peer.listen(timeout=0.05)
    try:
        assert tx.claim_address(timeout=2.0) == 0x10
        # Transfer 1: its EoMA reaches the ECU 2 s late, after T3 (1.25 s).
        first = tx.send_pgn(PGN, DATA, destination=0x20)
        _receive_transfer(peer, lst)
        late = can_faults.delay(1, 2.0, id=0x00EC1020, mask=0x00FFFFFF)
        t0 = time.monotonic()
        peer.send(_eoma())
        with pytest.raises(canx.TransferAbortedError):
            first.result(5.0)
        # Transfer 2 of the same PGN to the same peer: the receiver never
        # answers its last DT, so it must end aborted (T3), not acknowledged
        # by transfer 1's EoMA, which arrives while it waits.
        second = tx.send_pgn(PGN, DATA, destination=0x20)
        _receive_transfer(peer, lst)
        waiting = time.monotonic() - t0
        assert waiting < 2.0, f"transfer 2 reached its EoMA wait only {waiting:.2f} s after the late EoMA left"
        with pytest.raises(canx.TransferAbortedError):
            second.result(5.0)
        assert late.taken == 1
        assert tx.stats()["stale_tp_frames"] == 1
    finally:
        tx.close()
        lst.deinit()
        peer.deinit()
        can_faults.clear(flush=False)
        can_bus.deinit()
