# General-mode reliable delivery between two nodes of one virtual bus:
# sequence numbers, duplicate suppression, ACK natively in the receiver,
# an outcome per message as a Future, an awaitable and a callback.
#
#   python examples/reliable_general.py [--channel vcan0]
import argparse
import asyncio

import canx
from canx import reliable

p = argparse.ArgumentParser()
p.add_argument("--channel", default="virtual:reliable-demo")
args = p.parse_args()

a, b = canx.CAN(channel=args.channel), canx.CAN(channel=args.channel)
rx = reliable.Receiver(b, matches=[canx.Match(0x120, mask=0x7F0)], on_message=lambda m: print("received", m))
tx = reliable.Sender(a, timeout=0.05, retries=5, backoff=2, on_outcome=lambda o: print("outcome", o))

# Several peers at once: one message in flight per data id, the rest wait in order.
futures = [tx.send(0x120 + (i % 4) * 2, bytes([i])) for i in range(8)]
print([f.result(5).delivered for f in futures])


async def main() -> None:
    outcome = await tx.send_async(0x126, b"async")
    print("awaited", outcome)


asyncio.run(main())
print("sender", tx.stats())
print("receiver", rx.stats())
tx.close()
rx.close()
