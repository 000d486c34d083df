"""An engine ECU and a service tool on one bus (virtual by default).

    python examples/j1939/engine_and_tool.py [channel]     # e.g. vcan0

The engine claims 0x00, broadcasts EEC1 (engine speed) and ET1 (coolant
temperature), answers VIN requests natively and reports a DTC by DM1. The
tool claims 0xF9, prints what it hears and asks for the VIN.
"""

import sys
import time

from canx import j1939

channel = sys.argv[1] if len(sys.argv) > 1 else "virtual:j1939-demo"

engine = j1939.ECU(channel=channel, name=j1939.Name(identity_number=1, manufacturer_code=0x123, function=0),
                   address=0x00)
tool = j1939.ECU(channel=channel, name=j1939.Name(identity_number=2, manufacturer_code=0x123, function=129,
                                                  arbitrary_address_capable=True), address=0xF9)
engine.begin_claim()
tool.begin_claim()
print("engine at", hex(engine.claim_address()), "tool at", hex(tool.claim_address()))

engine.set_response(j1939.PGN_VEHICLE_IDENTIFICATION, b"1M8GDM9AXKP042788*")
tool.on_pgn(j1939.PGN_EEC1, lambda m: print(f"{m.timestamp:.3f} SA {m.source:#04x} engine speed "
                                            f"{j1939.decode_eec1(m.data)} rpm"))
tool.on_pgn(j1939.PGN_ET1, lambda m: print(f"{m.timestamp:.3f} SA {m.source:#04x} coolant "
                                           f"{j1939.decode_et1(m.data)[0]} degC"))
tool.on_pgn(j1939.PGN_DM1, lambda m: print("DM1", j1939.decode_dm(m.data)))

for rpm in (800, 1200, 1800):
    engine.send_engine_speed(rpm)
    time.sleep(0.1)
engine.send_coolant_temperature(88)
engine.send_dm1([(190, 0, 1)], amber_warning=1)
vin = tool.request_pgn(j1939.PGN_VEHICLE_IDENTIFICATION, destination=0x00, timeout=2.0)
print("VIN:", vin.data.decode().rstrip("*"), "via", vin.via)
print("address table:", {hex(a): n for a, n in tool.address_table().items()})
time.sleep(0.2)
engine.close()
tool.close()
