# Errors and memory: on_request handlers returning None (NACK, as CPython
# canx) or raising (Cannot Respond), callbacks raising (counted, printed,
# the ECU keeps running), MemoryError in a callback, gc.collect() in
# callbacks, polls under micropython.heap_lock() (nothing lost: the glue
# keeps what it could not hand over), and API errors.
import gc
import io

import micropython
from canx import j1939
from canx.bus import Loopback

now = [0]


def clock():
    return now[0]


bus = Loopback()
a = j1939.ECU(bus=bus, name=j1939.Name(identity_number=1), address=0x10, clock=clock)
b = j1939.ECU(bus=bus, name=j1939.Name(identity_number=2), address=0x20, clock=clock)


def step():
    a.poll()
    b.poll()
    now[0] += 1000


def other(ecu):
    def idle():
        ecu.poll()
        now[0] += 1000

    return idle


a.idle = other(b)
b.idle = other(a)
b.begin_claim()
a.claim_address()
step()
print("claimed", hex(a.address), hex(b.address))

# on_request: None NACKs a specific request; a global one gets nothing.
b.on_request(65262, lambda req: None)
try:
    a.request_pgn(65262, destination=0x20)
except j1939.RequestRejectedError as ex:
    print("None:", type(ex).__name__, ex)
try:
    a.request_pgn(65262)
except j1939.RequestTimeoutError as ex:
    print("None, global:", type(ex).__name__)


def bad(req):
    raise ValueError("sensor not ready")


b.error_file = None
b.on_request(65262, bad)
try:
    a.request_pgn(65262, destination=0x20)
except j1939.RequestRejectedError as ex:
    print("raising:", type(ex).__name__, ex)
print("callback_errors", b.callback_errors, repr(b.last_callback_error))

# A callback that raises is printed (sys.print_exception) and counted.
b.error_file = io.StringIO()
got = []


def on_msg(m):
    got.append(m.data[0])
    gc.collect()
    if m.data[0] == 1:
        raise KeyError(1)
    if m.data[0] == 2:
        raise MemoryError


b.on_pgn(0xFF00, on_msg)
for i in range(4):
    a.send_pgn(0xFF00, bytes([i]))
    step()
print("got", got, "stats", sorted(b.stats().items()))
for line in b.error_file.getvalue().split("\n"):
    if not line.startswith("  File"):  # line numbers: not in the .exp
        print("printed:", line)

# heap_lock around polls: nothing can be allocated; frames and events wait.
b.error_file = None
got.clear()
b.on_pgn(0xFF10, lambda m: got.append((len(m.data), sum(m.data))))
for i in range(3):
    a.send_pgn(0xFF00, bytes([10 + i]))
a.send_pgn(0xFF10, bytes(range(100)))  # BAM: the engine's timers run under the lock
for _ in range(5):
    micropython.heap_lock()
    try:
        a.poll()
        b.poll()
    finally:
        micropython.heap_unlock()
    now[0] += 1000
locked = (a.stats()["pump_errors"], sorted(b.stats().items()))
for _ in range(2000):
    step()
print("under heap_lock", locked)
print("after", got, "stats", sorted(b.stats().items()))

# API errors.
for f, args in (
    (a.send_pgn, (0xFF00, b"")),
    (a.send_pgn, (0xFF00, bytes(1786))),
    (a.send_pgn, (0xFF00, b"x", 8)),
    (a.send_engine_speed, (9000,)),
    (a.send_dm1, ([(1 << 19, 0, 0)],)),
    (a.set_response, (65260, b"")),
    (j1939.Name, (1 << 64,)),
):
    try:
        f(*args)
        print("no error")
    except Exception as ex:
        print(type(ex).__name__, ex)
try:
    j1939.ECU(bus=bus, name=3, address=254)
except ValueError as ex:
    print("ValueError", ex)
c = j1939.ECU(bus=bus, name=j1939.Name(identity_number=3), address=0x30, clock=clock)
try:
    c.send_pgn(0xFF00, b"x")
except j1939.AddressClaimError as ex:
    print("AddressClaimError", ex)

# The glue builds message events as J1939Message objects (message_type):
# only a Python class without bases; None: event tuples again (dispatched
# by the Python layer alike).
class Based(j1939.J1939Message):
    pass


for cls in (int, Based, 5):
    try:
        c._e.message_type(cls)
        print("no error")
    except TypeError as ex:
        print("TypeError", ex)
got.clear()
b.on_pgn(0xFF20, lambda m: got.append(repr(m)))
a.send_pgn(0xFF20, b"\x01\x02", priority=5)
for _ in range(3):
    step()
b._e.message_type(None)
a.send_pgn(0xFF20, b"\x03")
for _ in range(3):
    step()
b._e.message_type(j1939.J1939Message)
print("messages", got)

# The glue's dispatch() calls the callbacks of message events from C: a
# raising callback is counted and printed and the next one still runs; a
# callback that polls its own ECU again (a nested feed) and on_pgn(None)
# from a callback (the all-PGN table read per message); poll() counts
# the events of its own feed; KeyboardInterrupt is not a callback error.
b.error_file = None
got.clear()
errors = b.callback_errors


def first(m):
    got.append(("first", m.data[0]))
    raise ValueError(m.data[0])


def nested(m):
    got.append(("nested", m.data[0], b.poll()))
    if m.data[0] == 1:
        b.on_pgn(None, lambda m: got.append(("any", m.pgn, m.data[0])))


b.on_pgn(0xFF30, first)
b.on_pgn(0xFF30, nested)
for i in range(3):
    a.send_pgn(0xFF30, bytes([i]))
a.send_pgn(0xFF31, b"\x07")
a.poll()
print("polled", b.poll())
print("dispatch", got, b.callback_errors - errors)


def stop(m):
    raise KeyboardInterrupt


got.clear()
b.on_pgn(0xFF32, stop)
a.send_pgn(0xFF32, b"\x01")
a.send_pgn(0xFF30, b"\x09")
a.poll()
try:
    b.poll()
except KeyboardInterrupt:
    print("KeyboardInterrupt")
print("after", b.poll(), got)
