# asyncio: claim_address_async, request_pgn_async (answer, NACK, timeout,
# two at once) and ECU.run() as the poll task that runs callbacks while the
# program awaits. Deterministic: a task advances the fake clock 1 ms per
# round and the ECUs sleep 0 ms between polls.
try:
    import asyncio
except ImportError:  # ports/qemu builds without it (MICROPY_PY_ASYNCIO 0)
    print("SKIP")
    raise SystemExit

from canx import j1939
from canx.bus import Loopback

now = [0]


def clock():
    return now[0]


bus = Loopback()
a = j1939.ECU(bus=bus, name=j1939.Name(identity_number=1), address=0x10, clock=clock)
b = j1939.ECU(bus=bus, name=j1939.Name(identity_number=2), address=0x20, clock=clock)
a.async_period_ms = b.async_period_ms = 0


async def ticker():
    while True:
        now[0] += 1000
        await asyncio.sleep_ms(0)


async def main():
    asyncio.create_task(ticker())
    asyncio.create_task(b.run(period_ms=0))
    b.begin_claim()
    print("claimed", hex(await a.claim_address_async()), hex(b.address), b.state)
    b.set_response(65260, b"1M8GDM9AXKP042788*")
    b.on_request(65262, lambda req: bytes([130]) + b"\xff" * 7)
    m = await a.request_pgn_async(65260, destination=0x20)
    print("vin", m.pgn, m.source, m.data)
    try:
        await a.request_pgn_async(61444, destination=0x20)
    except j1939.RequestRejectedError as ex:
        print("RequestRejectedError", ex)
    t0 = now[0]
    try:
        await a.request_pgn_async(61444, destination=0x55)
    except j1939.RequestTimeoutError as ex:
        print("RequestTimeoutError", ex, (now[0] - t0) // 1000, "ms")
    vin, et1 = await asyncio.gather(a.request_pgn_async(65260, destination=0x20),
                                    a.request_pgn_async(65262, destination=0x20))
    print("gather", len(vin.data), et1.data[0] - 40)
    # b's callbacks run in b.run() while main only sleeps.
    got = []
    b.on_pgn(0xFF00, lambda m: got.append(m.data))
    a.send_pgn(0xFF00, b"\x01\x02")
    big = bytes(range(256)) * 6
    b.on_pgn(0xEF00, lambda m: got.append((len(m.data), sum(m.data))))
    a.send_pgn(0xEF00, big, destination=0x20)
    for _ in range(2000):
        a.poll()
        await asyncio.sleep_ms(0)
        if len(got) == 2:
            break
    print("run delivered", got[0], got[1] == (1536, sum(big)))
    try:
        c = j1939.ECU(bus=bus, name=j1939.Name(identity_number=3), address=0x20, clock=clock)
        c.async_period_ms = 0
        await c.claim_address_async(timeout=1.0)
    except j1939.AddressClaimError as ex:
        print("AddressClaimError", ex)


asyncio.run(main())
