"""MegaSquirt CAN ("Al-CAN", MS-II / MS2-Extra / MS3): be any node of a
MegaSquirt network from a PC.

Protocol source for every rule here: ``docs/protocols/megasquirt.md`` (the
MegaSquirt-II CANbus page, the MS3 / MS2-Extra firmware, and the msextra
documents "Megasquirt 29bit CAN Protocol" (2015) and "Megasquirt-2 and
Megasquirt-3 CAN realtime data broadcasting format" (2016)).

Every board has a 4-bit CAN id (0 = the ECU by convention, 15 = all boards)
and numbered tables (``var_blk``) of bytes; other boards read them (MSG_REQ
-> MSG_RSP, at most 8 bytes per frame) and write them (MSG_CMD).

:class:`Node` is such a board. Its tables live in the native runtime, and
the bus's native receive thread answers requests for them without Python;
Python reads and changes the bytes through :meth:`Node.table`. The same
node reads and writes other boards' tables::

    from canx import megasquirt as ms

    with ms.Node(channel="virtual:ms", can_id=0) as ecu, \\
         ms.Node(channel="virtual:ms", can_id=3) as dash:
        outpc = ecu.serve_table(7, 256)               # read-only realtime table
        outpc.write(6, (3000).to_bytes(2, "big"))     # rpm at offset 6
        print(dash.read(0, 7, 6, 2))                  # b'\\x0b\\xb8'

:class:`Broadcast` decodes the 11-bit realtime broadcasts (simplified dash
at 0x5E8, advanced groups at 0x5F0) into named values (``rpm``,
``map_kpa``, ``clt_degF``...).
"""

from __future__ import annotations

import asyncio
import collections
import os
import struct
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union, cast

from . import _canx
from ._canx import CAN, ErrorFrame, Match, Message, RemoteTransmissionRequest
from ._canx import MegasquirtBroadcastDecoder as _Decoder
from ._canx import MegasquirtNode as _NativeNode
from ._canx import MegasquirtTable as Table
from . import _aio
from ._dispatch import DEINIT_MSG, CallbackPump
from .errors import MegasquirtBusyError, MegasquirtError, MegasquirtTimeoutError

__all__ = [
    "Node",
    "Table",
    "Broadcast",
    "Write",
    "Burn",
    "Xsub",
    "Refused",
    "ServerEvent",
    "MegasquirtError",
    "MegasquirtTimeoutError",
    "MegasquirtBusyError",
    "OUTPC",
    "OUTPC_BLK",
    "DASH_BASE",
    "ADVANCED_BASE",
    "BROADCAST_ID",
    "decode_outpc",
    "encode_outpc",
    "encode_dash",
    "encode_advanced",
    "MSG_CMD",
    "MSG_REQ",
    "MSG_RSP",
    "MSG_XSUB",
    "MSG_BURN",
    "OUTMSG_REQ",
    "OUTMSG_RSP",
    "MSG_XTND",
]

# Message types (header bits 17..15), "Message types".
MSG_CMD, MSG_REQ, MSG_RSP, MSG_XSUB, MSG_BURN, OUTMSG_REQ, OUTMSG_RSP, MSG_XTND = range(8)
#: to_id addressing every board ("The model").
BROADCAST_ID = 15
#: The realtime table (``outpc``) on MS3 ("Well-known tables").
OUTPC_BLK = 7
#: Default id of the first simplified dash broadcast frame.
DASH_BASE = 0x5E8
#: Default id of advanced broadcast group 0.
ADVANCED_BASE = 0x5F0


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Write:
    """A remote board wrote ``data`` into a served table: ``msg`` is
    ``"MSG_CMD"``, or ``"MSG_RSP"`` / ``"OUTMSG_RSP"`` (replies are written
    like commands on receipt)."""

    from_id: int
    msg: str
    var_blk: int
    var_offset: int
    data: bytes


