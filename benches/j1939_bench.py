"""J1939 transport benchmark on a vcan interface (run in the VM):

    CANX_VM_EXEC='"$CANX_PYTHON" benches/j1939_bench.py' scripts/test-vm

(1) one 1785-byte RTS/CTS transfer and one 100 kB ETP transfer, canx <-> canx
    (two ECUs, each on its own socket) vs kernel <-> kernel (two
    socket.CAN_J1939 sockets): median time of N runs and frames/s (nominal
    frame count of the transfer: data packets + RTS + CTS/DPO + EoMA). The
    runs are interleaved (canx, kernel, canx with a kernel socket bound,
    canx, ...), so drifts of the emulated machine hit all columns alike.
    canx runs twice with its defaults (``cts_delay`` 2 ms,
    ``cts_turnaround="auto"``, see canx_core::j1939::transport, "CTS
    turnaround"): once on the interface as it is (no kernel J1939 socket
    bound, so no turnaround), once with an idle kernel J1939 socket bound
    to it (address 0x99), as on a bus shared with the kernel stack, where
    every CTS waits the 2 ms.
(2) 64 concurrent 1785-byte RTS/CTS sessions between 64 canx node pairs on
    one vcan (64 senders sharing one socket, 64 receivers sharing another):
    total time, all must complete without abort; the same with 64 pairs of
    kernel sockets.
(3) python-can-j1939 (PyPI can-j1939) doing (1) and (2), if installed.

Prints a table; ``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import selectors
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


def interleaved_medians(fns: Dict[str, Callable[[], float]], runs: int) -> Dict[str, float]:
    """Runs each of `fns` once per round for `runs` rounds; median time of each."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            times[k].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}


def canx_pair(channel: str, first: int = 0x50):
    a = j1939.ECU(channel=channel, name=j1939.Name(identity_number=first + 51), address=first)
    b = j1939.ECU(channel=channel, name=j1939.Name(identity_number=first + 52), address=first + 1)
    a.begin_claim()
    b.begin_claim()
    a.claim_address()
    b.claim_address()
    return a, b


def canx_transfer(a: j1939.ECU, b: j1939.ECU, size: int) -> float:
    data = payload(size)
    stream = b.messages(PGN)
    t0 = time.perf_counter()
    a.send_pgn(PGN, data, destination=b.address)
    m = stream.get(120.0)
    dt = time.perf_counter() - t0
    stream.close()
    if m is None or m.data != data:
        raise RuntimeError(f"canx transfer of {size} bytes failed")
    return dt


def canx_transfer_kernel_bound(channel: str, a: j1939.ECU, b: j1939.ECU, size: int) -> float:
    """canx_transfer with an idle kernel J1939 socket bound to the interface
    meanwhile: the kernel's stack is active there, so the CTS turnaround applies."""
    with socket.socket(socket.PF_CAN, socket.SOCK_DGRAM, socket.CAN_J1939) as idle:
        idle.bind((channel, socket.J1939_NO_NAME, socket.J1939_NO_PGN, 0x99))
        return canx_transfer(a, b, size)


def kernel_transfer(channel: str, size: int) -> float:
    data = payload(size)
    with socket.socket(socket.PF_CAN, socket.SOCK_DGRAM, socket.CAN_J1939) as rx, \
            socket.socket(socket.PF_CAN, socket.SOCK_DGRAM, socket.CAN_J1939) as tx:
        rx.bind((channel, socket.J1939_NO_NAME, socket.J1939_NO_PGN, 0x61))
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)  # else sendto cuts 100 kB to ~87 kB
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


