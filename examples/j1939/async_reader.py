"""asyncio: claim, then read engine speed with `async for` and ask for a PGN.

    python examples/j1939/async_reader.py [channel]
"""

import asyncio
import sys

import canx
from canx import j1939


async def main(channel: str) -> None:
    with j1939.ECU(channel=channel, name=j1939.Name(identity_number=77, arbitrary_address_capable=True),
                   address=0x80) as ecu:
        print("claimed", hex(await ecu.claim_address_async()))
        try:
            m = await ecu.request_pgn_async(j1939.PGN_VEHICLE_IDENTIFICATION, timeout=1.0)
            print("VIN", m.data)
        except canx.RequestTimeout:
            print("nobody answered the VIN request")
        async for m in ecu.messages(j1939.PGN_EEC1, timeout=2.0):
            print(f"SA {m.source:#04x}: {j1939.decode_eec1(m.data)} rpm")


asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "virtual:j1939-async"))
