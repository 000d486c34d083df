"""Receive benchmark for the USB adapters (issue 12), in one VM run:

- gs_usb: the emulated device (tests/vm/gs_usb_emulator.py on dummy_hcd)
  sends N classic 8-byte frames at its top rate (64 IN transfers queued
  with native AIO) into (a) canx's gs_usb backend (`gs_usb:SERIAL`, nusb),
  (b) python-can's `gs_usb` interface (PyPI gs_usb + pyusb/libusb),
  (c) the kernel's gs_usb driver + candump;
- slcan: N `t` lines written to a pty as fast as it takes them, into
  (a) canx's slcan backend (`slcan:/dev/pts/N`), (b) python-can's `slcan`
  interface (pyserial), (c) the kernel's slcan line discipline (slcand) +
  candump.

Needs root and the VM's modules (libcomposite, dummy_hcd, usb_f_fs, can_dev,
gs_usb, slcan): run it with `scripts/bench-vm --usb` (or as root on a Linux
machine that has them). python-can's gs_usb needs `pip install gs_usb pyusb`
(bench-vm installs them) and libusb-1.0.

Printed per receiver: frames delivered and lost, delivered frames/s
(delivered / time from the start of the flood to the last frame consumed),
CPU µs per frame of the receiving process (getrusage), and CPU µs per frame
of the whole VM less the feeder (/proc/stat busy time minus this process's
own CPU: the receiver plus the kernel's USB/tty/network work, which
getrusage does not show for candump), then the ratio to python-can. Under
qemu's software emulation absolute numbers are ~10x below hardware, and
dummy_hcd (Linux 6.1) moves bulk data only on its timer tick (1 ms rounded
up to a jiffy: 4 ms at HZ=250), so a gs_usb receiver's rate is bounded by the
IN transfers it keeps queued per tick: compare the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import select
import shutil
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "vm"))
from gs_usb_emulator import PROFILES, GsUsbEmulator  # noqa: E402

SERIAL = "CANXBENCH001"
BITRATE = 500_000


def busy_jiffies() -> int:
    """Busy time of all CPUs (user+nice+system+irq+softirq+steal), in USER_HZ ticks."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return user + nice + system + irq + softirq + steal


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Meter:
    """VM-wide busy CPU seconds minus this process's own (the feeder's)."""

    def __enter__(self) -> Meter:
        self.hz = os.sysconf("SC_CLK_TCK")
        self.j0, self.s0 = busy_jiffies(), self_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.others = (busy_jiffies() - self.j0) / self.hz - (self_cpu() - self.s0)


def python_receiver(mode: str, channel: str, n: int, idle: float, feed: Callable[[], object]) -> dict:
    """rx_consumer.py MODE CHANNEL in its own process; `feed()` after READY."""
    cmd = [sys.executable, str(HERE / "rx_consumer.py"), mode, channel, str(n), str(idle)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "RX_BITRATE": str(BITRATE)})
    assert p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "READY":
        p.kill()
        return {"error": f"receiver did not start (rc {p.wait()}): {line.strip()!r}"}
    time.sleep(0.2)
    with Meter() as m:
        t0 = time.time()
        feed()
        out = p.stdout.read()
        p.wait(timeout=600)
    try:
        r = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": f"receiver failed (rc {p.returncode}): {out[-500:]!r}"}
    r.update(t0=t0, vm_cpu_s=m.others)
    return r


def candump_receiver(ifname: str, n: int, idle: float, feed: Callable[[], object]) -> dict:
    """candump -n N on `ifname` into a file; stopped after `idle` s of silence."""
    log = Path(f"/tmp/canx-usb-bench-{ifname}.log")
    with open(log, "wb") as f, Meter() as m:
        p = subprocess.Popen(["candump", "-n", str(n), ifname], stdout=f)
        time.sleep(0.5)
        t0 = time.time()
        feed()
        last_size, last_change = -1, time.time()
        while p.poll() is None:
            size = log.stat().st_size
            if size != last_size:
                last_size, last_change = size, time.time()
            elif time.time() - last_change > idle:
                p.terminate()
                break
            time.sleep(0.05)
        _, _, ru = os.wait4(p.pid, 0) if p.returncode is None else (0, 0, None)
    received = sum(1 for _ in open(log, "rb"))
    cpu = (ru.ru_utime + ru.ru_stime) if ru is not None else float("nan")
    return {"received": received, "t0": t0, "t_first": t0, "t_last": log.stat().st_mtime, "cpu_s": cpu,
            "vm_cpu_s": m.others, "kernel_dropped": None}


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


