# Two MicroPython ECUs on vcan0 through canx.bus.SocketCAN (raw sockets):
# claim, RTS/CTS of 1,785 bytes and a VIN request. Needs vcan0: run in the
# test VM (docs/micropython.md), not by run-tests.py (no .exp; the name
# does not match the CI glob tests/micropython/j1939_*.py).
from canx import j1939
from canx.bus import SocketCAN

a = j1939.ECU(bus=SocketCAN("vcan0"), name=j1939.Name(identity_number=1), address=0x20)
b = j1939.ECU(bus=SocketCAN("vcan0"), name=j1939.Name(identity_number=2), address=0x21)


def other(ecu):
    import time

    def idle():
        ecu.poll()
        time.sleep_ms(1)

    return idle


a.idle = other(b)
b.idle = other(a)
b.begin_claim()
print("claim", a.claim_address(), b.claim_address())
got = []
b.on_pgn(0xEF00, lambda m: got.append((m.source, len(m.data), sum(m.data) & 0xFFFF)))
big = bytes((i * 7 + 3) & 0xFF for i in range(1785))
a.send_pgn(0xEF00, big, priority=7, destination=0x21)
for _ in range(3000):
    if got:
        break
    a.idle()
    a.poll()
print("rts/cts", got, sum(big) & 0xFFFF)
b.set_response(65260, b"1M8GDM9AXKP042788*")
print("vin", a.request_pgn(65260, destination=0x21).data)
