# canx.bus.MachineCAN, PybCAN and CANPico on fake drivers (fakecan.py):
# three ECUs on one wire claim, send RTS/CTS and BAM of 1785 bytes through
# transmit queues of 2..4 frames (full queues: frames kept, in order, never
# FLAG_UNORDERED), then a receive FIFO overflows and is counted.
import sys

try:
    import fakecan
except ImportError:  # on a board: the fake drivers are not on the device
    print("SKIP")
    raise SystemExit
from canx import bus as cbus
from canx import j1939

now = [0]


def clock():
    return now[0]


wire = fakecan.Wire()
mcan = fakecan.MachineCAN(wire, tx_depth=2)
pcan = fakecan.PybCAN(wire)
sys.modules["rp2"] = fakecan.Rp2Module(wire)  # CANPico() makes rp2.CAN()
pico_bus = cbus.CANPico()
pico_can = pico_bus._can
pico_can.rx_depth = 300

m_bus = cbus.MachineCAN(mcan)
ecus = [
    j1939.ECU(bus=m_bus, name=j1939.Name(identity_number=1), address=0x10, clock=clock),
    j1939.ECU(bus=cbus.PybCAN(pcan), name=j1939.Name(identity_number=2), address=0x20, clock=clock),
    j1939.ECU(bus=pico_bus, name=j1939.Name(identity_number=3), address=0x30, clock=clock),
]
ma, py, pico = ecus


def step(ticks=1):
    for e in ecus:
        e.poll()
    wire.tick(ticks)
    now[0] += 1000


for e in ecus:
    e.begin_claim()
for _ in range(400):
    step()
print("claimed", [(hex(e.address), e.state) for e in ecus])

got = {e.address: [] for e in ecus}
for e in ecus:
    e.on_pgn(None, lambda m, a=e.address: got[a].append((m.pgn, m.source, len(m.data), sum(m.data) & 0xFFFF)))
big = bytes((i * 7 + 3) & 0xFF for i in range(1785))
ma.send_pgn(0xEF00, big, destination=0x20)  # RTS/CTS through machine.CAN
py.send_pgn(0xFF10, big)  # BAM through pyb.CAN
for _ in range(14000):  # BAM: 255 packets at >= 50 ms
    step()
pico.send_pgn(0xEF00, big[:300], destination=0x10)  # RTS/CTS through CANPico
for _ in range(1000):
    step()
want = sum(big) & 0xFFFF
print("py got rts/cts", [g for g in got[0x20] if g[0] == 0xEF00] == [(0xEF00, 0x10, 1785, want)])
print("ma got bam", [g for g in got[0x10] if g[0] == 0xFF10] == [(0xFF10, 0x20, 1785, want)])
print("pico got bam", [g for g in got[0x30] if g[0] == 0xFF10] == [(0xFF10, 0x20, 1785, want)])
print("ma got rts/cts", [g for g in got[0x10] if g[0] == 0xEF00] == [(0xEF00, 0x30, 300, sum(big[:300]) & 0xFFFF)])
print("machine.CAN refused some", mcan.refused > 0, "unordered flags", mcan.unordered)
print("pyb.CAN frames in flight at most", pcan.max_pending, "CANPico not fifo", pico_can.not_fifo)
print("aborts", [e.aborts for e in ecus], "dropped", [e.dropped for e in ecus])
print("recv list reused", m_bus.recv() is None and mcan.recv(m_bus._rx) is None)

# Receive overflow: pico does not poll while 40 frames arrive in a FIFO of 16.
pico_can.rx_depth = 16
for k in got:
    got[k] = []
for i in range(40):
    ma.send_pgn(0xFF00, bytes([i]))
    for _ in range(3):
        ma.poll()
        wire.tick()
for _ in range(10):
    step()
print("pico overruns", pico_bus.rx_overruns, "lost", pico_can.rx_lost, "got", len(got[0x30]))
# py polls once after the burst of 40: events are taken per frame, none
# dropped by the engine's event queue.
print("py got all", [g[2:] for g in got[0x20]] == [(1, i) for i in range(40)], "dropped", py.dropped)

# The same with machine.CAN receiving: its errors field is counted.
mcan.rx_depth = 8
for i in range(20):
    pico.send_pgn(0xFF01, bytes([i]))
    for _ in range(8):
        pico.poll()
        wire.tick()
for _ in range(10):
    step()
print("machine.CAN overruns", m_bus.rx_overruns, "lost", mcan.rx_lost)
