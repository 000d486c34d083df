# Parity: this script runs unchanged under MicroPython (unix port, frozen
# canx.j1939) and under CPython (the PyO3 canx.j1939); both must print the
# same lines (tests/test_micropython_parity.py diffs them). The bus is the
# CHANNEL line; the rest is the shared API. Waits are bounded loops that
# poll every ECU where the binding has poll() (MicroPython) and just sleep
# where ECUs run on their own threads (CPython).
import time

from canx import j1939

CHANNEL = "virtual:parity"  # the bus line: e.g. "vcan0" on both

if hasattr(time, "sleep_ms"):
    sleep_ms = time.sleep_ms
else:
    def sleep_ms(ms):
        time.sleep(ms / 1000)

ecus = []


def wait_for(cond, seconds):
    for _ in range(int(seconds * 1000)):
        if cond():
            return True
        for e in ecus:
            if hasattr(e, "poll"):
                e.poll()
        sleep_ms(1)
    return cond()


def error(f, *args, **kw):
    try:
        f(*args, **kw)
        return "no error"
    except Exception as ex:
        return "%s: %s" % (type(ex).__name__, ex)


a = j1939.ECU(CHANNEL, name=j1939.Name(identity_number=1, arbitrary_address_capable=1), address=0x80)
b = j1939.ECU(CHANNEL, name=j1939.Name(identity_number=2), address=0x81)
ecus += [a, b]
b.begin_claim()
print("claim", hex(a.claim_address()), a.state)
print("b", wait_for(lambda: b.state == "claimed", 2.0), hex(b.address))

# Contention: a lower NAME takes 0x80; a (arbitrary address capable) moves.
c = j1939.ECU(CHANNEL, name=j1939.Name(identity_number=0), address=0x80)
ecus.append(c)
print("c", hex(c.claim_address()))
print("a moved", wait_for(lambda: a.state == "claimed" and a.address != 0x80, 2.0), hex(a.address))

# Request and response.
b.set_response(j1939.PGN_VEHICLE_IDENTIFICATION, b"1M8GDM9AXKP042788*")
b.on_request(j1939.PGN_ET1, lambda req: j1939.encode_et1(90, 30))
m = a.request_pgn(j1939.PGN_VEHICLE_IDENTIFICATION, destination=0x81)
print("vin", m.pgn, m.source, m.destination, m.priority, m.data)
m = a.request_pgn(j1939.PGN_ET1, destination=0x81)
print("et1", m.pgn, m.source, m.data, j1939.decode_et1(m.data))
b.on_request(65100, lambda req: None)
print("on_request None:", error(a.request_pgn, 65100, destination=0x81))
print("unregistered:", error(a.request_pgn, j1939.PGN_EEC1, destination=0x81))
print("nobody:", error(a.request_pgn, j1939.PGN_EEC1, destination=0x55))
print("nobody:", error(a.request_pgn, j1939.PGN_EEC1, destination=0x55, timeout=0.5))

# BAM and RTS/CTS of 1785 bytes, DM1, EEC1.
got = []
b.on_pgn(0xFF10, lambda m: got.append(("bam", m.source, m.destination, len(m.data), sum(m.data))))
b.on_pgn(0xEF00, lambda m: got.append(("rts/cts", m.source, m.destination, m.priority, len(m.data), sum(m.data))))
b.on_pgn(j1939.PGN_DM1, lambda m: got.append(("dm1", len(m.data), j1939.decode_dm(m.data))))
b.on_pgn(j1939.PGN_EEC1, lambda m: got.append(("eec1", m.priority, j1939.decode_eec1(m.data))))
big = bytes((i * 7 + 3) & 0xFF for i in range(1785))
a.send_pgn(0xEF00, big, priority=7, destination=0x81)
print("rts/cts done", wait_for(lambda: len(got) == 1, 10.0))
a.send_pgn(0xFF10, big)
print("bam done", wait_for(lambda: len(got) == 2, 20.0))
a.send_dm1([(100, 1, 2)], amber_warning=1)
print("dm1 done", wait_for(lambda: len(got) == 3, 2.0))
a.send_dm1([(100, 1, 2), (190, 3, 1)], red_stop=1)
print("dm1 bam done", wait_for(lambda: len(got) == 4, 2.0))
a.send_engine_speed(1800.5)
print("eec1 done", wait_for(lambda: len(got) == 5, 2.0))
for g in got:
    print(*g)
print("expected sum", sum(big))

# API errors.
print(error(a.send_pgn, 0xFF00, b""))
print(error(a.send_pgn, 0xFF00, bytes(1786)).split(":")[0])  # texts differ: no ETP on MicroPython
print(error(a.send_pgn, 0xFF00, b"x", priority=8))
print(error(a.send_pgn, 0xFF00, b"x", destination=0xFE))
print(error(a.send_engine_speed, 9000))
print(error(a.send_dm1, [(1 << 19, 0, 0)]))
print(error(a.send_dm1, (), amber_warning=4))
print(error(a.set_response, 65260, b""))
print(error(j1939.Name, 1 << 64))
print(error(j1939.ECU, CHANNEL, name=3, address=254))
print(error(j1939.encode_eec1, -1))
print(error(j1939.encode_et1, 300))
d = j1939.ECU(CHANNEL, name=j1939.Name(identity_number=4), address=0x90)
print(error(d.send_pgn, 0xFF00, b"x"))
print(error(d.request_pgn, 65260, destination=0x81))
for e in (a, b, c, d):
    e.close()
print("end")