def kernel_64_sessions(channel: str, pairs: int = 64, limit: float = 60.0) -> Dict[str, Any]:
    """64 pairs of kernel sockets, all sends at once; waits for every
    receiver together up to `limit` s. `seconds` is the time to the last
    reception (the limit if some never arrive)."""
    data = payload(1785)
    tx: List[socket.socket] = []
    rx: List[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        for i in range(pairs):
            r = socket.socket(socket.PF_CAN, socket.SOCK_DGRAM, socket.CAN_J1939)
            r.bind((channel, socket.J1939_NO_NAME, socket.J1939_NO_PGN, 0x40 + i))
            r.setblocking(False)
            sel.register(r, selectors.EVENT_READ)
            rx.append(r)
            t = socket.socket(socket.PF_CAN, socket.SOCK_DGRAM, socket.CAN_J1939)
            t.bind((channel, socket.J1939_NO_NAME, socket.J1939_NO_PGN, i))
            tx.append(t)
        t0 = time.perf_counter()
        sent = sum(t.sendto(data, (channel, socket.J1939_NO_NAME, PGN, 0x40 + i)) == len(data)
                   for i, t in enumerate(tx))
        received = done = 0
        dt = limit
        while done < pairs and (left := t0 + limit - time.perf_counter()) > 0:
            for key, _ in sel.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                received += sock.recv(4096) == data
                done += 1
                sel.unregister(sock)
            if done == pairs:
                dt = time.perf_counter() - t0
        return {"pairs": pairs, "sent_ok": sent, "received_ok": received, "seconds": dt,
                "frames_per_s": received * nominal_frames(1785) / dt}
    finally:
        sel.close()
        for sk in tx + rx:
            sk.close()


# ------------------------------------------------- python-can-j1939 (PyPI can-j1939)

def pycan_j1939_run(channel: str, pairs: int, size: int, limit: float) -> Dict[str, Any]:
    """`pairs` concurrent `size`-byte RTS/CTS transfers with python-can-j1939
    (its defaults: one CTS per packet). Addresses start at 1 (it takes
    address 0 for "none" with bypass_address_claim). Addresses are fixed
    (bypass_address_claim) so the claim does not count."""
    import j1939 as pj  # python-can-j1939, not canx

    tx_ecu = pj.ElectronicControlUnit()
    rx_ecu = pj.ElectronicControlUnit()
    iface, _, name = channel.rpartition(":")
    kind = "virtual" if iface == "virtual" else "socketcan"  # python-can's virtual bus for a dry run
    tx_ecu.connect(interface=kind, channel=name)
    rx_ecu.connect(interface=kind, channel=name)
    data = payload(size)
    done = threading.Event()
    got: List[int] = []
    lock = threading.Lock()
    try:
        senders = []
        receivers = []
        for i in range(pairs):
            ca = pj.ControllerApplication(pj.Name(identity_number=3000 + i), 0x01 + i, bypass_address_claim=True)
            tx_ecu.add_ca(controller_application=ca)
            senders.append(ca)
        for i in range(pairs):
            ca = pj.ControllerApplication(pj.Name(identity_number=4000 + i), 0x41 + i, bypass_address_claim=True)

            def cb(priority, pgn, sa, timestamp, d, _i=i):
                if (pgn & 0x3FF00) == PGN and bytes(d) == data:
                    with lock:
                        got.append(_i)
                        if len(got) == pairs:
                            done.set()

            rx_ecu.add_ca(controller_application=ca)
            ca.subscribe(cb)
            receivers.append(ca)
        time.sleep(0.5)
        t0 = time.perf_counter()
        accepted = sum(bool(ca.send_pgn(0, PGN >> 8, 0x41 + i, 6, list(data))) for i, ca in enumerate(senders))
        done.wait(limit)
        dt = time.perf_counter() - t0
        return {"pairs": pairs, "accepted": accepted, "received_ok": len(got), "seconds": dt,
                "complete": len(got) == pairs}
    finally:
        tx_ecu.disconnect()
        rx_ecu.disconnect()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channel", default="vcan0")
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--json")
    args = ap.parse_args()
    ch = args.channel
    results: Dict[str, Any] = {}
    def step(what: str) -> None:
        print(f"j1939_bench: {what}", file=sys.stderr, flush=True)

    sizes = (("RTS/CTS 1785 B", 1785), ("ETP 100 kB", 100_000))
    step("(1) canx <-> canx (without and with a kernel J1939 socket bound) and kernel <-> kernel, interleaved")
    # One canx pair for both canx columns: a second pair would receive (and
    # wake for) every frame of the first.
    a, b = canx_pair(ch, 0x50)
    try:
        for label, size in sizes:
            m = interleaved_medians({
                "canx": lambda: canx_transfer(a, b, size),
                "kernel": lambda: kernel_transfer(ch, size),
                "canx_k": lambda: canx_transfer_kernel_bound(ch, a, b, size),
            }, args.runs)
            tc, tt, tk = m["canx"], m["canx_k"], m["kernel"]
            results[label] = {"canx_s": tc, "canx_turnaround_s": tt, "kernel_s": tk, "frames": nominal_frames(size),
                              "canx_fps": nominal_frames(size) / tc, "kernel_fps": nominal_frames(size) / tk}
    finally:
        a.close()
        b.close()
    step("(2) 64 canx sessions")
    results["64 sessions"] = canx_64_sessions(ch)
    step("(2) 64 kernel sessions")
    results["64 sessions kernel"] = kernel_64_sessions(ch)
    step("(3) python-can-j1939")
    try:
        import j1939 as _pj  # noqa: F401  (python-can-j1939)
        have_pj = True
    except ImportError:
        have_pj = False
    if have_pj:
        try:
            one = [pycan_j1939_run(ch, 1, 1785, 60.0) for _ in range(args.runs)]
            results["python-can-j1939 1785 B"] = {"seconds": statistics.median(r["seconds"] for r in one),
                                                  "complete": all(r["complete"] for r in one)}
            results["python-can-j1939 64 sessions"] = pycan_j1939_run(ch, 64, 1785, 120.0)
        except Exception as e:  # report, keep the canx numbers
            results["python-can-j1939"] = f"failed: {e!r}"
    else:
        results["python-can-j1939"] = "not installed: not run"

    print()
    print(f"{'transfer':<18}{'canx s':>10}{'canx+k s':>10}{'kernel s':>10}{'canx fr/s':>12}{'kernel fr/s':>13}"
          f"{'kernel/canx':>13}{'kernel/canx+k':>15}")
    for label in ("RTS/CTS 1785 B", "ETP 100 kB"):
        r = results[label]
        print(f"{label:<18}{r['canx_s']:>10.4f}{r['canx_turnaround_s']:>10.4f}{r['kernel_s']:>10.4f}"
              f"{r['canx_fps']:>12.0f}{r['kernel_fps']:>13.0f}{r['kernel_s'] / r['canx_s']:>12.2f}x"
              f"{r['kernel_s'] / r['canx_turnaround_s']:>14.2f}x")
    print("(canx: defaults, no kernel J1939 socket on the interface; canx+k: defaults with an idle kernel "
          "J1939 socket bound, so each CTS waits the 2 ms turnaround; above 1x means canx is faster)")
    s = results["64 sessions"]
    k = results["64 sessions kernel"]
    print(f"64 concurrent 1785 B RTS/CTS sessions (canx): {s['sent_ok']}/{s['pairs']} sent, "
          f"{s['received_ok']}/{s['pairs']} received, {s['aborted']} aborted, {s['seconds']:.3f} s, "
          f"{s['frames_per_s']:.0f} frames/s")
    print(f"64 concurrent 1785 B RTS/CTS sessions (kernel): {k['sent_ok']}/{k['pairs']} sent, "
          f"{k['received_ok']}/{k['pairs']} received in {k['seconds']:.3f} s"
          + ("" if k["received_ok"] == k["pairs"] else " (the rest never arrived: time is the limit)")
          + f", {k['frames_per_s']:.0f} frames/s; kernel/canx time {k['seconds'] / s['seconds']:.2f}x")
    if "python-can-j1939 1785 B" in results:
        p1 = results["python-can-j1939 1785 B"]
        p64 = results["python-can-j1939 64 sessions"]
        c1 = results["RTS/CTS 1785 B"]["canx_s"]
        print(f"python-can-j1939 1785 B RTS/CTS: {p1['seconds']:.4f} s (complete: {p1['complete']}); "
              f"canx is {p1['seconds'] / c1:.1f}x faster; ETP: not supported by python-can-j1939")
        print(f"python-can-j1939 64 sessions: {p64['accepted']}/64 accepted, {p64['received_ok']}/64 received "
              f"in {p64['seconds']:.3f} s; canx is {p64['seconds'] / s['seconds']:.1f}x faster"
              + ("" if p64["complete"] else " (python-can-j1939 incomplete: time is its 120 s limit)"))
    else:
        print(f"python-can-j1939: {results.get('python-can-j1939')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if s["received_ok"] == s["pairs"] and s["aborted"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
