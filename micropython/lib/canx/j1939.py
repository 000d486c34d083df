"""SAE J1939 ECU for MicroPython over canx-core's engine (`_canx_j1939`).

Mirrors CPython's ``canx.j1939.ECU`` where the API overlaps; the loop is
explicit: call :meth:`ECU.poll` often (every few ms), or let the blocking
calls (claim_address, request_pgn) pump it. Callbacks run inside poll(),
never in an interrupt. Times: the ECU's 64-bit microsecond clock
(``now_us`` arguments are for tests).
"""

import sys
import time

import _canx_j1939 as _n
from micropython import const

#: Destination address "all" (J1939-21).
GLOBAL = 0xFF
#: The null address: a CA without an address (J1939-81).
NULL = 0xFE
PGN_REQUEST = 59904
PGN_ACKNOWLEDGMENT = 59392
PGN_ADDRESS_CLAIMED = 60928
PGN_TP_CM = 60416
PGN_TP_DT = 60160
PGN_EEC1 = 61444
PGN_ET1 = 65262
PGN_VEHICLE_IDENTIFICATION = 65260
PGN_VIN = PGN_VEHICLE_IDENTIFICATION
PGN_DM1 = 65226
PGN_DM2 = 65227
PGN_PROPRIETARY_A = 0xEF00

_EV_CLAIMED = const(1)
_EV_LOST = const(2)
_EV_CANNOT_CLAIM = const(3)
_EV_MESSAGE = const(6)
_EV_REQUEST = const(7)
_EV_SENT = const(8)
_EV_ABORTED = const(9)
_EV_REQUEST_DONE = const(10)
_EVF_RECEIVE = const(4)
_EVF_GLOBAL = const(8)


class J1939Error(Exception):
    pass


class AddressClaimError(J1939Error):
    pass


class RequestTimeoutError(J1939Error):
    pass


class RequestRejectedError(J1939Error):
    """``control``: 1 NACK, 2 access denied, 3 cannot respond."""

    def __init__(self, message, control=1):
        super().__init__(message)
        self.control = control


class TransferAbortedError(J1939Error):
    """``reason``: the J1939-21 5.10.3.5 abort code."""

    def __init__(self, message, reason=0):
        super().__init__(message)
        self.reason = reason


class Transfer:
    """What :meth:`ECU.send_pgn` returns, in the place of CPython canx's
    Future: ``done()``; ``result(timeout=None)`` -> the size in bytes once
    the frame left or the transfer ended acknowledged (EoMA, or the last
    BAM packet), pumping the ECUs while it waits; raises
    TransferAbortedError (``reason``: J1939-21 5.10.3.5) or, after
    ``timeout`` seconds, RequestTimeoutError."""

    def __init__(self, ecu, size):
        self._ecu = ecu
        self.size = size
        self._state = 0  # 0 pending, 1 sent, 2 aborted
        self._reason = 0

    def done(self):
        return self._state != 0

    def result(self, timeout=None):
        if self._state == 0:
            limit = 3600.0 if timeout is None else timeout
            if not self._ecu._pump_until(self.done, limit):
                raise RequestTimeoutError("transfer of %d bytes not ended in %s s" % (self.size, timeout))
        if self._state == 2:
            raise TransferAbortedError("transfer aborted (reason %d)" % self._reason, self._reason)
        return self.size


_FIELDS = (
    ("identity_number", 0, 21),
    ("manufacturer_code", 21, 11),
    ("ecu_instance", 32, 3),
    ("function_instance", 35, 5),
    ("function", 40, 8),
    ("vehicle_system", 49, 7),
    ("vehicle_system_instance", 56, 4),
    ("industry_group", 60, 3),
    ("arbitrary_address_capable", 63, 1),
)


