"""Reliable-delivery ACK latency and CAN-X throughput.

    python benches/reliable_latency.py [--channel vcan0] [-n 2000] [--messages 300] [--json out.json]
    CANX_VM_EXEC='"$CANX_PYTHON" benches/reliable_latency.py' scripts/test-vm      (real vcan, in the VM)

ACK latency: node A sends a general-mode data frame ``[seq, payload]`` on
0x123 and waits for ``[0xAC, seq]`` on 0x124 from node B, one at a time:

- ``native``: B is a ``canx.reliable.Receiver``; the ACK is produced in B's
  native receive thread.
- ``python``: B is a plain listener and a Python thread that sends the ACK
  (what an application without the engine does).
- ``sender``: ``canx.reliable.Sender.send(...).result()`` against the native
  receiver: the whole engine round trip as an application sees it.

Two numbers per case: ``rtt`` (A's wall clock from send to the ACK in its
hands, including A's own Python) and ``responder`` (B's part alone: ACK minus
data receive time, both kernel timestamps at a third socket).

CAN-X throughput: a host endpoint sends ``--messages`` bodies of 2032 bytes
(255 frames each) to a device endpoint at full speed; bytes/s of body from the
first send to the last message received in Python.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from typing import Dict, List

import canx
from canx import canxproto, reliable


def pct(xs: List[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary(xs: List[float]) -> Dict[str, float]:
    return {"median_us": statistics.median(xs) * 1e6, "p99_us": pct(xs, 99) * 1e6, "n": len(xs)}


def ack_latency(channel: str, n: int, mode: str) -> Dict[str, Dict[str, float]]:
    a, b, obs = (canx.CAN(channel=channel) for _ in range(3))
    acks = a.listen(matches=[canx.Match(0x124)], timeout=2.0)
    seen = obs.listen(matches=[canx.Match(0x123), canx.Match(0x124)], timeout=2.0)
    stop = threading.Event()
    responder = None
    rx = None
    tx = None
    if mode in ("native", "sender"):
        rx = reliable.Receiver(b, matches=[canx.Match(0x123)])
    else:
        data = b.listen(matches=[canx.Match(0x123)], timeout=0.1)

        def respond() -> None:
            while not stop.is_set():
                m = data.receive()
                if m is not None and m.data:
                    b.send(canx.Message(0x124, bytes([0xAC, m.data[0]])))

        responder = threading.Thread(target=respond, daemon=True)
        responder.start()
    if mode == "sender":
        tx = reliable.Sender(a, timeout=1.0, retries=3)
    time.sleep(0.2)
    rtt: List[float] = []
    drain = rx is not None and mode == "native"
    for i in range(n):
        seq = i & 0xFF
        t0 = time.perf_counter()
        if tx is not None:
            out = tx.send(0x123, b"bench").result(5)
            if not out.delivered:
                raise SystemExit("benchmark: a message was not delivered")
        else:
            a.send(canx.Message(0x123, bytes([seq]) + b"bench"))
            while True:
                m = acks.receive()
                if m is None:
                    raise SystemExit(f"benchmark: no ACK for seq {seq} ({mode})")
                if m.data == bytes([0xAC, seq]):
                    break
        rtt.append(time.perf_counter() - t0)
        if drain and rx is not None:
            rx.receive(0)  # keep the receiver's queue from filling up
        if i % 256 == 255 and mode != "sender":
            time.sleep(0.001)
    stop.set()
    # Responder time from the observer's kernel timestamps.
    resp: List[float] = []
    last_data = None
    while True:
        m = seen.receive_many(1024, 0.2) if hasattr(seen, "receive_many") else []
        if not m:
            break
        for f in m:
            if f.id == 0x123:
                last_data = f.timestamp
            elif last_data is not None:
                resp.append(f.timestamp - last_data)
                last_data = None
    for x in (tx, rx):
        if x is not None:
            x.close()
    if responder is not None:
        responder.join(1)
    for bus in (a, b, obs):
        bus.deinit()
    return {"rtt": summary(rtt), "responder": summary(resp) if resp else {}}


def canx_throughput(channel: str, messages: int) -> Dict[str, float]:
    a, b = canx.CAN(channel=channel), canx.CAN(channel=channel)
    host = canxproto.Endpoint(a, max_waiting=64)
    dev = canxproto.Endpoint(b, direction=canxproto.FROM_DEVICE, device=5, queue_size=messages + 16, timeout=30.0)
    body = bytes(i % 256 for i in range(canxproto.MAX_BODY))
    time.sleep(0.2)
    t0 = time.perf_counter()
    for i in range(messages):
        host.send(5, i % 4, i & 0xFF, body, timeout=30.0)
    got = 0
    while got < messages:
        m = dev.receive()
        if m is None:
            break
        if m.body != body:
            raise SystemExit("benchmark: CAN-X body corrupted")
        got += 1
    dt = time.perf_counter() - t0
    st_host, st_dev = host.stats(), dev.stats()
    host.close()
    dev.close()
    a.deinit()
    b.deinit()
    return {
        "messages": messages,
        "received": got,
        "seconds": dt,
        "body_bytes_per_s": got * len(body) / dt,
        "frames_per_s": st_host["frames_sent"] / dt,
        "errors": st_dev["errors"],
        "events_dropped": st_dev["events_dropped"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channel", default="vcan0", help="vcan0 (default) or virtual:NAME")
    p.add_argument("-n", type=int, default=2000, help="round trips per latency case")
    p.add_argument("--messages", type=int, default=300, help="CAN-X bodies of 2032 bytes")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    results: Dict[str, object] = {"channel": args.channel}
    print(f"reliable ACK latency on {args.channel}, {args.n} round trips each (microseconds)")
    print(f"{'ACK from':<10} {'rtt median':>11} {'rtt p99':>9} {'resp median':>12} {'resp p99':>9}")
    for mode in ("native", "python", "sender"):
        r = ack_latency(args.channel, args.n, mode)
        results[f"ack_{mode}"] = r
        rs = r["responder"] or {"median_us": float("nan"), "p99_us": float("nan")}
        print(
            f"{mode:<10} {r['rtt']['median_us']:>11.1f} {r['rtt']['p99_us']:>9.1f}"
            f" {rs['median_us']:>12.1f} {rs['p99_us']:>9.1f}"
        )
    t = canx_throughput(args.channel, args.messages)
    results["canx_throughput"] = t
    print(
        f"CAN-X throughput: {t['received']}/{t['messages']} bodies of 2032 B in {t['seconds']:.3f} s ="
        f" {t['body_bytes_per_s'] / 1e3:.1f} kB/s of body ({t['frames_per_s']:.0f} frames/s),"
        f" errors {t['errors']}, events dropped {t['events_dropped']}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
