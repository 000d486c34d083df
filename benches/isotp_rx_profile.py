"""Where canx's receive path spends its time behind a Linux ISO-TP sender
(run in the VM): one 66,000-byte PDU, BS 0, kernel -> kernel and kernel ->
canx per round; for canx, the receive thread's CPU time and context
switches per CF (from /proc/self/task). docs/benchmarks.md, session 6.

    CANX_VM_EXEC='"$CANX_PYTHON" benches/isotp_rx_profile.py' scripts/test-vm

To compare two builds in one boot, copy the old build's python/canx to
DIR/canx and run this once more with PYTHONPATH=DIR (argument: a label).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
from typing import List, Tuple

import canx.isotp as cxi

IFC = "vcan0"
SOL_CAN_ISOTP = 106
WAIT_TX_DONE = 0x400
SIZE = 66000


def ksock(rx: int, tx: int) -> socket.socket:
    """A kernel ISO-TP socket receiving `rx`, sending `tx`; send waits for the end."""
    s = socket.socket(socket.AF_CAN, socket.SOCK_DGRAM, socket.CAN_ISOTP)
    s.setsockopt(SOL_CAN_ISOTP, 1, struct.pack("=IIBBBB", WAIT_TX_DONE, 0, 0, 0xCC, 0xCC, 0))
    s.bind((IFC, rx, tx))
    s.settimeout(30)
    return s


def thread_stats(prefix: str) -> Tuple[float, int, int]:
    """CPU seconds, voluntary and involuntary switches of this process's thread named `prefix`*."""
    for tid in os.listdir("/proc/self/task"):
        try:
            comm = open(f"/proc/self/task/{tid}/comm").read().strip()
        except OSError:
            continue
        if comm.startswith(prefix):
            st = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
            cpu = (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
            sw = {}
            for line in open(f"/proc/self/task/{tid}/status"):
                if "ctxt_switches" in line:
                    k, v = line.split(":")
                    sw[k] = int(v)
            return cpu, sw.get("voluntary_ctxt_switches", 0), sw.get("nonvoluntary_ctxt_switches", 0)
    return 0.0, 0, 0


def kernel_to_kernel() -> float:
    rx, tx = ksock(0x7E0, 0x7E8), ksock(0x7E8, 0x7E0)
    got: List[bytes] = []
    t0 = time.perf_counter()
    th = threading.Thread(target=lambda: got.append(rx.recv(70000)))
    th.start()
    tx.send(bytes(SIZE))
    th.join(30)
    dt = time.perf_counter() - t0
    rx.close()
    tx.close()
    assert got and len(got[0]) == SIZE
    return dt


def kernel_to_canx(label: str) -> float:
    tx = ksock(0x7E0, 0x7E8)
    a = cxi.Address(cxi.AddressingMode.Normal_11bits, txid=0x7E0, rxid=0x7E8)
    with cxi.CanStack(IFC, a, params={"max_frame_size": 70000, "blocksize": 0}) as s:
        time.sleep(0.2)
        c0 = thread_stats("canx-rx")
        t0 = time.perf_counter()
        tx.send(bytes(SIZE))
        m = s.recv(block=True, timeout=30)
        dt = time.perf_counter() - t0
        c1 = thread_stats("canx-rx")
    tx.close()
    assert m is not None and len(m) == SIZE
    n = SIZE // 7
    print(
        f"  {label} kernel->canx {SIZE} B: {dt * 1000:.0f} ms, receive thread CPU {1e6 * (c1[0] - c0[0]) / n:.0f} us/CF,"
        f" voluntary switches {(c1[1] - c0[1]) / n:.2f}/CF, involuntary {(c1[2] - c0[2]) / n:.2f}/CF",
        flush=True,
    )
    return dt


def main() -> None:
    with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
        print("clocksource", f.read().strip(), flush=True)
    label = sys.argv[1] if len(sys.argv) > 1 else ""
    for r in range(3):
        kk = kernel_to_kernel()
        kc = kernel_to_canx(label)
        print(f"round {r}: kernel->kernel {kk * 1000:.0f} ms, kernel->canx {kc * 1000:.0f} ms, ratio {kk / kc:.2f}", flush=True)


if __name__ == "__main__":
    main()
