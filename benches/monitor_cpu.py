"""CPU use of ``canx monitor`` at 10,000 frames/s, against python-can's
``can.viewer`` on the same traffic, in the same run.

    .venv/bin/python benches/monitor_cpu.py [--rate 10000] [--ids 100] [--seconds 10] [--rounds 3]

Host only (no VM). Each viewer runs full-screen in its own tmux session
(170x120, so that every row is on screen) on a ``udp_multicast`` bus (python-can's own ``udp_multicast``
interface for can.viewer, the same datagrams); a sender process offers
``--rate`` frames/s spread over ``--ids`` 8-byte ids whose data changes on
every frame. CPU = user + system time of the viewer process (``/proc``)
over the sending time, in percent of one core; also the Python threads
alone (model and drawing; the rest is canx's native receive
threads, here the udp_multicast backend's socket and decode thread, which
any canx program on this channel pays). The sender's own CPU is not
counted. Also reported: the frames each viewer counted (its own count on
screen: canx's header total, can.viewer's first row counts summed) against
those sent, i.e. whether it kept up. Needs tmux.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List

GROUP = "239.74.163.8"
PORT = 43178

SENDER = r'''
import sys, time
from canx._canx import RawBus
rate, seconds, ids = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
bus = RawBus("udp_multicast:%s:%d")
n = int(rate * seconds)
t0 = time.perf_counter()
i = 0
while i < n:
    for k in range(20):
        bus.send(0x100 + (i + k) %% ids, False, False, False, False, False, 8, (i + k).to_bytes(8, "big"), 1.0)
    i += 20
    ahead = t0 + i / rate - time.perf_counter()
    if ahead > 0:
        time.sleep(ahead)
print(n, time.perf_counter() - t0, flush=True)
bus.shutdown()
''' % (GROUP, PORT)


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def threads_s(pid: int) -> Dict[str, float]:
    """CPU s per thread name (``python``: the interpreter's threads; canx's native threads have their own names)."""
    out: Dict[str, float] = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        parts = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    return out


def one(kind: str, rate: float, ids: int, seconds: float) -> Dict[str, float]:
    sock = f"canx-bench-{os.getpid()}-{kind}-{time.monotonic_ns()}"
    if kind == "canx":
        cmd = f"exec {sys.executable} -m canx monitor udp_multicast:{GROUP}:{PORT}"
    else:
        cmd = (f"exec {sys.executable} -m can.viewer -i udp_multicast -c {GROUP} "
               f"--bus-kwargs port={PORT}")
    subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-s", "b", "-x", "170", "-y", "120", cmd], check=True,
                   env={**os.environ, "TERM": "xterm-256color"})
    try:
        pid = int(subprocess.run(["tmux", "-L", sock, "display", "-p", "-t", "b", "#{pane_pid}"], check=True,
                                 capture_output=True, text=True).stdout)
        time.sleep(2.0)
        c0 = cpu_s(pid)
        t0 = threads_s(pid)
        w0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", SENDER, str(rate), str(seconds), str(ids)], check=True,
                             capture_output=True, text=True).stdout.split()
        wall = time.perf_counter() - w0
        cpu = cpu_s(pid) - c0
        t1 = threads_s(pid)
        main_thread = t1.get("python", 0.0) - t0.get("python", 0.0)
        time.sleep(0.5)
        screen = subprocess.run(["tmux", "-L", sock, "capture-pane", "-p", "-t", "b"], check=True,
                                capture_output=True, text=True).stdout
        seen = _seen(kind, screen)
        return {"sent": float(out[0]), "offered_per_s": float(out[0]) / float(out[1]), "cpu_pct": 100 * cpu / wall,
                "main_pct": 100 * main_thread / wall,
                "seen": seen}
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def _seen(kind: str, screen: str) -> float:
    if kind == "canx":
        m = re.search(r"total (\d+)", screen)
        return float(m.group(1)) if m else -1.0
    # can.viewer rows: "count  time  dt  ID  DLC  data ...": sum the first column of the frame rows.
    total = 0
    for line in screen.splitlines():
        parts = line.split()
        if len(parts) > 4 and parts[0].isdigit() and re.fullmatch(r"0x[0-9A-Fa-f]+", parts[3] if len(parts) > 3 else ""):
            total += int(parts[0])
    return float(total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--ids", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        print("needs tmux", file=sys.stderr)
        return 2
    res: Dict[str, List[Dict[str, float]]] = {"canx": [], "can.viewer": []}
    for r in range(args.rounds):
        for kind in (["canx", "can.viewer"] if r % 2 == 0 else ["can.viewer", "canx"]):
            x = one(kind, args.rate, args.ids, args.seconds)
            res[kind].append(x)
            print(f"round {r + 1} {kind:10s} offered {x['offered_per_s']:7.0f}/s CPU {x['cpu_pct']:5.1f}% "
                  f"(Python threads {x['main_pct']:5.1f}%) "
                  f"frames seen {x['seen']:.0f} of {x['sent']:.0f}", flush=True)
    print(f"\nmedians over {args.rounds} rounds, {args.ids} ids, {args.rate:.0f} frames/s offered for {args.seconds} s:")
    print("| viewer | CPU % of one core (process) | of which Python threads | frames seen / sent |")
    print("| --- | ---: | ---: | ---: |")
    med = {}
    for kind, xs in res.items():
        med[kind] = statistics.median(x["cpu_pct"] for x in xs)
        seen = statistics.median(x["seen"] / x["sent"] for x in xs)
        mainp = statistics.median(x["main_pct"] for x in xs)
        print(f"| {kind} | {med[kind]:.1f} | {mainp:.1f} | {100 * seen:.1f}% |")
    print(f"\nratio canx / can.viewer CPU: {med['canx'] / max(med['can.viewer'], 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
