"""The canx exception hierarchy, defined in one place.

Every error raised by the native runtime is one of these. Each also derives
from the standard exception a Python user would catch for that kind of
problem, so ``except OSError`` or ``except TimeoutError`` keep working.

canio compatibility: the errors canio itself raises keep canio's types and
messages (``ValueError`` for bad arguments and deinitialized objects,
``TypeError`` for wrong message types); these classes are for what canio has
no word for (interfaces, bus-off, timeouts).
"""

from __future__ import annotations

__all__ = [
    "CanxError",
    "ChannelError",
    "InterfaceError",
    "InterfaceDownError",
    "BusOffError",
    "SilentModeError",
    "SendTimeoutError",
    "UnsupportedError",
    "MegasquirtError",
    "MegasquirtTimeoutError",
    "MegasquirtBusyError",
    "LimitError",
]


class CanxError(Exception):
    """Base class of every canx error."""


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