class Name:
    """The 64-bit J1939 NAME (J1939-81 4.1.1), from its value or fields."""

    def __init__(self, value=None, **fields):
        if value is not None:
            if fields:
                raise TypeError("give either a NAME value or its fields, not both")
            if not 0 <= value < 1 << 64:
                raise ValueError("NAME %d is not a 64-bit value" % value)
            self.value = value
            return
        v = 0
        for field, shift, bits in _FIELDS:
            x = int(fields.pop(field, 0))
            if not 0 <= x < 1 << bits:
                raise ValueError("NAME field %s=%d does not fit in %d bits" % (field, x, bits))
            v |= x << shift
        if fields:
            raise TypeError("unknown NAME field")
        self.value = v

    def to_bytes(self):
        return self.value.to_bytes(8, "little")

    def __int__(self):
        return self.value

    def __eq__(self, other):
        return isinstance(other, Name) and other.value == self.value

    def __repr__(self):
        return "Name(0x%016x)" % self.value


# ------------------------------------------------- codecs (as CPython canx)


def encode_eec1(rpm):
    """EEC1 payload with SPN 190 engine speed ``rpm`` (0..8031.875, 0.125
    rpm/bit, J1939-71); None: not available. ValueError out of range."""
    if rpm is None:
        return _n.eec1_encode(0xFFFF)
    if not 0 <= rpm <= 8031.875:
        raise ValueError("engine speed %s rpm outside 0..8031.875 rpm" % rpm)
    return _n.eec1_encode(int(rpm * 8 + 0.5))


def decode_eec1(data):
    """SPN 190 engine speed (rpm, float) from an EEC1 payload, or None."""
    raw = _n.eec1_decode(data)
    return None if raw is None else raw * 0.125


def _temp_raw(t):
    if t is None:
        return 0xFF
    if not -40 <= t <= 210:
        raise ValueError("temperature %d degC outside -40..210 degC" % t)
    return t + 40


def encode_et1(coolant, fuel=None):
    """ET1 (PGN 65262) payload: SPN 110 coolant and SPN 174 fuel
    temperature in degC (-40..210, J1939-71); None: not available."""
    return bytes((_temp_raw(coolant), _temp_raw(fuel))) + b"\xff" * 6


def decode_et1(data):
    """(coolant degC, fuel degC) from an ET1 payload; None where not
    available (raw above 250, J1939-71)."""
    return tuple((data[i] - 40) if len(data) > i and data[i] <= 250 else None for i in (0, 1))


def decode_dm(data):
    """(lamps, flash, [(SPN, FMI, occurrence count), ...]) from a DM1/DM2
    payload (J1939-73 5.7.1); the all-zero DTC means none. ValueError
    below 2 bytes."""
    if len(data) < 2:
        raise ValueError("DM payload shorter than 2 bytes")
    dtcs = []
    for i in range(2, len(data) - 3, 4):
        b = data[i:i + 4]
        spn = b[0] | b[1] << 8 | (b[2] >> 5) << 16
        dtc = (spn, b[2] & 0x1F, b[3] & 0x7F)
        if dtc != (0, 0, 0) and bytes(b) != b"\xff\xff\xff\xff":
            dtcs.append(dtc)
    return data[0], data[1], dtcs


class J1939Message:
    """``pgn``, ``source``, ``destination`` (255 = all), ``priority``, ``data``."""

    def __init__(self, pgn, source, destination, priority, data):
        self.pgn = pgn
        self.source = source
        self.destination = destination
        self.priority = priority
        self.data = data

    def __repr__(self):
        return "J1939Message(pgn=%d, source=%d, destination=%d, priority=%d, data=%r)" % (
            self.pgn, self.source, self.destination, self.priority, self.data)


class Request:
    def __init__(self, pgn, requester, is_global):
        self.pgn = pgn
        self.requester = requester
        self.is_global = is_global


