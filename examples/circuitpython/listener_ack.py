# A CircuitPython canio listener that acknowledges, in the style of the
# Adafruit Learn guide "CAN Bus with CircuitPython: Using the canio module".
# On a Feather M4 CAN it runs as code.py; on a PC: `canx run listener_ack.py`.
import struct
import time

import board
import canio
import digitalio

# If the CAN transceiver has a standby pin, bring it out of standby mode
if hasattr(board, "CAN_STANDBY"):
    standby = digitalio.DigitalInOut(board.CAN_STANDBY)
    standby.switch_to_output(False)

# If the CAN transceiver is powered by a boost converter, turn on its supply
if hasattr(board, "BOOST_ENABLE"):
    boost_enable = digitalio.DigitalInOut(board.BOOST_ENABLE)
    boost_enable.switch_to_output(True)

can = canio.CAN(rx=board.CAN_RX, tx=board.CAN_TX, baudrate=250_000, auto_restart=True)
listener = can.listen(matches=[canio.Match(0x408)], timeout=0.9)

old_bus_state = None
while True:
    bus_state = can.state
    if bus_state != old_bus_state:
        print(f"Bus state changed to {bus_state}")
        old_bus_state = bus_state

    message = listener.receive()
    if message is None:
        print("No message received within timeout")
        continue

    data = message.data
    if len(data) != 8:
        print(f"Unusual message length {len(data)}")
        continue

    (count, now_ms) = struct.unpack("<II", data)
    gap_ms = (time.monotonic_ns() // 1_000_000 & 0xFFFFFFFF) - now_ms
    print(f"received message: count={count} now_ms={now_ms}")
    print(f"message latency {gap_ms}ms")
    print()

    message = canio.Message(id=0x409, data=struct.pack("<I", count))
    can.send(message)
