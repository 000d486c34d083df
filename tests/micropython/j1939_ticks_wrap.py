# The tick counter wraps (time.ticks_us wraps at 2**30 us on MicroPython
# ports): a claim, a request timeout and an RTS/CTS transfer of 1785 bytes
# each span the wrap. Deterministic: a fake counter wrapping at 2**30 and
# its own ticks_diff; j1939.Ticks64 extends it to 64 bits.
from canx import j1939
from canx.bus import Loopback

PERIOD = 1 << 30
raw = [PERIOD - 150000]  # 150 ms before the wrap


def ticks():
    return raw[0] % PERIOD


def diff(a, b):
    return ((a - b + PERIOD // 2) % PERIOD) - PERIOD // 2


clock = j1939.Ticks64(ticks, diff)
bus = Loopback()
a = j1939.ECU(bus=bus, name=j1939.Name(identity_number=1), address=0x10, clock=clock)
b = j1939.ECU(bus=bus, name=j1939.Name(identity_number=2), address=0x20, clock=clock)
wraps = []


def advance():
    before = ticks()
    raw[0] += 1000
    if ticks() < before:
        wraps.append(clock())


def skip_to(target):
    # Idle time: forward steps under half a period, each read by the clock
    # (as polls every few minutes would).
    while raw[0] < target:
        raw[0] = min(target, raw[0] + PERIOD // 4)
        clock()


def other(ecu):
    def idle():
        ecu.poll()
        advance()

    return idle


a.idle = other(b)
b.idle = other(a)
t0 = clock()
b.begin_claim()
print("claim", hex(a.claim_address()), a.state)
b.poll()
print("b", hex(b.address), b.state)
print("claim took ms", (clock() - t0) // 1000, "wraps", len(wraps))

# Request timeout across the next wrap (1.25 s + 0.5 s default wait).
skip_to(2 * PERIOD - 800000)
wraps.clear()
t0 = clock()
try:
    a.request_pgn(65260, destination=0x33)
except j1939.RequestTimeoutError:
    print("RequestTimeoutError after ms", (clock() - t0) // 1000, "wraps", len(wraps))

# RTS/CTS of 1785 bytes across the third wrap.
skip_to(3 * PERIOD - 2000)
wraps.clear()
got = []
b.on_pgn(0xEF00, lambda m: got.append((len(m.data), sum(m.data) & 0xFFFF, clock())))
big = bytes((i * 7 + 3) & 0xFF for i in range(1785))
t0 = clock()
a.send_pgn(0xEF00, big, destination=0x20)
for _ in range(3000):
    a.poll()
    b.poll()
    advance()
    if got:
        break
print("rts/cts", got[0][0], got[0][1] == sum(big) & 0xFFFF, "wraps", len(wraps), "aborts", a.aborts, b.aborts)
print("transfer ms", (got[0][2] - t0) // 1000)
print("clock ms", clock() // 1000, "raw ticks", ticks())
