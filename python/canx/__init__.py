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
from typing import Any, List

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
    _native_waits,
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


#: The protocol modules, imported on first use (``canx.j1939``, ``from canx
#: import reliable``): ``import canx`` alone costs only the canio half.
_LAZY_MODULES = ("reliable", "canxproto", "megasquirt", "j1939", "isotp", "uds")


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)  # binds canx.<name> as well
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY_MODULES))


#: Longest wait at exit for threads to leave native waits (s): one wait
#: slice is 50 ms (src/py/can.rs SIGNAL_SLICE).
_EXIT_WAIT = 0.2


@_atexit.register
def _shutdown() -> None:
    # Threads parked in native waits (a receive() in a daemon thread, callback
    # pumps) must leave native code before the interpreter finalizes: from now
    # on waits return at once, and we wait (at most one wait slice, 50 ms)
    # only while some thread is still inside one. An exit with no such thread
    # (no canx object ever waited) does not sleep at all. A Ctrl-C during
    # this wait must not end it early: a thread finalized while still in
    # native code aborts the process ("FATAL: exception not rethrown",
    # docs/reliability.md), so KeyboardInterrupt is swallowed here (the
    # process is exiting anyway) and the wait stays bounded by _EXIT_WAIT.
    deadline = None
    while True:
        try:
            _begin_shutdown()
            if _native_waits():
                if deadline is None:
                    deadline = _time.monotonic() + _EXIT_WAIT
                while _native_waits() and _time.monotonic() < deadline:
                    _time.sleep(0.005)
            return
        except KeyboardInterrupt:
            continue
