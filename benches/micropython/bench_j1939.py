# MicroPython side of benches/micropython_j1939.py (which prepends
# pure_j1939.py and the parameters, and runs the result on the unix port or
# a qemu board). canx's j1939.ECU (native engine) vs PureJ1939 (pure
# MicroPython), both on the same in-memory bus, in one run:
#  (i)  frames/s one receiving node handles: a stream of EEC1 single frames
#       (on_pgn callback counts them) and a stream of 1785-byte BAMs
#       (TP.CM + 255 TP.DT, reassembled, callback per message), fed 8 frames
#       per poll;
#  (ii) wall time of one 1785-byte RTS/CTS transfer and one 1785-byte BAM
#       between two nodes (send until the receiver's callback has it and the
#       bus is quiet). Bus timing (50 ms BAM gaps, CTS delays, timeouts) runs
#       on a simulated clock that jumps to the next timer of either node, so
#       the wall time is the processing time of the ~260 frames, not waits.
# Times by time.ticks_us; REPS interleaved repetitions, the median (and the
# minimum, least disturbed by other processes) printed as
# "RESULT <test> <impl> <median_us> <unit_count> <min_us>".
import gc
import time

try:
    REPS
except NameError:
    REPS = 5
try:
    N_FRAMES
except NameError:
    N_FRAMES = 2000
try:
    N_BAMS
except NameError:
    N_BAMS = 8

try:
    from canx import j1939

    HAVE_CANX = True
except ImportError:
    HAVE_CANX = False


class BenchBus:
    """Loopback as canx.bus.Loopback: each endpoint's frames reach every
    other endpoint (a list per endpoint)."""

    def __init__(self):
        self.queues = []

    def endpoint(self):
        q = []
        self.queues.append(q)
        return _End(self, q)

    def pending(self):
        for q in self.queues:
            if q:
                return True
        return False


class _End:
    def __init__(self, bus, q):
        self.bus = bus
        self.q = q

    def send(self, can_id, data, flags):
        for q in self.bus.queues:
            if q is not self.q:
                q.append((can_id, data, flags))
        return True

    def recv(self):
        if self.q:
            return self.q.pop(0)
        return None


clk = [0]


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


class Node:
    """One implementation behind a common face: poll(now), next(), send()."""

    def __init__(self, impl, bus, address, name_id, on_message):
        self.impl = impl
        ep = bus.endpoint()
        self.q = ep.q
        if impl == "pure":
            p = PureJ1939(ep, address)
            p.on_message = on_message
            self.poll = p.poll
            self.next = p.next_deadline
            self.send = lambda pgn, data, dst: p.send(pgn, data, 7, dst)
            self.ready = lambda: True
            self.close = lambda: None
        else:
            kw = {} if impl == "canx" else {"variant": impl[5:]}
            e = j1939.ECU(bus=ep, name=j1939.Name(identity_number=name_id), address=address, clock=lambda: clk[0], **kw)
            e.on_pgn(None, lambda m: on_message(m.pgn, m.source, m.destination, m.data))
            e.begin_claim(clk[0])
            self.poll = e.poll
            self.next = e._e.poll_timeout
            self.send = lambda pgn, data, dst: e.send_pgn(pgn, data, 7, dst)
            self.ready = lambda: e.state == "claimed"
            # Closed after each run: an open ECU stays registered (blocking
            # calls poll every open ECU), and a 140 KiB board heap holds
            # only a few 16 KiB engines.
            self.close = e.close


def run(bus, nodes, done, limit_us=60000000):
    end = clk[0] + limit_us
    while True:
        for n in nodes:
            n.poll(clk[0])
        if bus.pending():
            continue
        if done():
            return
        t = None
        for n in nodes:
            d = n.next()
            if d is not None and d > clk[0] and (t is None or d < t):
                t = d
        clk[0] = clk[0] + 1000 if t is None else t
        if clk[0] > end:
            raise RuntimeError("bench: no progress")


def eec1_frames(n):
    out = []
    for i in range(n):
        rpm = (i * 8) & 0xFFFF
        out.append((0x0CF00400, bytes((0xF0, 0x7D, 0x7D, rpm & 0xFF, rpm >> 8, 0, 0xF0, 0x7D)), 2))
    return out


