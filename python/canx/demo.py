"""``canx demo``: a small network in the style of the canio Learn guide.

A sender node sends counted messages on 0x408 (``struct.pack("<II", count,
now_ms)``) and waits for an ACK on 0x409 echoing the count, resending on
timeout; a listener node receives them and ACKs. Both print what they see.
On the virtual bus it runs anywhere; with ``--channel vcan0`` the frames go
through SocketCAN, where ``candump vcan0`` shows them.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
from typing import Callable, Dict, List, Set

import canx

DATA_ID = 0x408
ACK_ID = 0x409


def _listener_node(channel: str, count: int, ready: threading.Event, say: Callable[[str], None],
                   result: Dict[str, object]) -> None:
    with canx.CAN(channel=channel) as can:
        listener = can.listen([canx.Match(DATA_ID)], timeout=0.5)
        ready.set()
        seen: Set[int] = set()
        deadline = time.monotonic() + 10 + count
        while len(seen) < count and time.monotonic() < deadline:
            msg = listener.receive()
            if not isinstance(msg, canx.Message):  # None (timeout) or a remote frame
                continue
            n, sent_ms = struct.unpack("<II", msg.data)
            latency = (time.monotonic_ns() // 1_000_000 & 0xFFFFFFFF) - sent_ms
            say(f"listener: received count={n} latency={latency}ms")
            seen.add(n)
            can.send(canx.Message(ACK_ID, struct.pack("<I", n)))
        result["received"] = len(seen)


def _sender_node(channel: str, count: int, say: Callable[[str], None], result: Dict[str, object]) -> None:
    with canx.CAN(channel=channel) as can:
        acks = can.listen([canx.Match(ACK_ID)], timeout=0.2)
        acked = resent = 0
        for n in range(count):
            now_ms = time.monotonic_ns() // 1_000_000 & 0xFFFFFFFF
            msg = canx.Message(DATA_ID, struct.pack("<II", n, now_ms))
            for attempt in range(5):
                say(f"sender:   sending count={n}" + (f" (retry {attempt})" if attempt else ""))
                can.send(msg)
                reply = acks.receive()
                if isinstance(reply, canx.Message) and len(reply.data) == 4 and struct.unpack("<I", reply.data)[0] == n:
                    say(f"sender:   ACK for count={n}")
                    acked += 1
                    break
                resent += 1
            time.sleep(0.05)
        result["acked"] = acked
        result["resent"] = resent
        result["stats"] = can.stats()


def run_demo(channel: str = "virtual:demo", count: int = 10) -> int:
    """Runs the demo; returns 0 when every message was acknowledged."""
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            print(line, flush=True)

    print(f"canx {canx.__version__} demo on {channel}: sender -> 0x{DATA_ID:X}, listener ACKs on 0x{ACK_ID:X}")
    lres: Dict[str, object] = {}
    sres: Dict[str, object] = {}
    ready = threading.Event()
    errors: List[Exception] = []

    def guarded(fn: Callable[..., None], *args: object) -> Callable[[], None]:
        def body() -> None:
            try:
                fn(*args)
            except Exception as e:  # reported below; the other node still finishes
                errors.append(e)
                ready.set()
        return body

    lt = threading.Thread(target=guarded(_listener_node, channel, count, ready, say, lres), daemon=True)
    lt.start()
    ready.wait(10)
    if errors:
        print(f"canx demo: {errors[0]}", file=sys.stderr)
        return 2
    st = threading.Thread(target=guarded(_sender_node, channel, count, say, sres), daemon=True)
    st.start()
    st.join()
    lt.join(15)
    if errors:
        print(f"canx demo: {errors[0]}", file=sys.stderr)
        return 2
    acked = sres.get("acked", 0)
    print(f"summary: {acked}/{count} messages acknowledged, {sres.get('resent', 0)} resent, "
          f"listener saw {lres.get('received', 0)}; sender bus stats {sres.get('stats')}")
    return 0 if acked == count else 1