# ----------------------------------------------------------------- gs_usb


def bench_gs_usb(n: int, idle: float, scale: float) -> dict[str, dict]:
    for m in ("libcomposite", "dummy_hcd", "usb_f_fs", "can_dev"):
        sh("modprobe", m)
    emu = GsUsbEmulator(["vcan0"], PROFILES["bxcan48"], name="canxbench", serial=SERIAL)
    emu.start()
    results: dict[str, dict] = {}
    try:
        wait_for(emu.usb_device_dir, 10 * scale, "the emulated device to enumerate")
        udev = emu.usb_device_dir()
        assert udev is not None
        intf = f"{udev.name}:1.0"
        bound = Path(f"/sys/bus/usb/devices/{intf}/driver")
        # As tests/test_gs_usb_emulator.py: the kernel's driver binds first
        # (its probe complete), then user space takes the interface from it.
        sh("modprobe", "gs_usb")
        emu.wait_netdevs(1, 10 * scale)
        Path("/sys/bus/usb/drivers/gs_usb/unbind").write_text(intf)
        wait_for(lambda: not bound.exists(), 5 * scale, "gs_usb to unbind")
        flood = {}

        def feed() -> None:
            flood["taken"], flood["s"] = emu.flood(0, n, stall_s=idle + 5)

        for mode, channel in (("canx", f"gs_usb:{SERIAL}"), ("canx-batch", f"gs_usb:{SERIAL}"),
                              ("python-can-gs_usb", "0")):
            print(f"gs_usb: {mode} ...", file=sys.stderr, flush=True)
            r = python_receiver(mode, channel, n, idle, feed)
            r["device_sent"] = flood.get("taken")
            results[mode] = r
            print(f"  {json.dumps(r)}", file=sys.stderr, flush=True)
            time.sleep(0.3)
        print("gs_usb: kernel gs_usb + candump ...", file=sys.stderr, flush=True)
        if not bound.exists():
            Path("/sys/bus/usb/drivers/gs_usb/bind").write_text(intf)
        (dev,) = emu.wait_netdevs(1, 10 * scale)
        sh("ip", "link", "set", "dev", dev, "type", "can", "bitrate", str(BITRATE))
        sh("ip", "link", "set", "dev", dev, "up")
        r = candump_receiver(dev, n, idle, feed)
        r["device_sent"] = flood.get("taken")
        r["kernel_dropped"] = int(Path(f"/sys/class/net/{dev}/statistics/rx_dropped").read_text())
        results["kernel+candump"] = r
        print(f"  {json.dumps(r)}", file=sys.stderr, flush=True)
        sh("ip", "link", "set", "dev", dev, "down", check=False)
    finally:
        emu.stop()
    return results


# ----------------------------------------------------------------- slcan


