"""Bus adapters for canx.j1939 on MicroPython.

Contract: ``recv()`` returns ``(id, data, flags)`` or None (flags as
machine.CAN: 1 = RTR, 2 = extended id); ``send(id, data, flags)`` returns
True, or False when the adapter's queue is full (the ECU keeps the frame and
retries it, in order, at the next poll).
"""

FLAG_RTR = 1
FLAG_EXT = 2


class Loopback:
    """An in-memory bus shared by ECUs of one program: a frame sent by one
    ECU is received by every other ECU on it (never by its sender).
    ``capacity`` frames per receiver; ``tx_capacity`` frames accepted per
    poll before send() returns False (tests of the full-queue path)."""

    def __init__(self, capacity=4096):
        self._queues = []
        self.capacity = capacity
        self.dropped = 0

    def endpoint(self):
        q = []
        self._queues.append(q)
        return _LoopEnd(self, q)


class _LoopEnd:
    def __init__(self, bus, q):
        self._bus = bus
        self._q = q
        self.refuse = 0  # test hook: refuse this many sends (queue full)

    def send(self, can_id, data, flags):
        if self.refuse > 0:
            self.refuse -= 1
            return False
        for q in self._bus._queues:
            if q is not self._q:
                if len(q) >= self._bus.capacity:
                    self._bus.dropped += 1
                else:
                    q.append((can_id, bytes(data), flags))
        return True

    def recv(self):
        if self._q:
            return self._q.pop(0)
        return None


class SocketCAN:
    """A raw SocketCAN socket on the unix port (Linux), e.g. "vcan0".
    Uses MicroPython's socket module with the numeric constants of
    <linux/can.h> (PF_CAN 29, SOCK_RAW 3, CAN_RAW 1) and a packed
    sockaddr_can. Own frames are not looped back to this socket."""

    def __init__(self, channel):
        import socket
        import struct

        self._struct = struct
        self._sock = socket.socket(29, 3, 1)
        # SOL_CAN_RAW 101, CAN_RAW_RECV_OWN_MSGS 4 = 0 (default) keeps
        # own frames out; loopback to other sockets stays on.
        ifindex = _ifindex(channel)
        # struct sockaddr_can: family u16, 2 pad bytes, ifindex int, a
        # 16-byte union (24 bytes; "<" packs without alignment).
        self._sock.bind(struct.pack("<H2xi16x", 29, ifindex))
        self._sock.setblocking(False)

    def send(self, can_id, data, flags):
        raw = can_id | (0x80000000 if flags & FLAG_EXT else 0) | (0x40000000 if flags & FLAG_RTR else 0)
        frame = self._struct.pack("<IB3x8s", raw, len(data), bytes(data))
        try:
            self._sock.send(frame)
        except OSError as ex:
            if ex.errno in (105, 11):  # ENOBUFS, EAGAIN: queue full, retried
                return False
            raise
        return True

    def recv(self):
        try:
            b = self._sock.recv(16)
        except OSError:
            return None
        if not b or len(b) < 16:
            return None
        raw, n = self._struct.unpack_from("<IB", b)
        flags = (FLAG_EXT if raw & 0x80000000 else 0) | (FLAG_RTR if raw & 0x40000000 else 0)
        if raw & 0x20000000:
            return None  # error frame
        return ((raw & 0x1FFFFFFF) if flags & FLAG_EXT else (raw & 0x7FF), b[8 : 8 + min(n, 8)], flags)

    def close(self):
        self._sock.close()


def _ifindex(channel):
    with open("/sys/class/net/%s/ifindex" % channel) as f:
        return int(f.read())


