"""CPU instructions per frame on the hot paths, counted by valgrind's
callgrind (host, virtual bus; no VM):

    .venv/bin/python benches/instructions.py [--python OTHER/.venv/bin/python ...]

Instruction counts do not depend on what else the machine is doing (the
build hosts are shared and the VM's timings move 3-4x between runs), so
this is the load-independent check of a change to the hot path: the same
script counted with two builds (``--python`` once per build) compares
them, and python-can's ``virtual`` interface doing the same work in the
same interpreter is the named peer.

Cases (each a whole process under callgrind; the count of a process that
does the same minus the frames is subtracted, so interpreter start-up and
bus setup do not count):
  rx        N frames sent on a virtual channel by one node, taken by another
            node's Listener with ``receive()`` (canx) / ``recv()`` (python-can)
  rx_many   the same, taken with ``receive_many(4096)``
  send      N ``send()`` calls, nobody listening
  j1939     N/100 1785-byte RTS/CTS transfers between two canx J1939 ECUs
            (per frame: the nominal 258 frames a transfer, as j1939_bench.py)
  etp       N/10000 100,000-byte ETP transfers between the same ECUs
            (the nominal 14,402 frames a transfer)
  udp_rx    N datagrams (python-can's udp_multicast format, 8-byte frames)
            sent by a plain UDP socket in bursts of 64 to a udp_multicast
            bus, taken with ``receive()``; also counted alone: the bus's
            native socket reader thread (callgrind --separate-threads)
  pycan_udp_rx  the same datagrams taken by python-can's udp_multicast bus
            with ``recv()`` (the same sender, so whole-process counts compare)
Prints instructions per frame; ``--json FILE`` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

CASES = ("rx", "rx_many", "send", "j1939", "etp", "pycan_rx", "pycan_send", "udp_rx", "pycan_udp_rx")
#: group and port of the udp cases (IPv4: python-can joins it without an IPv6 route).
UDP_GROUP, UDP_PORT = "239.74.163.9", 43299
#: datagrams sent before the receiver takes them (well inside a socket buffer).
UDP_BURST = 64
#: case -> (PDU bytes, transfers per N frames asked); frames counted as j1939_bench.nominal_frames.
J1939_CASES = {"j1939": (1785, 100), "etp": (100_000, 10_000)}


def nominal_frames(size: int) -> int:
    """RTS, data packets, CTS (+ DPO for ETP) per window, EoMA (j1939_bench.py)."""
    pk = -(-size // 7)
    windows = -(-pk // 255)
    return pk + 1 + (windows if size <= 1785 else 2 * windows) + 1


def udp_workload(case: str, n: int) -> None:
    import socket

    import msgpack
    datagram = msgpack.packb({
        "timestamp": 1.0, "arbitration_id": 0x123, "is_extended_id": False, "is_remote_frame": False,
        "is_error_frame": False, "channel": None, "dlc": 8, "data": bytes(8), "is_fd": False,
        "bitrate_switch": False, "error_state_indicator": False}, use_bin_type=True)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    if case == "pycan_udp_rx":
        import can
        bus = can.Bus(interface="udp_multicast", channel=UDP_GROUP, port=UDP_PORT)
        recv = lambda: bus.recv(5.0)  # noqa: E731
        close = bus.shutdown
    else:
        import canx
        rx = canx.CAN(channel=f"udp_multicast:{UDP_GROUP}:{UDP_PORT}")
        listener = rx.listen(timeout=5.0)
        recv = listener.receive
        close = rx.deinit
    sent = 0
    while sent < n:
        burst = min(UDP_BURST, n - sent)
        for _ in range(burst):
            tx.sendto(datagram, (UDP_GROUP, UDP_PORT))
        for _ in range(burst):
            if recv() is None:
                raise RuntimeError(f"{case}: frame lost")
        sent += burst
    close()
    tx.close()


def workload(case: str, n: int) -> None:
    """Runs `case` with `n` frames (n == 0: setup and teardown only)."""
    if case in ("udp_rx", "pycan_udp_rx"):
        udp_workload(case, n)
        return
    if case.startswith("pycan"):
        import can
        a = can.Bus(interface="virtual", channel="ins")
        b = can.Bus(interface="virtual", channel="ins") if case == "pycan_rx" else None
        msg = can.Message(arbitration_id=0x123, data=bytes(8), is_extended_id=False)
        for _ in range(n):
            a.send(msg)
        if b is not None:
            for _ in range(n):
                if b.recv(5.0) is None:
                    raise RuntimeError("python-can frame lost")
            b.shutdown()
        a.shutdown()
        return
    import canx
    if case in J1939_CASES:
        from canx import j1939
        size, per = J1939_CASES[case]
        a = j1939.ECU(channel="virtual:ins", name=j1939.Name(identity_number=1), address=0x50)
        b = j1939.ECU(channel="virtual:ins", name=j1939.Name(identity_number=2), address=0x51)
        for e in (a, b):
            e.begin_claim()
        for e in (a, b):
            e.claim_address(10.0)
        stream = b.messages(0xEF00)
        data = bytes(i % 251 for i in range(size))
        for _ in range(n // per):
            a.send_pgn(0xEF00, data, destination=0x51).result(30.0)
            m = stream.get(30.0)
            if m is None or m.data != data:
                raise RuntimeError("J1939 transfer failed")
        a.close()
        b.close()
        return
    tx = canx.CAN(channel="virtual:ins")
    rx = canx.CAN(channel="virtual:ins") if case != "send" else None
    listener = rx.listen(timeout=5.0) if rx is not None else None
    msg = canx.Message(id=0x123, data=bytes(8))
    for _ in range(n):
        tx.send(msg)
    if listener is not None:
        got = 0
        while got < n:
            if case == "rx":
                if listener.receive() is None:
                    raise RuntimeError("canx frame lost")
                got += 1
            else:
                got += len(listener.receive_many(4096, 5.0))
        rx.deinit()
    tx.deinit()


def total(path: str) -> int:
    with open(path) as f:
        for line in f:
            m = re.match(r"summary: (\d+)", line) or re.match(r"totals: (\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError("no total in callgrind output")


#: The native udp_multicast socket reader thread, by a function only it runs.
READER_FN = "udp_multicast::Reader"


def count(python: str, case: str, n: int, reader: Optional[Dict[str, int]] = None) -> int:
    """Instructions of the process running `case`; with `reader`, also
    stores those of the udp_multicast reader thread in reader["n"]."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
                       + (["--separate-threads=yes"] if reader is not None else [])
                       + [python, os.path.abspath(__file__), "--run", case, "-n", str(n)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if reader is None:
            return total(out)
        files = [p for p in (os.path.join(d, f) for f in os.listdir(d)) if os.path.getsize(p) > 0]
        reader["n"] = sum(total(f) for f in files if READER_FN in open(f, errors="replace").read())
        return sum(total(f) for f in files)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", choices=CASES, help=argparse.SUPPRESS)
    ap.add_argument("-n", type=int, default=20_000, help="frames per case (default 20000)")
    ap.add_argument("--python", action="append", help="interpreter(s) to count with (default: this one)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.run:
        workload(args.run, args.n)
        return 0
    pythons: List[str] = args.python or [sys.executable]
    results: Dict[str, Dict[str, float]] = {}
    for py in pythons:
        r = results.setdefault(py, {})
        for case in args.cases.split(","):
            if case.startswith("pycan") and py != pythons[0]:
                continue  # the peer does not depend on the canx build
            if case in J1939_CASES:
                size, per = J1939_CASES[case]
                frames = (args.n // per) * nominal_frames(size)
            else:
                frames = args.n
            if case == "udp_rx":
                full: Dict[str, int] = {}
                empty: Dict[str, int] = {}
                per = (count(py, case, args.n, full) - count(py, case, 0, empty)) / frames
                r["udp_rx_reader"] = (full["n"] - empty["n"]) / frames
                print(f"{py}: udp_rx_reader: {r['udp_rx_reader']:,.0f} instructions/frame",
                      file=sys.stderr, flush=True)
            else:
                per = (count(py, case, args.n) - count(py, case, 0)) / frames
            r[case] = per
            print(f"{py}: {case}: {per:,.0f} instructions/frame", file=sys.stderr, flush=True)
    print("\n| case | " + " | ".join(pythons) + " |")
    print("| --- |" + " --- |" * len(pythons))
    for case in [c for c in args.cases.split(",")] + ["udp_rx_reader"]:
        if not any(case in results[p] for p in pythons):
            continue
        print(f"| {case} | " + " | ".join(f"{results[p].get(case, float('nan')):,.0f}" for p in pythons) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
