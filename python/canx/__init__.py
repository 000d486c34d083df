"""canx: a CAN bus toolkit with a Rust core.

``import canx as canio`` is enough for CircuitPython ``canio`` code: the
classes below have canio's names, signatures, semantics and error messages
(see docs in each class). canx adds channels (SocketCAN ``"vcan0"``,
``"can0"``; the in-process virtual bus ``"virtual:name"``), CAN FD, receive
timestamps, error frames, statistics and asyncio, without changing canio
behaviour.

Example::

    import canx
    with canx.CAN(channel="virtual:demo", loopback=True) as can:
        listener = can.listen(timeout=1.0)
        can.send(canx.Message(0x408, b"hello"))
        print(listener.receive())
"""

from __future__ import annotations

import atexit as _atexit
import time as _time

from ._canx import (
    CAN,
    BusState,
    ErrorFrame,
    Listener,
    Match,
    Message,
    RemoteTransmissionRequest,
    __version__,
    _begin_shutdown,
    virtual_channels,
)
from .errors import (
    AddressClaimError,
    J1939Error,
    RequestRejected,
    RequestTimeout,
    TransferAborted,
    BusOffError,
    CanxError,
    ChannelError,
    InterfaceDownError,
    InterfaceError,
    SendTimeoutError,
    SilentModeError,
    UnsupportedError,
)

__all__ = [
    # canio
    "BusState",
    "CAN",
    "Listener",
    "Match",
    "Message",
    "RemoteTransmissionRequest",
    # canx extensions
    "ErrorFrame",
    "virtual_channels",
    "__version__",
    # errors
    "CanxError",
    "ChannelError",
    "InterfaceError",
    "InterfaceDownError",
    "BusOffError",
    "SilentModeError",
    "SendTimeoutError",
    "UnsupportedError",
    "J1939Error",
    "AddressClaimError",
    "TransferAborted",
    "RequestTimeout",
    "RequestRejected",
    # protocols
    "j1939",
]


@_atexit.register
def _shutdown() -> None:
    # Threads parked in native waits (a receive() in a daemon thread, callback
    # pumps) must leave native code before the interpreter finalizes: from now
    # on waits return at once, and one wait slice (50 ms) lets them get out.
    _begin_shutdown()
    _time.sleep(0.06)

# SAE J1939 (canx.j1939): imported here so that `canx.j1939.ECU` works after `import canx`.
from . import j1939  # noqa: E402