class PtyFeeder:
    """The adapter's end of a pty: `feed()` writes N `t` lines as fast as the
    pty takes them; whatever the host writes (C, S6, O) is read and dropped."""

    def __init__(self, n: int) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # our own slave fd must not echo
        self.path = os.ttyname(self.slave)
        self.data = b"".join(b"t1238%08X00000000\r" % i for i in range(n))

    def feed(self) -> None:
        """Non-blocking writes: stops (the rest counted as lost) when the pty
        takes nothing for 10 s."""
        os.set_blocking(self.master, False)
        view = memoryview(self.data)
        while view:
            r, w, _ = select.select([self.master], [self.master], [], 10.0)
            if r:
                try:
                    os.read(self.master, 65536)
                except OSError:
                    pass
            if w:
                try:
                    k = os.write(self.master, view[:4096])
                except BlockingIOError:
                    k = 0
                view = view[k:]
            elif not r:
                print(f"slcan feeder: the pty took nothing for 10 s, {len(view)} bytes left", file=sys.stderr)
                return

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def bench_slcan(n: int, idle: float, scale: float) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for mode in ("canx", "canx-batch", "python-can-slcan"):
        print(f"slcan: {mode} ...", file=sys.stderr, flush=True)
        pty = PtyFeeder(n)
        try:
            channel = f"slcan:{pty.path}" if mode.startswith("canx") else pty.path
            results[mode] = python_receiver(mode, channel, n, idle, pty.feed)
            print(f"  {json.dumps(results[mode])}", file=sys.stderr, flush=True)
        finally:
            pty.close()
    print("slcan: kernel slcand + candump ...", file=sys.stderr, flush=True)
    sh("modprobe", "slcan")
    if shutil.which("slcand") is None:
        results["kernel+candump"] = {"error": "slcand (can-utils) not installed"}
        return results
    pty = PtyFeeder(n)
    ifname = "slbench0"
    proc = subprocess.Popen(["slcand", "-F", pty.path, ifname], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(Path(f"/sys/class/net/{ifname}").exists, 10 * scale, f"slcand to make {ifname}")
        sh("ip", "link", "set", ifname, "up")
        r = candump_receiver(ifname, n, idle, pty.feed)
        r["kernel_dropped"] = int(Path(f"/sys/class/net/{ifname}/statistics/rx_dropped").read_text())
        results["kernel+candump"] = r
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pty.close()
    return results


# ----------------------------------------------------------------- report


def table(title: str, n: int, results: dict[str, dict], peer: str) -> list[str]:
    lines = [f"## {title} ({n} frames)", "",
             "| receiver | delivered | lost | frames/s | rx CPU µs/frame | VM CPU µs/frame (less feeder) | x python-can |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    rates: dict[str, float] = {}
    for name, r in results.items():
        if "error" in r:
            continue
        dt = r["t_last"] - r["t0"]
        rates[name] = r["received"] / dt if dt > 0 and r["received"] else 0.0
    base = rates.get(peer)
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | - | - | - | - | - | {r['error']} |")
            continue
        got = r["received"]
        per = (lambda s: f"{s / got * 1e6:.0f}" if got else "-")
        ratio = f"{rates[name] / base:.1f}x" if base else "-"
        dropped = r.get("kernel_dropped")
        lost = f"{n - got}" + (f" (rx_dropped {dropped})" if dropped else "")
        lines.append(f"| {name} | {got} | {lost} | {rates[name]:.0f} | {per(r['cpu_s'])} | {per(r['vm_cpu_s'])} | {ratio} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", "--gs-usb-frames", type=int, default=5000)
    ap.add_argument("--slcan-frames", type=int, default=20000)
    ap.add_argument("--idle", type=float, default=3.0, help="a receiver stops after this many s without a frame")
    ap.add_argument("--only", choices=["gs_usb", "slcan"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("usb_bench: needs root (configfs gadget, modprobe, ip link): run it in scripts/bench-vm")
    scale = 10.0 if os.environ.get("CANX_VM") == "1" else 1.0
    out: dict[str, object] = {"kernel": os.uname().release}
    report: list[str] = []
    if args.only in (None, "gs_usb"):
        g = bench_gs_usb(args.gs_usb_frames, args.idle, scale)
        out["gs_usb"] = g
        report += table("gs_usb: emulated device -> receiver", args.gs_usb_frames, g, "python-can-gs_usb")
        print("\n".join(report), flush=True)
    if args.only in (None, "slcan"):
        s = bench_slcan(args.slcan_frames, args.idle, scale)
        out["slcan"] = s
        report += table("slcan: pty -> receiver", args.slcan_frames, s, "python-can-slcan")
    print("\n".join(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
