# Two ECUs on one Loopback bus: claim, contention, request/response,
# BAM and RTS/CTS of 1785 bytes, DM1, API errors, gc.collect() in callbacks.
# Deterministic: every poll gets an explicit time (1 ms steps).
# Runs under MicroPython (canx.j1939 frozen in) with an .exp file.
import gc

from canx import j1939
from canx.bus import Loopback

now = [0]


def clock():
    return now[0]


bus = Loopback()
engine = j1939.ECU(bus=bus, name=j1939.Name(identity_number=10, arbitrary_address_capable=1), address=0x00, clock=clock)
tool = j1939.ECU(bus=bus, name=j1939.Name(identity_number=20), address=0xF9, clock=clock)


def step():
    engine.poll()
    tool.poll()
    engine.poll()
    now[0] += 1000


def run(ms):
    for _ in range(ms):
        step()


# While one ECU waits (claim_address, request_pgn), the other runs and
# simulated time advances.
def other(ecu):
    def idle():
        ecu.poll()
        now[0] += 1000

    return idle


engine.idle = other(tool)
tool.idle = other(engine)

tool.begin_claim()
print("claim", engine.claim_address(), engine.state)
run(5)
print("tool", tool.address, tool.state)

# Contention: a lower NAME takes 0x00; engine (arbitrary address capable)
# moves to another address.
rival = j1939.ECU(bus=bus, name=j1939.Name(identity_number=5), address=0x00, clock=clock)
rival.begin_claim()
for _ in range(400):
    rival.poll()
    step()
print("contention", rival.address, engine.address, engine.state)
# The rival leaves the bus: nobody would drain its queue (up to 4096 frames
# piling up fragment the 140 KiB heap of the qemu boards).
bus._queues = [q for q in bus._queues if q is not rival._bus._q]
del rival

got = []


def on_msg(m):
    gc.collect()
    got.append((m.pgn, m.source, m.destination, m.priority, len(m.data), sum(m.data) & 0xFFFF))


tool.on_pgn(None, on_msg)
engine.send_pgn(0xFF00, b"\x01\x02\x03", priority=6)
big = bytes((i * 7 + 3) & 0xFF for i in range(1785))
engine.send_pgn(0xFF10, big[:100])
engine.send_pgn(0xEF00, big, priority=7, destination=0xF9)
run(8000)
for g in got:
    print("got", g)
print("full payload", [g for g in got if g[0] == 0xEF00][0][5] == sum(big) & 0xFFFF)

# DM1 with two DTCs goes by BAM.
got.clear()
engine.send_dm1([(100, 1, 2), (190, 3, 1)], amber_warning=1)
run(300)
print("dm1", got)

# Request/response: tool asks engine for the VIN (set_response) and for a
# PGN answered by a handler (on_request).
engine.set_response(65260, b"1M8GDM9AXKP042788*")


def on_et1(req):
    gc.collect()
    return bytes([130, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])


engine.on_request(65262, on_et1)
ea = engine.address
m = tool.request_pgn(65260, destination=ea)
print("vin", m.pgn, m.source, m.data)
m = tool.request_pgn(65262, destination=ea)
print("et1", m.pgn, m.data[0] - 40)
try:
    tool.request_pgn(61444, destination=ea)
except j1939.RequestRejectedError:
    print("RequestRejectedError")
try:
    tool.request_pgn(61444, destination=0x33, timeout=1.5)
except j1939.RequestTimeoutError:
    print("RequestTimeoutError")
engine.send_engine_speed(1800)
run(5)
print("eec1", got[-1][0], got[-1][3])

# A full transmit queue: the adapter refuses 3 sends; frames are kept and
# sent in order later.
got.clear()
engine._bus.refuse = 3
for i in range(5):
    engine.send_pgn(0xFF00 + i, bytes([i]))
run(5)
print("order", [g[0] - 0xFF00 for g in got])
print("dropped", engine.dropped, tool.dropped, engine.callback_errors, tool.callback_errors)

# API errors.
for f in (
    lambda: engine.send_pgn(0xFF00, b"x", priority=8),
    lambda: engine.send_pgn(0xEF00, bytes(1786), destination=0xF9),
    lambda: engine.send_pgn(0xFF00, b"x", destination=254),
    lambda: j1939.ECU(bus=bus, name=1, address=254),
    lambda: j1939.Name(identity_number=1 << 21),
    lambda: engine.send_engine_speed(9000),
):
    try:
        f()
        print("no error")
    except Exception as ex:
        print(type(ex).__name__)

late = j1939.ECU(bus=Loopback(), name=3, address=0x10)
try:
    late.send_pgn(0xFF00, b"x")
except j1939.AddressClaimError as ex:
    print("AddressClaimError")
