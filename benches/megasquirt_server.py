"""MegaSquirt benchmark: the native table server and a PC client.

1. Server throughput: a canx Node (board 0) serves table 7; a flood of
   identical MSG_REQ frames from "board 4" (``cangen -g 0`` on SocketCAN, a
   Python send loop on a virtual bus) asks for 8 bytes each. Printed:
   requests sent, answered, answered per second (replies / time from the
   first request to the last reply, kernel timestamps on SocketCAN), lost.
2. Client latency: a second Node (board 3) in this process calls
   ``node.read(0, 7, 0, 8)`` back to back; printed: median and p99 of the
   request-to-reply time as Python sees it, and calls per second.

Run in the VM (real vcan; absolute numbers under qemu's software emulation
are ~10x lower than on hardware):

    CANX_VM_EXEC='"$CANX_PYTHON" benches/megasquirt_server.py' scripts/test-vm

or locally on the virtual bus: ``python benches/megasquirt_server.py --channel virtual:bench``.
Build with ``maturin develop --release`` first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import canx
from canx import megasquirt as ms


def ident(msg_type: int, from_id: int, to_id: int, blk: int, off: int) -> int:
    return off << 18 | msg_type << 15 | from_id << 11 | to_id << 7 | (blk & 0xF) << 3 | (blk & 0x10) >> 2


REQ_ID = ident(ms.MSG_REQ, 4, 0, 7, 16)        # read table 7 offset 16 of board 0 ...
REQ_DATA = bytes([3, 0x10 >> 3, (0x10 & 7) << 5 | 8])  # ... 8 bytes, reply to table 3 offset 0x10
RSP_ID = ident(ms.MSG_RSP, 0, 4, 3, 0x10)


def throughput(channel: str, n: int, generators: int = 1) -> dict:
    server_can = canx.CAN(channel=channel)
    ecu = ms.Node(server_can, can_id=0)
    ecu.serve_table(7, bytes(range(256)))
    # the counter: its own socket, sees requests and replies with kernel timestamps
    mon_can = canx.CAN(channel=channel)
    mon = mon_can.listen([canx.Match(REQ_ID, extended=True), canx.Match(RSP_ID, extended=True)],
                         timeout=1.0, queue_size=4 * n + 16)
    time.sleep(0.2)
    t_wall = time.time()
    if channel.startswith("virtual:"):
        gen = canx.CAN(channel=channel, send_timeout=5.0)
        m = canx.Message(REQ_ID, REQ_DATA, extended=True)
        for _ in range(n):
            gen.send(m)
        gen.deinit()
    else:
        k = max(1, generators)
        gens = [subprocess.Popen(["cangen", channel, "-e", "-I", f"{REQ_ID:08X}", "-L", "3", "-D", REQ_DATA.hex(),
                                  "-g", "0", "-p", "100", "-n", str(n // k + (i < n % k))]) for i in range(k)]
        for g in gens:
            if g.wait(timeout=600) != 0:
                raise SystemExit(f"cangen failed with {g.returncode}")
    sent = n
    first_req = last_req = last_rsp = None
    reqs = rsps = 0
    bad = 0
    while True:
        batch = mon.receive_many(4096, 2.0)
        if not batch:
            break
        for f in batch:
            if f.id == REQ_ID:
                reqs += 1
                if first_req is None:
                    first_req = f.timestamp
                last_req = f.timestamp
            else:
                rsps += 1
                last_rsp = f.timestamp
                if f.data != bytes(range(16, 24)):
                    bad += 1
    st = ecu.stats()
    bus = server_can.stats()
    ecu.close()
    mon_can.deinit()
    server_can.deinit()
    span = (last_rsp - first_req) if (first_req and last_rsp) else float("nan")
    return {
        "requests_sent": sent,
        "requests_seen_by_monitor": reqs,
        "answered": rsps,
        "wrong_data": bad,
        "lost": sent - rsps,
        "seconds": span,
        "answered_per_s": rsps / span if span and span > 0 else float("nan"),
        "offered_per_s": reqs / (last_req - first_req) if first_req and last_req and last_req > first_req
        else float("nan"),
        "server_frames": st["frames"],
        "server_replies": st["replies"],
        "server_tx_dropped": st["tx_dropped"],
        "server_backend_dropped": bus["backend_dropped"],
        "wall_start": t_wall,
    }


def latency(channel: str, n: int) -> dict:
    sel = (7 << 15) | (0xF << 11) | (0xF << 7)
    mon_can = canx.CAN(channel=channel)
    mon = mon_can.listen([canx.Match(ident(ms.MSG_REQ, 3, 0, 0, 0), mask=sel, extended=True),
                          canx.Match(ident(ms.MSG_RSP, 0, 3, 0, 0), mask=sel, extended=True)],
                         timeout=1.0, queue_size=4 * n + 1000)
    with ms.Node(channel=channel, can_id=0) as ecu, ms.Node(channel=channel, can_id=3) as dash:
        ecu.serve_table(7, bytes(range(256)))
        for _ in range(min(50, n)):  # warm up
            dash.read(0, 7, 0, 8)
        lat = []
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            d = dash.read(0, 7, 0, 8)
            lat.append(time.perf_counter() - t)
            assert d == bytes(range(8))
        total = time.perf_counter() - t0
        st = dash.stats()
    lat.sort()
    # on the wire (kernel timestamps of each MSG_REQ and its MSG_RSP): the server's turnaround
    frames = []
    while True:
        batch = mon.receive_many(4096, 0.5)
        if not batch:
            break
        frames += batch
    mon_can.deinit()
    wire, pending = [], None
    for f in frames:
        if (f.id >> 15) & 7 == ms.MSG_REQ:
            pending = f.timestamp
        elif pending is not None:
            wire.append(f.timestamp - pending)
            pending = None
    wire = sorted(wire[-n:]) or [float("nan")]
    return {
        "wire_median_us": statistics.median(wire) * 1e6,
        "wire_p99_us": wire[min(len(wire) - 1, int(0.99 * len(wire)))] * 1e6,
        "reads": n,
        "median_us": statistics.median(lat) * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e6,
        "max_us": lat[-1] * 1e6,
        "reads_per_s": n / total,
        "client_retries": st["client_retries"],
        "client_timeouts": st["client_timeouts"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channel", default="vcan0")
    p.add_argument("-n", type=int, default=20000, help="requests in the throughput flood")
    p.add_argument("--reads", type=int, default=2000, help="client reads for the latency test")
    p.add_argument("--generators", type=int, default=2, help="cangen processes flooding at once (SocketCAN)")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()
    tp = throughput(a.channel, a.n, a.generators)
    print(f"megasquirt server on {a.channel}: {tp['requests_sent']} MSG_REQ flooded, "
          f"{tp['answered']} answered in {tp['seconds']:.3f} s = {tp['answered_per_s']:,.0f} requests/s answered, "
          f"offered {tp['offered_per_s']:,.0f}/s "
          f"(lost {tp['lost']}: server tx_dropped {tp['server_tx_dropped']}, "
          f"backend_dropped {tp['server_backend_dropped']}; wrong data {tp['wrong_data']})", flush=True)
    lt = latency(a.channel, a.reads)
    print(f"megasquirt client on {a.channel}: {lt['reads']} x node.read(0, 7, 0, 8): "
          f"median {lt['median_us']:.0f} us, p99 {lt['p99_us']:.0f} us, max {lt['max_us']:.0f} us, "
          f"{lt['reads_per_s']:,.0f} reads/s (retries {lt['client_retries']}, timeouts {lt['client_timeouts']}); "
          f"on the wire MSG_REQ -> MSG_RSP median {lt['wire_median_us']:.0f} us, p99 {lt['wire_p99_us']:.0f} us",
          flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"channel": a.channel, "throughput": tp, "latency": lt}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
