"""Reliable delivery over CAN: acknowledgement, timeout, retry.

The engines are the no_std core's (``canx_core::reliable``), run by the bus's
native receive thread: a receiver ACKs a data frame in the same native round
in which it arrived, so ACK latency does not depend on Python. This module
adds futures, asyncio and callbacks on top.

General mode (canx's own wire format, see ``canx_core::reliable``)::

    data  frame: id = data id (11 or 29 bit), data = [seq, payload 0..7 bytes]
    ACK   frame: id = ACK id (data id + ack_offset, or a fixed ack_id), data = [0xAC, seq]

``seq`` is a u8 counted per data id by the sender; a receiver remembers the
last 4 ``seq`` values per data id, delivers a message once and ACKs every
copy. One message is in flight per data id at a time (more wait in order in
the engine's FIFO); messages to different data ids travel concurrently (up
to 64 in flight).

Guide mode (``GuideSender``/``GuideListener``) is the canio Learn guide's
``sender-ack``/``listener-ack`` protocol byte for byte: data on 0x408 with
``struct.pack("<II", count, now_ms)``, ACK on 0x409 echoing the 4-byte count,
resend of the same 8 bytes after the receive timeout (0.1 s), forever unless
``retries`` is given. Either side interoperates with the unmodified guide
programs (``examples/circuitpython/*_ack.py`` under ``canx run``).

Example::

    import canx
    from canx import reliable

    a, b = canx.CAN(channel="virtual:x"), canx.CAN(channel="virtual:x")
    rx = reliable.Receiver(b, matches=[canx.Match(0x123)])
    tx = reliable.Sender(a, timeout=0.1, retries=5, backoff=2)
    print(tx.send(0x123, b"hello").result())   # Outcome(delivered=True, tries=1, ...)
    print(rx.receive(1.0))                       # ReceivedMessage(id=0x123, data=b"hello", ...)

Threads: each sender and each receiver with callbacks has one pump thread
(``canx.CallbackPump``) that resolves futures and calls callbacks; a raising
callback is logged and counted (``stats()["callback_errors"]``), the engine
keeps running. Callbacks run on that thread, never in the receive thread.
Call ``close()`` (or use ``with``) to detach an engine and stop its thread;
an engine keeps its ``CAN`` open until then.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from typing import Any, AsyncIterator, Callable, Deque, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from . import _aio, _canx
from ._dispatch import CallbackPump

__all__ = [
    "Outcome",
    "GuideOutcome",
    "ReceivedMessage",
    "GuideMessage",
    "Malformed",
    "Sender",
    "Receiver",
    "GuideSender",
    "GuideListener",
    "GUIDE_DATA_ID",
    "GUIDE_ACK_ID",
]

log = logging.getLogger("canx")

#: The canio guide's data identifier (standard).
GUIDE_DATA_ID = 0x408
#: The canio guide's ACK identifier (standard).
GUIDE_ACK_ID = 0x409

_DEFAULT: Any = object()


class Outcome(NamedTuple):
    """How a general-mode message ended: ACKed (``delivered``) after ``tries``
    transmissions, or given up after the retry limit."""

    delivered: bool
    tries: int
    id: int
    data: bytes
    extended: bool = False


class GuideOutcome(NamedTuple):
    """How a guide-mode message ended (``count``, ``now_ms`` as sent)."""

    delivered: bool
    tries: int
    count: int  # type: ignore[assignment]  # shadows tuple.count, as the guide names it
    now_ms: int


class ReceivedMessage(NamedTuple):
    """A general-mode message, delivered once however often it was resent.
    ``timestamp``: receive time, epoch seconds."""

    id: int
    data: bytes
    seq: int
    extended: bool
    timestamp: float


class GuideMessage(NamedTuple):
    """A guide-mode message: ``count, now_ms = struct.unpack("<II", data)``."""

    count: int  # type: ignore[assignment]  # shadows tuple.count, as the guide names it
    now_ms: int
    timestamp: float


class Malformed(NamedTuple):
    """A frame on an id the engine owns with the wrong shape (reported, not ACKed)."""

    id: int
    extended: bool
    reason: str


#: What the native engines' ``next_event`` returns (frozen classes of ``canx._canx``).
_SenderEvent = Union[_canx.ReliableOutcomeEvent, _canx.MalformedEvent]
_ReceiverEvent = Union[
    _canx.ReliableMessageEvent,
    _canx.GuideMessageEvent,
    _canx.MalformedEvent,
    _canx.CanxMessageEvent,  # canx.canxproto.Endpoint
    _canx.CanxErrorEvent,
]


def _call_all(callbacks: Sequence[Callable[[Any], Any]], value: Any) -> None:
    """Calls every callback; re-raises the first error after all ran."""
    first: Optional[BaseException] = None
    for cb in list(callbacks):
        try:
            cb(value)
        except Exception as e:  # reported by the pump
            if first is None:
                first = e
    if first is not None:
        raise first


def _seconds(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number of seconds") from None
    if not v > 0:
        raise ValueError(f"{name} must be a positive number of seconds")
    return v


# ---------------------------------------------------------------- senders


class _SenderBase(abc.ABC):
    def __init__(self, native: Any, name: str) -> None:
        self._native = native
        self._lock = threading.Lock()
        self._pending: Dict[int, Tuple[concurrent.futures.Future[Any], Any]] = {}
        self._outcome_cbs: List[Callable[[Any], Any]] = []
        self._error_cbs: List[Callable[[Malformed], Any]] = []
        self._pump = CallbackPump(name, native.next_event, self._dispatch, lambda: native.closed).start()

    def _submit(self, call: Callable[[], Any], info: Callable[[Any], Any]) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:  # the outcome may arrive before call() returns
            ret = call()
            ticket = ret[0] if isinstance(ret, tuple) else ret
            self._pending[ticket] = (fut, info(ret))
        return fut

    @abc.abstractmethod
    def _make_outcome(self, ev: _canx.ReliableOutcomeEvent, info: Any) -> Any:
        """The outcome object of this sender class for an outcome event."""

    def _dispatch(self, ev: _SenderEvent) -> None:
        if isinstance(ev, _canx.ReliableOutcomeEvent):
            with self._lock:
                fut, info = self._pending.pop(ev.ticket, (None, None))
            if fut is None:
                return
            outcome = self._make_outcome(ev, info)
            if fut.set_running_or_notify_cancel():
                fut.set_result(outcome)
            _call_all(self._outcome_cbs, outcome)
        elif isinstance(ev, _canx.MalformedEvent):
            _call_all(self._error_cbs, Malformed(ev.id, ev.extended, ev.reason))

    def on_outcome(self, callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Calls ``callback(outcome)`` for every finished message (on the pump
        thread). Returns the callback (usable as a decorator)."""
        self._outcome_cbs.append(callback)
        return callback

    def on_error(self, callback: Callable[[Malformed], Any]) -> Callable[[Malformed], Any]:
        """Calls ``callback(Malformed)`` for malformed ACK frames."""
        self._error_cbs.append(callback)
        return callback

    def stats(self) -> Dict[str, int]:
        """``sent`` (first transmissions), ``resent``, ``acknowledged``,
        ``failed``, ``stale_acks`` (ACKs matching nothing in flight),
        ``in_flight``/``waiting`` (general mode), ``malformed``,
        ``send_failed`` (frames the bus refused), ``events_dropped``,
        ``callback_errors``, ``pump_errors`` (events the callback thread
        failed to take, each logged; it kept running)."""
        s = dict(self._native.stats())
        s["callback_errors"] = self._pump.callback_errors
        s["pump_errors"] = self._pump.pump_errors
        return s

    @property
    def outstanding(self) -> int:
        """Messages accepted whose outcome has not been delivered yet."""
        return int(self._native.outstanding())

    def close(self) -> None:
        """Detaches the engine (messages in flight are abandoned; their
        futures are cancelled). Idempotent."""
        self._native.close()
        self._pump.stop()
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut, _ in pending.values():
            fut.cancel()

    def __enter__(self) -> "_SenderBase":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Sender(_SenderBase):
    """General-mode reliable sender on ``bus`` (a ``canx.CAN``).

    - ``timeout``: seconds to wait for the ACK after the first transmission
      (default 0.1); each resend waits ``backoff`` (a whole number, default 2)
      times longer, at most ``max_timeout`` seconds (default 1.0).
    - ``retries``: resends after the first transmission (default 3; ``None``:
      forever). ``tries`` in the outcome counts all transmissions.
    - ACK id: data id + ``ack_offset`` (default 1), or the fixed ``ack_id``
      (``ack_extended`` for a 29-bit one). Must agree with the receiver.
    - ``initial_seq``: first ``seq`` of every data id (vary it across restarts).
    - ``max_outstanding``: messages accepted whose outcome was not delivered
      yet (default 1024); beyond it ``send`` raises ``canx.LimitError``.
    - ``on_outcome``: a callback for every outcome.
    """

    def __init__(
        self,
        bus: _canx.CAN,
        *,
        timeout: float = 0.1,
        retries: Optional[int] = 3,
        backoff: float = 2,
        max_timeout: float = 1.0,
        ack_offset: int = 1,
        ack_id: Optional[int] = None,
        ack_extended: bool = False,
        initial_seq: int = 0,
        max_outstanding: int = 1024,
        on_outcome: Optional[Callable[[Outcome], Any]] = None,
    ) -> None:
        if float(backoff) != int(backoff) or int(backoff) < 1:
            raise ValueError("backoff must be a whole number >= 1 (the engine multiplies by an integer)")
        if retries is not None and retries < 0:
            raise ValueError("retries must be >= 0 or None (forever)")
        native = _canx.NativeReliableSender(
            bus,
            timeout=_seconds("timeout", timeout),
            retries=retries,
            backoff=int(backoff),
            max_timeout=_seconds("max_timeout", max_timeout),
            ack_offset=ack_offset,
            ack_id=ack_id,
            ack_extended=ack_extended,
            initial_seq=initial_seq,
            max_outstanding=max_outstanding,
        )
        super().__init__(native, "canx-reliable-sender")
        if on_outcome is not None:
            self.on_outcome(on_outcome)

    def send(self, id: int, data: bytes, *, extended: bool = False) -> "concurrent.futures.Future[Outcome]":
        """Sends ``data`` (0..7 bytes) to data id ``id``; returns a
        ``concurrent.futures.Future`` resolving to an :class:`Outcome`.
        Raises ValueError (id out of range, data longer than 7 bytes),
        TypeError (data not a buffer), ``canx.LimitError``."""
        payload = data if isinstance(data, bytes) else memoryview(data).tobytes()  # TypeError for non-buffers
        return self._submit(lambda: self._native.send(id, payload, extended), lambda _t: (id, payload, extended))

    async def send_async(self, id: int, data: bytes, *, extended: bool = False) -> Outcome:
        """``await`` form of :meth:`send`."""
        return await asyncio.wrap_future(self.send(id, data, extended=extended))

    def _make_outcome(self, ev: _canx.ReliableOutcomeEvent, info: Any) -> Outcome:
        id, data, extended = info
        return Outcome(ev.delivered, ev.tries, id, data, extended)


