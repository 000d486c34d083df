"""SAE J1939 for canx: controller applications (ECUs) on a CAN bus.

The protocol runs natively: address claim (J1939-81), requests and
acknowledgments (J1939-21 5.4), the transport protocol (BAM and RTS/CTS,
9..1785 bytes, J1939-21 5.10) and extended TP (ETP, above 1785 bytes) are
driven by the bus's receive thread, so timers are kept and CTS/EoMA go out
while Python is busy. Python sees finished things: a reassembled message, an
answered request, a claimed address. It interoperates with the Linux kernel
J1939 stack (``socket.CAN_J1939``) and can-utils (``j1939cat``,
``j1939acd``).

Example::

    import canx.j1939 as j1939

    ecu = j1939.ECU(channel="vcan0", name=j1939.Name(identity_number=7, manufacturer_code=0x123,
                    arbitrary_address_capable=True), address=0x80)
    ecu.claim_address()                       # blocks ~250 ms (J1939-81)
    ecu.send_engine_speed(1800)               # EEC1, PGN 61444, to all
    ecu.on_pgn(65262, lambda m: print(m.source, j1939.decode_et1(m.data)))
    db = canx.dbc.load("engine.dbc")          # DBC signals (pip install canx[dbc])
    ecu.on_pgn(61444, lambda m: print(m.decoded), decode=db)   # "EEC1 EngineSpeed=1800.0 rpm ..."
    vin = ecu.request_pgn(65260, destination=0x00, timeout=2.0).data

Callbacks run on one thread per ECU (:class:`canx._dispatch.CallbackPump`);
a callback that raises is logged (logger ``canx``) and counted
(``ecu.callback_errors``) and the ECU keeps running.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from . import _aio, _canx
from ._dispatch import CallbackPump
from .errors import AddressClaimError, RequestRejectedError, RequestTimeoutError, TransferAbortedError

if TYPE_CHECKING:
    from .dbc import Database, Decoded

__all__ = [
    "ECU",
    "Name",
    "J1939Message",
    "Request",
    "J1939Frame",
    "BusMonitor",
    "PgnStream",
    "bus_monitor",
    "decode_id",
    "encode_eec1",
    "decode_eec1",
    "encode_et1",
    "decode_et1",
    "encode_dm",
    "decode_dm",
    "GLOBAL",
    "NULL",
    "PGN_REQUEST",
    "PGN_ACKNOWLEDGMENT",
    "PGN_ADDRESS_CLAIMED",
    "PGN_COMMANDED_ADDRESS",
    "PGN_TP_CM",
    "PGN_TP_DT",
    "PGN_ETP_CM",
    "PGN_ETP_DT",
    "PGN_EEC1",
    "PGN_ET1",
    "PGN_VEHICLE_IDENTIFICATION",
    "PGN_DM1",
    "PGN_DM2",
    "PGN_PROPRIETARY_A",
]

#: Destination address "all" (J1939-21).
GLOBAL = 0xFF
#: The null address: a CA without an address (J1939-81).
NULL = 0xFE

PGN_REQUEST = 59904
PGN_ACKNOWLEDGMENT = 59392
PGN_ADDRESS_CLAIMED = 60928
PGN_COMMANDED_ADDRESS = 65240
PGN_TP_CM = 60416
PGN_TP_DT = 60160
PGN_ETP_CM = 51200
PGN_ETP_DT = 50944
PGN_EEC1 = 61444
PGN_ET1 = 65262
PGN_VEHICLE_IDENTIFICATION = 65260
PGN_DM1 = 65226
PGN_DM2 = 65227
PGN_PROPRIETARY_A = 0xEF00

encode_eec1 = _canx.j1939_encode_eec1
decode_eec1 = _canx.j1939_decode_eec1
encode_et1 = _canx.j1939_encode_et1
decode_et1 = _canx.j1939_decode_et1
encode_dm = _canx.j1939_encode_dm
decode_dm = _canx.j1939_decode_dm


def decode_id(can_id: int) -> Tuple[int, int, int, int]:
    """(priority, PGN, SA, DA) of a 29-bit identifier (J1939-21 5.2); DA is
    255 for PDU2 PGNs (PF >= 240). ValueError above 29 bits."""
    return _canx.j1939_decode_id(can_id)


def _normalize(pgn: int) -> int:
    """A PDU1 PGN (PF < 240) without its destination byte (J1939-21 5.1.2)."""
    return pgn & 0x3FF00 if ((pgn >> 8) & 0xFF) < 240 else pgn


# ------------------------------------------------------------------- NAME

_FIELDS = (
    # (field, shift, bits)  J1939-81 4.1.1
    ("identity_number", 0, 21),
    ("manufacturer_code", 21, 11),
    ("ecu_instance", 32, 3),
    ("function_instance", 35, 5),
    ("function", 40, 8),
    ("reserved", 48, 1),
    ("vehicle_system", 49, 7),
    ("vehicle_system_instance", 56, 4),
    ("industry_group", 60, 3),
    ("arbitrary_address_capable", 63, 1),
)


class Name:
    """The 64-bit J1939 NAME (J1939-81 4.1.1). Build it from fields
    (``Name(identity_number=1, manufacturer_code=0x123,
    arbitrary_address_capable=True)``) or from its value (``Name(0x...)``,
    ``Name.from_bytes(b)``, 8 bytes little-endian as in Address Claimed).
    Compares as its value: the lower NAME wins address contention.
    ValueError when a field does not fit its width (identity 21 bits,
    manufacturer 11, ECU instance 3, function instance 5, function 8,
    vehicle system 7, vehicle system instance 4, industry group 3)."""

    __slots__ = ("value",)
    value: int

    def __init__(self, value: Optional[int] = None, **fields: Any) -> None:
        if value is not None:
            if fields:
                raise TypeError("give either a NAME value or its fields, not both")
            v = int(value)
            if not 0 <= v < 1 << 64:
                raise ValueError(f"NAME {value!r} is not a 64-bit value")
            object.__setattr__(self, "value", v)
            return
        v = 0
        known = {f for f, _, _ in _FIELDS}
        for k in fields:
            if k not in known:
                raise TypeError(f"unknown NAME field {k!r}")
        for field, shift, bits in _FIELDS:
            x = int(fields.get(field, 0))
            if not 0 <= x < 1 << bits:
                raise ValueError(f"NAME field {field}={x} does not fit in {bits} bits")
            v |= x << shift
        object.__setattr__(self, "value", v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Name is immutable")

    @classmethod
    def from_bytes(cls, data: bytes) -> "Name":
        if len(data) != 8:
            raise ValueError(f"a NAME is 8 bytes, got {len(data)}")
        return cls(int.from_bytes(data, "little"))

    def to_bytes(self) -> bytes:
        return self.value.to_bytes(8, "little")

    def __getattr__(self, item: str) -> Any:
        for field, shift, bits in _FIELDS:
            if field == item:
                x = (self.value >> shift) & ((1 << bits) - 1)
                return bool(x) if bits == 1 else x
        raise AttributeError(item)

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Name) and other.value == self.value

    def __lt__(self, other: "Name") -> bool:
        return self.value < other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Name(0x{self.value:016X})"


# --------------------------------------------------------------- messages


@dataclass(frozen=True)
class J1939Message:
    """A message for an ECU. ``pgn``; ``source`` (SA) and ``destination``
    (DA, 255 = all); ``priority`` 0..7; ``data`` the reassembled bytes;
    ``timestamp`` seconds since the epoch of the frame that completed it;
    ``via`` "single", "tp" (BAM or RTS/CTS) or "etp"; ``decoded`` the DBC
    signals (:class:`canx.dbc.Decoded`) when the message came through
    ``on_pgn(..., decode=db)`` or ``messages(..., decode=db)`` and the DBC
    has its PGN, else None."""

    pgn: int
    source: int
    destination: int
    priority: int
    data: bytes
    timestamp: float
    via: str = "single"
    decoded: "Optional[Decoded]" = None


def _with_decoded(m: J1939Message, db: "Database") -> J1939Message:
    """``m`` with ``decoded`` from ``db`` by PGN (J1939 DBC convention, any
    length: single frames and TP/ETP payloads). Data shorter than the DBC
    message decodes the signals it holds (``allow_truncated``); raises
    canx.dbc.DecodeError only for data cantools cannot decode at all."""
    d = db.decode_pgn(m.pgn, m.data, allow_truncated=True, source_address=m.source)
    return m if d is None else replace(m, decoded=d)


def _message(ev: _canx.J1939MessageEvent) -> J1939Message:
    return J1939Message(ev.pgn, ev.source, ev.destination, ev.priority, ev.data, ev.timestamp, ev.via)


#: What the native ECU's ``next_event`` returns (frozen classes of ``canx._canx``).
_Event = Union[
    _canx.J1939MessageEvent,
    _canx.J1939RequestEvent,
    _canx.J1939RequestDoneEvent,
    _canx.J1939ClaimedEvent,
    _canx.J1939LostEvent,
    _canx.J1939CannotClaimEvent,
    _canx.J1939SentEvent,
    _canx.J1939AbortedEvent,
]


@dataclass(frozen=True)
class Request:
    """A Request (PGN 59904) for ``pgn`` from ``requester``; ``is_global``:
    sent to all (then never NACKed, J1939-21 5.4.2)."""

    pgn: int
    requester: int
    is_global: bool
    timestamp: float


@dataclass(frozen=True)
class J1939Frame:
    """One frame on the bus as :func:`bus_monitor` decodes it. ``kind``:
    "address_claimed", "request", "ack", "tp_cm", "tp_dt", "etp_cm",
    "etp_dt", "commanded_address" or "data"."""

    priority: int
    pgn: int
    source: int
    destination: int
    data: bytes
    timestamp: Optional[float]
    kind: str


_KINDS = {
    PGN_ADDRESS_CLAIMED: "address_claimed",
    PGN_REQUEST: "request",
    PGN_ACKNOWLEDGMENT: "ack",
    PGN_TP_CM: "tp_cm",
    PGN_TP_DT: "tp_dt",
    PGN_ETP_CM: "etp_cm",
    PGN_ETP_DT: "etp_dt",
    PGN_COMMANDED_ADDRESS: "commanded_address",
}


class PgnStream:
    """Messages of one PGN (or all) for one ECU, in arrival order: iterate
    it (``for m in s``) or ``async for m in s``. Iteration stops after
    ``timeout`` seconds without a message (None: never). The stream is
    native: the bus's receive thread puts each message in it directly (no
    callback thread between), up to ``maxsize``; more are dropped and
    counted in ``dropped``. ``close()`` (or leaving ``with``) unsubscribes;
    a closed stream ends iteration once drained."""

    def __init__(self, ecu: "ECU", pgn: Optional[int], source: Optional[int], timeout: Optional[float],
                 maxsize: int = 65536, decode: "Optional[Database]" = None) -> None:
        self.pgn = pgn
        self.source = source
        self.timeout = timeout
        self._db = decode
        self._native = ecu._native.subscribe(pgn, source, maxsize)

    @property
    def dropped(self) -> int:
        """Messages lost because the stream was full."""
        return int(self._native.dropped)

    def get(self, timeout: Optional[float] = None) -> Optional[J1939Message]:
        """The next message, waiting up to ``timeout`` seconds (None:
        forever; Ctrl-C interrupts), or None after it or when the stream is
        closed and empty. Raises ValueError when the ECU's bus was shut down,
        canx.dbc.DecodeError (message consumed) when the stream decodes and
        cantools cannot decode the payload."""
        ev = self._native.get(timeout)
        if ev is None:
            return None
        m = _message(ev)
        return m if self._db is None else _with_decoded(m, self._db)

    def __iter__(self) -> Iterator[J1939Message]:
        while True:
            m = self.get(self.timeout)
            if m is None:
                return
            yield m

    def __aiter__(self) -> AsyncIterator[J1939Message]:
        """Messages until ``timeout`` seconds pass without one or the
        stream is closed and drained. Waits on the stream's readiness in the
        event loop (no executor thread); cancelling one step loses nothing."""
        native = self._native
        return _aio.AsyncQueueIterator(lambda: self.get(0), native.fileno, lambda: self.timeout,
                                       lambda: bool(native.closed))

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> "PgnStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


Callback = Callable[[J1939Message], Any]
RequestHandler = Callable[[Request], Optional[bytes]]
#: The bus an ECU may share: a :class:`canx.CAN` (not python-can's ``can.Bus``).
Bus = _canx.CAN


class ECU:
    """One J1939 controller application (CA): a NAME, an address, and the
    native engine that claims it, answers requests and runs TP/ETP.

    ``ECU(channel=None, *, name, address, bus=None, request_timeout=1.25,
    etp_buffer=1048576, queue_size=65536, address_range=(128, 247),
    cts_delay=0.002, cts_turnaround="auto")``:
    ``channel`` ("vcan0", "virtual:x") opens a bus for this ECU alone;
    ``bus`` shares an open ``canx.CAN`` with other ECUs of the process (they
    see each other's frames). ``name``: :class:`Name` or int. ``address``:
    preferred source address 0..253; an arbitrary-address-capable NAME
    moves inside ``address_range`` on contention (J1939-81 4.4.4).
    ``request_timeout`` s: how long :meth:`request_pgn` waits for the start
    of an answer (J1939-21 T3). ``etp_buffer``: bytes per ETP session (two
    sessions; caps ETP messages sent and received). ``cts_delay`` s
    (0..0.1): turnaround before each CTS this ECU sends as a TP/ETP
    receiver, when ``cts_turnaround`` says: ``"auto"`` (default) when the
    sender may be the Linux kernel's J1939 stack, i.e. the RTS came over a
    SocketCAN interface on which a ``CAN_J1939`` socket is bound at that
    moment (read from /proc/net/can/rcvlist_fil; unreadable counts as
    bound); never on the virtual bus or between ECUs sharing one ``bus``;
    ``"always"``; ``"never"``. J1939-21 allows up to Tr = 200 ms. Without
    it, the kernel as a sender on the same vcan or CAN interface can see our
    CTS before the echo of its own RTS: it aborts the transfer, and kernels
    without the CVE-2026-22997 fix leak the session so its socket never
    closes. Source: transport module doc of canx_core, "CTS turnaround".

    Nothing is sent until :meth:`claim_address`. Raises ValueError for bad
    arguments, the errors of ``canx.CAN`` for the channel.
    """

    def __init__(self, channel: Optional[str] = None, *, name: Union[Name, int], address: int,
                 bus: Optional[_canx.CAN] = None, request_timeout: float = 1.25, etp_buffer: int = 1 << 20,
                 queue_size: int = 65536, address_range: Tuple[int, int] = (128, 247),
                 cts_delay: float = 0.002, cts_turnaround: str = "auto") -> None:
        if (channel is None) == (bus is None):
            raise ValueError("give exactly one of channel= and bus=")
        if not 0 <= address <= 253:
            raise ValueError(f"address {address} outside 0..253")
        self._name = name if isinstance(name, Name) else Name(int(name))
        self._native = _canx.J1939Ecu(bus, channel, self._name.value, address, request_timeout=request_timeout,
                                      etp_buffer=etp_buffer, queue_size=queue_size, address_range=address_range,
                                      cts_delay=cts_delay, cts_turnaround=cts_turnaround)
        self._request_timeout = request_timeout
        self._lock = threading.Lock()
        self._handlers: Dict[Optional[int], List[Tuple[Callback, Optional[int], Optional[Database]]]] = {}
        self._request_handlers: Dict[int, RequestHandler] = {}
        self._abort_handlers: List[Callable[[int, int, int, int, bool], Any]] = []
        self._pending: Dict[Tuple[int, int], Deque["concurrent.futures.Future[J1939Message]"]] = {}
        self._sends: Dict[Tuple[int, int], Deque["concurrent.futures.Future[int]"]] = {}
        self._last: Optional[J1939Message] = None
        self.aborts: Deque[Tuple[int, int, int, int, bool, bool]] = collections.deque(maxlen=256)
        #: Futures resolved by the pump at the next claim event (claim_address_async).
        self._claim_waiters: List["concurrent.futures.Future[str]"] = []
        native = self._native
        self._pump = CallbackPump(f"canx-j1939-{address:#04x}", native.next_event, self._dispatch,
                                  lambda: bool(native.closed)).start()

    # ------------------------------------------------------------ address

    @property
    def name(self) -> Name:
        return self._name

    @property
    def state(self) -> str:
        """"idle", "claiming", "claimed" or "cannot_claim" (J1939-81)."""
        return self._native.state()[0]

    @property
    def address(self) -> Optional[int]:
        """The claimed source address, or None until claimed (and after Cannot Claim)."""
        s, a = self._native.state()
        return a if s == "claimed" else None

    def claim_address(self, timeout: float = 2.0) -> int:
        """Claims the address (J1939-81 4.5: Address Claimed, then 250 ms
        without a lower NAME contending) and returns it. Blocks up to
        ``timeout`` s (GIL released). Raises AddressClaimError on Cannot Claim
        or timeout. Calling it again after a claim returns the address."""
        s, a = self._native.state()
        if s == "claimed" and a is not None:
            return a
        if s in ("idle", "cannot_claim"):
            self._native.start()
        s, a = self._native.wait_claim(timeout)
        if s == "claimed" and a is not None:
            return a
        raise AddressClaimError(f"could not claim an address for {self._name!r}: state {s}")

    def begin_claim(self) -> None:
        """Starts the address claim without waiting (see :meth:`claim_address`);
        useful to claim many ECUs at once."""
        if self._native.state()[0] in ("idle", "cannot_claim"):
            self._native.start()

    async def claim_address_async(self, timeout: float = 2.0) -> int:
        """:meth:`claim_address` without blocking the event loop: the ECU's
        event pump wakes it at each claim event (no executor thread)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        s, a = self._native.state()
        if s in ("idle", "cannot_claim"):
            self._native.start()
        while True:
            fut: "concurrent.futures.Future[str]" = concurrent.futures.Future()
            with self._lock:
                self._claim_waiters.append(fut)
            try:
                s, a = self._native.state()  # after registering: no claim event can slip between
                if s == "claimed" and a is not None:
                    return a
                left = deadline - loop.time()
                if s != "claiming" or left <= 0:
                    break
                try:
                    await asyncio.wait_for(asyncio.wrap_future(fut), left)
                except asyncio.TimeoutError:
                    pass
            finally:
                with self._lock:
                    if fut in self._claim_waiters:
                        self._claim_waiters.remove(fut)
        raise AddressClaimError(f"could not claim an address for {self._name!r}: state {s}")

    def address_table(self) -> Dict[int, Name]:
        """{address: NAME} of every CA seen claiming on the bus (J1939-81)."""
        return {a: Name(n) for a, n in self._native.table()}

    def request_address_claims(self) -> None:
        """Sends a Request for Address Claimed to all (J1939-81 4.5.1):
        every CA answers, refreshing :meth:`address_table`."""
        self._native.request_address_claims()

    def command_address(self, target: Union[Name, int], new_address: int, destination: int = GLOBAL) -> None:
        """Commanded Address (PGN 65240, J1939-81 4.6): tells the CA named
        ``target`` to claim ``new_address``; 9 bytes, by BAM to all or
        RTS/CTS to ``destination``."""
        self._native.command_address(int(target), new_address, destination)

    # ------------------------------------------------------------- sending

    def send_pgn(self, pgn: int, data: bytes, priority: int = 6,
                 destination: int = GLOBAL) -> "concurrent.futures.Future[int]":
        """Sends ``data`` (1 byte up) as ``pgn``: one frame up to 8 bytes;
        9..1785 bytes by BAM to all (50 ms between packets) or RTS/CTS to
        one CA; above 1785 bytes by ETP to one CA (J1939-21 5.10). Returns a
        Future resolved with the size when the transfer ends (at once for a
        single frame) or failing with TransferAbortedError. Raises
        AddressClaimError before the claim, ValueError (too long, priority
        above 7, DA 254), J1939Error (no free session)."""
        fut: "concurrent.futures.Future[int]" = concurrent.futures.Future()
        data = bytes(data)
        if len(data) <= 8:
            self._native.send(pgn, data, priority, destination)
            fut.set_result(len(data))
            return fut
        key = (_normalize(pgn), destination)
        with self._lock:
            self._sends.setdefault(key, collections.deque()).append(fut)
        try:
            self._native.send(pgn, data, priority, destination)
        except BaseException:
            with self._lock:
                self._sends[key].remove(fut)
            raise
        return fut

    def send_engine_speed(self, rpm: float, destination: int = GLOBAL) -> None:
        """EEC1 (PGN 61444, priority 3) with SPN 190 engine speed ``rpm``
        (0..8031.875, 0.125 rpm/bit, J1939-71); ValueError out of range."""
        self.send_pgn(PGN_EEC1, encode_eec1(rpm), priority=3, destination=destination)

    def send_coolant_temperature(self, deg_c: int, fuel_deg_c: Optional[int] = None,
                                 destination: int = GLOBAL) -> None:
        """ET1 (PGN 65262, priority 6) with SPN 110 coolant temperature
        ``deg_c`` (degC, -40..210, J1939-71) and optionally SPN 174 fuel
        temperature; ValueError out of range."""
        self.send_pgn(PGN_ET1, encode_et1(deg_c, fuel_deg_c), priority=6, destination=destination)

    def send_dm1(self, dtcs: Iterable[Tuple[int, int, int]] = (), *, malfunction: int = 0, red_stop: int = 0,
                 amber_warning: int = 0, protect: int = 0, flash: int = 0xFF,
                 destination: int = GLOBAL) -> None:
        """DM1 active DTCs (PGN 65226, J1939-73 5.7.1): ``dtcs`` as (SPN, FMI,
        occurrence count); lamps 0 off, 1 on (2 bits each); ``flash`` the
        flash byte (0xFF: no flash). One DTC fits one frame; more go by BAM
        (J1939-73). ValueError for out-of-range fields."""
        for v in (malfunction, red_stop, amber_warning, protect):
            if not 0 <= v <= 3:
                raise ValueError(f"lamp state {v} outside 0..3")
        lamps = malfunction << 6 | red_stop << 4 | amber_warning << 2 | protect
        self.send_pgn(PGN_DM1, encode_dm(lamps, flash, list(dtcs)), priority=6, destination=destination)

    # ------------------------------------------------------------ requests

    def _request_future(self, pgn: int, destination: int) -> Tuple[Tuple[int, int],
                                                                     "concurrent.futures.Future[J1939Message]"]:
        fut: "concurrent.futures.Future[J1939Message]" = concurrent.futures.Future()
        key = (_normalize(pgn), destination)
        with self._lock:
            self._pending.setdefault(key, collections.deque()).append(fut)
        try:
            self._native.request(pgn, destination)
        except BaseException:
            with self._lock:
                self._pending[key].remove(fut)
            raise
        return key, fut

    def _forget(self, key: Tuple[int, int], fut: "concurrent.futures.Future[Any]") -> None:
        with self._lock:
            q = self._pending.get(key)
            if q is not None and fut in q:
                q.remove(fut)

    def request_pgn(self, pgn: int, destination: int = GLOBAL, timeout: Optional[float] = None) -> J1939Message:
        """Sends a Request for ``pgn`` (PGN 59904, J1939-21 5.4.2) and returns
        the answer, single frame or reassembled TP/ETP. ``timeout`` s (None:
        the ECU's request_timeout for the start of the answer, then until a
        TP answer ends). Raises RequestTimeoutError, RequestRejectedError (NACK or
        other Acknowledgment), TransferAbortedError (the answer's TP aborted),
        AddressClaimError before the claim."""
        key, fut = self._request_future(pgn, destination)
        try:
            return fut.result(timeout)
        except RequestTimeoutError:
            raise  # the engine's T3 (a TimeoutError too): keep its message
        except concurrent.futures.TimeoutError:
            self._forget(key, fut)
            raise RequestTimeoutError(f"no answer to the request for PGN {pgn} from {destination:#04x} "
                                      f"in {timeout} s") from None

    async def request_pgn_async(self, pgn: int, destination: int = GLOBAL,
                                timeout: Optional[float] = None) -> J1939Message:
        """:meth:`request_pgn` for asyncio (same errors)."""
        key, fut = self._request_future(pgn, destination)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
        except RequestTimeoutError:
            raise  # the engine's T3 (a TimeoutError too): keep its message
        except asyncio.TimeoutError:
            self._forget(key, fut)
            raise RequestTimeoutError(f"no answer to the request for PGN {pgn} from {destination:#04x} "
                                      f"in {timeout} s") from None

    def set_response(self, pgn: int, data: Optional[bytes]) -> None:
        """Answers Requests for ``pgn`` with ``data`` natively (within Tr =
        200 ms, J1939-21 5.4.2; by TP above 8 bytes). None unregisters."""
        if data is not None and len(data) == 0:
            raise ValueError("an answer has at least 1 byte")
        self._native.set_response(pgn, None if data is None else bytes(data))

    def on_request(self, pgn: int, handler: Optional[RequestHandler]) -> None:
        """Calls ``handler(Request)`` for Requests for ``pgn``; it returns
        the answer's bytes, or None to NACK a specific request (global ones
        are never NACKed). Answer within Tr = 200 ms (J1939-21). None
        removes the handler."""
        with self._lock:
            if handler is None:
                self._request_handlers.pop(_normalize(pgn), None)
            else:
                self._request_handlers[_normalize(pgn)] = handler
        self._native.set_response(pgn, None if handler is None else b"")

    # ----------------------------------------------------------- receiving

    def on_pgn(self, pgn: Optional[int], callback: Callback, source: Optional[int] = None, *,
               decode: "Optional[Database]" = None) -> Callback:
        """Calls ``callback(J1939Message)`` for every message of ``pgn``
        (None: every PGN) to this ECU or to all, from ``source`` (None: any
        SA). Returns ``callback`` (usable as a decorator with
        ``functools.partial``).

        ``decode``: a :class:`canx.dbc.Database`; each message then carries
        its DBC signals in ``message.decoded`` (:class:`canx.dbc.Decoded`,
        None when the DBC has no message with that PGN), matched by PGN as
        the J1939 DBC convention says (priority and SA ignored, a PDU1 DA
        too), single frames and TP/ETP-reassembled payloads alike. A payload
        shorter than the DBC message gives the signals it holds. If cantools
        cannot decode it at all, the callback is not called and the
        canx.dbc.DecodeError counts as a callback error (logged on logger
        ``canx``, ``callback_errors``)."""
        with self._lock:
            self._handlers.setdefault(None if pgn is None else _normalize(pgn), []).append((callback, source, decode))
        return callback

    def remove_handler(self, pgn: Optional[int], callback: Callback) -> None:
        with self._lock:
            hs = self._handlers.get(None if pgn is None else _normalize(pgn), [])
            self._handlers[None if pgn is None else _normalize(pgn)] = [h for h in hs if h[0] is not callback]

    def on_abort(self, callback: Callable[[int, int, int, int, bool], Any]) -> None:
        """Calls ``callback(pgn, source, destination, reason, by_peer)`` when
        a TP/ETP session ends with Connection Abort (J1939-21 5.10.3.5)."""
        self._abort_handlers.append(callback)

    def messages(self, pgn: Optional[int] = None, source: Optional[int] = None,
                 timeout: Optional[float] = None, maxsize: int = 65536, *,
                 decode: "Optional[Database]" = None) -> PgnStream:
        """A :class:`PgnStream` of messages of ``pgn`` (None: all; a PDU1
        PGN matches whatever its DA byte) from ``source`` (None: any SA),
        for ``for`` or ``async for``; it receives from now on and holds at
        most ``maxsize`` messages. ``decode``: a :class:`canx.dbc.Database`
        that fills ``message.decoded`` as in :meth:`on_pgn`. Raises
        ValueError for maxsize < 1 or a PGN above 0x3FFFF."""
        return PgnStream(self, None if pgn is None else _normalize(pgn), source, timeout, maxsize, decode)

    # ------------------------------------------------------------ plumbing

    @property
    def callback_errors(self) -> int:
        """Callbacks that raised (each is logged on logger ``canx``)."""
        return self._pump.callback_errors

    @property
    def last_callback_error(self) -> Optional[BaseException]:
        return self._pump.last_callback_error

    def stats(self) -> Dict[str, int]:
        """Counters of the native engine (drops, refused sessions, ...),
        plus ``callback_errors`` (callbacks that raised) and ``pump_errors``
        (events the callback thread failed to take; each is logged on
        logger ``canx`` and the thread keeps running)."""
        s = dict(self._native.stats())
        s["callback_errors"] = self._pump.callback_errors
        s["pump_errors"] = self._pump.pump_errors
        return s

    def _dispatch(self, ev: _Event) -> None:
        if isinstance(ev, _canx.J1939MessageEvent):
            pgn, sa = ev.pgn, ev.source
            m = _message(ev)
            self._last = m
            key = _normalize(pgn)
            with self._lock:
                hs = list(self._handlers.get(key, ())) + list(self._handlers.get(None, ()))
            errors: List[BaseException] = []
            decoded: Dict[int, J1939Message] = {}  # id(db) -> m with its signals, once per DBC
            for cb, src, db in hs:
                if src is None or src == sa:
                    try:
                        if db is None:
                            cb(m)
                        else:
                            md = decoded.get(id(db))
                            if md is None:
                                md = decoded[id(db)] = _with_decoded(m, db)
                            cb(md)
                    except Exception as e:  # reported by the pump, the others still run
                        errors.append(e)
            if errors:
                raise errors[0]
        elif isinstance(ev, _canx.J1939RequestDoneEvent):
            pgn, da, outcome, code, sa, data = ev.pgn, ev.destination, ev.outcome, ev.code, ev.source, ev.data
            with self._lock:
                q = self._pending.get((pgn, da))
                fut = q.popleft() if q else None
            if fut is None or fut.done():
                return
            if outcome == "answered":
                last = self._last
                if last is not None and _normalize(last.pgn) == pgn and last.source == sa:
                    fut.set_result(last)
                else:
                    fut.set_result(J1939Message(pgn, sa, GLOBAL, 6, data or b"", time.time()))
            elif outcome == "ack":
                fut.set_exception(RequestRejectedError(f"request for PGN {pgn} answered by Acknowledgment control "
                                                       f"{code} from {da:#04x}", code))
            elif outcome == "aborted":
                fut.set_exception(TransferAbortedError(f"the answer to PGN {pgn} was aborted (reason {code})", code))
            else:
                fut.set_exception(RequestTimeoutError(f"no answer to the request for PGN {pgn} from {da:#04x} "
                                                      f"in {self._request_timeout} s (J1939-21 T3)"))
        elif isinstance(ev, _canx.J1939RequestEvent):
            pgn, requester, is_global, ts = ev.pgn, ev.requester, ev.is_global, ev.timestamp
            with self._lock:
                h = self._request_handlers.get(_normalize(pgn))
            if h is None:
                return
            try:
                answer = h(Request(pgn, requester, is_global, ts))
            except Exception:
                if not is_global:
                    self._native.acknowledge(3, pgn, requester)  # cannot respond
                raise
            if answer is not None:
                self._native.respond(pgn, requester, is_global, bytes(answer))
            elif not is_global:
                self._native.acknowledge(1, pgn, requester)
        elif isinstance(ev, (_canx.J1939ClaimedEvent, _canx.J1939LostEvent, _canx.J1939CannotClaimEvent)):
            with self._lock:
                waiters, self._claim_waiters = self._claim_waiters, []
            for f in waiters:
                if not f.done():
                    f.set_result(ev.kind)
        elif isinstance(ev, _canx.J1939SentEvent):
            self._finish_send(_normalize(ev.pgn), ev.destination, ev.size, None)
        elif isinstance(ev, _canx.J1939AbortedEvent):
            pgn, sa, da, reason, by_peer, transmit = (
                ev.pgn, ev.source, ev.destination, ev.reason, ev.by_peer, ev.transmit
            )
            self.aborts.append((pgn, sa, da, reason, by_peer, transmit))
            if transmit:
                self._finish_send(_normalize(pgn), da, 0,
                                  TransferAbortedError(f"sending PGN {pgn} to {da:#04x} aborted "
                                                       f"(reason {reason}{', by the peer' if by_peer else ''})", reason))
            for abort_cb in list(self._abort_handlers):
                abort_cb(pgn, sa, da, reason, by_peer)

    def _finish_send(self, pgn: int, da: int, size: int, error: Optional[BaseException]) -> None:
        with self._lock:
            q = self._sends.get((pgn, da))
            fut = q.popleft() if q else None
        if fut is not None and not fut.done():
            if error is None:
                fut.set_result(size)
            else:
                fut.set_exception(error)

    def close(self) -> None:
        """Leaves the bus (and closes the bus it opened with ``channel=``).
        Pending requests fail with RequestTimeoutError. Idempotent."""
        self._pump.stop()
        self._native.close()
        with self._lock:
            pending = [f for q in self._pending.values() for f in q]
            self._pending.clear()
        for f in pending:
            if not f.done():
                f.set_exception(RequestTimeoutError("the ECU was closed"))

    def __enter__(self) -> "ECU":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._native.closed:
            return f"<canx.j1939.ECU {self._name!r} closed>"
        s, a = self._native.state()
        return f"<canx.j1939.ECU {self._name!r} {s} address={a}>"


# ------------------------------------------------------------ bus monitor


class BusMonitor:
    """Every J1939 frame on a bus, decoded (network management, requests
    and TP/ETP frames included): iterate it. 11-bit frames are skipped.
    ``timeout`` s ends iteration after a quiet period. ``close()`` stops."""

    def __init__(self, channel: Optional[str] = None, *, bus: Optional[_canx.CAN] = None, timeout: float = 10.0,
                 queue_size: int = 65536) -> None:
        from . import CAN
        if (channel is None) == (bus is None):
            raise ValueError("give exactly one of channel= and bus=")
        self._own = bus is None
        self._bus = CAN(channel=channel) if bus is None else bus
        self._listener = self._bus.listen(timeout=timeout, queue_size=queue_size)

    @property
    def dropped(self) -> int:
        return int(self._listener.dropped)

    def receive(self) -> Optional[J1939Frame]:
        """The next J1939 frame, or None after the timeout."""
        while True:
            m = self._listener.receive()
            if m is None:
                return None
            f = self._decode(m)
            if f is not None:
                return f

    @staticmethod
    def _decode(m: Any) -> Optional[J1939Frame]:
        if not getattr(m, "extended", False) or not hasattr(m, "data"):
            return None
        prio, pgn, sa, da = decode_id(m.id)
        return J1939Frame(prio, pgn, sa, da, bytes(m.data), m.timestamp, _KINDS.get(_normalize(pgn), "data"))

    def __iter__(self) -> Iterator[J1939Frame]:
        while True:
            f = self.receive()
            if f is None:
                return
            yield f

    def close(self) -> None:
        self._listener.deinit()
        if self._own:
            self._bus.deinit()

    def __enter__(self) -> "BusMonitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def bus_monitor(channel: Optional[str] = None, *, bus: Optional[_canx.CAN] = None, timeout: float = 10.0) -> BusMonitor:
    """A :class:`BusMonitor` on ``channel`` or an open ``bus``."""
    return BusMonitor(channel, bus=bus, timeout=timeout)
