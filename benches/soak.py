"""Soak: everything at once for a while, watching the process for leaks.

    CANX_VM_EXEC='"$CANX_PYTHON" benches/soak.py --duration 600' scripts/test-vm   # 10 min, in the VM
    .venv/bin/python benches/soak.py --channel virtual:soak --duration 60         # host, virtual bus

On one interface at once (issue #14, "Soak"):
- a flood at full rate: can-utils ``cangen -g 0`` (identifier 0x7FF, 8
  random bytes; on the virtual bus, where cangen cannot go, a thread of
  this process sends the same frames as fast as ``send`` returns);
- 8 J1939 ECU pairs, each running 1785-byte RTS/CTS transfers back to back;
- a MegaSquirt poller reading a 64-byte table from a served board;
- a reliable-delivery sender (general mode) with its receiver.

Every second it samples this process's resident memory (VmRSS), open file
descriptors and threads. It passes when, after the warm-up (the first
quarter of the run, at least 10 s), RSS grows less than 5 % (median of the
last 5 samples against the first 5), the fd and thread counts stay flat
(the floor of the last 5 samples not above that of the first 5), and no acknowledged message is lost: every
J1939 transfer the sender saw acknowledged (EoMA) arrived at its receiver
with the right bytes, every MegaSquirt read returned the table's bytes,
and every reliable message reported delivered reached the receiver.

Prints a table and PASS/FAIL (exit 1 on FAIL); ``--json FILE`` also writes
the numbers. Transfers that end without acknowledgment (aborts, timeouts:
the flood starves an emulated VM) are counted, not failures. A receiver's
message that is not the awaited transfer is counted as ``j1939_stale`` (an
earlier transfer's bytes, one the sender gave up on) or ``j1939_unknown``
(bytes of no transfer: packets of two sessions mixed); an acknowledged
transfer reported lost that arrives later is counted as ``j1939_late``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import canx
from canx import j1939, megasquirt, reliable

PGN = 0xEF00
PAIRS = 8
TP_SIZE = 1785


def tp_data(k: int, pair: int) -> bytes:
    """Transfer `k`'s bytes on `pair`: byte n is ((k + n) * 7 + pair) mod 256."""
    return bytes(((k + n) * 7 + pair) & 0xFF for n in range(TP_SIZE))


def is_tp_data(data: bytes, pair: int) -> bool:
    """Whether `data` is the bytes of some transfer of `pair` (k mod 256
    from byte 0: 183 is 7's inverse mod 256), without keeping them all."""
    return len(data) == TP_SIZE and data == tp_data(((data[0] - pair) * 183) & 0xFF, pair)


def proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def sample() -> Dict[str, float]:
    return {
        "rss_mb": proc_status("VmRSS") / 1024,
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": proc_status("Threads"),
    }


