# A pure-MicroPython J1939 transport, written only as the comparison for
# benches/micropython_j1939.py (not shipped, not part of canx). Fixed
# addresses (no address claim), J1939-21 (2006) 5.10: TP.CM (PGN 60416) and
# TP.DT (PGN 60160), BAM send/receive with 50 ms between packets (5.10.2.3),
# RTS/CTS send/receive (5.10.3) with a CTS window of min(remaining, the RTS's
# "maximum packets per CTS"), EoMA, abort (control byte 255) and the T1
# (750 ms), T2/T3 (1250 ms) timeouts of 5.10.2.4. One session per
# (source, destination, direction); a frame the adapter refuses is kept and
# retried in order. Runs on MicroPython and CPython.
#
# PureJ1939(endpoint, address): endpoint as canx.bus (send(id, data,
# flags) -> bool, recv() -> (id, data, flags) or None); `on_message(pgn,
# source, destination, data)`; `send(pgn, data, priority, destination)`;
# `poll(now_us)`; `next_deadline()` (µs or None); `sent`/`aborted` counters.

TP_CM = 0xEC00
TP_DT = 0xEB00
RTS, CTS, EOMA, BAM, ABORT = 16, 17, 19, 32, 255
BAM_GAP_US = 50000
T1_US = 750000
T2_US = 1250000
T3_US = 1250000
EXT = 2


def can_id(priority, pgn, source, destination):
    pf = (pgn >> 8) & 0xFF
    if pf < 240:
        return (priority << 26) | ((pgn & 0x3FF00) | destination) << 8 | source
    return (priority << 26) | (pgn & 0x3FFFF) << 8 | source


class _Tx:
    def __init__(self, pgn, data, destination, priority):
        self.pgn = pgn
        self.data = data
        self.destination = destination
        self.priority = priority
        self.packets = (len(data) + 6) // 7
        self.next = 1  # next sequence number to send
        self.last = 0  # last sequence number allowed by the CTS window
        self.due = 0  # BAM: time of the next packet; RTS/CTS: T3 deadline


class _Rx:
    def __init__(self, pgn, size, packets, source, destination, window):
        self.pgn = pgn
        self.buf = bytearray(size)
        self.size = size
        self.packets = packets
        self.source = source
        self.destination = destination
        self.window = window  # RTS/CTS: max packets per CTS; 0 for BAM
        self.expect = 1
        self.last = packets if window == 0 else min(packets, window)
        self.deadline = 0


