# The MicroPython ECU side of tests/test_micropython_kernel.py (run in the
# test VM against kernel J1939 sockets and j1939acd on vcan0; no .exp: the
# name does not match run-tests.py's glob tests/micropython/j1939_*.py).
# Usage: micropython vm_kernel_peer.py MODE ADDRESS IDENT AAC PEER SECONDS
#   claim: claim ADDRESS, print "state S address 0xNN", defend it until
#          SECONDS have passed, print the state again
#   serve: claim, answer Requests for VIN (set_response) and ET1 (on_request),
#          receive one PGN 0xEF00 message, send 1,785 bytes to PEER by RTS/CTS
# Every line it prints is a result the test parses; any failure or timeout
# exits non-zero.
import sys
import time

from canx import j1939
from canx.bus import SocketCAN

mode = sys.argv[1]
address = int(sys.argv[2], 0)
ident = int(sys.argv[3], 0)
aac = int(sys.argv[4])
peer = int(sys.argv[5], 0)
seconds = float(sys.argv[6])
t_end = time.ticks_add(time.ticks_ms(), int(seconds * 1000))


def left():
    return time.ticks_diff(t_end, time.ticks_ms()) > 0


def addr():
    try:
        a = ecu.address
    except Exception:  # noqa: BLE001 - no address (Cannot Claim)
        a = None
    return 0xFE if a is None else a


def checksum(b):
    return sum(b) & 0xFFFF


ecu = j1939.ECU(bus=SocketCAN("vcan0"),
                name=j1939.Name(identity_number=ident, manufacturer_code=0x3FF, arbitrary_address_capable=aac),
                address=address)

if mode == "claim":
    try:
        ecu.claim_address(timeout=seconds)
    except j1939.AddressClaimError:
        pass
    print("state", ecu.state, "address 0x%02X" % addr())
    # Keep defending the address (answering claims) until the deadline;
    # then the state again (a later contender may have moved us).
    while left():
        ecu.poll()
        time.sleep_ms(1)
    print("state", ecu.state, "address 0x%02X" % addr())
    sys.exit(0)

if mode == "serve":
    ecu.claim_address(timeout=seconds)
    print("claimed 0x%02X" % ecu.address)
    ecu.set_response(65260, b"1M8GDM9AXKP042788*")
    ecu.on_request(65262, lambda req: bytes([0x82, 0x80]) + b"\xff" * 6)
    got = []
    ecu.on_pgn(0xEF00, lambda m: got.append(m))
    print("ready")
    while not got and left():
        ecu.poll()
        time.sleep_ms(1)
    if not got:
        print("timeout waiting for the kernel's message")
        sys.exit(2)
    m = got[0]
    print("received source 0x%02X len %d checksum %d" % (m.source, len(m.data), checksum(m.data)))
    big = bytes((i * 11 + 5) & 0xFF for i in range(1785))
    t0 = time.ticks_ms()
    ecu.send_pgn(0xEF00, big, priority=7, destination=peer)
    # The Python layer does not surface the engine's Sent event (kind 8,
    # after the EoMA): watch for it here.
    sent = []
    dispatch = ecu._dispatch

    def watch(ev):
        if ev[0] == 8:
            sent.append(ev)
        dispatch(ev)

    ecu._dispatch = watch
    while left() and not sent:
        ecu.poll()
        if ecu.aborts:
            print("aborted", ecu.aborts)
            sys.exit(3)
        time.sleep_ms(1)
    if not left():
        print("timeout sending")
        sys.exit(4)
    print("sent len %d checksum %d ms %d" % (len(big), checksum(big), time.ticks_diff(time.ticks_ms(), t0)))
    sys.exit(0)

print("unknown mode", mode)
sys.exit(1)
