"""canx monitor's passive J1939 TP reassembly against the Linux kernel's
J1939 stack (vcan, in the VM): two kernel ``CAN_J1939`` sockets transfer a
message (RTS/CTS to a destination, or BAM to all) and the monitor's model,
fed by a raw tap on the same interface, must rebuild it. Peers nobody on
this project wrote."""

from __future__ import annotations

import socket
import time

import pytest

from canx._canx import RawBus
from canx.tools.monitor import MonitorModel

from test_j1939_kernel import PGN, PGN_BROADCAST, TIMEOUT_SCALE, kernel_socket, payload

pytestmark = pytest.mark.vcan


@pytest.mark.parametrize("size", [9, 100, 1785])
@pytest.mark.parametrize("broadcast", [False, True], ids=["cmdt", "bam"])
def test_monitor_reassembles_kernel_transfers(vcan_channel: str, broadcast: bool, size: int) -> None:
    tap = RawBus(vcan_channel)
    data = payload(size, 11)
    pgn = PGN_BROADCAST if broadcast else PGN
    da = 0xFF if broadcast else 0x34
    try:
        with kernel_socket(vcan_channel, 0x34, broadcast=broadcast) as rx, \
                kernel_socket(vcan_channel, 0x21, broadcast=broadcast) as tx:
            tx.sendto(data, (vcan_channel, socket.J1939_NO_NAME, pgn, da))
            got = rx.recv(4096)
            assert got == data
        time.sleep(0.2 * TIMEOUT_SCALE)
        model = MonitorModel(j1939=True)
        while True:
            batch = tap.recv_many(4096, 0.5)
            if not batch:
                break
            model.add(batch)
        row = model.rows[("tp", pgn, 0x21)]
        assert row.data == data and row.destination == da and row.count == 1
        assert model.tp.completed == 1 and model.tp.timeouts == 0
        packets = (size + 6) // 7
        assert model.rows[("j", 0xEB00, 0x21)].count == packets
    finally:
        tap.shutdown()
