"""Resident memory of idle receive queues and J1939 ECUs, and of a process
that opens and closes ECUs over and over (runs on the host: virtual bus):

    .venv/bin/python benches/memory.py

(1) RSS per idle receive queue: N canx ``Listener``s on one bus vs N
    python-can ``virtual`` buses (each holds its own receive queue); both
    with their default queue bounds (canx 65,536 frames, python-can
    unbounded).
(2) RSS per idle J1939 ECU: N canx ``j1939.ECU``s (defaults: 65,536-event
    queue, two 1 MiB ETP buffers), and N python-can-j1939 ``ControllerApplication``s
    on one ``ElectronicControlUnit`` if ``can-j1939`` is installed.
(3) Opening 128 ECUs, running 64 RTS/CTS transfers and closing them, K
    times in one process: RSS after each round. A leak grows every round;
    allocator retention (glibc keeps freed arenas) levels off.

Each number is the growth of VmRSS (Linux /proc) over the step, after
``gc.collect()`` and glibc ``malloc_trim(0)``, so freed memory the
allocator could return does not count. Prints a table; ``--json FILE``
also writes the numbers.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
from typing import Any, Callable, Dict, List

import canx
from canx import j1939

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    _libc = None


def rss_mb() -> float:
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def per_item_kb(n: int, make: Callable[[int], Any], close: Callable[[List[Any]], None]) -> float:
    base = rss_mb()
    items = [make(i) for i in range(n)]
    grown = rss_mb() - base
    close(items)
    del items
    return grown * 1024 / n


def canx_listeners(n: int) -> float:
    bus = canx.CAN(channel="virtual:mem-listeners")
    try:
        return per_item_kb(n, lambda i: bus.listen(), lambda ls: [l.deinit() for l in ls])
    finally:
        bus.deinit()


def pycan_buses(n: int) -> float:
    import can
    return per_item_kb(n, lambda i: can.Bus(interface="virtual", channel="mem-pycan"),
                       lambda bs: [b.shutdown() for b in bs])


def canx_ecus(n: int) -> float:
    bus = canx.CAN(channel="virtual:mem-ecus")
    try:
        return per_item_kb(n, lambda i: j1939.ECU(bus=bus, name=j1939.Name(identity_number=5000 + i), address=i),
                           lambda es: [e.close() for e in es])
    finally:
        bus.deinit()


def pycan_j1939_cas(n: int) -> float:
    import j1939 as pj  # PyPI can-j1939

    ecu = pj.ElectronicControlUnit()
    ecu.connect(interface="virtual", channel="mem-pj")
    try:
        def make(i: int) -> Any:
            ca = pj.ControllerApplication(pj.Name(identity_number=5000 + i), i)
            ecu.add_ca(controller_application=ca)
            return ca
        return per_item_kb(n, make, lambda cas: [ecu.remove_ca(ca.device_address) for ca in cas])
    finally:
        ecu.disconnect()


def churn(rounds: int) -> List[float]:
    import j1939_bench as jb
    out = []
    for r in range(rounds):
        res = jb.canx_64_sessions(f"virtual:mem-churn{r}")
        if res["received_ok"] != res["pairs"]:
            raise RuntimeError(f"round {r}: {res}")
        out.append(rss_mb())
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=128, help="items per step (default 128)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of step (3) (default 6)")
    ap.add_argument("--json")
    args = ap.parse_args()
    r: Dict[str, Any] = {"canx_listener_kb": canx_listeners(args.n), "canx_ecu_kb": canx_ecus(args.n)}
    try:
        r["pycan_bus_kb"] = pycan_buses(args.n)
    except ImportError:
        pass
    try:
        r["pycan_j1939_ca_kb"] = pycan_j1939_cas(args.n)
    except ImportError:
        pass
    r["churn_rss_mb"] = churn(args.rounds)
    print(f"RSS per idle receive queue ({args.n}): canx Listener {r['canx_listener_kb']:.1f} kB"
          + (f", python-can virtual Bus {r['pycan_bus_kb']:.1f} kB" if "pycan_bus_kb" in r else ""))
    print(f"RSS per idle J1939 ECU ({args.n}): canx ECU {r['canx_ecu_kb']:.1f} kB"
          + (f", python-can-j1939 CA {r['pycan_j1939_ca_kb']:.1f} kB" if "pycan_j1939_ca_kb" in r else ""))
    print("RSS after each round of 128 ECUs open, 64 transfers, closed: "
          + ", ".join(f"{m:.0f}" for m in r["churn_rss_mb"]) + " MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