class Soak:
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.stop = threading.Event()
        self.errors: List[str] = []
        self.counts: Dict[str, int] = {
            "flood_frames": 0,
            "j1939_acked": 0,
            "j1939_received": 0,
            "j1939_failed": 0,
            "j1939_stale": 0,
            "j1939_unknown": 0,
            "j1939_late": 0,
            "ms_reads": 0,
            "ms_timeouts": 0,
            "reliable_delivered": 0,
            "reliable_failed": 0,
            "reliable_received": 0,
        }
        self.lock = threading.Lock()
        self.threads: List[threading.Thread] = []
        self.closers: List[Any] = []

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def error(self, what: str) -> None:
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append(what)

    def spawn(self, name: str, fn: Any, *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    # ---------------------------------------------------------------- flood
    def start_flood(self) -> Optional[subprocess.Popen[bytes]]:
        if not self.channel.startswith("virtual:") and shutil.which("cangen"):
            return subprocess.Popen(["cangen", self.channel, "-g", "0", "-I", "7FF", "-L", "8", "-D", "r", "-p", "10"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.spawn("flood", self.flood_thread)
        return None

    def flood_thread(self) -> None:
        bus = canx.CAN(channel=self.channel)
        self.closers.append(bus)
        msg = canx.Message(id=0x7FF, data=bytes(range(8)))
        while not self.stop.is_set():
            try:
                bus.send(msg)
                self.count("flood_frames")
            except canx.CanxError:
                time.sleep(0.001)

    # ---------------------------------------------------------------- J1939
    def start_j1939(self) -> None:
        pairs = []
        for i in range(PAIRS):
            a = j1939.ECU(channel=self.channel, name=j1939.Name(identity_number=3000 + i), address=0x10 + i,
                          queue_size=4096, etp_buffer=4096)
            b = j1939.ECU(channel=self.channel, name=j1939.Name(identity_number=3100 + i), address=0x30 + i,
                          queue_size=4096, etp_buffer=4096)
            self.closers += [a, b]
            a.begin_claim()  # all 16 claims wait their 250 ms together
            b.begin_claim()
            pairs.append((a, b))
        for i, (a, b) in enumerate(pairs):
            a.claim_address(timeout=10)
            b.claim_address(timeout=10)
            self.spawn(f"j1939-{i}", self.j1939_pair, a, b, i)

    def j1939_pair(self, a: j1939.ECU, b: j1939.ECU, i: int) -> None:
        stream = b.messages(PGN, source=a.address)
        k = 0
        lost: Dict[bytes, float] = {}  # acknowledged, not found in time -> when (at most a few)
        while not self.stop.is_set():
            data = tp_data(k, i)
            k += 1
            try:
                a.send_pgn(PGN, data, destination=b.address).result(timeout=30)
            except Exception as e:  # an abort (counted) is not a loss: it was not acknowledged
                self.count("j1939_failed")
                if self.stop.is_set():
                    break
                continue
            self.count("j1939_acked")
            # Earlier transfers the sender gave up on (no EoMA in time) may
            # still have arrived complete: skip them, look for this one.
            deadline = time.monotonic() + 10
            while True:
                m = stream.get(max(0.0, deadline - time.monotonic()))
                if m is None:
                    self.error(f"J1939 pair {i}: transfer {k} acknowledged (EoMA) but never received")
                    if len(lost) < 20:
                        lost[data] = time.monotonic()
                    break
                if m.data == data:
                    self.count("j1939_received")
                    break
                # An earlier transfer's bytes (one the sender gave up on), or
                # bytes of no transfer (packets of two sessions mixed).
                got = bytes(m.data)
                self.count("j1939_stale" if is_tp_data(got, i) else "j1939_unknown")
                if got in lost:  # a "lost" one arrived after all: say how late
                    self.count("j1939_late")
                    self.error(f"J1939 pair {i}: a transfer reported lost arrived "
                               f"{time.monotonic() - lost.pop(got):.1f} s after the search gave up")
        stream.close()

    # ------------------------------------------------------------ MegaSquirt
    def start_megasquirt(self) -> None:
        server = megasquirt.Node(channel=self.channel, can_id=1)
        client = megasquirt.Node(channel=self.channel, can_id=0, request_timeout=0.2, retries=3)
        self.closers += [server, client]
        table = bytes((n * 3) & 0xFF for n in range(64))
        server.serve_table(4, table)
        self.spawn("megasquirt", self.ms_poller, client, table)

    def ms_poller(self, client: megasquirt.Node, table: bytes) -> None:
        while not self.stop.is_set():
            try:
                got = client.read(1, 4, 0, 64, timeout=5)
            except canx.CanxError:
                self.count("ms_timeouts")
                continue
            if got != table:
                self.error("MegaSquirt read returned other bytes than the table")
            self.count("ms_reads")

    # -------------------------------------------------------------- reliable
    def start_reliable(self) -> None:
        tx_bus = canx.CAN(channel=self.channel)
        rx_bus = canx.CAN(channel=self.channel)
        self.closers += [tx_bus, rx_bus]
        self.received: set = set()
        rx = reliable.Receiver(rx_bus, [canx.Match(0x300, mask=0x7FF)], timeout=0.5)
        tx = reliable.Sender(tx_bus, timeout=0.05, retries=None, max_outstanding=64)
        self.closers += [rx, tx]
        self.spawn("reliable-rx", self.reliable_rx, rx)
        self.spawn("reliable-tx", self.reliable_tx, tx)

    def reliable_rx(self, rx: reliable.Receiver) -> None:
        while not self.stop.is_set():
            m = rx.receive(0.5)
            if m is not None:
                with self.lock:
                    self.received.add(bytes(m.data))
                self.count("reliable_received")

    def reliable_tx(self, tx: reliable.Sender) -> None:
        k = 0
        while not self.stop.is_set():
            data = k.to_bytes(4, "little")
            k += 1
            try:
                out = tx.send(0x300, data).result(timeout=30)
            except Exception:
                self.count("reliable_failed")
                continue
            if out.delivered:
                self.count("reliable_delivered")
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    with self.lock:
                        if data in self.received:
                            break
                    time.sleep(0.001)
                else:
                    self.error(f"reliable message {k - 1} reported delivered, never received")
            else:
                self.count("reliable_failed")

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)
        for c in reversed(self.closers):
            for m in ("close", "deinit"):
                if hasattr(c, m):
                    try:
                        getattr(c, m)()
                    except Exception:
                        pass
                    break


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channel", default=os.environ.get("CANX_SOAK_CHANNEL", "vcan0"))
    ap.add_argument("--duration", type=float, default=600.0, help="seconds (default 600; CI: 60)")
    ap.add_argument("--warmup", type=float, help="seconds not judged (default: a quarter of the run, at least 10)")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()

    soak = Soak(args.channel)
    t_setup = time.monotonic()
    flood = soak.start_flood()
    soak.start_j1939()
    soak.start_megasquirt()
    soak.start_reliable()
    samples: List[Dict[str, float]] = []
    t0 = time.monotonic()
    setup_s = t0 - t_setup
    try:
        while time.monotonic() - t0 < args.duration:
            time.sleep(1.0)
            s = sample()
            s["t"] = round(time.monotonic() - t0, 1)
            samples.append(s)
    finally:
        if flood is not None:
            flood.terminate()
            flood.wait()
        t_close = time.monotonic()
        soak.close()
        shutdown_s = time.monotonic() - t_close

    warm = args.warmup if args.warmup is not None else max(10.0, args.duration / 4)
    steady = [s for s in samples if s["t"] >= warm]
    ok = True
    report: Dict[str, Any] = {"channel": args.channel, "duration_s": args.duration, **soak.counts,
                              "setup_s": round(setup_s, 1), "shutdown_s": round(shutdown_s, 1), "warmup_s": warm}
    if len(steady) >= 10:
        first = statistics.median(s["rss_mb"] for s in steady[:5])
        last = statistics.median(s["rss_mb"] for s in steady[-5:])
        growth = (last - first) / first * 100
        # Flat: the floor of the last samples is not above the floor of the
        # first ones (a leak raises the floor; a file the runtime opens for
        # a moment, e.g. /proc/net/can/rcvlist_fil, does not).
        fd0, fd1 = min(s["fds"] for s in steady[:5]), min(s["fds"] for s in steady[-5:])
        th0, th1 = min(s["threads"] for s in steady[:5]), min(s["threads"] for s in steady[-5:])
        fds = {int(s["fds"]) for s in steady}
        threads = {int(s["threads"]) for s in steady}
        report.update(rss_first_mb=round(first, 1), rss_last_mb=round(last, 1), rss_growth_pct=round(growth, 2),
                      fds=sorted(fds), threads=sorted(threads))
        checks = [
            (f"RSS growth after warm-up {growth:+.2f} % (< 5 %): {first:.1f} -> {last:.1f} MB", growth < 5),
            (f"open fds flat after warm-up: floor {fd0:.0f} -> {fd1:.0f} (range {min(fds)}..{max(fds)})", fd1 <= fd0),
            (f"threads flat after warm-up: floor {th0:.0f} -> {th1:.0f} (range {min(threads)}..{max(threads)})",
             th1 <= th0),
        ]
    else:
        checks = [(f"too short: {len(steady)} samples after a warm-up of {warm:.0f} s", False)]
    checks.append((f"no acknowledged message lost ({len(soak.errors)} losses)", not soak.errors))
    checks.append(("work was done on every stream",
                   all(soak.counts[k] > 0 for k in ("j1939_received", "ms_reads", "reliable_received"))))
    print(f"soak on {args.channel} for {args.duration:.0f} s (setup {setup_s:.1f} s, shutdown {shutdown_s:.1f} s)")
    for k, v in soak.counts.items():
        print(f"  {k:20} {v:>12,}")
    for what, good in checks:
        print(f"  [{'ok' if good else 'FAIL'}] {what}")
        ok &= good
    for e in soak.errors:
        print(f"  loss: {e}")
    report["pass"] = ok
    report["errors"] = soak.errors
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**report, "samples": samples}, f, indent=1)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