class PureJ1939:
    def __init__(self, endpoint, address):
        self.bus = endpoint
        self.address = address
        self.on_message = None
        self._txq = []  # frames the adapter refused, in order
        self._tx = {}  # destination -> _Tx
        self._rx = {}  # (source, destination) -> _Rx
        self.sent = 0
        self.aborted = 0
        self._now = 0

    # ------------------------------------------------------------ output

    def _emit(self, cid, data):
        if self._txq or not self.bus.send(cid, data, EXT):
            self._txq.append((cid, data))

    def _cm(self, destination, payload):
        self._emit(can_id(7, TP_CM, self.address, destination), payload)

    def _pgn3(self, pgn):
        return bytes((pgn & 0xFF, (pgn >> 8) & 0xFF, pgn >> 16))

    def send(self, pgn, data, priority=6, destination=255):
        """One frame up to 8 bytes; 9..1785 bytes by BAM (destination 255)
        or RTS/CTS. Raises ValueError (too long) or OSError (session busy)."""
        n = len(data)
        if n <= 8:
            self._emit(can_id(priority, pgn, self.address, destination), bytes(data))
            return
        if n > 1785:
            raise ValueError("above 1785 bytes")
        if destination in self._tx:
            raise OSError(16)
        s = _Tx(pgn, bytes(data), destination, priority)
        self._tx[destination] = s
        size = bytes((n & 0xFF, n >> 8, s.packets))
        if destination == 255:
            self._cm(255, bytes((BAM,)) + size + b"\xff" + self._pgn3(pgn))
            s.last = s.packets
            s.due = self._now + BAM_GAP_US
        else:
            self._cm(destination, bytes((RTS,)) + size + b"\xff" + self._pgn3(pgn))
            s.due = self._now + T3_US

    def _send_dt(self, s):
        seq = s.next
        chunk = s.data[(seq - 1) * 7 : seq * 7]
        if len(chunk) < 7:
            chunk = chunk + b"\xff" * (7 - len(chunk))
        self._emit(can_id(7, TP_DT, self.address, s.destination), bytes((seq,)) + chunk)
        s.next = seq + 1

    def _abort(self, destination, pgn, reason):
        self._cm(destination, bytes((ABORT, reason, 0xFF, 0xFF, 0xFF)) + self._pgn3(pgn))
        self.aborted += 1

    # ------------------------------------------------------------- input

    def poll(self, now_us):
        """Frames in, timers, refused frames out again."""
        self._now = now_us
        q = self._txq
        while q:
            if not self.bus.send(q[0][0], q[0][1], EXT):
                break
            q.pop(0)
        while True:
            f = self.bus.recv()
            if f is None:
                break
            self._frame(f[0], f[1], f[2])
        self._timers(now_us)

    def _frame(self, cid, data, flags):
        if not flags & EXT:
            return
        source = cid & 0xFF
        pf = (cid >> 16) & 0xFF
        if pf < 240:
            destination = (cid >> 8) & 0xFF
            pgn = (cid >> 8) & 0x3FF00
            if destination != self.address and destination != 255:
                return
        else:
            destination = 255
            pgn = (cid >> 8) & 0x3FFFF
        if pgn == TP_DT:
            self._dt(source, destination, data)
        elif pgn == TP_CM:
            self._cmd(source, destination, data)
        elif self.on_message is not None:
            self.on_message(pgn, source, destination, data)

    def _cmd(self, source, destination, d):
        if len(d) < 8:
            return
        c = d[0]
        pgn = d[5] | d[6] << 8 | d[7] << 16
        if c == BAM or c == RTS:
            size = d[1] | d[2] << 8
            packets = d[3]
            if size < 9 or size > 1785 or packets != (size + 6) // 7:
                if c == RTS:
                    self._abort(source, pgn, 3)
                return
            window = 0 if c == BAM else max(1, min(d[4], 255))
            s = _Rx(pgn, size, packets, source, destination, window)
            self._rx[(source, destination)] = s
            if c == BAM:
                s.deadline = self._now + T1_US
            else:
                self._cm(source, bytes((CTS, s.last, 1, 0xFF, 0xFF)) + self._pgn3(pgn))
                s.deadline = self._now + T2_US
        elif c == CTS:
            s = self._tx.get(source)
            if s is None or s.destination == 255:
                return
            n, nxt = d[1], d[2]
            if n == 0:
                s.due = self._now + T3_US  # hold: wait for the next CTS
                return
            s.next = nxt
            s.last = min(s.packets, nxt + n - 1)
            while s.next <= s.last:
                self._send_dt(s)
            s.due = self._now + T3_US
        elif c == EOMA:
            s = self._tx.get(source)
            if s is not None and s.destination != 255:
                del self._tx[source]
                self.sent += 1
        elif c == ABORT:
            if self._tx.pop(source, None) is not None or self._rx.pop((source, destination), None) is not None:
                self.aborted += 1

    def _dt(self, source, destination, d):
        s = self._rx.get((source, destination))
        if s is None or len(d) < 8 or d[0] != s.expect:
            return
        seq = d[0]
        off = (seq - 1) * 7
        n = min(7, s.size - off)
        s.buf[off : off + n] = d[1 : 1 + n]
        s.expect = seq + 1
        if seq == s.packets:
            del self._rx[(source, destination)]
            if s.window:
                self._cm(source, bytes((EOMA, s.size & 0xFF, s.size >> 8, s.packets, 0xFF)) + self._pgn3(s.pgn))
            if self.on_message is not None:
                self.on_message(s.pgn, source, destination, bytes(s.buf))
        elif s.window and seq == s.last:
            s.last = min(s.packets, seq + s.window)
            self._cm(source, bytes((CTS, s.last - seq, seq + 1, 0xFF, 0xFF)) + self._pgn3(s.pgn))
            s.deadline = self._now + T2_US
        else:
            s.deadline = self._now + T1_US

    def _timers(self, now):
        for dst in list(self._tx):
            s = self._tx[dst]
            if dst == 255:
                while s.due <= now and s.next <= s.packets:
                    self._send_dt(s)
                    s.due += BAM_GAP_US
                if s.next > s.packets:
                    del self._tx[dst]
                    self.sent += 1
            elif s.due <= now:
                del self._tx[dst]
                self._abort(dst, s.pgn, 3)
        for key in list(self._rx):
            s = self._rx[key]
            if s.deadline <= now:
                del self._rx[key]
                if s.window:
                    self._abort(s.source, s.pgn, 3)
                else:
                    self.aborted += 1

    def next_deadline(self):
        t = None
        for s in self._tx.values():
            if t is None or s.due < t:
                t = s.due
        for s in self._rx.values():
            if t is None or s.deadline < t:
                t = s.deadline
        return t
