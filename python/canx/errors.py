"""The canx exception hierarchy, defined in one place.

Every error raised by the native runtime is one of these. Each also derives
from the standard exception a Python user would catch for that kind of
problem, so ``except OSError`` or ``except TimeoutError`` keep working.

canio compatibility: the errors canio itself raises keep canio's types and
messages (``ValueError`` for bad arguments and deinitialized objects,
``TypeError`` for wrong message types); these classes are for what canio has
no word for (interfaces, bus-off, timeouts). Use of a deinitialized or closed
object raises :class:`ClosedError`, which is both canio's ``ValueError`` (same
message) and a :class:`CanxError`.

The native extension maps its errors to these classes through one table
(``src/py/errors.rs``), looked up once when ``canx._canx`` is imported.
"""

from __future__ import annotations

__all__ = [
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
    "J1939Error",
    "AddressClaimError",
    "TransferAbortedError",
    "RequestTimeoutError",
    "RequestRejectedError",
    # the names before 0.2, kept as aliases
    "TransferAborted",
    "RequestTimeout",
    "RequestRejected",
]


class CanxError(Exception):
    """Base class of every canx error."""


class ClosedError(CanxError, ValueError):
    """The object was deinitialized or closed (``deinit()``, ``close()``, the
    end of a ``with`` block). A ``ValueError`` carrying canio's message
    ("Object has been deinitialized and can no longer be used. Create a new
    object."), so canio code catching ``ValueError`` keeps working."""


class ChannelError(CanxError, ValueError):
    """A channel or interface name canx does not understand (``"pcan:x"``)."""


class InterfaceError(CanxError, OSError):
    """The operating system refused to open or use a CAN interface: no such
    interface, no permission, or a kernel without SocketCAN."""


class InterfaceDownError(InterfaceError):
    """The interface is down (``ip link set vcan0 down``) or was removed."""


class BusOffError(CanxError, OSError):
    """The controller is BUS_OFF and ``auto_restart`` is off; call ``restart()``."""


class SilentModeError(CanxError, RuntimeError):
    """The bus was opened with ``silent=True`` (listen-only) and cannot send."""


class SendTimeoutError(CanxError, TimeoutError):
    """The transmit queue stayed full for the whole send timeout."""


class UnsupportedError(CanxError, ValueError):
    """The operation does not fit this bus (a CAN FD frame on a classic bus,
    error-state injection on a real interface)."""


class ReceiveThreadError(InterfaceError):
    """The bus's receive thread stopped after repeated backend errors (the
    message names the last one): the bus neither receives nor drives its
    protocol engines any more. Raised by the next ``send``, ``receive`` or
    ``listen``; ``CAN.state`` reads ``BUS_OFF`` and ``CAN.link_error`` says
    why. ``deinit()`` the bus and open it again."""


class MegasquirtError(CanxError):
    """Base class of the errors of ``canx.megasquirt``."""


class MegasquirtTimeoutError(MegasquirtError, TimeoutError):
    """A MegaSquirt request (read, outmsg, CRC, burn with ack) got no complete
    reply: the board did not answer each try within ``request_timeout``
    (after ``retries`` resends), or the call's ``timeout=`` passed. A board
    sends no reply at all to a request it refuses (unknown table, offset out
    of range, not readable), so a refusal also ends here."""


class MegasquirtBusyError(MegasquirtError, RuntimeError):
    """Every request slot of the node stayed in use for the whole ``timeout``."""


class LimitError(CanxError, RuntimeError):
    """A bounded queue or table of a protocol engine is full (for example a
    reliable sender's ``max_outstanding`` messages without a collected
    outcome); the call was refused and nothing was queued."""


class J1939Error(CanxError):
    """A J1939 operation failed (no free transport session, queue full)."""


class AddressClaimError(J1939Error):
    """No address: the claim is not done yet, was lost to a lower NAME, or
    ended in Cannot Claim (J1939-81 4.4)."""


class TransferAbortedError(J1939Error):
    """A TP/ETP transfer ended with Connection Abort; ``reason`` is the
    J1939-21 5.10.3.5 code (1 already in session, 2 resources, 3 timeout,
    ... 250 other)."""

    def __init__(self, message: str, reason: int = 0) -> None:
        super().__init__(message)
        self.reason = reason


class RequestTimeoutError(J1939Error, TimeoutError):
    """No answer to a Request within the timeout (J1939-21 T3, 1.25 s)."""


class RequestRejectedError(J1939Error):
    """A Request was answered with an Acknowledgment instead of data
    (J1939-21 5.4.4); ``control`` is 1 NACK, 2 access denied, 3 cannot
    respond."""

    def __init__(self, message: str, control: int = 1) -> None:
        super().__init__(message)
        self.control = control


# The J1939 names before the ``Error`` suffix; the same classes.
TransferAborted = TransferAbortedError
RequestTimeout = RequestTimeoutError
RequestRejected = RequestRejectedError
