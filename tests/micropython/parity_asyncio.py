# Parity of the asyncio form: unchanged under MicroPython (its asyncio,
# the ECU's waits poll every ECU) and CPython (ECUs on their own threads).
import asyncio

from canx import j1939

CHANNEL = "virtual:parity_asyncio"  # the bus line


def error_text(ex):
    return "%s: %s" % (type(ex).__name__, ex)


async def main():
    a = j1939.ECU(CHANNEL, name=j1939.Name(identity_number=1), address=0x10)
    b = j1939.ECU(CHANNEL, name=j1939.Name(identity_number=2), address=0x20)
    b.begin_claim()
    print("claim", hex(await a.claim_address_async()))
    print("b", hex(await b.claim_address_async()))
    b.set_response(j1939.PGN_VEHICLE_IDENTIFICATION, b"1M8GDM9AXKP042788*")
    b.on_request(j1939.PGN_ET1, lambda req: j1939.encode_et1(-40, 210))
    m = await a.request_pgn_async(j1939.PGN_VEHICLE_IDENTIFICATION, destination=0x20)
    print("vin", m.pgn, m.source, m.destination, m.data)
    vin, et1 = await asyncio.gather(a.request_pgn_async(j1939.PGN_VEHICLE_IDENTIFICATION, destination=0x20),
                                    a.request_pgn_async(j1939.PGN_ET1, destination=0x20))
    print("gather", vin.data, j1939.decode_et1(et1.data))
    for da in (0x20, 0x55):
        try:
            await a.request_pgn_async(j1939.PGN_EEC1, destination=da)
        except (j1939.RequestRejectedError, j1939.RequestTimeoutError) as ex:
            print(error_text(ex), getattr(ex, "control", None))
    c = j1939.ECU(CHANNEL, name=j1939.Name(identity_number=3), address=0x20)
    try:
        await c.claim_address_async(timeout=1.0)
    except j1939.AddressClaimError as ex:
        print(type(ex).__name__)
    for e in (a, b, c):
        e.close()
    print("end")


asyncio.run(main())
