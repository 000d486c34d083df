"""canx.uds: a udsoncan Client over canx.isotp against a small UDS server
(ReadDataByIdentifier, ISO 14229-1 §11.2) on the virtual bus."""

from __future__ import annotations

import itertools
import threading
from typing import Dict, List

import pytest

import canx.isotp as isotp

udsoncan = pytest.importorskip("udsoncan")
from udsoncan.client import Client  # noqa: E402

from canx.uds import UdsConnection  # noqa: E402

VIN = b"WVWZZZ1JZXW000001"
BIG_DID = bytes((i * 7) & 0xFF for i in range(4093))  # 0x62 + DID + 4093 = 4096 bytes: the 32-bit FF_DL
_names = itertools.count()


class Server(threading.Thread):
    """An ECU answering 0x22 for 0xF190 (VIN) and 0xF1A0 (4093 bytes); the
    first request for 0xF1A0 gets NRC 0x78 (response pending) first."""

    def __init__(self, channel: str) -> None:
        super().__init__(daemon=True)
        addr = isotp.Address(isotp.AddressingMode.Normal_11bits, txid=0x7E8, rxid=0x7E0)
        self.stack = isotp.CanStack(channel, addr, params={"max_frame_size": 4095, "tx_buffer_size": 8192})
        self.dids: Dict[int, bytes] = {0xF190: VIN, 0xF1A0: BIG_DID}
        self.requests: List[bytes] = []
        self.stop_event = threading.Event()
        self.pending_sent = False

    def run(self) -> None:
        while not self.stop_event.is_set():
            req = self.stack.recv(block=True, timeout=0.1)
            if req is None:
                continue
            self.requests.append(bytes(req))
            if req[0] == 0x22 and len(req) == 3:
                did = int.from_bytes(req[1:3], "big")
                if did not in self.dids:
                    self.stack.send(bytes([0x7F, 0x22, 0x31]))
                    continue
                if did == 0xF1A0 and not self.pending_sent:
                    self.pending_sent = True
                    self.stack.send(bytes([0x7F, 0x22, 0x78]))
                    self.stop_event.wait(0.2)
                self.stack.send(bytes([0x62]) + req[1:3] + self.dids[did])
            else:
                self.stack.send(bytes([0x7F, req[0], 0x11]))

    def close(self) -> None:
        self.stop_event.set()
        self.join(2)
        self.stack.stop()


def test_udsoncan_client_reads_dids() -> None:
    ch = f"virtual:uds-{next(_names)}"
    server = Server(ch)
    server.start()
    try:
        addr = isotp.Address(isotp.AddressingMode.Normal_11bits, txid=0x7E0, rxid=0x7E8)
        config = dict(udsoncan.configs.default_client_config)
        config["data_identifiers"] = {
            0xF190: udsoncan.AsciiCodec(17),
            0xF1A0: udsoncan.DidCodec("4093s"),
            0xF191: udsoncan.AsciiCodec(4),  # configured here, unknown to the server
        }
        config["request_timeout"] = 5
        with Client(UdsConnection(ch, addr, params={"max_frame_size": 8192}), config=config) as client:
            assert client.read_data_by_identifier_first(0xF190) == VIN.decode()
            assert client.read_data_by_identifier_first(0xF1A0) == (BIG_DID,)  # struct "4093s"; after NRC 0x78
            with pytest.raises(udsoncan.exceptions.NegativeResponseException) as ei:
                client.read_data_by_identifier_first(0xF190 + 1)
            assert ei.value.response.code == 0x31
    finally:
        server.close()
    assert server.requests[0] == b"\x22\xf1\x90"
    assert server.pending_sent