class GuideSender(_SenderBase):
    """The canio guide's ``sender-ack`` as an engine: data on ``data_id``
    (0x408) as ``struct.pack("<II", count, now_ms)``, waits ``timeout``
    seconds (0.1) for the 4-byte count echoed on ``ack_id`` (0x409), resends
    the same bytes, forever (``retries=None``, as the guide) or ``retries``
    times. One message in flight; further ones wait in order."""

    def __init__(
        self,
        bus: _canx.CAN,
        *,
        timeout: float = 0.1,
        retries: Optional[int] = None,
        data_id: int = GUIDE_DATA_ID,
        ack_id: int = GUIDE_ACK_ID,
        extended: bool = False,
        first_count: int = 0,
        max_outstanding: int = 1024,
        on_outcome: Optional[Callable[[GuideOutcome], Any]] = None,
    ) -> None:
        if retries is not None and retries < 0:
            raise ValueError("retries must be >= 0 or None (forever)")
        native = _canx.NativeGuideSender(
            bus,
            data_id=data_id,
            ack_id=ack_id,
            extended=extended,
            timeout=_seconds("timeout", timeout),
            retries=retries,
            first_count=first_count,
            max_outstanding=max_outstanding,
        )
        super().__init__(native, "canx-guide-sender")
        if on_outcome is not None:
            self.on_outcome(on_outcome)

    def send(self, count: Optional[int] = None, now_ms: Optional[int] = None) -> "concurrent.futures.Future[GuideOutcome]":
        """Sends the next message; ``count`` defaults to the previous + 1
        (from ``first_count``), ``now_ms`` to the guide's
        ``(time.monotonic_ns() // 1_000_000) & 0xffffffff``. Returns a Future
        resolving to a :class:`GuideOutcome`."""
        if now_ms is None:
            now_ms = (time.monotonic_ns() // 1_000_000) & 0xFFFFFFFF
        ms = int(now_ms)
        return self._submit(lambda: self._native.send(ms, count), lambda ret: (ret[1], ms))

    async def send_async(self, count: Optional[int] = None, now_ms: Optional[int] = None) -> GuideOutcome:
        return await asyncio.wrap_future(self.send(count, now_ms))

    def _make_outcome(self, ev: _canx.ReliableOutcomeEvent, info: Any) -> GuideOutcome:
        return GuideOutcome(ev.delivered, ev.tries, ev.count, info[1])


# ---------------------------------------------------------------- receivers


class _EventReceiver(abc.ABC):
    """Shared by receivers and the CAN-X endpoint: either callbacks (a pump
    thread takes every event) or direct ``receive()``/iteration, not both."""

    _message_kinds: Tuple[str, ...] = ("message",)

    def __init__(self, native: Any, name: str, timeout: Optional[float]) -> None:
        self._native = native
        self._name = name
        self.timeout = timeout
        self._msg_cbs: List[Callable[[Any], Any]] = []
        self._err_cbs: List[Callable[[Any], Any]] = []
        self._pump: Optional[CallbackPump] = None
        self._start_lock = threading.Lock()
        #: Error reports seen by receive()/iteration (the last 100).
        self.errors: Deque[Any] = collections.deque(maxlen=100)

    @abc.abstractmethod
    def _convert(self, ev: _ReceiverEvent) -> Any:
        """The message or error object of this receiver class for an event."""

    def _dispatch(self, ev: _ReceiverEvent) -> None:
        obj = self._convert(ev)
        _call_all(self._msg_cbs if ev.kind in self._message_kinds else self._err_cbs, obj)

    def _start_pump(self) -> None:
        with self._start_lock:
            if self._pump is None:
                native = self._native
                self._pump = CallbackPump(self._name, native.next_event, self._dispatch, lambda: native.closed).start()

    def on_message(self, callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Calls ``callback(message)`` for every message, on a pump thread.
        From then on the callbacks take every event: ``receive()`` and
        iteration raise RuntimeError. Returns the callback."""
        self._msg_cbs.append(callback)
        self._start_pump()
        return callback

    def on_error(self, callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Calls ``callback(error)`` for every error report (same rules as
        :meth:`on_message`)."""
        self._err_cbs.append(callback)
        self._start_pump()
        return callback

    def receive(self, timeout: Optional[float] = _DEFAULT) -> Any:
        """The next message, or None after ``timeout`` seconds (default: the
        object's ``timeout``; None waits forever). Error reports met on the
        way go to ``self.errors``. Ctrl-C interrupts the wait."""
        if self._pump is not None:
            raise RuntimeError("this object delivers to callbacks (on_message/on_error); receive() is not available")
        if timeout is _DEFAULT:
            timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ev = self._native.next_event(left)
            if ev is None:
                return None
            if self._is_message(ev):
                return self._convert(ev)
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def __iter__(self) -> Iterator[Any]:
        """Messages until ``timeout`` seconds pass without one (None: forever)."""
        while True:
            m = self.receive()
            if m is None:
                return
            yield m

    def _receive_nowait(self) -> Any:
        """The next queued message, or None; never waits. Error reports met
        on the way go to ``self.errors``."""
        if self._pump is not None:
            raise RuntimeError("this object delivers to callbacks (on_message/on_error); receive() is not available")
        while True:
            ev = self._native.next_event(0.0)
            if ev is None:
                return None
            if self._is_message(ev):
                return self._convert(ev)

    def _is_message(self, ev: Any) -> bool:
        """Whether `ev` is a message; an error report goes to ``self.errors``."""
        if ev.kind in self._message_kinds:
            return True
        self.errors.append(self._convert(ev))
        return False

    async def receive_async(self, timeout: Optional[float] = _DEFAULT) -> Any:
        """``await`` form of :meth:`receive`. Waits on the event queue's
        readiness in the event loop (no executor thread); a cancelled call
        takes nothing off the queue (``canx._aio``)."""
        if timeout is _DEFAULT:
            timeout = self.timeout
        return await _aio.take(self._receive_nowait, self._native.fileno, None if timeout is None else float(timeout))

    def __aiter__(self) -> AsyncIterator[Any]:
        """Messages until ``timeout`` seconds pass without one (None:
        forever); cancelling one step loses no message."""
        return _aio.AsyncQueueIterator(self._receive_nowait, self._native.fileno, lambda: self.timeout)

    def in_waiting(self) -> int:
        """Events (messages and error reports) waiting to be taken."""
        return int(self._native.in_waiting())

    def stats(self) -> Dict[str, int]:
        s = dict(self._native.stats())
        s["callback_errors"] = self._pump.callback_errors if self._pump else 0
        s["pump_errors"] = self._pump.pump_errors if self._pump else 0
        return s

    def close(self) -> None:
        """Detaches the engine; no more ACKs or messages. Idempotent."""
        self._native.close()
        if self._pump is not None:
            self._pump.stop()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Receiver(_EventReceiver):
    """General-mode reliable receiver on ``bus``: data frames matching
    ``matches`` (``canx.Match`` list; must not match the ACK ids) are ACKed
    natively (``[0xAC, seq]`` on data id + ``ack_offset`` or ``ack_id``) and
    delivered once as :class:`ReceivedMessage`. A frame that cannot be
    queued (``queue_size`` events waiting) is dropped unACKed and counted,
    so the sender resends it: nothing is ACKed without being delivered.

    ``on_message``/``on_error`` callbacks, or ``receive()``, iteration and
    ``async for``. ``timeout``: how long ``receive()``/iteration wait (None:
    forever). ``stats()``: ``delivered``, ``duplicates_dropped``, ``ack_sent``,
    ``dropped_no_room``, ``peers_evicted``, ``malformed``, ``send_failed``,
    ``events_dropped``, ``callback_errors``.
    """

    def __init__(
        self,
        bus: _canx.CAN,
        matches: Sequence[Any],
        *,
        on_message: Optional[Callable[[ReceivedMessage], Any]] = None,
        on_error: Optional[Callable[[Malformed], Any]] = None,
        timeout: Optional[float] = None,
        ack_offset: int = 1,
        ack_id: Optional[int] = None,
        ack_extended: bool = False,
        queue_size: int = 4096,
    ) -> None:
        native = _canx.NativeReliableReceiver(
            bus, list(matches), ack_offset=ack_offset, ack_id=ack_id, ack_extended=ack_extended, queue_size=queue_size
        )
        super().__init__(native, "canx-reliable-receiver", timeout)
        if on_message is not None:
            self.on_message(on_message)
        if on_error is not None:
            self.on_error(on_error)

    def _convert(self, ev: _ReceiverEvent) -> Any:
        if isinstance(ev, _canx.ReliableMessageEvent):
            return ReceivedMessage(ev.id, ev.data, ev.seq, ev.extended, ev.timestamp)
        assert isinstance(ev, _canx.MalformedEvent), ev
        return Malformed(ev.id, ev.extended, ev.reason)


class GuideListener(_EventReceiver):
    """The canio guide's ``listener-ack`` as an engine: every 8-byte frame on
    ``data_id`` (0x408) is ACKed natively with its first 4 bytes on
    ``ack_id`` (0x409), duplicates included, and delivered once per count as
    :class:`GuideMessage`; other lengths are reported (:class:`Malformed`)
    and not ACKed, as the guide does."""

    _message_kinds = ("guide",)

    def __init__(
        self,
        bus: _canx.CAN,
        *,
        on_message: Optional[Callable[[GuideMessage], Any]] = None,
        on_error: Optional[Callable[[Malformed], Any]] = None,
        timeout: Optional[float] = None,
        data_id: int = GUIDE_DATA_ID,
        ack_id: int = GUIDE_ACK_ID,
        extended: bool = False,
        queue_size: int = 4096,
    ) -> None:
        native = _canx.NativeGuideListener(bus, data_id=data_id, ack_id=ack_id, extended=extended, queue_size=queue_size)
        super().__init__(native, "canx-guide-listener", timeout)
        if on_message is not None:
            self.on_message(on_message)
        if on_error is not None:
            self.on_error(on_error)

    def _convert(self, ev: _ReceiverEvent) -> Any:
        if isinstance(ev, _canx.GuideMessageEvent):
            return GuideMessage(ev.count, ev.now_ms, ev.timestamp)
        assert isinstance(ev, _canx.MalformedEvent), ev
        return Malformed(ev.id, ev.extended, ev.reason)
