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

from ._canx import (
    CAN,
    BusState,
    ErrorFrame,
    Listener,
    Match,
    Message,
    RemoteTransmissionRequest,
    __version__,
    virtual_channels,
)
from .errors import (
    BusOffError,
    CanxError,
    ChannelError,
    InterfaceDownError,
    InterfaceError,
    LimitError,
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
    "LimitError",
    # protocol engines (modules)
    "reliable",
    "canxproto",
]

from . import canxproto, reliable  # noqa: E402  (engines: canx.reliable, canx.canxproto)
