# send_pgn returns a Transfer, as CPython canx returns a Future: a single
# frame is done at once; RTS/CTS and BAM end with their size when the
# engine reports them sent; RTS/CTS to nobody ends aborted (T3, reason 3).
# Deterministic clock: 1 ms per idle step.
from canx import j1939
from canx.bus import Loopback

now = [0]


def clock():
    return now[0]


bus = Loopback()
a = j1939.ECU(bus=bus, name=j1939.Name(identity_number=1), address=0x20, clock=clock)
b = j1939.ECU(bus=bus, name=j1939.Name(identity_number=2), address=0x21, clock=clock)


def step():
    now[0] += 1000


a.idle = step
b.idle = step
print("claim", a.claim_address(), b.claim_address())
got = []
b.on_pgn(0xEF00, lambda m: got.append(len(m.data)))

t = a.send_pgn(0xFF00, b"\x01\x02\x03")
print("single", t.done(), t.result())

big = bytes(i & 0xFF for i in range(1785))
t = a.send_pgn(0xEF00, big, destination=0x21)
print("rts/cts pending", t.done())
print("rts/cts", t.result(timeout=5), got)

t = a.send_pgn(0xFF10, big[:100])  # BAM to all
print("bam", t.result(timeout=5))

t = a.send_pgn(0xEF00, big[:50], destination=0x55)  # nobody at 0x55
try:
    t.result(timeout=5)
except j1939.TransferAbortedError as e:
    print("aborted", e.reason, a.aborts[-1][:4])

t = a.send_pgn(0xEF00, big[:50], destination=0x56)
try:
    t.result(timeout=0.1)
except j1939.RequestTimeoutError:
    print("timeout", t.done())
