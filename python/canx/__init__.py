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
    format_frame_text,
    format_log_line,
    parse_candump_filter,
    parse_frame_text,
    parse_log_line,
    virtual_channels,
)
from .errors import (
    AddressClaimError,
    J1939Error,
    RequestRejected,
    RequestRejectedError,
    RequestTimeout,
    RequestTimeoutError,
    TransferAborted,
    TransferAbortedError,
    BusOffError,
    CanxError,
    ChannelError,
    ClosedError,
    ReceiveThreadError,
    InterfaceDownError,
    InterfaceError,
    LimitError,
    MegasquirtBusyError,
    MegasquirtError,
    MegasquirtTimeoutError,
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
    # can-utils text (candump .log lines, cansend frames, candump filters; Rust codec)
    "parse_log_line",
    "format_log_line",
    "parse_frame_text",
    "format_frame_text",
    "parse_candump_filter",
    # errors
    "CanxError",
    "ClosedError",
    "ChannelError",
    "InterfaceError",
    "InterfaceDownError",
    "BusOffError",
    "SilentModeError",
    "SendTimeoutError",
    "UnsupportedError",
    "ReceiveThreadError",
    "MegasquirtError",
    "MegasquirtTimeoutError",
    "MegasquirtBusyError",
    "LimitError",
    # protocol engines (modules)
    "reliable",
    "canxproto",
    "megasquirt",
    "J1939Error",
    "AddressClaimError",
    "TransferAbortedError",
    "RequestTimeoutError",
    "RequestRejectedError",
    "TransferAborted",  # old names of the three above
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


from . import canxproto, j1939, megasquirt, reliable  # noqa: E402  (protocol engines as submodules)
