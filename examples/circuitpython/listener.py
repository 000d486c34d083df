# The simplest canio listener: print every message on 0x408.
import struct

import board
import canio

can = canio.CAN(rx=board.CAN_RX, tx=board.CAN_TX, baudrate=250_000, auto_restart=True)
listener = can.listen(matches=[canio.Match(0x408)], timeout=0.9)

while True:
    message = listener.receive()
    if message is None:
        print("No message received within timeout")
        continue
    count, now_ms = struct.unpack("<II", message.data)
    print(f"received message: count={count} now_ms={now_ms}")
