# A CAN-X exchange (docs/protocols/can-x.md): a host sends a 1000-byte body to
# device 5 on stream 300 (an envelope of 126 frames with a CRC tail), the
# device answers with a short message. Run with --channel vcan0 and watch the
# frames with `candump -L vcan0`.
#
#   python examples/canx_proto_exchange.py [--channel vcan0]
import argparse

import canx
from canx import canxproto

p = argparse.ArgumentParser()
p.add_argument("--channel", default="virtual:canx-demo")
args = p.parse_args()

host = canxproto.Endpoint(canx.CAN(channel=args.channel), timeout=2.0)
device = canxproto.Endpoint(canx.CAN(channel=args.channel), direction=canxproto.FROM_DEVICE, device=5, timeout=2.0)

body = bytes(i % 251 for i in range(1000))
host.send(5, 300, 0x42, body)
msg = device.receive()
assert msg is not None and msg.body == body, msg
print(f"device got msg_id {msg.msg_id:#04x} on stream {msg.stream}: {len(msg.body)} bytes, CRC ok")

device.send(5, 300, 0x43, b"thanks")
reply = host.receive()
print("host got", reply)
print("host stats", host.stats())