class Ticks64:
    """A 64-bit microsecond clock from a wrapping tick counter: ``clock =
    Ticks64()`` extends ``time.ticks_us`` (it wraps at 2**30 µs, ~17.9
    min, on most ports) by summing ``ticks_diff`` steps, so deadlines keep
    working across the wrap. Call it at least once per half period (8.9
    min at 2**30; every ``poll()`` does). ``ticks``/``diff`` replace
    ``time.ticks_us``/``time.ticks_diff`` (tests drive a fake counter).
    The ECU's default clock does the same in C over mp_hal_ticks_us()
    (32-bit wraps)."""

    def __init__(self, ticks=None, diff=None, start=0):
        self._ticks = time.ticks_us if ticks is None else ticks
        self._diff = time.ticks_diff if diff is None else diff
        self._last = self._ticks()
        self._now = start

    def __call__(self):
        t = self._ticks()
        d = self._diff(t, self._last)
        self._last = t
        if d > 0:  # a real counter never goes back; a jump back adds 0
            self._now += d
        return self._now


#: Every open ECU of this program: the blocking and async waits of one ECU
#: poll all of them, so two ECUs in one script talk without an idle hook.
_ECUS = []


def _poll_all(but=None):
    for e in _ECUS:
        if e is not but:
            e.poll()


def _normalize(pgn):
    # PDU1 PGNs carry no destination in the PGN (J1939-21 5.1.2).
    return pgn & 0x3FF00 if (pgn >> 8) & 0xFF < 240 else pgn


_VIRTUAL = {}
_NO_ADDRESS = "no claimed address: call claim_address() first (J1939-81)"


def _open_channel(channel):
    # "virtual:NAME": a Loopback shared by every ECU of the program opened
    # on NAME (as CPython canx's virtual bus); anything else: SocketCAN.
    from canx import bus as cbus

    if channel.startswith("virtual:"):
        b = _VIRTUAL.get(channel)
        if b is None:
            b = _VIRTUAL[channel] = cbus.Loopback()
        return b
    return cbus.SocketCAN(channel)