def bam_frames(source, pgn, data):
    n = len(data)
    packets = (n + 6) // 7
    cm = (7 << 26) | (0xECFF << 8) | source
    dt = (7 << 26) | (0xEBFF << 8) | source
    out = [(cm, bytes((32, n & 0xFF, n >> 8, packets, 0xFF, pgn & 0xFF, (pgn >> 8) & 0xFF, pgn >> 16)), 2)]
    for s in range(1, packets + 1):
        chunk = data[(s - 1) * 7 : s * 7]
        out.append((dt, bytes((s,)) + chunk + b"\xff" * (7 - len(chunk)), 2))
    return out


PAYLOAD = bytes((i * 7 + 3) & 0xFF for i in range(1785))


def pair(impl):
    bus = BenchBus()
    # [count, last (pgn, src, len, intact)]: no list grows with the
    # stream (a growing list failed to allocate on a 140 KiB board heap).
    got = [0, None]

    def on_a(pgn, src, dst, data):
        pass

    def on_b(pgn, src, dst, data):
        got[0] += 1
        got[1] = (pgn, src, len(data), data == PAYLOAD)

    a = Node(impl, bus, 0x20, 1, on_a)
    b = Node(impl, bus, 0x21, 2, on_b)
    run(bus, (a, b), lambda: a.ready() and b.ready())
    return bus, a, b, got


def feed_stream(impl, frames, repeat, batch, expect):
    """`frames` fed `repeat` times, `batch` frames per poll (one list, reused,
    so a small board heap holds it)."""
    bus, a, b, got = pair(impl)
    got[0] = 0
    gc.collect()
    q = b.q
    n = len(frames)
    t0 = time.ticks_us()
    for _ in range(repeat):
        i = 0
        while i < n:
            q.extend(frames[i : i + batch])
            i += batch
            b.poll(clk[0])
            clk[0] += 1000
    b.poll(clk[0])
    dt = time.ticks_diff(time.ticks_us(), t0)
    del a.q[:]
    a.close()
    b.close()
    if got[0] != expect:
        raise RuntimeError("%s: %d of %d messages" % (impl, got[0], expect))
    return dt


def transfer(impl, dst):
    bus, a, b, got = pair(impl)
    got[0] = 0
    gc.collect()
    c0 = clk[0]
    t0 = time.ticks_us()
    a.send(0xEF00 if dst != 255 else 0xFECA, PAYLOAD, dst)
    run(bus, (a, b), lambda: got[0] > 0)
    dt = time.ticks_diff(time.ticks_us(), t0)
    a.close()
    b.close()
    if got != [1, (0xEF00 if dst != 255 else 0xFECA, 0x20, 1785, True)]:
        raise RuntimeError("%s: got %r" % (impl, got))
    return dt, clk[0] - c0


impls = ["pure"]
if HAVE_CANX:
    try:
        j1939.ECU(bus=BenchBus().endpoint(), name=1, address=0x10, variant="small").close()
        impls = ["canx-full", "canx-small", "pure"]
    except TypeError:  # a firmware from before the variants: its one engine
        impls = ["canx", "pure"]
    except ValueError:  # a board firmware: the full engine only
        impls = ["canx-full", "pure"]
print("IMPLS", " ".join(impls))
N_FRAMES -= N_FRAMES % 64
eec1 = eec1_frames(64)
bam = bam_frames(0x30, 0xFECA, PAYLOAD)
# Interleaved: every repetition runs each test for each implementation in
# turn, so load from other processes hits all columns alike.
tests = (
    ("eec1_stream", N_FRAMES, lambda impl: feed_stream(impl, eec1, N_FRAMES // 64, 8, N_FRAMES)),
    ("bam_stream", N_BAMS * len(bam), lambda impl: feed_stream(impl, bam, N_BAMS, 8, N_BAMS)),
    ("rts_cts_1785", 1, lambda impl: transfer(impl, 0x21)),
    ("bam_1785", 1, lambda impl: transfer(impl, 255)),
)
times = {}
sim = {}
for rep in range(REPS):
    for name, count, f in tests:
        for impl in impls:
            r = f(impl)
            if isinstance(r, tuple):
                sim[(name, impl)] = r[1]
                r = r[0]
            times.setdefault((name, impl), []).append(r)
for name, count, f in tests:
    for impl in impls:
        ts = times[(name, impl)]
        print("RESULT", name, impl, median(ts), count, min(ts))
        if (name, impl) in sim:
            print("SIMTIME", name, impl, sim[(name, impl)])
print("DONE")
