# Engine variants (crates/canx-mpy CANX_J1939_SMALL/FULL): a pair of each
# claims and moves 1785 bytes by RTS/CTS; the small variant's single TP
# session refuses a second transfer with OSError(EBUSY) until the first ends,
# the full one runs four at once. Deterministic clock (1 ms steps).

import _canx_j1939

from canx import j1939
from canx.bus import Loopback

# A board firmware carries one variant (scripts/build-micropython).
if not (_canx_j1939.variant_size(_canx_j1939.SMALL) and _canx_j1939.variant_size(_canx_j1939.FULL)):
    print("SKIP")
    raise SystemExit

now = [0]


def clock():
    return now[0]


def pair(variant):
    bus = Loopback()
    a = j1939.ECU(bus=bus, name=j1939.Name(identity_number=1), address=0x20, clock=clock, variant=variant)
    b = j1939.ECU(bus=bus, name=j1939.Name(identity_number=2), address=0x21, clock=clock, variant=variant)
    a.begin_claim()
    b.begin_claim()
    run(a, b, 300)
    return a, b


def run(a, b, ms):
    for _ in range(ms):
        a.poll()
        b.poll()
        now[0] += 1000


big = bytes((i * 13 + 1) & 0xFF for i in range(1785))
for variant in ("small", "full"):
    a, b = pair(variant)
    got = []
    b.on_pgn(None, lambda m: got.append((m.pgn, len(m.data), m.data == big[: len(m.data)])))
    a.send_pgn(0xEF00, big, priority=7, destination=0x21)
    started, busy = 1, 0
    for i in range(3):
        try:
            a.send_pgn(0xFEC0 + i, big[:100])
            started += 1
        except OSError as ex:
            busy += ex.errno == 16  # MP_EBUSY (errno module of this variant lacks the name)
    run(a, b, 8000)
    print(variant, a.state, b.state, "started", started, "EBUSY", busy)
    print(variant, "got", sorted(got))
    a.send_pgn(0xFEC8, big[:100])
    run(a, b, 1000)
    print(variant, "after", got[-1])

try:
    j1939.ECU(bus=Loopback(), name=1, address=0x20, variant="tiny")
except ValueError as ex:
    print("ValueError", ex)
