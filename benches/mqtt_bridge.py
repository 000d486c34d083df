"""Frames per second through a CAN -> MQTT gateway into a Mosquitto broker:
``canx bridge mqtt`` against a python-can + paho-mqtt script doing the same
(receive a frame, publish it as JSON under one topic per id), in the same run.
"delivered/s" is the subscriber's count over the time from its first to its
last message.

    .venv/bin/python benches/mqtt_bridge.py [--rate 40000] [--seconds 3] [--rounds 3] [--qos 0]

Host only (no VM): the bus is ``udp_multicast`` (python-can's own
``udp_multicast`` interface on the wire, so both gateways read the same
datagrams). Each round starts a private mosquitto (localhost, free port), a
subscriber (in this process) and one gateway process, then a sender process
offers ``--rate`` frames/s for ``--seconds`` (100 ids, 8 bytes) and the
subscriber counts what reaches the broker. A gateway that cannot keep up
loses frames in the UDP socket's buffer (canx: or drops the oldest from its
bounded buffer, reported from its stats topic), so "delivered/s" is its
capacity at that offered load. The subscriber subscribes with QoS 0 (so
that with ``--qos 1`` the gateway -> broker leg is QoS 1 and the broker ->
subscriber leg does not limit the measurement). Gateways alternate inside a round; medians over rounds.
Needs mosquitto (apt-get install mosquitto) and paho-mqtt (the ``mqtt`` extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

GROUP = "239.74.163.7"
PORT = 43177

PYCAN_GATEWAY = r'''
import sys, json, can, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, qos = int(sys.argv[1]), int(sys.argv[2])
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pycan-gw")
c.connect("127.0.0.1", port)
c.loop_start()
bus = can.Bus(interface="udp_multicast", channel="%s", port=%d)
print("ready", flush=True)
try:
    while True:
        m = bus.recv(1.0)
        if m is None:
            continue
        ident = f"{m.arbitration_id:08X}" if m.is_extended_id else f"{m.arbitration_id:03X}"
        payload = json.dumps({"ts": m.timestamp, "id": m.arbitration_id, "ext": m.is_extended_id,
                              "dlc": m.dlc, "data": m.data.hex().upper()})
        c.publish(f"bench/py/can0/rx/{ident}", payload, qos)
except KeyboardInterrupt:
    pass
bus.shutdown()
''' % (GROUP, PORT)

SENDER = r'''
import sys, time
from canx._canx import RawBus
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
bus = RawBus("udp_multicast:%s:%d")
n = int(rate * seconds)
t0 = time.perf_counter()
chunk = 50
i = 0
while i < n:
    for k in range(chunk):
        bus.send(0x100 + (i + k) %% 100, False, False, False, False, False, 8, (i + k).to_bytes(8, "big"), 1.0)
    i += chunk
    ahead = t0 + i / rate - time.perf_counter()
    if ahead > 0:
        time.sleep(ahead)
print(n, time.perf_counter() - t0, flush=True)
bus.shutdown()
''' % (GROUP, PORT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one(kind: str, rate: float, seconds: float, qos: int, mosquitto: str) -> Dict[str, float]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    tmp = tempfile.mkdtemp(prefix="canx-mqtt-bench-")
    port = free_port()
    conf = os.path.join(tmp, "m.conf")
    with open(conf, "w") as fh:
        fh.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n")
    broker = subprocess.Popen([mosquitto, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw = None
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        count = [0]
        span = [0.0, 0.0]
        lock = threading.Lock()
        ready = threading.Event()
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")

        stats = [b""]

        def on_message(c: object, u: object, m: object) -> None:
            if m.topic.endswith("/stats"):  # type: ignore[attr-defined]
                stats[0] = m.payload  # type: ignore[attr-defined]
                return
            now = time.perf_counter()
            with lock:
                if not count[0]:
                    span[0] = now
                span[1] = now
                count[0] += 1

        sub.on_connect = lambda c, u, f, rc, p: c.subscribe([("bench/+/+/rx/#", 0), ("bench/+/+/stats", 0)])
        sub.on_subscribe = lambda c, u, mid, rc, p: ready.set()
        sub.on_message = on_message
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        ready.wait(10)
        if kind == "canx":
            gw = subprocess.Popen([sys.executable, "-m", "canx", "bridge", "mqtt", f"udp_multicast:{GROUP}:{PORT}",
                                   "--broker", f"127.0.0.1:{port}", "--prefix", "bench", "--gateway-id", "canx",
                                   "--bus-name", "can0", "--qos", str(qos), "--stats-interval", "0.5",
                                   "--no-commands"], stdout=subprocess.DEVNULL)
            time.sleep(1.5)
        else:
            gw = subprocess.Popen([sys.executable, "-c", PYCAN_GATEWAY, str(port), str(qos)], stdout=subprocess.PIPE)
            assert gw.stdout is not None
            gw.stdout.readline()
            time.sleep(0.5)
        cpu0 = _cpu(gw.pid)
        main0 = _threads(gw.pid).get("python", 0.0)
        out = subprocess.run([sys.executable, "-c", SENDER, str(rate), str(seconds)], capture_output=True,
                             text=True, check=True).stdout.split()
        sent, send_s = int(out[0]), float(out[1])
        # Wait until the count stops growing (the gateway drains what it holds).
        last = -1
        while True:
            time.sleep(0.5)
            with lock:
                now = count[0]
            if now == last:
                break
            last = now
        elapsed = max(span[1] - span[0], 1e-6)
        cpu = _cpu(gw.pid) - cpu0
        main = _threads(gw.pid).get("python", 0.0) - main0
        sub.disconnect()
        sub.loop_stop()
        time.sleep(0.6)
        import json
        st = json.loads(stats[0]) if stats[0] else {}
        return {"buffer_dropped": st.get("buffer_dropped", 0), "bus_dropped": st.get("bus_dropped", 0),
                "sent": sent, "offered_per_s": sent / send_s, "delivered": last, "delivered_per_s": last / elapsed,
                "loss_pct": 100.0 * (sent - last) / sent, "gw_cpu_s": cpu,
                "cpu_us_per_frame": 1e6 * cpu / max(last, 1), "main_us_per_frame": 1e6 * main / max(last, 1)}
    finally:
        if gw is not None:
            gw.send_signal(signal.SIGINT)
            try:
                gw.wait(5)
            except subprocess.TimeoutExpired:
                gw.kill()
                gw.wait()
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def _threads(pid: int) -> Dict[str, float]:
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


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=40_000, help="offered frames/s (default 40000)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--qos", type=int, choices=[0, 1], default=0)
    args = ap.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(mosquitto):
        print("mosquitto not installed (apt-get install mosquitto)", file=sys.stderr)
        return 2
    results: Dict[str, List[Dict[str, float]]] = {"canx": [], "python-can+paho": []}
    for r in range(args.rounds):
        order = ["canx", "python-can+paho"] if r % 2 == 0 else ["python-can+paho", "canx"]
        for kind in order:
            res = one("canx" if kind == "canx" else "py", args.rate, args.seconds, args.qos, mosquitto)
            results[kind].append(res)
            print(f"round {r + 1} {kind:16s} offered {res['offered_per_s']:8.0f}/s delivered "
                  f"{res['delivered_per_s']:8.0f}/s loss {res['loss_pct']:5.1f}% gateway CPU "
                  f"{res['cpu_us_per_frame']:6.1f} us/frame (Python threads {res['main_us_per_frame']:5.1f})"
                  + (f" (bridge stats: buffer_dropped {res['buffer_dropped']:.0f}, bus_dropped {res['bus_dropped']:.0f})"
                     if kind == "canx" else ""), flush=True)
    print(f"\nmedians over {args.rounds} rounds, QoS {args.qos}, offered {args.rate:.0f} frames/s for "
          f"{args.seconds} s:")
    print("| gateway | delivered frames/s | lost | gateway CPU us/frame | of which Python threads |")
    print("| --- | ---: | ---: | ---: | ---: |")
    med = {}
    for kind, rs in results.items():
        med[kind] = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
        print(f"| {kind} | {med[kind]['delivered_per_s']:.0f} | {med[kind]['loss_pct']:.1f}% | "
              f"{med[kind]['cpu_us_per_frame']:.1f} | {med[kind]['main_us_per_frame']:.1f} |")
    print(f"\nratio canx / python-can+paho: delivered {med['canx']['delivered_per_s'] / max(med['python-can+paho']['delivered_per_s'], 1):.2f}x, "
          f"CPU per frame {med['canx']['cpu_us_per_frame'] / max(med['python-can+paho']['cpu_us_per_frame'], 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
