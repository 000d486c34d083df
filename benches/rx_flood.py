"""Receive benchmark: a `cangen -g 0` flood into (a) canx delivering to a
Python loop, (b) python-can's socketcan bus, (c) candump > file, in one run
on one vcan (run it in the VM: scripts/bench-vm; or as root with vcan0).

For each receiver: the receiver starts and listens, then `cangen vcan0 -g 0
-n N` sends N frames as fast as the kernel takes them. Printed per receiver:
frames delivered and lost, delivered frames per second (delivered / time from
the start of the flood to the last frame consumed) and CPU seconds per 100k
frames, then the ratios against python-can and candump. Absolute numbers
under qemu's software emulation are ~10x lower than on hardware: compare the
ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_cangen(channel: str, n: int) -> float:
    t0 = time.time()
    subprocess.run(["cangen", channel, "-g", "0", "-n", str(n), "-I", "123", "-L", "8", "-D", "i", "-p", "100"],
                   check=True, timeout=600)
    return t0


def python_receiver(mode: str, channel: str, n: int, idle: float) -> dict:
    return flood_receiver(mode, [sys.executable, str(HERE / "rx_consumer.py"), mode, channel, str(n), str(idle)],
                          channel, n)


def flood_receiver(mode: str, cmd: list, channel: str, n: int) -> dict:
    """Starts the receiver process `cmd` (it prints READY, then one JSON
    line when done), floods `channel` with `n` frames, returns its JSON with
    the flood's start time as ``t0``."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "READY":
        raise SystemExit(f"{mode}: receiver did not start: {line!r}")
    time.sleep(0.2)
    t0 = run_cangen(channel, n)
    out = p.stdout.read()
    p.wait(timeout=600)
    r = json.loads(out.strip().splitlines()[-1])
    r["t0"] = t0
    return r


def candump_receiver(channel: str, n: int, idle: float) -> dict:
    log = Path("/tmp/canx-bench-candump.log")
    with open(log, "wb") as f:
        p = subprocess.Popen(["candump", "-n", str(n), channel], stdout=f)
        time.sleep(0.5)
        t0 = run_cangen(channel, n)
        # candump exits after n frames; if it lost some it waits: stop it after `idle` s of silence.
        last_size, last_change = -1, time.time()
        while p.poll() is None:
            size = log.stat().st_size
            if size != last_size:
                last_size, last_change = size, time.time()
            elif time.time() - last_change > idle:
                p.terminate()
                break
            time.sleep(0.05)
        _, status, ru = os.wait4(p.pid, 0) if p.returncode is None else (0, 0, None)
    received = sum(1 for _ in open(log, "rb"))
    t_last = log.stat().st_mtime
    cpu = (ru.ru_utime + ru.ru_stime) if ru is not None else float("nan")
    return {"received": received, "t0": t0, "t_first": t0, "t_last": t_last, "cpu_s": cpu, "kernel_dropped": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channel", default="vcan0")
    ap.add_argument("-n", "--frames", type=int, default=100_000)
    ap.add_argument("--idle", type=float, default=3.0, help="seconds of silence that end a receiver")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    results = {}
    for mode in ("canx", "canx-batch", "python-can"):
        results[mode] = python_receiver(mode, a.channel, a.frames, a.idle)
    results["candump"] = candump_receiver(a.channel, a.frames, a.idle)

    print(f"\nreceive benchmark: cangen -g 0 -n {a.frames} on {a.channel}")
    print(f"{'receiver':<12} {'delivered':>10} {'lost':>8} {'frames/s':>10} {'cpu s/100k':>11}")
    for name, r in results.items():
        span = max(r["t_last"] - r["t0"], 1e-9)
        r["fps"] = r["received"] / span
        r["lost"] = a.frames - r["received"]
        r["cpu_per_100k"] = r["cpu_s"] / max(r["received"], 1) * 100_000
        print(f"{name:<12} {r['received']:>10} {r['lost']:>8} {r['fps']:>10.0f} {r['cpu_per_100k']:>11.2f}")
    pc, cd = results["python-can"], results["candump"]
    for name in ("canx", "canx-batch"):
        r = results[name]
        print(f"{name}: {r['fps'] / max(pc['fps'], 1e-9):.1f}x python-can frames/s, "
              f"{r['fps'] / max(cd['fps'], 1e-9):.2f}x candump frames/s, "
              f"{pc['cpu_per_100k'] / max(r['cpu_per_100k'], 1e-9):.1f}x less CPU per frame than python-can; "
              f"lost {r['lost']} (candump lost {cd['lost']})")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
