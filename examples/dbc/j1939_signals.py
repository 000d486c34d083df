"""DBC signals from J1939 ECUs, single frames and TP (virtual bus by default).

    python examples/dbc/j1939_signals.py [channel] [file.dbc]   # needs: pip install canx[dbc]

An engine ECU broadcasts EEC1 and ET1 and reports three DTCs by DM1 (14
bytes: BAM). A tool ECU decodes what it hears with the DBC (default: the
sample DBC canx ships, canx.dbc.SAMPLE) and prints the signals. The same
DBC decodes a candump log of this bus: ``canx plot run.log --dbc ... -s
EngineSpeed -o run.png``.
"""

import sys
import time

import canx.dbc
from canx import j1939

channel = sys.argv[1] if len(sys.argv) > 1 else "virtual:dbc-demo"
db = canx.dbc.load(sys.argv[2] if len(sys.argv) > 2 else canx.dbc.SAMPLE)

engine = j1939.ECU(channel=channel, name=j1939.Name(identity_number=1, function=0), address=0x00)
tool = j1939.ECU(channel=channel, name=j1939.Name(identity_number=2, function=129), address=0xF9)
engine.begin_claim()
tool.begin_claim()
engine.claim_address()
tool.claim_address()

for pgn in (j1939.PGN_EEC1, j1939.PGN_ET1, j1939.PGN_DM1):
    tool.on_pgn(pgn, lambda m: print(f"SA {m.source:#04x} {m.via:6} {m.decoded}"), decode=db)

for rpm in (800, 1200, 1800):
    engine.send_engine_speed(rpm)
    time.sleep(0.05)
engine.send_coolant_temperature(88, 40)
engine.send_dm1([(190, 0, 1), (110, 16, 2), (100, 1, 1)], amber_warning=1)   # by BAM
time.sleep(0.5)
engine.close()
tool.close()
