"""python-can plugin benchmark: a `cangen -g 0` flood received by
(a) python-can `socketcan` + recv(), (b) python-can `-i canx` + recv(),
(c) canx native batch receive (Listener.receive_many), (d) candump; then
`send` throughput of (a)-(c) and the jitter of `send_periodic` (canx's
native timer vs python-can's socketcan, which uses the kernel's CAN_BCM).

Run in the VM (vcan0, can-utils):
    CANX_VM_EXEC='"$CANX_PYTHON" benches/pycan_bench.py' scripts/test-vm

Reuses rx_flood.py's approach and helpers: each receiver is its own process,
prints READY, then `cangen vcan0 -g 0 -n N` floods; per receiver: frames
delivered and lost, frames/s (delivered / time from flood start to the last
frame consumed), CPU seconds per 100k frames. Absolute numbers under qemu's
software emulation are ~10x lower than on hardware: compare the ratios.

A run in scripts/test-vm (qemu TCG, 2 vCPUs, kernel 6.1, release build):
    (a) python-can socketcan recv()   5354 of 100000 delivered,  3057 frames/s, 184.8 cpu s/100k
    (b) python-can -i canx recv()   100000 delivered,           26758 frames/s,   9.8 cpu s/100k
    (c) canx receive_many()         100000 delivered,           27230 frames/s,   9.2 cpu s/100k
    (d) candump                      65385 delivered,           23565 frames/s,   3.9 cpu s/100k
    send: (a) 7488/s  (b) 31460/s  (c) 48808/s
    send_periodic 10 ms: canx timer stdev 1499 us, kernel BCM stdev 584 us (emulated; on the
    host's virtual bus the canx timer gives stdev ~100 us, mean 10000.1 us)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rx_flood import candump_receiver, flood_receiver  # noqa: E402

RX_MODES = {"a": "python-can socketcan recv()", "b": "python-can -i canx recv()",
            "c": "canx receive_many()"}


#: This benchmark's receiver modes as rx_consumer.py modes.
CONSUMER_MODE = {"a": "python-can", "b": "python-can-canx", "c": "canx-batch"}


def receiver(mode: str, channel: str, n: int, idle: float) -> dict:
    cmd = [sys.executable, str(HERE / "rx_consumer.py"), CONSUMER_MODE[mode], channel, str(n), str(idle)]
    return flood_receiver(mode, cmd, channel, n)


def send_rate(mode: str, channel: str, n: int) -> dict:
    """Frames/s and CPU per 100k of a tight send loop (in this process)."""
    if mode in ("a", "b"):
        import can

        bus = can.Bus(interface="socketcan" if mode == "a" else "canx", channel=channel)
        msg = can.Message(arbitration_id=0x123, is_extended_id=False, data=bytes(8))
        send = bus.send
        close = bus.shutdown
    else:
        import canx

        bus = canx.CAN(channel=channel)
        msg = canx.Message(0x123, bytes(8))
        send = bus.send
        close = bus.deinit
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        send(msg)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    close()
    return {"fps": n / dt, "cpu_per_100k": cpu / n * 100_000}


def jitter(interface: str, channel: str, period: float, count: int) -> dict:
    """Gaps between the kernel timestamps of `count` send_periodic frames."""
    import can

    import canx

    rx = canx._canx.RawBus(channel, filters=[(0x7EE, 0x7FF, False)])
    tx = can.Bus(interface=interface, channel=channel)
    task = tx.send_periodic(can.Message(arbitration_id=0x7EE, is_extended_id=False, data=b"\x01"), period)
    time.sleep(period * (count + 2))
    task.stop()
    tx.shutdown()
    ts = [f[9] for f in rx.recv_many(100_000, 1.0)]
    rx.shutdown()
    ts = ts[:count]
    gaps = [(b - a) * 1e6 for a, b in zip(ts, ts[1:])]
    dev = sorted(abs(g - period * 1e6) for g in gaps)
    return {"frames": len(ts), "mean_us": statistics.mean(gaps), "stdev_us": statistics.pstdev(gaps),
            "p99_dev_us": dev[int(0.99 * (len(dev) - 1))], "max_dev_us": dev[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channel", default="vcan0")
    ap.add_argument("-n", "--frames", type=int, default=100_000)
    ap.add_argument("--send-frames", type=int, default=50_000)
    ap.add_argument("--idle", type=float, default=3.0)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    rx = {m: receiver(m, a.channel, a.frames, a.idle) for m in RX_MODES}
    rx["d"] = candump_receiver(a.channel, a.frames, a.idle)
    names = dict(RX_MODES, d="candump")
    print(f"\nreceive: cangen -g 0 -n {a.frames} on {a.channel}")
    print(f"{'receiver':<30} {'delivered':>10} {'lost':>8} {'frames/s':>10} {'cpu s/100k':>11}")
    for k, r in rx.items():
        r["fps"] = r["received"] / max(r["t_last"] - r["t0"], 1e-9)
        r["lost"] = a.frames - r["received"]
        r["cpu_per_100k"] = r["cpu_s"] / max(r["received"], 1) * 100_000
        print(f"({k}) {names[k]:<26} {r['received']:>10} {r['lost']:>8} {r['fps']:>10.0f} {r['cpu_per_100k']:>11.2f}")
    print(f"(b)/(a) frames/s: {rx['b']['fps'] / max(rx['a']['fps'], 1e-9):.2f}x (target >= 3x); "
          f"CPU per frame (a)/(b): {rx['a']['cpu_per_100k'] / max(rx['b']['cpu_per_100k'], 1e-9):.2f}x")
    print(f"(c)/(d) frames/s: {rx['c']['fps'] / max(rx['d']['fps'], 1e-9):.2f}x (target >= 0.5x)")

    tx = {m: send_rate(m, a.channel, a.send_frames) for m in ("a", "b", "c")}
    tx_names = {"a": "python-can socketcan send()", "b": "python-can -i canx send()", "c": "canx CAN.send()"}
    print(f"\nsend: {a.send_frames} frames in a loop on {a.channel}")
    for k, r in tx.items():
        print(f"({k}) {tx_names[k]:<26} {r['fps']:>10.0f} frames/s {r['cpu_per_100k']:>8.2f} cpu s/100k")
    print(f"(b)/(a) send frames/s: {tx['b']['fps'] / max(tx['a']['fps'], 1e-9):.2f}x")

    jit = {}
    print("\nsend_periodic jitter (gaps between kernel receive timestamps)")
    for iface, label in (("canx", "canx native timer"), ("socketcan", "python-can socketcan (CAN_BCM)")):
        for period in (0.01, 0.001):
            r = jit[f"{iface}-{period}"] = jitter(iface, a.channel, period, 300 if period == 0.01 else 1000)
            print(f"{label:<32} {period * 1e3:>5.1f} ms: {r['frames']} frames, mean {r['mean_us']:.1f} us, "
                  f"stdev {r['stdev_us']:.1f} us, p99 |dev| {r['p99_dev_us']:.1f} us, max |dev| {r['max_dev_us']:.1f} us")
    if a.json:
        Path(a.json).write_text(json.dumps({"rx": rx, "tx": tx, "jitter": jit}, indent=2))


if __name__ == "__main__":
    main()
