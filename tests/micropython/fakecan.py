# Test-only stand-ins for MicroPython CAN drivers, joined by one Wire:
# machine.CAN (v1.28), pyb.CAN (stm32) and rp2.CAN (CANPico firmware),
# with bounded transmit queues and receive FIFOs that overflow. Only the
# calls canx.bus uses are mimicked. Not a test itself (no j1939_ prefix).


class Wire:
    def __init__(self):
        self.nodes = []
        self.frames = 0

    def tick(self, per_node=4):
        # Each node puts up to per_node queued frames on the bus, in order.
        for n in self.nodes:
            for _ in range(per_node):
                if not n.tx:
                    break
                f = n.tx.pop(0)
                self.frames += 1
                for m in self.nodes:
                    if m is not n:
                        m._deliver(f)


class _Node:
    def __init__(self, wire, tx_depth, rx_depth):
        self.tx = []
        self.rx = []
        self.tx_depth = tx_depth
        self.rx_depth = rx_depth
        self.rx_lost = 0
        self.refused = 0
        wire.nodes.append(self)

    def _deliver(self, f):
        if len(self.rx) >= self.rx_depth:
            self.rx_lost += 1
            self._overflow()
        else:
            self.rx.append(f)

    def _overflow(self):
        pass


# --------------------------------------------------------- machine.CAN

class MachineCAN(_Node):
    FLAG_RTR = 1
    FLAG_EXT_ID = 2
    FLAG_UNORDERED = 0x10
    RECV_ERR_FULL = 1
    RECV_ERR_OVERRUN = 2

    def __init__(self, wire, tx_depth=2, rx_depth=64):
        super().__init__(wire, tx_depth, rx_depth)
        self.unordered = 0
        self._err = 0

    def _overflow(self):
        self._err |= self.RECV_ERR_OVERRUN

    def send(self, id, data, flags=0):
        if flags & self.FLAG_UNORDERED:
            self.unordered += 1
        if len(self.tx) >= self.tx_depth:
            self.refused += 1
            return None  # queue full: v1.28 returns None
        self.tx.append((id, bytes(data), flags & 3))
        return len(self.tx) - 1

    def recv(self, lst=None):
        if not self.rx:
            return None
        id, data, flags = self.rx.pop(0)
        if lst is None:
            lst = [0, None, 0, 0]
        lst[0] = id
        lst[1] = memoryview(data)
        lst[2] = flags
        lst[3] = self._err
        self._err = 0
        return lst

    def state(self):
        return 1  # STATE_ACTIVE


# ------------------------------------------------------------- pyb.CAN

class PybCAN(_Node):
    def __init__(self, wire, rx_depth=64):
        super().__init__(wire, 3, rx_depth)  # three mailboxes

    def info(self, lst=None):
        lst = [0] * 8 if lst is None else lst
        lst[5] = len(self.tx)
        return lst

    def send(self, data, id, timeout=0, rtr=False, extframe=False):
        if len(self.tx) >= 3:
            self.refused += 1
            raise OSError(110)  # ETIMEDOUT with timeout=0
        self.tx.append((id, bytes(data), (2 if extframe else 0) | (1 if rtr else 0)))
        self.max_pending = max(getattr(self, "max_pending", 0), len(self.tx))

    def any(self, fifo):
        return bool(self.rx)

    def recv(self, fifo, lst=None, timeout=5000):
        id, data, flags = self.rx.pop(0)
        lst = [0, 0, 0, 0, None] if lst is None else lst
        lst[0] = id
        lst[1] = bool(flags & 2)
        lst[2] = bool(flags & 1)
        lst[3] = 0
        lst[4] = memoryview(data)
        return lst


# ------------------------------------------------------------- rp2.CAN

class CANID:
    def __init__(self, arbitration_id, extended=False):
        self.arbitration_id = arbitration_id
        self.extended = extended


class CANFrame:
    def __init__(self, canid, data=b"", remote=False):
        self._id = canid
        self._data = bytes(data)
        self._remote = remote

    def get_arbitration_id(self):
        return self._id.arbitration_id

    def is_extended(self):
        return self._id.extended

    def is_remote(self):
        return self._remote

    def get_data(self):
        return self._data


class Rp2CAN(_Node):
    def __init__(self, wire, tx_depth=4, rx_depth=64):
        super().__init__(wire, tx_depth, rx_depth)
        self.not_fifo = 0
        self._lost_mark = False

    def _overflow(self):
        self._lost_mark = True

    def _deliver(self, f):
        had = self._lost_mark
        _Node._deliver(self, f)
        if self._lost_mark and not had:
            self.rx.append(None)  # the driver's overflow marker

    def get_send_space(self):
        return self.tx_depth - len(self.tx)

    def send_frame(self, frame, fifo=False):
        if not fifo:
            self.not_fifo += 1
        if len(self.tx) >= self.tx_depth:
            raise ValueError("no room in transmit queue")
        self.tx.append((frame.get_arbitration_id(), frame.get_data(),
                        (2 if frame.is_extended() else 0) | (1 if frame.is_remote() else 0)))

    def recv(self, limit=128):
        out = tuple(None if f is None else CANFrame(CANID(f[0], bool(f[2] & 2)), f[1], bool(f[2] & 1))
                    for f in self.rx[:limit])
        del self.rx[:limit]
        self._lost_mark = False
        return out


class Rp2Module:
    """Stands in for the rp2 module: sys.modules["rp2"] = Rp2Module(...)."""

    CANID = CANID
    CANFrame = CANFrame

    def __init__(self, wire):
        self._wire = wire

    def CAN(self):
        return Rp2CAN(self._wire)
