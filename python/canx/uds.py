"""UDS (ISO 14229) over canx's ISO-TP: a udsoncan connection.

::

    import udsoncan
    from udsoncan.client import Client
    import canx.isotp as isotp
    from canx.uds import UdsConnection

    addr = isotp.Address(isotp.AddressingMode.Normal_11bits, txid=0x7E0, rxid=0x7E8)
    with Client(UdsConnection("vcan0", addr), request_timeout=2,
                config={"data_identifiers": {0xF190: udsoncan.AsciiCodec(17)}}) as client:
        vin = client.read_data_by_identifier_first(0xF190)

:class:`UdsConnection` is a ``udsoncan.connections.BaseConnection`` (the six
methods udsoncan requires: ``open``, ``close``, ``is_open``,
``specific_send``, ``specific_wait_frame``, ``empty_rxqueue``) over a
:class:`canx.isotp.CanStack`, so ``udsoncan.Client`` runs unchanged;
udsoncan's own client handles P2/P2* and NRC 0x78 (response pending).
Needs ``pip install udsoncan``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

from udsoncan.connections import BaseConnection
from udsoncan.exceptions import TimeoutException

from . import isotp
from ._canx import CAN

__all__ = ["UdsConnection"]


class UdsConnection(BaseConnection):
    """A udsoncan connection on a canx ISO-TP channel.

    ``bus``: a :class:`canx.CAN` or a channel string (as for
    :class:`canx.isotp.CanStack`), or an existing ``CanStack`` (then
    ``address`` and ``params`` are ignored). ``params``: python-can-isotp's
    keys; ``max_frame_size`` defaults to 4095 (the largest UDS response of
    a 12-bit FF_DL). ``open()`` starts the stack, ``close()`` stops it."""

    def __init__(
        self,
        bus: Union[CAN, str, isotp.CanStack],
        address: Optional[isotp.Address] = None,
        params: Optional[Dict[str, Any]] = None,
        name: Optional[str] = None,
    ) -> None:
        BaseConnection.__init__(self, name)
        if isinstance(bus, isotp.CanStack):
            self.stack = bus
        else:
            if address is None:
                raise ValueError("address is required with a bus or channel")
            self.stack = isotp.CanStack(bus, address, params=params)
        self.opened = False

    def open(self) -> "UdsConnection":
        self.stack.start()
        self.opened = True
        return self

    def __enter__(self) -> "UdsConnection":
        return self

    def __exit__(self, *_args: object) -> None:
        self.close()

    def is_open(self) -> bool:
        return self.opened

    def close(self) -> None:
        self.stack.stop()
        self.opened = False

    def specific_send(self, payload: bytes, timeout: Optional[float] = None) -> None:
        self.stack.send(payload, send_timeout=timeout)

    def specific_wait_frame(self, timeout: Optional[float] = None) -> Optional[bytes]:
        """The next response; udsoncan's TimeoutException after ``timeout`` s."""
        self.check_connection_opened()
        frame = self.stack.recv(block=True, timeout=timeout)
        if frame is None:
            raise TimeoutException(f"no ISO-TP message within {timeout} s")  # type: ignore[no-untyped-call]  # udsoncan leaves its __init__ untyped
        return bytes(frame)

    def empty_rxqueue(self) -> None:
        self.stack.clear_rx_queue()

    def empty_txqueue(self) -> None:
        self.stack.stop_sending()