@dataclass(frozen=True)
class Burn:
    """MSG_BURN: board ``from_id`` asks to burn table ``var_blk`` to flash."""

    from_id: int
    var_blk: int


@dataclass(frozen=True)
class Xsub:
    """MSG_XSUB: run the subroutine chosen by ``from_id``."""

    from_id: int
    var_blk: int
    var_offset: int


@dataclass(frozen=True)
class Refused:
    """A request this node refused without reply (the protocol has no
    negative reply): ``reason`` is e.g. ``"table not writable"``,
    ``"unknown table"``, ``"offset/count outside the table"``."""

    from_id: int
    msg: str
    var_blk: int
    var_offset: int
    reason: str


@dataclass(frozen=True)
class ServerEvent:
    """Any other message the node accepted: ``kind`` is ``"suspend"``
    (MSG_SPND; ``args`` = (suspend,)), ``"forward"`` (MSG_FWD; (data,)) or
    ``"unhandled"`` (MSG_PROT, MSG_WCR, unknown MSG_XTND; (var_blk, var_offset, data))."""

    kind: str
    from_id: int
    msg: str
    args: Tuple[Any, ...]


Event = Union[Write, Burn, Xsub, Refused, ServerEvent]


#: What the native node's ``_next_event`` returns (frozen classes of ``canx._canx``).
_NativeEvent = Union[
    _canx.MegasquirtWriteEvent,
    _canx.MegasquirtBurnEvent,
    _canx.MegasquirtXsubEvent,
    _canx.MegasquirtSuspendEvent,
    _canx.MegasquirtForwardEvent,
    _canx.MegasquirtUnhandledEvent,
    _canx.MegasquirtRefusedEvent,
]


def _event(t: _NativeEvent) -> Event:
    if isinstance(t, _canx.MegasquirtWriteEvent):
        return Write(t.from_id, t.msg, t.var_blk, t.var_offset, t.data)
    if isinstance(t, _canx.MegasquirtBurnEvent):
        return Burn(t.from_id, t.var_blk)
    if isinstance(t, _canx.MegasquirtXsubEvent):
        return Xsub(t.from_id, t.var_blk, t.var_offset)
    if isinstance(t, _canx.MegasquirtRefusedEvent):
        return Refused(t.from_id, t.msg, t.var_blk, t.var_offset, t.reason)
    if isinstance(t, _canx.MegasquirtSuspendEvent):
        return ServerEvent(t.kind, t.from_id, t.msg, (t.suspend,))
    if isinstance(t, _canx.MegasquirtForwardEvent):
        return ServerEvent(t.kind, t.from_id, t.msg, (t.data,))
    return ServerEvent(t.kind, t.from_id, t.msg, (t.var_blk, t.var_offset, t.data))


# --------------------------------------------------------------------------- node


