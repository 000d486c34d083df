"""ISO-TP (ISO 15765-2) benchmark on a vcan interface (run in the VM):

    CANX_VM_EXEC='"$CANX_PYTHON" benches/isotp_bench.py --json .vm-results/isotp_bench.json' scripts/test-vm

Pairs, each on its own CAN ID pair so idle stacks never answer another pair:
``kernel->kernel`` (two socket.CAN_ISOTP sockets), ``canx->kernel`` and
``kernel->canx`` (a ``canx.isotp.CanStack`` on its own ``canx.CAN``),
``canx->canx`` (two CanStacks on two ``canx.CAN`` buses) and, if PyPI
``can-isotp`` is installed, ``pyisotp->kernel`` and ``kernel->pyisotp``
(python-can-isotp's ``NotifierBasedCanStack`` over python-can ``socketcan``,
with a kernel filter on its RX ID). Every stack is opened before a run and
closed after it (opening is not timed), so no idle stack of another pair
reads the bus while a pair is measured.

(1) Throughput: one PDU of 4,095 and of 66,000 bytes, receiver FC with
    STmin 0 and BS 0 (and BS 8 at 66,000 bytes); the time from the
    sender's ``send`` to the receiver holding the whole PDU. The pairs run
    interleaved, one run of each per round, median of the rounds. CPU:
    ``time.process_time()`` of this process over the same span (it holds
    both ends; vcan's delivery runs in the sending task's softirq, so most
    kernel work is in it too), per MB of payload, median.
(2) Request/response latency: a 2-byte request, 2-byte or 4,095-byte
    response, the server echoing from a thread; p50/p99 of N requests
    (client -> server named as in (1)).
(3) STmin undershoots: a 700-byte PDU (100 CFs) to a kernel receiver
    asking STmin 1 ms and 0xF3 (300 us); CF gaps from ``candump -L``
    (kernel receive timestamps, taken once the kernel stamps frames at
    arrival: ``stamping_at_arrival``), count of gaps < STmin, for canx
    and the kernel as senders.

Prints a table; ``--json FILE`` also writes the numbers. Every wait has a
timeout; a case that fails or times out is recorded as an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import canx
import canx.isotp as cxi

try:
    import can  # python-can
    import isotp as pyisotp  # python-can-isotp

    HAVE_PYISOTP = True
except ImportError:  # pragma: no cover
    HAVE_PYISOTP = False

SOL_CAN_ISOTP = getattr(socket, "SOL_CAN_BASE", 100) + getattr(socket, "CAN_ISOTP", 6)
CAN_ISOTP_OPTS, CAN_ISOTP_RECV_FC = 1, 2
T = 20.0  # every wait's limit, s

# (tx id of side A, tx id of side B); A is the "left" name of the pair.
IDS = {"kk": (0x700, 0x708), "ck": (0x710, 0x718), "cc": (0x720, 0x728), "pk": (0x730, 0x738)}


def payload(n: int) -> bytes:
    return bytes((i % 0xFF) + 1 for i in range(n))


# -- endpoints: each has send(bytes), recv(timeout) -> bytes, close()


class Kernel:
    def __init__(self, ch: str, rx: int, tx: int, bs: int, stmin: int) -> None:
        s = socket.socket(socket.AF_CAN, socket.SOCK_DGRAM, socket.CAN_ISOTP)
        s.setsockopt(SOL_CAN_ISOTP, CAN_ISOTP_OPTS, struct.pack("=IIBBBB", 0, 0, 0, 0xCC, 0xCC, 0))
        s.setsockopt(SOL_CAN_ISOTP, CAN_ISOTP_RECV_FC, struct.pack("=BBB", bs, stmin, 0))
        s.bind((ch, rx, tx))
        s.settimeout(T)
        self.s = s

    def send(self, d: bytes) -> None:
        self.s.send(d)

    def recv(self, timeout: float = T) -> bytes:
        self.s.settimeout(timeout)
        return self.s.recv(70000)

    def close(self) -> None:
        self.s.close()


class Canx:
    def __init__(self, ch: str, rx: int, tx: int, bs: int, stmin: int) -> None:
        self.stack = cxi.CanStack(
            ch,  # the stack opens (and on stop() closes) its own canx.CAN
            cxi.Address(cxi.AddressingMode.Normal_11bits, txid=tx, rxid=rx),
            params={"max_frame_size": 66000, "blocking_send": False, "blocksize": bs, "stmin": stmin},
        )

    def send(self, d: bytes) -> None:
        self.stack.send(d)

    def recv(self, timeout: float = T) -> bytes:
        r = self.stack.recv(block=True, timeout=timeout)
        if r is None:
            raise TimeoutError("canx recv")
        return bytes(r)

    def close(self) -> None:
        self.stack.stop()


class PyIsotp:
    def __init__(self, ch: str, rx: int, tx: int, bs: int, stmin: int) -> None:
        self.bus = can.Bus(interface="socketcan", channel=ch, can_filters=[{"can_id": rx, "can_mask": 0x7FF}])
        self.notifier = can.Notifier(self.bus, [], timeout=0.1)
        self.stack = pyisotp.NotifierBasedCanStack(
            self.bus,
            self.notifier,
            address=pyisotp.Address(pyisotp.AddressingMode.Normal_11bits, txid=tx, rxid=rx),
            params={"max_frame_size": 66000, "blocksize": bs, "stmin": stmin, "tx_padding": 0xCC},
        )
        self.stack.start()

    def send(self, d: bytes) -> None:
        self.stack.send(d)

    def recv(self, timeout: float = T) -> bytes:
        r = self.stack.recv(block=True, timeout=timeout)
        if r is None:
            raise TimeoutError("python-can-isotp recv")
        return bytes(r)

    def close(self) -> None:
        self.stack.stop()
        self.notifier.stop()
        self.bus.shutdown()


KINDS: Dict[str, Callable[..., Any]] = {"kernel": Kernel, "canx": Canx, "pyisotp": PyIsotp}


def pairs(with_py: bool) -> Dict[str, Tuple[str, str, str]]:
    """name -> (sender kind, receiver kind, id key)."""
    p = {
        "kernel->kernel": ("kernel", "kernel", "kk"),
        "canx->kernel": ("canx", "kernel", "ck"),
        "kernel->canx": ("kernel", "canx", "ck"),
        "canx->canx": ("canx", "canx", "cc"),
    }
    if with_py:
        p["pyisotp->kernel"] = ("pyisotp", "kernel", "pk")
        p["kernel->pyisotp"] = ("kernel", "pyisotp", "pk")
    return p


@contextlib.contextmanager
def opened(ch: str, spec: Tuple[str, str, str], bs: int = 0, stmin: int = 0) -> Iterator[Tuple[Any, Any]]:
    """(A, B): A sends on IDS[key][0] and receives on [1]; B the other way.
    Both receivers advertise `bs`/`stmin` in their FCs."""
    ka, kb, key = spec
    ida, idb = IDS[key]
    a = KINDS[ka](ch, idb, ida, bs, stmin)
    try:
        b = KINDS[kb](ch, ida, idb, bs, stmin)
        try:
            time.sleep(0.02)  # let receive threads start
            yield a, b
        finally:
            b.close()
    finally:
        a.close()


def one_transfer(ch: str, spec: Tuple[str, str, str], size: int, bs: int) -> Tuple[float, float]:
    data = payload(size)
    with opened(ch, spec, bs=bs) as (a, b):
        c0, t0 = time.process_time(), time.perf_counter()
        a.send(data)
        got = b.recv(T)
        t1, c1 = time.perf_counter(), time.process_time()
    if got != data:
        raise AssertionError(f"{spec}: received {len(got)} bytes, not the {size} sent")
    return t1 - t0, c1 - c0


def throughput(ch: str, names: Dict[str, Tuple[str, str, str]], size: int, bs: int, runs: int, budget: float) -> Dict[str, Any]:
    times: Dict[str, List[float]] = {k: [] for k in names}
    cpus: Dict[str, List[float]] = {k: [] for k in names}
    errors: Dict[str, str] = {}
    end = time.monotonic() + budget
    for r in range(runs):
        if r > 0 and time.monotonic() > end:
            break
        for k, spec in names.items():
            if k in errors:
                continue
            try:
                t, c = one_transfer(ch, spec, size, bs)
                times[k].append(t)
                cpus[k].append(c)
            except Exception as e:  # noqa: BLE001 - recorded, the bench goes on
                errors[k] = f"{type(e).__name__}: {e}"
    out: Dict[str, Any] = {}
    for k in names:
        if times[k]:
            med = statistics.median(times[k])
            out[k] = {
                "runs": len(times[k]),
                "median_s": med,
                "kB_per_s": size / med / 1000,
                "cpu_s_per_MB": statistics.median(cpus[k]) / (size / 1e6),
            }
        if k in errors:
            out.setdefault(k, {})["error"] = errors[k]
    return out


def latency(ch: str, spec: Tuple[str, str, str], resp_size: int, n: int, budget: float) -> Dict[str, Any]:
    req, resp = b"\x22\xF1", payload(resp_size)
    lat: List[float] = []
    with opened(ch, spec) as (a, b):
        stop = threading.Event()
        err: List[str] = []

        def server() -> None:
            while not stop.is_set():
                try:
                    q = b.recv(0.5)
                except (TimeoutError, socket.timeout):
                    continue
                except Exception as e:  # noqa: BLE001
                    err.append(repr(e))
                    return
                if q == req:
                    b.send(resp)

        th = threading.Thread(target=server, daemon=True)
        th.start()
        end = time.monotonic() + budget
        try:
            for i in range(n):
                if i >= 10 and time.monotonic() > end:
                    break
                t0 = time.perf_counter()
                a.send(req)
                got = a.recv(T)
                lat.append(time.perf_counter() - t0)
                if got != resp:
                    raise AssertionError(f"response of {len(got)} bytes")
        finally:
            stop.set()
            th.join(T)
    lat.sort()
    out: Dict[str, Any] = {
        "n": len(lat),
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
    }
    if err:
        out["server_error"] = err[0]
    return out


_LINE = re.compile(r"^\((?P<ts>[0-9.]+)\)\s+\S+\s+(?P<id>[0-9A-F]+)#(?P<data>[0-9A-F]*)")


@contextlib.contextmanager
def stamping_at_arrival(ch: str) -> Iterator[bool]:
    """Holds a SO_TIMESTAMP socket and waits (up to 10 s) until the kernel
    stamps frames when they arrive: Linux turns that on from a work item
    after the first SO_TIMESTAMP user appears and until then stamps a frame
    when it is read, which makes candump's gaps the gaps between its reads
    (docs/benchmarks.md, "STmin gaps in candump"). Yields whether it is on."""
    so_ts = getattr(socket, "SO_TIMESTAMP", 29)
    rx = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
    tx = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
    try:
        rx.setsockopt(socket.SOL_SOCKET, so_ts, 1)
        rx.setsockopt(socket.SOL_CAN_RAW, socket.CAN_RAW_FILTER, struct.pack("=II", 0x7FD, 0x7FF))
        rx.bind((ch,))
        tx.bind((ch,))
        rx.settimeout(5)
        on = False
        deadline = time.monotonic() + 10
        while not on and time.monotonic() < deadline:
            sent = time.time()
            tx.send(struct.pack("=IB3x8s", 0x7FD, 0, b""))
            time.sleep(0.1)
            _, anc, _, _ = rx.recvmsg(16, 64)
            st = [struct.unpack("=qq", d[:16]) for _, typ, d in anc if typ == so_ts]
            on = bool(st) and st[0][0] + st[0][1] / 1e6 - sent < 0.05
        yield on
    finally:
        rx.close()
        tx.close()


def stmin_case(ch: str, sender: str, stmin: int, size: int = 700) -> Dict[str, Any]:
    seconds = stmin / 1000 if stmin <= 0x7F else (stmin - 0xF0) / 10000
    key = "ck" if sender == "canx" else "kk"
    ida, idb = IDS[key]
    proc = subprocess.Popen(
        ["candump", "-L", f"{ch},{ida:03X}:7FF"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        time.sleep(0.3)
        with opened(ch, (sender, "kernel", key), bs=0, stmin=stmin) as (a, b):
            a.send(payload(size))
            if b.recv(T) != payload(size):
                raise AssertionError("payload")
            own = a.stack.stats().get("min_paced_gap_us") if sender == "canx" else None
        time.sleep(0.3)
    finally:
        proc.terminate()
        out_text, _ = proc.communicate(timeout=10)
    stamps = []
    for line in out_text.splitlines():
        m = _LINE.match(line)
        if m and m["data"][:1] == "2":
            stamps.append(float(m["ts"]))
    gaps = [y - x for x, y in zip(stamps, stamps[1:])]
    under = [g for g in gaps if g < seconds]
    return {
        "stmin_s": seconds,
        "cfs": len(stamps),
        "gaps": len(gaps),
        "undershoots": len(under),
        "min_gap_us": min(gaps) * 1e6 if gaps else None,
        "median_gap_us": statistics.median(gaps) * 1e6 if gaps else None,
        "undershoot_gaps_us": [round(g * 1e6) for g in under][:10],
        "canx_min_paced_gap_us": own,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channel", default="vcan0")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--big-requests", type=int, default=50, help="requests with the 4,095-byte response")
    ap.add_argument("--no-pyisotp", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    ch = args.channel
    t_start = time.monotonic()
    names = pairs(HAVE_PYISOTP and not args.no_pyisotp)
    results: Dict[str, Any] = {"channel": ch, "pairs": list(names), "canx": canx.__version__ if hasattr(canx, "__version__") else None}

    def step(what: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {what}", file=sys.stderr, flush=True)

    tp: Dict[str, Any] = {}
    for size, bs, budget in [(4095, 0, 40.0), (66000, 0, 120.0), (66000, 8, 60.0)]:
        step(f"throughput {size} B, BS {bs}")
        tp[f"{size}B_bs{bs}"] = throughput(ch, names, size, bs, args.runs, budget)
    results["throughput"] = tp

    lat: Dict[str, Any] = {}
    for resp, n, budget in [(2, args.requests, 15.0), (4095, args.big_requests, 20.0)]:
        for k, spec in names.items():
            step(f"latency {k} response {resp} B")
            try:
                lat.setdefault(f"resp{resp}B", {})[k] = latency(ch, spec, resp, n, budget)
            except Exception as e:  # noqa: BLE001
                lat.setdefault(f"resp{resp}B", {})[k] = {"error": f"{type(e).__name__}: {e}"}
    results["latency"] = lat

    st: Dict[str, Any] = {}
    with contextlib.ExitStack() as stamping:
        if shutil.which("candump"):
            st["stamped_at_arrival"] = stamping.enter_context(stamping_at_arrival(ch))
        for sender in ("canx", "kernel") if shutil.which("candump") else ():
            for stmin in (1, 0xF3):
                step(f"stmin {sender} 0x{stmin:02X}")
                try:
                    st[f"{sender}_0x{stmin:02X}"] = stmin_case(ch, sender, stmin)
                except Exception as e:  # noqa: BLE001
                    st[f"{sender}_0x{stmin:02X}"] = {"error": f"{type(e).__name__}: {e}"}
    results["stmin"] = st
    results["wall_s"] = time.monotonic() - t_start

    # -- table
    print(f"\nISO-TP on {ch}; throughput: median of up to {args.runs} interleaved runs")
    for case, row in tp.items():
        print(f"\n{case}: pair | median ms | kB/s | CPU s/MB | x kernel->kernel")
        ref = row.get("kernel->kernel", {}).get("median_s")
        for k, v in row.items():
            if "median_s" in v:
                ratio = f"{ref / v['median_s']:.2f}" if ref else "-"
                print(f"  {k:16} {v['median_s'] * 1e3:9.1f} {v['kB_per_s']:9.1f} {v['cpu_s_per_MB']:8.3f}  {ratio}  (n={v['runs']})")
            if "error" in v:
                print(f"  {k:16} ERROR {v['error']}")
    for case, row in lat.items():
        print(f"\nlatency, {case}: client->server | n | p50 ms | p99 ms")
        for k, v in row.items():
            if "p50_ms" in v:
                print(f"  {k:16} {v['n']:4} {v['p50_ms']:8.2f} {v['p99_ms']:8.2f}")
            if "error" in v or "server_error" in v:
                print(f"  {k:16} ERROR {v.get('error') or v.get('server_error')}")
    print("\nSTmin: sender stmin | CFs | gaps < STmin | min gap us | median gap us | canx own min gap us")
    for k, v in st.items():
        if not isinstance(v, dict):
            print(f"  {k}: {v}")
        elif "error" in v:
            print(f"  {k:14} ERROR {v['error']}")
        else:
            print(f"  {k:14} {v['cfs']:4} {v['undershoots']:4} {v['min_gap_us']} {v['median_gap_us']} {v['canx_min_paced_gap_us']}")
    print(f"\nwall {results['wall_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
