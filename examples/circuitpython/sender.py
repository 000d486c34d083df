# The simplest canio sender: a counted message every half second.
# On a PC: `canx run sender.py listener.py` runs it with a listener on one virtual bus.
import struct
import time

import board
import canio
import digitalio

if hasattr(board, "CAN_STANDBY"):
    standby = digitalio.DigitalInOut(board.CAN_STANDBY)
    standby.switch_to_output(False)

can = canio.CAN(rx=board.CAN_RX, tx=board.CAN_TX, baudrate=250_000, auto_restart=True)

count = 0
while True:
    now_ms = (time.monotonic_ns() // 1_000_000) & 0xFFFFFFFF
    print(f"Sending message: count={count} now_ms={now_ms}")
    can.send(canio.Message(id=0x408, data=struct.pack("<II", count, now_ms)))
    time.sleep(0.5)
    count += 1