class ECU:
    """One controller application on ``bus`` (a canx.bus adapter or a
    Loopback): ``ECU(bus=..., name=Name(...) or int, address=0x80)``, or
    ``ECU("virtual:NAME", ...)`` (every ECU of the program on NAME shares
    one Loopback, as CPython canx's virtual bus) or ``ECU("vcan0", ...)``
    (SocketCAN, unix port).
    ``variant``: "full" (default when the firmware has it: 4 TP sessions,
    16 responders/requests, 254-entry address table, ~14.7 KB of heap) or
    "small" (1 TP session, 4 responders/requests, 16-entry table, ~6.4 KB;
    a second transfer raises OSError(EBUSY) until the first ends). Raises
    ValueError for an address outside 0..253, an unknown variant or one the
    firmware lacks, or unless exactly one of channel/bus is given."""

    def __init__(self, channel=None, name=None, address=None, bus=None, request_timeout=1.25, clock=None,
                 variant=None):
        if channel is not None and not isinstance(channel, str):
            channel, bus = None, channel  # ECU(adapter, ...) positionally
        if (channel is None) == (bus is None):
            raise ValueError("give exactly one of channel= and bus=")
        if name is None or address is None:
            raise TypeError("name= and address= are required")
        if not 0 <= address <= 253:
            raise ValueError("address %d outside 0..253" % address)
        if channel is not None:
            bus = _open_channel(channel)
        if hasattr(bus, "endpoint"):
            bus = bus.endpoint()
        self._bus = bus
        self._name = name if isinstance(name, Name) else Name(int(name))
        if variant is None:  # the full engine if the firmware has it
            variant = "full" if _n.variant_size(_n.FULL) else "small"
        if variant not in ("small", "full"):
            raise ValueError("variant must be 'small' or 'full'")
        v = _n.SMALL if variant == "small" else _n.FULL
        if not _n.variant_size(v):
            raise ValueError("this firmware has no %s engine (scripts/build-micropython CANX_MPY_VARIANT)" % variant)
        self._e = _n.ECU(self._name.to_bytes(), address, v)
        # Message events come as J1939Message objects built by the glue.
        self._e.message_type(J1939Message)
        self._request_timeout = request_timeout
        #: Microsecond clock: the engine's 64-bit extension of
        #: mp_hal_ticks_us() unless ``clock`` (a function) is given (tests).
        self._clock = self._e.ticks_us64 if clock is None else clock
        #: Called between polls while claim_address/request_pgn wait (every
        #: other open ECU of the program is polled there too).
        self.idle = lambda: time.sleep_ms(1)
        #: ms slept between polls while the *_async calls wait.
        self.async_period_ms = 1
        self._handlers = {}
        self._by_pgn = {}  # normalized PGN -> ((callback, source), ...)
        self._any_pgn = ()  # on_pgn(None, ...) callbacks
        self._request_handlers = {}
        self._responses = {}
        self._done = {}
        self._answers = {}
        self._pending_tx = []
        self._state = "idle"
        self.callback_errors = 0
        self.last_callback_error = None
        #: Polls cut short by MemoryError (e.g. under heap_lock()): frames
        #: and events wait in the engine/glue for the next poll.
        self.pump_errors = 0
        #: Events lost to MemoryError while building their message (its
        #: callbacks did not run).
        self.events_lost = 0
        #: Frames refused by the adapter that could not be kept (MemoryError).
        self.frames_lost = 0
        #: Callback errors are printed here (sys.print_exception, with the
        #: traceback) as CPython canx logs them; None: not printed.
        self.error_file = sys.stderr
        #: The last 16 aborted transfers, (pgn, source, destination,
        #: reason, by_peer), oldest first.
        self.aborts = []
        #: Transfers in flight per (PGN, destination), oldest first: the
        #: engine's Sent/Aborted events end them in order (as CPython canx).
        self._transfers = {}
        _ECUS.append(self)

    def close(self):
        """Leaves the program's ECU list (other ECUs' waits stop polling
        this one). The bus adapter is not closed."""
        if self in _ECUS:
            _ECUS.remove(self)

    @property
    def name(self):
        return self._name

    @property
    def state(self):
        """"idle", "claiming", "claimed" or "cannot_claim"."""
        return self._state

    @property
    def address(self):
        return self._e.address()

    @property
    def dropped(self):
        """Frames and events the engine dropped (full queues)."""
        return self._e.dropped()

    def now_us(self):
        return self._clock()

    # ----------------------------------------------------------- the loop

    def poll(self, now_us=None):
        """Feeds received frames, runs timers, sends queued frames (a frame
        the adapter refuses is kept and retried first, in order) and runs
        callbacks. Events and frames are taken after every received frame,
        so a burst longer than the engine's queues loses nothing. Returns
        the number of events handled."""
        try:
            return self._poll(self._clock() if now_us is None else now_us)
        except MemoryError:
            # Out of memory (heap_lock, fragmentation): frames and events
            # the engine handed over stay held (the C glue returns them
            # again), so nothing is lost here; count it and keep running.
            self.pump_errors += 1
            return 0

    def _poll(self, now):
        e = self._e
        f = self._bus.recv()
        n = 0
        if f is not None:
            # To the engine at once: nothing here allocates (a MemoryError
            # between recv and handle_frame would lose the frame).
            e.handle_frame(now, f[0], f[1], f[2])
            n = self._frames(now)
        t = e.poll_timeout()
        if t is not None and t <= now:
            e.handle_timeout(now)
        # Send, events, send; native calls first (mostly None).
        self._send_due(now)
        ev = e.poll_event()  # MemoryError: the glue keeps the event
        if ev is not None:
            n += self._events(ev)
        self._send_due(now)
        return n

    def _send_due(self, now):
        # Frames held by a full transmit queue first, in order; else what
        # the engine has to send now (and what follows it).
        if self._pending_tx:
            self._flush(now)
        else:
            f = self._e.poll_transmit(now)
            if f is not None:
                self._send_from(now, f)

    def _frames(self, now):
        # The hot path: the frame _poll handed to the engine and those
        # after it, each followed by its events and what the engine has to
        # send. The glue's dispatch() runs the loop in C and calls the
        # callbacks of message events itself (through _by_pgn, the tables
        # on_pgn builds, updated in place; a callback's error comes back
        # to _dispatch_error); it returns here for other events (and
        # messages while a request waits, _done), for frames to send
        # (True) and at the end (the count of events it handled; before,
        # dispatched() has it). It calls bus.recv() and _dispatch_error
        # without bound method objects: nothing allocates between recv()
        # and handle_frame (a MemoryError there would lose the frame).
        e = self._e
        mode = 0
        n = 0
        while True:
            # MemoryError: the glue keeps the event for the next poll.
            ev = e.dispatch(now, self._bus, self._by_pgn, self, self._done, self._pending_tx, mode)
            if type(ev) is int:
                return n + ev
            n += e.dispatched()  # the messages before ev (or True)
            if ev is True:
                self._send_due(now)
                mode = 2
                continue
            mode = 1
            n += 1
            self._handle(ev)

    def _dispatch_error(self, ex):
        # A callback that dispatch() called raised ex: reported as
        # _call does; True (stop this message's callbacks) when even that
        # ran out of memory (the event counts as lost, as in _events).
        try:
            self._callback_error(ex)
        except MemoryError:
            self.events_lost += 1
            return True
        return False

    def _events(self, ev):
        # ev (the engine's first event) and those after it.
        e = self._e
        n = 0
        while ev is not None:
            n += 1
            self._handle(ev)
            ev = e.poll_event()  # MemoryError: the glue keeps the event
        return n

    def _handle(self, ev):
        # One event the Python layer dispatches (a message or an event tuple).
        try:
            if type(ev) is J1939Message:
                self._message(ev)
            else:
                self._dispatch(ev)
        except MemoryError:
            # Out of memory in the dispatch (its event tuple's
            # handling, a callback's error report): counted.
            self.events_lost += 1

    def _message(self, msg):
        pgn = msg.pgn
        source = msg.source
        if self._done:
            self._answer_to(pgn, source, msg)
        cbs = self._by_pgn.get(_normalize(pgn), self._any_pgn)
        for cb, src in cbs:
            if src is None or src == source:
                self._call(cb, msg)

    def _answer_to(self, pgn, source, msg):
        key = (_normalize(pgn), source)
        if key in self._done:
            self._answers[key] = msg

    def stats(self):
        """``{"dropped", "callback_errors", "pump_errors", "events_lost"}``:
        frames and events the engine dropped (full queues), callbacks that
        raised (MemoryError in a callback too), polls cut short by
        MemoryError, events lost to MemoryError before their callbacks,
        refused frames that could not be kept."""
        return {"dropped": self.dropped, "callback_errors": self.callback_errors,
                "pump_errors": self.pump_errors, "events_lost": self.events_lost,
                "frames_lost": self.frames_lost}

    def _flush(self, now):
        pend = self._pending_tx
        while pend:
            f = pend[0]
            if not self._bus.send(f[0], f[1], f[2]):
                return
            pend.pop(0)
        f = self._e.poll_transmit(now)
        if f is not None:
            self._send_from(now, f)

    def _send_from(self, now, f):
        # Sends f (just taken from the engine) and what follows it.
        pend = self._pending_tx
        while f is not None:
            try:
                ok = self._bus.send(f[0], f[1], f[2])
            except MemoryError:
                ok = False
            if not ok:
                try:
                    pend.append(f)
                except MemoryError:
                    self.frames_lost += 1  # no room to keep it: counted
                    f = self._e.poll_transmit(now)
                    continue
                # Keep order: everything after a refused frame waits too.
                while True:
                    f = self._e.poll_transmit(now)
                    if f is None:
                        return
                    try:
                        pend.append(f)
                    except MemoryError:
                        self.frames_lost += 1
            f = self._e.poll_transmit(now)

    def _call(self, cb, arg):
        try:
            return cb(arg), None
        except Exception as ex:  # noqa: BLE001 - counted, as CPython canx
            self._callback_error(ex)
            return None, ex

    def _callback_error(self, ex):
        self.callback_errors += 1
        self.last_callback_error = ex
        f = self.error_file
        if f is not None:
            try:
                f.write("canx: callback error:\n")
                sys.print_exception(ex, f)
            except Exception:  # noqa: BLE001 - e.g. MemoryError under heap_lock
                pass

    def _dispatch(self, ev):
        kind = ev[0]
        if kind == _EV_CLAIMED:
            self._state = "claimed"
        elif kind == _EV_LOST:
            self._state = "claiming"
        elif kind == _EV_CANNOT_CLAIM:
            self._state = "cannot_claim"
        elif kind == _EV_MESSAGE:  # as a tuple: without message_type()
            self._message(J1939Message(ev[4], ev[2], ev[3], ev[1], ev[5]))
        elif kind == _EV_REQUEST:
            self._answer(ev[4], ev[2], bool(ev[8] & _EVF_GLOBAL))
        elif kind == _EV_REQUEST_DONE:
            key = (_normalize(ev[4]), ev[3])
            if key in self._done:
                self._done[key] = ev[7]
        elif kind == _EV_ABORTED:
            if len(self.aborts) >= 16:
                self.aborts.pop(0)
            self.aborts.append((ev[4], ev[2], ev[3], ev[7], bool(ev[8] & 2)))
            if not ev[8] & _EVF_RECEIVE:
                self._end_transfer(ev, 2)
        elif kind == _EV_SENT:
            self._end_transfer(ev, 1)

    def _end_transfer(self, ev, state):
        key = (_normalize(ev[4]), ev[3])
        pending = self._transfers.get(key)
        if pending:
            t = pending.pop(0)
            if not pending:
                del self._transfers[key]
            t._state = state
            t._reason = ev[7]

    def _answer(self, pgn, requester, is_global):
        pgn = _normalize(pgn)
        data = self._responses.get(pgn)
        if data is None and pgn in self._request_handlers:
            data, err = self._call(self._request_handlers[pgn], Request(pgn, requester, is_global))
            if data is None and not is_global:
                # As CPython canx: None NACKs (control 1), a raising handler
                # answers Cannot Respond (3); global requests never get one
                # (J1939-21 5.4.4).
                self._acknowledge(3 if err is not None else 1, pgn, requester)
        if data is None:
            return
        try:
            self._e.respond(pgn, requester, is_global, bytes(data))
        except Exception as ex:  # noqa: BLE001
            self._callback_error(ex)

    def _acknowledge(self, control, pgn, requester):
        # Acknowledgment PGN 59392 to all (J1939-21 5.4.4): control, group
        # function 0xFF, 2 reserved, address acknowledged, the PGN (LE).
        d = bytes((control, 0xFF, 0xFF, 0xFF, requester, pgn & 0xFF, (pgn >> 8) & 0xFF, pgn >> 16))
        try:
            self.send_pgn(59392, d, priority=6, destination=GLOBAL)
        except Exception as ex:  # noqa: BLE001
            self._callback_error(ex)

    def _pump_until(self, done, timeout):
        deadline = self._clock() + int(timeout * 1000000)
        while not done():
            self.poll()
            _poll_all(self)
            if done():
                break
            if self._clock() >= deadline:
                return False
            self.idle()
        return True

    async def _pump_until_async(self, done, timeout):
        import asyncio

        deadline = self._clock() + int(timeout * 1000000)
        while not done():
            self.poll()
            _poll_all(self)
            if done():
                break
            if self._clock() >= deadline:
                return False
            await asyncio.sleep_ms(self.async_period_ms)
        return True

    async def run(self, period_ms=1):
        """An asyncio task that polls this ECU every ``period_ms``
        (``asyncio.create_task(ecu.run())``): callbacks and answers to
        Requests run while the program awaits other things. Never ends."""
        import asyncio

        while True:
            self.poll()
            await asyncio.sleep_ms(period_ms)

    # ------------------------------------------------------------ address

    def begin_claim(self, now_us=None):
        if self._state in ("idle", "cannot_claim"):
            self._state = "claiming"
            self._e.start(self._clock() if now_us is None else now_us)

    def claim_address(self, timeout=2.0):
        """Claims the address (J1939-81 4.5) pumping the loop; returns it.
        Raises AddressClaimError on Cannot Claim or timeout."""
        self.begin_claim()
        self._pump_until(self._claim_done, timeout)
        return self._claim_result()

    async def claim_address_async(self, timeout=2.0):
        """:meth:`claim_address` for asyncio: awaits between polls."""
        self.begin_claim()
        await self._pump_until_async(self._claim_done, timeout)
        return self._claim_result()

    def _claim_done(self):
        return self._state in ("claimed", "cannot_claim")

    def _claim_result(self):
        if self._state != "claimed":
            raise AddressClaimError("could not claim an address: state " + self._state)
        return self.address

    # ------------------------------------------------------------ sending

    def send_pgn(self, pgn, data, priority=6, destination=GLOBAL):
        """One frame up to 8 bytes; 9..1785 bytes by BAM (to all) or
        RTS/CTS (to one CA). Raises AddressClaimError before the claim,
        ValueError (too long, priority, DA 254), OSError(ENOBUFS/EBUSY)
        when queues or TP sessions are full. Returns a :class:`Transfer`
        (``.result(timeout)`` -> bytes sent, as CPython's Future)."""
        if len(data) == 0:
            raise ValueError("a J1939 message has at least 1 byte")
        if not 0 <= priority <= 7 or destination == NULL:
            raise ValueError("invalid priority or destination")
        if len(data) > 1785:
            raise ValueError("message too long (1785 bytes maximum, no ETP on MicroPython)")
        try:
            self._e.send(priority, pgn, destination, data)
        except RuntimeError:
            raise AddressClaimError(_NO_ADDRESS)
        t = Transfer(self, len(data))
        if len(data) <= 8:
            t._state = 1  # one frame: done once queued, as CPython's Future
        else:
            self._transfers.setdefault((_normalize(pgn), destination), []).append(t)
        self._flush(self._clock())
        return t

    def send_engine_speed(self, rpm, destination=GLOBAL):
        """EEC1 (PGN 61444, priority 3), SPN 190 in rpm (0..8031.875)."""
        self.send_pgn(PGN_EEC1, encode_eec1(rpm), priority=3, destination=destination)

    def send_dm1(self, dtcs=(), malfunction=0, red_stop=0, amber_warning=0, protect=0, flash=0xFF,
                 destination=GLOBAL):
        """DM1 (PGN 65226, J1939-73 5.7.1): ``dtcs`` as (SPN, FMI, OC)."""
        for v in (malfunction, red_stop, amber_warning, protect):
            if not 0 <= v <= 3:
                raise ValueError("lamp state %d outside 0..3" % v)
        raw = []
        for spn, fmi, oc in dtcs:
            for ok, what in ((0 <= spn < 1 << 19, "SPN must fit 19 bits"), (0 <= fmi < 32, "FMI must be 0-31"),
                             (0 <= oc < 128, "occurrence count must be 0-127")):
                if not ok:
                    raise ValueError("DTC (%d, %d, %d): %s" % (spn, fmi, oc, what))
            raw.append(spn & 0xFFFF | (spn >> 16) << 21 | fmi << 16 | oc << 24)
        lamps = malfunction << 6 | red_stop << 4 | amber_warning << 2 | protect
        self.send_pgn(PGN_DM1, _n.dm1_encode(lamps, flash, raw), priority=6, destination=destination)

    # ----------------------------------------------------------- requests

    def request_pgn(self, pgn, destination=GLOBAL, timeout=None):
        """Requests ``pgn`` (J1939-21 5.4.2) pumping the loop; returns the
        J1939Message. Raises RequestTimeoutError, RequestRejectedError,
        TransferAbortedError, AddressClaimError."""
        key = self._request_start(pgn, destination)
        try:
            self._pump_until(lambda: key in self._answers or self._done[key] is not None,
                             self._request_wait(timeout))
            return self._request_result(key, pgn, timeout)
        finally:
            self._done.pop(key, None)
            self._answers.pop(key, None)

    async def request_pgn_async(self, pgn, destination=GLOBAL, timeout=None):
        """:meth:`request_pgn` for asyncio (same errors)."""
        key = self._request_start(pgn, destination)
        try:
            await self._pump_until_async(lambda: key in self._answers or self._done[key] is not None,
                                         self._request_wait(timeout))
            return self._request_result(key, pgn, timeout)
        finally:
            self._done.pop(key, None)
            self._answers.pop(key, None)

    def _request_wait(self, timeout):
        return (self._request_timeout + 0.5) if timeout is None else timeout

    def _request_start(self, pgn, destination):
        key = (_normalize(pgn), destination)
        self._done[key] = None
        self._answers.pop(key, None)
        try:
            self._e.request(self._clock(), pgn, destination)
        except RuntimeError:
            self._done.pop(key, None)
            raise AddressClaimError(_NO_ADDRESS)
        except Exception:
            self._done.pop(key, None)
            raise
        return key

    def _request_result(self, key, pgn, timeout):
        msg = self._answers.get(key)
        if msg is not None:
            return msg
        d = self._done[key]
        da = key[1]
        if d is None:
            raise RequestTimeoutError("no answer to the request for PGN %d from 0x%02x in %s s"
                                      % (pgn, da, self._request_wait(timeout)))
        if d & 0xFF == 3:
            raise RequestTimeoutError("no answer to the request for PGN %d from 0x%02x in %s s (J1939-21 T3)"
                                      % (pgn, da, self._request_timeout))
        if d & 0xFF == 1:
            raise RequestRejectedError("request for PGN %d answered by Acknowledgment control %d from 0x%02x"
                                       % (pgn, d >> 8, da), d >> 8)
        raise TransferAbortedError("the answer to PGN %d was aborted (reason %d)" % (pgn, d >> 8), d >> 8)

    def set_response(self, pgn, data):
        """Answers Requests for ``pgn`` with ``data``; None unregisters."""
        pgn = _normalize(pgn)
        if data is None:
            self._responses.pop(pgn, None)
            return
        if len(data) == 0:
            raise ValueError("an answer has at least 1 byte")
        self._e.register(pgn)
        self._responses[pgn] = bytes(data)

    def on_request(self, pgn, handler):
        """``handler(Request)`` returns the answer's bytes, or None to NACK
        a specific request (a raising handler: Cannot Respond); global
        requests are never NACKed. As CPython canx. None removes it."""
        pgn = _normalize(pgn)
        if handler is None:
            self._request_handlers.pop(pgn, None)
            return
        self._e.register(pgn)
        self._request_handlers[pgn] = handler

    def on_pgn(self, pgn, callback, source=None):
        """``callback(J1939Message)`` for ``pgn`` (None: all) from ``source``."""
        self._handlers.setdefault(None if pgn is None else _normalize(pgn), []).append((callback, source))
        # Per-PGN tables for _message: the PGN's callbacks then the
        # all-PGN ones, in registration order.
        any_pgn = tuple(self._handlers.get(None, ()))
        self._any_pgn = any_pgn
        by_pgn = self._by_pgn  # in place: a running poll() holds it
        by_pgn.clear()
        for p, h in self._handlers.items():
            if p is not None:
                by_pgn[p] = tuple(h) + any_pgn
        return callback
