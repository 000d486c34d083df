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


class LimitError(CanxError, RuntimeError):
    """A bounded queue or table of a protocol engine is full (for example a
    reliable sender's ``max_outstanding`` messages without a collected
    outcome); the call was refused and nothing was queued."""
