# C stack high-water mark of a 1,785-byte RTS/CTS transfer between two ECUs
# on one Loopback bus, on a ports/qemu board built with
# -DCANX_MPY_STACK_PROBE=1 (scripts/build-micropython qemu-m3|qemu-m0).
# _stack_paint() fills the free stack below its frame with a pattern;
# _stack_used() returns how deep the stack went since (bytes below the
# stack top that main() recorded). scripts/test-micropython --boards runs it
# and checks the budget of docs/boards.md. Prints "stack BASE IDLE PEAK N":
# in use at the paint, the peak of the same loop with nothing to send, the
# peak during the transfer, the bytes received.
import _canx_j1939 as _n

from canx import j1939
from canx.bus import Loopback

now = [0]


def clock():
    return now[0]


bus = Loopback()
a = j1939.ECU(bus=bus, name=j1939.Name(identity_number=10), address=0x80, clock=clock)
b = j1939.ECU(bus=bus, name=j1939.Name(identity_number=20), address=0xF9, clock=clock)


def step():
    a.poll()
    b.poll()
    now[0] += 1000


a.begin_claim()
b.begin_claim()
for _ in range(300):
    step()
got = []
b.on_pgn(None, lambda m: got.append(len(m.data)))
big = bytes((i * 7 + 3) & 0xFF for i in range(1785))
_n._stack_paint()
for _ in range(100):
    step()
idle = _n._stack_used()
base = _n._stack_paint()
a.send_pgn(0xEF00, big, destination=0xF9)
for _ in range(8000):
    step()
    if got:
        break
peak = _n._stack_used()
print("stack", base, idle, peak, got[0] if got else 0)
