"""CAN eXtended (CAN-X): the easyIPC transport over CAN 2.0B, as
``docs/protocols/can-x.md`` defines it.

The engine is the no_std core's (``canx_core::canx_proto``), run by the bus's
native receive thread: framing, sequence numbers, reassembly, CRC checks
and every receiver rule happen there; Python sees complete messages and
error reports.

Identifier (29 bits): priority (2) | direction (1: 0 = to the device,
1 = from the device) | device id (8) | stream id (10) | sequence number (7)
| continue (1). A body of up to 7 bytes travels in one frame, up to 2032
bytes as an envelope with a CRC-16/IBM-3740 tail.

Example::

    import canx
    from canx import canxproto

    host = canxproto.Endpoint(canx.CAN(channel="virtual:x"))                 # sends to devices
    dev = canxproto.Endpoint(canx.CAN(channel="virtual:x"), direction=canxproto.FROM_DEVICE, device=5)
    host.send(5, 300, 0x42, bytes(1000))
    print(dev.receive(1.0))          # Message(direction=0, device=5, stream=300, msg_id=0x42, body=..., ...)

Bounded memory: at most ``max_open`` envelopes (1..64, default 16) are
reassembled at once, each with a 2036-byte buffer; a head that would open
one more is refused, reported as an :class:`Error` with reason
``"no_free_slot"`` and counted in ``stats()["refused_open"]`` (its
following frames are then reported as ``"stray"``). Sending queues at most
``max_waiting`` messages (default 256) beyond the engine's 8 transmit
slots; ``send`` blocks (GIL released) while the queue is full. Received
events wait in a queue of ``queue_size`` (default 4096); when it is full new
events are dropped and counted (``events_dropped``): CAN-X has no
acknowledgement.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Union

from . import _canx
from .reliable import _EventReceiver, _ReceiverEvent

__all__ = [
    "Endpoint",
    "Message",
    "Error",
    "CanxMessage",
    "ErrorReport",
    "TO_DEVICE",
    "FROM_DEVICE",
    "MAX_BODY",
    "MAX_OPEN",
]

#: Direction bit 0: frames sent to the device.
TO_DEVICE = 0
#: Direction bit 1: frames sent by the device.
FROM_DEVICE = 1
#: Largest body, bytes (``8 * 255 - 8``).
MAX_BODY = 2032
#: Largest ``max_open``.
MAX_OPEN = 64


class Message(NamedTuple):
    """A complete CAN-X message. ``direction``: the identifier bit
    (:data:`TO_DEVICE`/:data:`FROM_DEVICE`); ``device`` id 0..255; ``stream``
    id 0..1023; ``priority`` 0..3 (0 highest); ``msg_id`` 0..255; ``body``
    0..2032 bytes; ``timestamp``: receive time of the last frame (epoch s)."""

    direction: int
    device: int
    stream: int
    msg_id: int
    body: bytes
    priority: int
    timestamp: float


class Error(NamedTuple):
    """A broken receiver rule (``can-x.md`` "Receiver rules"): the key
    (``direction``, ``device``, ``stream``), the envelope's ``msg_id`` (None
    for a stray frame), ``reason`` (``bad_sequence``,
    ``frame_count_mismatch``, ``truncated``, ``bad_tail_pid``,
    ``crc_mismatch``, ``superseded``, ``timeout``, ``stray``,
    ``no_free_slot``, ``empty``) and a readable ``text``."""

    direction: int
    device: int
    stream: int
    msg_id: Optional[int]
    reason: str
    text: str


#: Clearer names of :class:`Message` (not ``canx.Message``, a CAN frame) and
#: :class:`Error` (a report delivered to ``on_error``, not an exception).
CanxMessage = Message
ErrorReport = Error


class Endpoint(_EventReceiver):
    """A CAN-X node on ``bus`` (a ``canx.CAN``).

    - ``direction``: the direction bit of the frames it sends
      (:data:`TO_DEVICE`, the default, for a host; :data:`FROM_DEVICE` for a device).
    - ``receive_direction``: the direction bit it accepts; default the
      opposite of ``direction``; None accepts both.
    - ``device``: accept only this device id (None: every device). A device
      passes its own id.
    - ``max_open`` (1..64), ``reassembly_timeout`` (s, default 1.0 as the
      spec), ``max_waiting``, ``queue_size``: see the module doc.
    - ``on_message``/``on_error`` callbacks, or ``receive()``, iteration and
      ``async for`` (``timeout``: how long they wait; None: forever).
    """

    def __init__(
        self,
        bus: _canx.CAN,
        *,
        direction: int = TO_DEVICE,
        receive_direction: Union[int, None, str] = "opposite",
        device: Optional[int] = None,
        max_open: int = 16,
        reassembly_timeout: float = 1.0,
        max_waiting: int = 256,
        queue_size: int = 4096,
        on_message: Optional[Callable[[Message], Any]] = None,
        on_error: Optional[Callable[[Error], Any]] = None,
        timeout: Optional[float] = None,
    ) -> None:
        if direction not in (TO_DEVICE, FROM_DEVICE):
            raise ValueError("direction must be TO_DEVICE (0) or FROM_DEVICE (1)")
        if receive_direction == "opposite":
            receive_direction = 1 - direction
        elif receive_direction not in (None, TO_DEVICE, FROM_DEVICE):
            raise ValueError("receive_direction must be TO_DEVICE, FROM_DEVICE, None (both) or 'opposite'")
        native = _canx.NativeCanxEndpoint(
            bus,
            direction=direction,
            receive_direction=receive_direction,
            device=device,
            max_open=max_open,
            reassembly_timeout=reassembly_timeout,
            max_waiting=max_waiting,
            queue_size=queue_size,
        )
        super().__init__(native, "canx-canxproto", timeout)
        self.direction = direction
        if on_message is not None:
            self.on_message(on_message)
        if on_error is not None:
            self.on_error(on_error)

    def send(
        self, device: int, stream: int, msg_id: int, body: bytes, *, priority: int = 0, timeout: Optional[float] = 1.0
    ) -> None:
        """Queues one message to (this endpoint's direction, ``device``,
        ``stream``); the receive thread frames and sends it. Blocks up to
        ``timeout`` s while ``max_waiting`` messages wait, then raises
        ``canx.SendTimeoutError``. Raises ValueError for a stream above 1023,
        priority above 3, body above 2032 bytes, device/msg_id outside 0..255
        (OverflowError for negative values)."""
        self._native.send(device, stream, msg_id, body, priority, timeout)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Waits until every queued message has left; False after ``timeout`` s."""
        return bool(self._native.flush(timeout))

    def stats(self) -> Dict[str, int]:
        """``messages_queued``, ``messages_sent``, ``frames_sent``,
        ``keys_evicted``, ``waiting``, ``send_failed``, ``frames_received``,
        ``frames_ignored``, ``messages_received``, ``errors``,
        ``refused_open`` (heads refused at ``max_open``), ``open_envelopes``,
        ``events_dropped``, ``callback_errors``, ``pump_errors``."""
        return super().stats()

    def _convert(self, ev: _ReceiverEvent) -> Any:
        if isinstance(ev, _canx.CanxMessageEvent):
            return Message(ev.direction, ev.device, ev.stream, ev.msg_id, ev.body, ev.priority, ev.timestamp)
        assert isinstance(ev, _canx.CanxErrorEvent), ev
        return Error(ev.direction, ev.device, ev.stream, ev.msg_id, ev.reason, ev.text)