class MachineCAN:
    """MicroPython v1.28's ``machine.CAN`` (stm32, mimxrt, alif):
    ``MachineCAN(can)`` with a ``machine.CAN`` object, or
    ``MachineCAN(1, bitrate=250000)`` to make one.

    ``send`` passes FLAG_RTR/FLAG_EXT_ID only, never FLAG_UNORDERED, so
    same-ID frames (J1939-21 TP.DT) stay in order; ``machine.CAN.send``
    returns None when its queue is full (or cannot keep order), which this
    adapter reports as False: the ECU keeps the frame and retries it first.
    ``recv`` reuses one list (``machine.CAN.recv(list)``, allocation-free);
    the memoryview in it is valid until the next recv. Frames whose
    ``errors`` field reports a full/overrun receive FIFO count in
    ``rx_overruns`` (the lost frames themselves are not counted by the
    hardware)."""

    def __init__(self, can, bitrate=250000, **kw):
        if isinstance(can, int):
            import machine

            can = machine.CAN(can, bitrate, **kw)
        self._can = can
        self._rx = [0, None, 0, 0]
        self.rx_overruns = 0

    def send(self, can_id, data, flags):
        return self._can.send(can_id, data, flags & 3) is not None

    def recv(self):
        r = self._can.recv(self._rx)
        if r is None:
            return None
        if r[3]:
            self.rx_overruns += 1
        return r

    def state(self):
        return self._can.state()


class PybCAN:
    """``pyb.CAN`` (stm32's older class): ``PybCAN(can, fifo=0)`` with a
    ``pyb.CAN`` object initialised by the caller (bitrate, filters: e.g.
    ``can.setfilter(0, CAN.MASK, 0, (0, 0), extframe=True)``).

    bxCAN's three mailboxes send equal IDs in mailbox order, not queue
    order, so ``send`` queues a frame only when no frame is pending
    (``info()[5]``): TP.DT frames stay in order at one frame in flight.
    A refused send (``OSError`` ETIMEDOUT with ``timeout=0``) is False.
    ``recv`` fills one list (``recv(fifo, list)``) and returns it as
    ``(id, data, flags)``."""

    def __init__(self, can, fifo=0):
        self._can = can
        self._fifo = fifo
        self._info = [0] * 8
        self._rx = [0, 0, 0, 0, memoryview(bytearray(8))]
        self._out = [0, None, 0]

    def send(self, can_id, data, flags):
        if self._can.info(self._info)[5]:
            return False
        try:
            self._can.send(data, can_id, timeout=0, rtr=bool(flags & FLAG_RTR), extframe=bool(flags & FLAG_EXT))
        except OSError:
            return False
        return True

    def recv(self):
        if not self._can.any(self._fifo):
            return None
        r = self._can.recv(self._fifo, self._rx, timeout=0)
        o = self._out
        o[0] = r[0]
        o[1] = r[4]
        o[2] = (FLAG_EXT if r[1] else 0) | (FLAG_RTR if r[2] else 0)
        return o


class CANPico:
    """The CANPico board's ``rp2.CAN`` (kentindell/canhack firmware,
    MCP2518FD): ``CANPico(can)`` with an ``rp2.CAN`` object, or
    ``CANPico()`` to make one with its defaults.

    ``send`` uses ``send_frame(frame, fifo=True)`` (the software FIFO keeps
    same-ID frames in order) and returns False when ``get_send_space()`` is
    0 or the driver refuses. ``recv`` drains ``recv()`` batches into a
    local list; a None element marks a receive FIFO overflow and counts in
    ``rx_overruns``. [Written against canhack's documented API; not yet run
    on the board.]"""

    def __init__(self, can=None):
        import rp2

        self._rp2 = rp2
        self._can = rp2.CAN() if can is None else can
        self._batch = ()
        self._i = 0
        self.rx_overruns = 0

    def send(self, can_id, data, flags):
        if self._can.get_send_space() < 1:
            return False
        rp2 = self._rp2
        frame = rp2.CANFrame(rp2.CANID(can_id, extended=bool(flags & FLAG_EXT)), data=bytes(data),
                             remote=bool(flags & FLAG_RTR))
        try:
            self._can.send_frame(frame, fifo=True)
        except (ValueError, OSError, RuntimeError):
            return False
        return True

    def recv(self):
        while True:
            if self._i >= len(self._batch):
                self._batch = self._can.recv()
                self._i = 0
                if not self._batch:
                    return None
            f = self._batch[self._i]
            self._i += 1
            if f is None:
                self.rx_overruns += 1
                continue
            return (f.get_arbitration_id(), f.get_data(),
                    (FLAG_EXT if f.is_extended() else 0) | (FLAG_RTR if f.is_remote() else 0))