class Node:
    """A MegaSquirt board on a bus: table server and client.

    ``Node(can=None, *, channel=None, can_id, reply_blk=6, request_timeout=0.1,
    retries=2, realtime_blk=7, auto_burn_ack=False, event_capacity=4096)``

    - ``can``: an open :class:`canx.CAN` (the node does not close it), or
      ``channel="vcan0"`` / ``"virtual:ms"`` to open one (closed with the
      node; neither: ``$CANX_CHANNEL``, else ``"virtual:default"``). Several
      nodes may share one ``CAN`` and talk to each other: the runtime hands
      each node's frames to the other engines of that ``CAN`` (with or
      without ``loopback=True``).
    - ``can_id``: this board's id, 0-14.
    - ``reply_blk``: the table (0-31) this node's read replies are addressed
      to; it cannot also be served (default 6, the MS3 scratch table).
    - ``request_timeout`` (s) and ``retries``: each request frame waits this
      long for its reply and is sent again up to ``retries`` times; then the
      operation raises :class:`MegasquirtTimeoutError`.
    - ``realtime_blk``: the table the outmsg offsets index (7, ``outpc``).
    - ``auto_burn_ack``: answer MSG_BURN with MSG_BURNACK ok at once.

    Raises ValueError for ids out of range; canio's deinitialized ValueError
    for a closed ``can``.
    """

    def __init__(
        self,
        can: Optional[CAN] = None,
        *,
        channel: Optional[str] = None,
        can_id: int,
        reply_blk: int = 6,
        request_timeout: float = 0.1,
        retries: int = 2,
        realtime_blk: int = OUTPC_BLK,
        auto_burn_ack: bool = False,
        event_capacity: int = 4096,
    ) -> None:
        if can is not None and channel is not None:
            raise ValueError("give either can= or channel=, not both")
        self._own_can = can is None
        if can is None and channel is None:
            channel = os.environ.get("CANX_CHANNEL", "virtual:default")
        self.can: CAN = can if can is not None else CAN(channel=channel)
        try:
            self._n = _NativeNode(
                self.can,
                can_id,
                reply_blk=reply_blk,
                request_timeout=request_timeout,
                retries=retries,
                realtime_blk=realtime_blk,
                auto_burn_ack=auto_burn_ack,
                event_capacity=event_capacity,
            )
        except BaseException:
            if self._own_can:
                self.can.deinit()
            raise
        self._callbacks: Dict[str, List[Callable[[Any], Any]]] = collections.defaultdict(list)
        self._pump: Optional[CallbackPump] = None
        self._lock = threading.Lock()

    # -- identity
    @property
    def can_id(self) -> int:
        """This board's CAN id (0-14)."""
        return self._n.can_id

    @property
    def reply_blk(self) -> int:
        return self._n.reply_blk

    # -- tables
    def serve_table(
        self, blk: int, size_or_buffer: Union[int, bytes, bytearray, memoryview], writable: bool = False,
        readable: bool = True,
    ) -> Table:
        """Serves table ``blk`` (0-255; 32-255 are reachable only by MSG_REQX
        reads) of ``size_or_buffer`` zero bytes, or with a copy of the given
        bytes (1-65536 bytes). Remote boards may read it if ``readable`` and
        write (MSG_CMD, MSG_RSP, OUTMSG_RSP) and burn it if ``writable``;
        other requests are refused without reply and reported to
        :meth:`on_refused`. Returns the :class:`Table` (also ``node.table(blk)``).
        Raises ValueError for a served or reply table, a bad size."""
        if isinstance(size_or_buffer, int):
            if not 1 <= size_or_buffer <= 65536:
                raise ValueError(f"a table holds 1-65536 bytes, not {size_or_buffer}")
            data: Any = bytes(size_or_buffer)
        else:
            data = size_or_buffer
        return self._n.serve_table(blk, data, readable=readable, writable=writable)

    def table(self, blk: int) -> Table:
        """The served table ``blk``: ``t[i]``, ``t[a:b]``, ``t[i] = v``,
        ``t.bytes()``, ``t.read(offset, n)``, ``t.write(offset, data)``
        (copies under the engine lock, atomic with respect to the bus).
        Raises KeyError if not served."""
        return self._n.table(blk)

    @property
    def tables(self) -> List[int]:
        """Numbers of the served tables."""
        return self._n.tables()

    def set_outmsg(self, number: int, offsets: Iterable[int]) -> None:
        """Defines outmsg ``number`` (0-19): 1-24 byte offsets into the
        realtime table, sent in this order as OUTMSG_RSP frames of <= 8 bytes
        ("OUTMSG"). An empty list removes it. Raises ValueError."""
        self._n.set_outmsg(number, list(offsets))

    def ack_burn(self, to: int, ok: bool = True) -> None:
        """Sends MSG_BURNACK ``[14, ok]`` to board ``to`` (after a :class:`Burn`)."""
        self._n.ack_burn(to, ok)

    # -- client: blocking
    def read(self, board: int, blk: int, offset: int, length: int, timeout: Optional[float] = None) -> bytes:
        """Reads ``length`` bytes (1-2048) of table ``blk`` at ``offset`` on
        ``board`` (0-14): MSG_REQ frames of <= 8 bytes (tables 0-31) or
        MSG_REQX (32-255), up to 10 in flight. ``timeout`` (s) bounds the
        whole call; None: until the engine gives up (``request_timeout`` x
        (``retries`` + 1) per frame). Raises :class:`MegasquirtTimeoutError`
        (a TimeoutError; a board sends nothing for a request it refuses),
        ValueError for arguments out of range. Source: megasquirt.md,
        "MSG_REQ payload", "Extended types" (MSG_REQX); at most 10 requests
        outstanding per board (NO_CANMSG)."""
        return self._n.read(board, blk, offset, length, timeout)

    def write(self, board: int, blk: int, offset: int, data: bytes, timeout: Optional[float] = None) -> None:
        """Writes ``data`` (1-2048 bytes) to table ``blk`` (0-31) at ``offset``
        on ``board`` (0-15; 15 = all boards) as MSG_CMD frames of <= 8 bytes.
        Returns when every frame was sent: MSG_CMD has no reply, so a refusal
        (read-only table) is only seen by the target (its ``on_refused``).
        Source: megasquirt.md, "Message types" (MSG_CMD)."""
        self._n.write(board, blk, offset, data, timeout)

    def request_outmsg(
        self, board: int, number: int, length: Optional[int] = None, *, into: Optional[Tuple[int, int]] = None,
        timeout: Optional[float] = None,
    ) -> Optional[bytes]:
        """OUTMSG_REQ for outmsg ``number`` (0-19) of ``board``.

        - ``into=None``: the reply goes to this node's reply table; give
          ``length`` (the outmsg's byte count, 1-24); returns the bytes.
        - ``into=(blk, offset)``: the reply target is that place in a served,
          writable table of this node, and the native server writes the
          OUTMSG_RSP chunks there (as the MegaSquirt document's GPIO board
          does). With ``length``, waits until all bytes arrived and returns
          them; without, returns None once the request is queued.

        Raises MegasquirtTimeoutError, ValueError. Source: megasquirt.md,
        "OUTMSG" (OUTMSG_REQ data[0] = number; the header names the reply target)."""
        return self._n.request_outmsg(board, number, length, into, timeout)

    def crc(self, board: int, blk: int, timeout: Optional[float] = None) -> int:
        """The CRC32 (zlib's) of table ``blk`` (0-31) of ``board`` (MSG_CRC,
        megasquirt.md "Extended types"). Raises MegasquirtTimeoutError."""
        return self._n.crc(board, blk, timeout)

    def burn(self, board: int, blk: int, wait_ack: bool = False, timeout: Optional[float] = None) -> Optional[bool]:
        """Sends MSG_BURN for table ``blk`` of ``board``; with ``wait_ack``
        returns the MSG_BURNACK status (True: burnt), else None once sent."""
        return self._n.burn(board, blk, wait_ack, timeout)

    # -- client: asyncio
    async def _run_async(self, op: str, args: Tuple[object, ...], timeout: Optional[float]) -> Any:
        # Waits in the event loop on the node's completion descriptor
        # (signalled whenever one of its operations ends: an outcome, or a
        # free slot after MegasquirtBusyError); no executor thread. The
        # outcome stays in the node until _wait takes it in this thread, and
        # a cancelled call abandons its operation.
        n = self._n
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def left() -> Optional[float]:
            return None if deadline is None else deadline - loop.time()

        def check_open() -> None:
            if n.closed:
                raise ValueError(DEINIT_MSG)

        while True:
            try:
                key = n._start(op, args)
                break
            except MegasquirtBusyError:
                t = left()
                if t is not None and t <= 0:
                    raise
                await _aio.wait_signal(n._completion_fileno, n._clear_completions, t)
        try:
            while True:
                done, value = n._wait(key, 0.0)
                if done:
                    return value
                check_open()
                t = left()
                if t is not None and t <= 0:
                    raise MegasquirtTimeoutError(f"{op}: no reply within {timeout:.3f} s")
                await _aio.wait_signal(n._completion_fileno, n._clear_completions, t)
        except BaseException:
            n._abandon(key)
            raise

    async def read_async(self, board: int, blk: int, offset: int, length: int,
                         timeout: Optional[float] = None) -> bytes:
        """:meth:`read` for asyncio (the event loop stays free; cancellable)."""
        return cast(bytes, await self._run_async("read", (board, blk, offset, length), timeout))

    async def write_async(self, board: int, blk: int, offset: int, data: bytes,
                          timeout: Optional[float] = None) -> None:
        """:meth:`write` for asyncio."""
        await self._run_async("write", (board, blk, offset, data), timeout)

    async def request_outmsg_async(self, board: int, number: int, length: Optional[int] = None, *,
                                   into: Optional[Tuple[int, int]] = None,
                                   timeout: Optional[float] = None) -> Optional[bytes]:
        """:meth:`request_outmsg` for asyncio."""
        return cast(Optional[bytes], await self._run_async("outmsg", (board, number, length, into), timeout))

    async def crc_async(self, board: int, blk: int, timeout: Optional[float] = None) -> int:
        """:meth:`crc` for asyncio."""
        return cast(int, await self._run_async("crc", (board, blk), timeout))

    async def burn_async(self, board: int, blk: int, wait_ack: bool = False,
                         timeout: Optional[float] = None) -> Optional[bool]:
        """:meth:`burn` for asyncio."""
        return cast(Optional[bool], await self._run_async("burn", (board, blk, wait_ack), timeout))

    # -- callbacks
    def _register(self, kind: str, cb: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if not callable(cb):
            raise TypeError(f"callback must be callable, not {type(cb).__name__}")
        with self._lock:
            self._callbacks[kind].append(cb)
            if self._pump is None:
                self._n._enable_events()
                n = self._n
                self._pump = CallbackPump(f"canx-ms{self.can_id}-callbacks", n._next_event, self._dispatch,
                                          lambda: bool(n.closed))
                self._pump.start()
        return cb

    # Events are queued from the first registration on (earlier ones are not
    # kept); the queue is bounded (``event_capacity``; overflow counted in
    # ``stats()["events_dropped"]``); every callback runs on one thread.

    def on_command(self, cb: Callable[[Write], Any]) -> Callable[[Write], Any]:
        """Calls ``cb(Write)`` after a remote MSG_CMD wrote into a served
        table (the bytes are already in the table). Usable as a decorator."""
        return self._register("command", cb)

    def on_write(self, cb: Callable[[Write], Any]) -> Callable[[Write], Any]:
        """Calls ``cb(Write)`` after any remote write into a served table
        (MSG_CMD, MSG_RSP, OUTMSG_RSP)."""
        return self._register("write", cb)

    def on_burn(self, cb: Callable[[Burn], Any]) -> Callable[[Burn], Any]:
        """Calls ``cb(Burn)`` for MSG_BURN of a writable served table. If
        ``cb`` returns True or False, MSG_BURNACK with that status is sent to
        the requester; None sends nothing (see ``auto_burn_ack``, :meth:`ack_burn`)."""
        return self._register("burn", cb)

    def on_xsub(self, cb: Callable[[Xsub], Any]) -> Callable[[Xsub], Any]:
        """Calls ``cb(Xsub)`` for MSG_XSUB."""
        return self._register("xsub", cb)

    def on_refused(self, cb: Callable[[Refused], Any]) -> Callable[[Refused], Any]:
        """Calls ``cb(Refused)`` for every request refused without reply
        (write to a read-only table, unknown table, out of range, ...)."""
        return self._register("refused", cb)

    def on_event(self, cb: Callable[[Event], Any]) -> Callable[[Event], Any]:
        """Calls ``cb(event)`` for every server event (all of the above,
        and :class:`ServerEvent` for MSG_SPND, MSG_FWD, MSG_PROT...)."""
        return self._register("any", cb)

    def _dispatch(self, t: _NativeEvent) -> None:
        ev = _event(t)
        kinds = ["any"]
        if isinstance(ev, Write):
            kinds.append("write")
            if ev.msg == "MSG_CMD":
                kinds.append("command")
        elif isinstance(ev, Burn):
            kinds.append("burn")
        elif isinstance(ev, Xsub):
            kinds.append("xsub")
        elif isinstance(ev, Refused):
            kinds.append("refused")
        errors: List[BaseException] = []
        for kind in kinds:
            for cb in list(self._callbacks.get(kind, ())):
                try:
                    r = cb(ev)
                    if kind == "burn" and isinstance(r, bool):
                        self._n.ack_burn(ev.from_id, r)
                except Exception as e:  # one bad callback does not stop the others
                    errors.append(e)
        if errors:
            raise errors[0]

    @property
    def callback_errors(self) -> int:
        """How many callbacks raised (each is logged on logger ``canx``)."""
        return self._pump.callback_errors if self._pump else 0

    @property
    def last_callback_error(self) -> Optional[BaseException]:
        return self._pump.last_callback_error if self._pump else None

    # -- misc
    def stats(self) -> Dict[str, int]:
        """Counters: ``frames`` addressed to this node, ``replies`` sent,
        ``refused`` requests, ``tx_dropped`` replies (queue full),
        ``client_frames_sent``, ``client_replies``, ``client_unmatched``,
        ``client_timeouts``, ``client_retries``, ``events_dropped`` (callback
        queue full), ``send_failed``, ``callback_errors``, ``pump_errors``
        (events the callback thread failed to take, each logged)."""
        s = dict(self._n.stats())
        s["callback_errors"] = self.callback_errors
        s["pump_errors"] = self._pump.pump_errors if self._pump else 0
        return s

    @property
    def closed(self) -> bool:
        return self._n.closed

    def close(self) -> None:
        """Detaches the node from the bus, stops the callback thread, and
        closes the bus if the node opened it. Idempotent."""
        self._n.close()
        if self._pump is not None:
            self._pump.stop()
        if self._own_can:
            self.can.deinit()

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<canx.megasquirt.Node can_id={self.can_id} tables={self.tables if not self.closed else '-'}>"


# --------------------------------------------------------------------------- broadcast and outpc

_UNIT_SUFFIX = {
    "kPa": "kpa",
    "degF": "degF",
    "%": "pct",
    "V": "v",
    "us": "us",
    "ms": "ms",
    "deg": "deg",
    "deg BTDC": "deg",
    "m/s": "mps",
    "%/s": "pct_per_s",
    "kPa/s": "kpa_per_s",
    "RPM/s": "rpm_per_s",
    "g/s": "g_per_s",
}


def _key(name: str, unit: str) -> str:
    """The Python name of a broadcast field: the firmware name plus a unit
    suffix (``map`` kPa -> ``map_kpa``, ``clt`` degF -> ``clt_degF``; ``rpm``
    and unitless fields stay as they are)."""
    suffix = _UNIT_SUFFIX.get(unit, "")
    if not suffix or name.endswith("_" + suffix) or name == suffix:
        return name
    return f"{name}_{suffix}"


@dataclass(frozen=True)
class Field:
    """One broadcast / outpc field: ``physical = raw * mult / div + add`` (big-endian)."""

    name: str
    unit: str
    offset: int
    size: int
    signed: bool
    mult: int
    div: int
    add: int

    @property
    def fmt(self) -> str:
        return ">" + {1: "b", 2: "h", 4: "i"}[self.size] if self.signed else ">" + {1: "B", 2: "H", 4: "I"}[self.size]

    def decode(self, data: bytes) -> float:
        (raw,) = struct.unpack_from(self.fmt, data, self.offset)
        return float(raw * self.mult / (self.div or 1) + self.add)

    def encode(self, value: float, buf: bytearray) -> None:
        raw = round((value - self.add) * (self.div or 1) / self.mult)
        lo, hi = (-(1 << (8 * self.size - 1)), (1 << (8 * self.size - 1)) - 1) if self.signed \
            else (0, (1 << (8 * self.size)) - 1)
        struct.pack_into(self.fmt, buf, self.offset, max(lo, min(hi, raw)))


_FIELDS = _Decoder.fields()
#: Simplified dash broadcast: frame index (0-4) -> {key: Field} (offsets within the frame).
DASH: Dict[int, Dict[str, Field]] = collections.defaultdict(dict)
#: Advanced broadcast groups 0-15 -> {key: Field}.
ADVANCED: Dict[int, Dict[str, Field]] = collections.defaultdict(dict)
for _kind, _idx, _name, _unit, _off, _size, _signed, _mult, _div, _add in _FIELDS:
    _f = Field(_name, _unit, _off, _size, _signed, _mult, _div, _add)
    (DASH if _kind == "dash" else ADVANCED)[_idx][_key(_name, _unit)] = _f

#: The MS3 realtime table (``outpc``, table 7), bytes 0-127: the advanced
#: broadcast sends outpc in 8-byte groups (group g = bytes 8g..8g+7), so its
#: field table is outpc's layout: ``rpm`` at 6 (u16), ``map_kpa`` at 18,
#: ``mat_degF`` at 20, ``clt_degF`` at 22, ``tps_pct`` at 24 (s16 x10)...
#: Source: "Megasquirt-2 and Megasquirt-3 CAN realtime data broadcasting format" (2016).
OUTPC: Dict[str, Field] = {
    k: Field(f.name, f.unit, 8 * g + f.offset, f.size, f.signed, f.mult, f.div, f.add)
    for g, fields in sorted(ADVANCED.items())
    for k, f in fields.items()
}


def decode_outpc(data: bytes) -> Dict[str, float]:
    """Named values of an outpc image (fields past the end are left out)."""
    return {k: f.decode(data) for k, f in OUTPC.items() if f.offset + f.size <= len(data)}


def encode_outpc(values: Mapping[str, float], buf: Optional[bytearray] = None, size: int = 128) -> bytearray:
    """Writes named values (keys of :data:`OUTPC`) into ``buf`` (or a new
    zeroed bytearray of ``size``), clamping to each field's range. Raises
    KeyError for an unknown name."""
    out = bytearray(size) if buf is None else buf
    for k, v in values.items():
        OUTPC[k].encode(v, out)
    return out


def encode_dash(values: Mapping[str, float], base: int = DASH_BASE) -> List[Message]:
    """The 5 simplified dash broadcast frames (ids base..base+4, 8 bytes)
    for named values; missing values are 0. Raises KeyError for an unknown name."""
    known = {k for fields in DASH.values() for k in fields}
    for k in values:
        if k not in known:
            raise KeyError(f"{k!r} is not a dash broadcast field ({sorted(known)})")
    frames = []
    for i in range(5):
        buf = bytearray(8)
        for k, f in DASH[i].items():
            if k in values:
                f.encode(values[k], buf)
        frames.append(Message(base + i, bytes(buf)))
    return frames


def encode_advanced(outpc: bytes, groups: Iterable[int] = range(4), base: int = ADVANCED_BASE) -> List[Message]:
    """Advanced broadcast frames (id base+g) of outpc groups ``groups``."""
    return [Message(base + g, bytes(outpc[8 * g: 8 * g + 8]).ljust(8, b"\0")) for g in groups]


def _range_matches(start: int, n: int) -> List[Match]:
    """Matches covering exactly ids start..start+n-1 (aligned power-of-two blocks)."""
    out = []
    while n > 0:
        size = 1
        while start % (size * 2) == 0 and size * 2 <= n:
            size *= 2
        out.append(Match(start, mask=0x7FF & ~(size - 1)))
        start += size
        n -= size
    return out


class Broadcast:
    """Decoder of the MegaSquirt realtime broadcasts ("Realtime broadcast").

    ``Broadcast(can=None, *, channel=None, dash_base=0x5E8, advanced_base=0x5F0, timeout=1.0)``

    With a ``can`` (or ``channel``), listens for the broadcast ids; iterating
    yields one dict of named values per decoded frame (``{"map_kpa": 100.0,
    "rpm": 3000.0, "clt_degF": 180.0, "tps_pct": 12.5}``) and stops after
    ``timeout`` s without a frame; ``async for`` works too. :attr:`values`
    keeps the latest value of every name. Without a bus, :meth:`decode`
    decodes any message. ``dash_base`` / ``advanced_base`` None turns that
    broadcast off. Names: the firmware's (see :data:`DASH`, :data:`ADVANCED`)
    plus a unit suffix (``_kpa``, ``_degF``, ``_pct``, ``_v``, ``_us``, ``_ms``, ``_deg``).
    """

    def __init__(self, can: Optional[CAN] = None, *, channel: Optional[str] = None,
                 dash_base: Optional[int] = DASH_BASE, advanced_base: Optional[int] = ADVANCED_BASE,
                 timeout: float = 1.0) -> None:
        self._decoder = _Decoder(dash_base, advanced_base)
        self.values: Dict[str, float] = {}
        self._own_can = can is None and channel is not None
        self.can = CAN(channel=channel) if self._own_can else can
        self._listener = None
        if self.can is not None:
            matches: List[Match] = []
            if dash_base is not None:
                matches += _range_matches(dash_base, 5)
            if advanced_base is not None:
                matches += _range_matches(advanced_base, 64)
            self._listener = self.can.listen(matches=matches, timeout=timeout)

    def decode(self, message: Union[Message, RemoteTransmissionRequest]) -> Optional[Dict[str, float]]:
        """Named values of one broadcast message (also merged into
        :attr:`values`), or None if it is not a decoded broadcast frame."""
        items = self._decoder.decode(message)
        if items is None:
            return None
        d = {_key(n, u): v for n, v, u in items}
        self.values.update(d)
        return d

    def receive(self, timeout: Optional[float] = None) -> Optional[Dict[str, float]]:
        """The next decoded frame's values, or None after ``timeout`` s (default: the listener's)."""
        if self._listener is None:
            raise ValueError("this Broadcast has no bus: give can= or channel=")
        for m in self._listener.receive_many(1, timeout):
            return None if isinstance(m, ErrorFrame) else self.decode(m)  # (no error frames are listened for)
        return None

    def __iter__(self) -> Iterator[Dict[str, float]]:
        if self._listener is None:
            raise ValueError("this Broadcast has no bus: give can= or channel=")
        for m in self._listener:
            d = None if isinstance(m, ErrorFrame) else self.decode(m)
            if d is not None:
                yield d

    async def _aiter(self) -> AsyncIterator[Dict[str, float]]:
        if self._listener is None:
            raise ValueError("this Broadcast has no bus: give can= or channel=")
        async for m in self._listener:
            d = None if isinstance(m, ErrorFrame) else self.decode(m)
            if d is not None:
                yield d

    def __aiter__(self) -> AsyncIterator[Dict[str, float]]:
        return self._aiter()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.deinit()
        if self._own_can and self.can is not None:
            self.can.deinit()

    def __enter__(self) -> "Broadcast":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
