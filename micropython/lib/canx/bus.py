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
