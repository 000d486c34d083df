"""canx bridge mqtt against a real Mosquitto broker that the tests start
(Debian's ``mosquitto``, installed by scripts/test; localhost only, a free
port, a temp config with persistence so a persistent subscriber survives a
broker restart)."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import pytest

import canx
from canx._canx import RawBus

mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (pip install canx[mqtt])")

from canx.tools.bridge import BridgeOptions, MqttBridge, frame_json, parse_broker, parse_command, topic_part  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed: scripts/test installs it "
                                                            "(apt-get install mosquitto)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.dir = tmp
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {tmp}/\nmax_queued_messages 100000\nlog_dest file {tmp}/mosquitto.log\n"
            # Run as root, mosquitto would switch to user "mosquitto" and could not write here.
            f"user {getpass.getuser()}\n")
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start: " + (self.dir / "mosquitto.log").read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """A paho client collecting (topic, payload) pairs; persistent session (QoS 1) when ``persistent``."""

    def __init__(self, port: int, topic: str, persistent: bool = False) -> None:
        self.messages: List[Tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{os.getpid()}-{id(self)}",
                             clean_session=not persistent)
        self.c.reconnect_delay_set(1, 1)
        self.topic = topic

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            c.subscribe(topic, qos=1)

        def on_subscribe(c: Any, u: Any, mid: Any, rc: Any, p: Any) -> None:
            self.connected.set()

        def on_message(c: Any, u: Any, m: Any) -> None:
            with self.lock:
                self.messages.append((m.topic, bytes(m.payload)))

        self.c.on_connect = on_connect
        self.c.on_subscribe = on_subscribe
        self.c.on_message = on_message
        self.c.connect_async("127.0.0.1", port)
        self.c.loop_start()
        assert self.connected.wait(10), "subscriber did not connect"

    def wait_for(self, n: int, timeout: float = 20.0, topic_part: str = "") -> List[Tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = [m for m in self.messages if topic_part in m[0]]
            if len(got) >= n:
                return got
            time.sleep(0.05)
        return got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Running:
    """An MqttBridge on a virtual bus, run in a thread."""

    def __init__(self, channel: str, options: BridgeOptions, decode: Any = None) -> None:
        self.bus = RawBus(channel)
        self.bridge = MqttBridge(self.bus, channel, options, decode)
        self.stop_ev = threading.Event()
        self.bridge.start()
        self.thread = threading.Thread(target=self.bridge.run, args=(self.stop_ev,), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.bridge.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.bridge.connected, "bridge did not connect"

    def close(self) -> None:
        self.stop_ev.set()
        self.thread.join(5)
        self.bridge.stop()
        self.bus.shutdown()


def _wait(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


# ------------------------------------------------------------------------------ formats (no broker)

def test_frame_json_is_the_documented_format() -> None:
    f = (0x123, False, False, False, False, False, False, 4, b"\xde\xad\xbe\xef", 1700000000.5, False)
    assert json.loads(frame_json(f)) == {"ts": 1700000000.5, "id": 0x123, "ext": False, "dlc": 4,
                                         "data": "DEADBEEF"}
    fd = (0x18FEF100, True, False, False, True, True, False, 12, bytes(range(12)), 1.0, False)
    assert json.loads(frame_json(fd)) == {"ts": 1.0, "id": 0x18FEF100, "ext": True, "dlc": 12,
                                          "data": bytes(range(12)).hex().upper(), "fd": True, "brs": True}


def test_commands_accept_the_raw_format_and_cansend_text() -> None:
    f = (0x123, False, False, False, False, False, False, 4, b"\xde\xad\xbe\xef", 1700000000.5, False)
    assert parse_command(frame_json(f).encode()) == (0x123, False, False, False, False, False, 4, b"\xde\xad\xbe\xef")
    assert parse_command(b"18FEF100#0102") == (0x18FEF100, True, False, False, False, False, 2, b"\x01\x02")
    assert parse_command(b'{"id": "7E0", "data": "0201"}') == (0x7E0, False, False, False, False, False, 2,
                                                                b"\x02\x01")
    for bad in (b'{"id": 4096, "ext": false}', b'{"data": "00"}', b"[1]", b"123#XYZ", b'{"id": 1, "data": 5}'):
        with pytest.raises(ValueError):
            parse_command(bad)


def test_topic_levels_and_broker_text() -> None:
    assert topic_part("slcan:/dev/ttyACM0") == "slcan:_dev_ttyACM0"
    assert topic_part("a+b#c d") == "a_b_c_d"
    assert parse_broker("localhost") == ("localhost", 1883)
    assert parse_broker("h:8883") == ("h", 8883)
    assert parse_broker("[::1]:1884") == ("::1", 1884)


def _f(aid: int, ts: float, data: bytes = b"\x00") -> Any:
    return (aid, False, False, False, False, False, False, len(data), data, ts, False)


def test_buffer_is_bounded_keeps_the_newest_and_counts_drops() -> None:
    bus = RawBus("virtual:mq-buf")
    try:
        br = MqttBridge(bus, "virtual:mq-buf", BridgeOptions("127.0.0.1", 1, gateway_id="g", buffer=5))
        br.handle([_f(0x100, i, bytes([i])) for i in range(20)])  # never connected: nothing leaves
        assert br.pump() == 0
        assert br.buffered() == 5 and br.counters["buffer_dropped"] == 15 and br.counters["received"] == 20
        assert [json.loads(p)["data"] for _, p in br._buffer] == [f"{i:02X}" for i in range(15, 20)]
    finally:
        bus.shutdown()


def test_rate_limit_uses_frame_timestamps_per_id() -> None:
    bus = RawBus("virtual:mq-rl")
    try:
        br = MqttBridge(bus, "virtual:mq-rl", BridgeOptions("127.0.0.1", 1, gateway_id="g", rate_limit=10.0))
        # 100 Hz on 0x100 for 1 s and 5 Hz on 0x200: 10 + 5 pass (0.1 s apart at least).
        frames = [_f(0x100, i * 0.01) for i in range(100)] + [_f(0x200, i * 0.2) for i in range(5)]
        br.handle(sorted(frames, key=lambda f: f[9]))
        topics = [t for t, _ in br._buffer]
        assert topics.count("canx/g/virtual:mq-rl/rx/100") == 10 and topics.count("canx/g/virtual:mq-rl/rx/200") == 5
        assert br.counters["rate_limited"] == 90
    finally:
        bus.shutdown()


# --------------------------------------------------------------------------------- with a broker

@needs_broker
def test_frames_are_published_in_the_documented_format(broker: Broker) -> None:
    sub = Subscriber(broker.port, "fleet/#")
    run = Running("virtual:mq1", BridgeOptions("127.0.0.1", broker.port, prefix="fleet", gateway_id="truck-17",
                                               bus_name="can0", stats_interval=0))
    tx = canx.CAN(channel="virtual:mq1")
    try:
        sent = [canx.Message(0x100 + i, bytes([i, i + 1])) for i in range(20)]
        sent.append(canx.Message(0x18FEF100, b"\x01\x02\x03", extended=True))
        for m in sent:
            tx.send(m)
        got = sub.wait_for(len(sent), topic_part="/rx/")
        assert len(got) == len(sent)
        by_topic = {t: json.loads(p) for t, p in got}
        assert by_topic["fleet/truck-17/can0/rx/105"]["data"] == "0506"
        assert by_topic["fleet/truck-17/can0/rx/105"]["id"] == 0x105
        assert by_topic["fleet/truck-17/can0/rx/105"]["ext"] is False
        assert by_topic["fleet/truck-17/can0/rx/18FEF100"] == {
            **by_topic["fleet/truck-17/can0/rx/18FEF100"], "id": 0x18FEF100, "ext": True, "dlc": 3, "data": "010203"}
        assert abs(by_topic["fleet/truck-17/can0/rx/100"]["ts"] - time.time()) < 60
        # The status topic is retained: a late subscriber sees "online".
        late = Subscriber(broker.port, "fleet/truck-17/status")
        assert late.wait_for(1)[0][1] == b"online"
        late.close()
    finally:
        tx.deinit()
        run.close()
        sub.close()


@needs_broker
def test_decoded_messages_with_a_dbc(broker: Broker) -> None:
    pytest.importorskip("cantools", reason="cantools not installed (pip install canx[dbc])")
    from canx import dbc
    from canx.tools.bridge import dbc_decode
    sub = Subscriber(broker.port, "canx/g/can0/#")
    run = Running("virtual:mqd", BridgeOptions("127.0.0.1", broker.port, gateway_id="g", bus_name="can0",
                                               stats_interval=0), dbc_decode(dbc.SAMPLE))
    tx = canx.CAN(channel="virtual:mqd")
    try:
        tx.send(canx.Message(0x0CF00417, bytes([0, 0x7D, 0x7D, 0x40, 0x38, 0, 0, 0x7D]), extended=True))
        tx.send(canx.Message(0x5E8, bytes([0x03, 0xBB, 0x0B, 0xB8, 0, 0, 0, 0])))  # MegaSquirt dash: MAP, RPM
        tx.send(canx.Message(0x7FF, b"\x00"))  # not in the DBC: raw only
        got = sub.wait_for(5)
        topics = sorted(t for t, _ in got)
        assert topics == ["canx/g/can0/msg/EEC1", "canx/g/can0/msg/MS_Dash0", "canx/g/can0/rx/0CF00417",
                          "canx/g/can0/rx/5E8", "canx/g/can0/rx/7FF"]
        eec1 = json.loads(dict(got)["canx/g/can0/msg/EEC1"])
        assert eec1["name"] == "EEC1" and eec1["id"] == 0x0CF00417 and eec1["ext"] is True
        assert eec1["signals"]["EngineSpeed"] == 1800.0 and eec1["units"]["EngineSpeed"] == "rpm"
        assert eec1["pgn"] == 0xF004 and eec1["sa"] == 0x17
        ms = json.loads(dict(got)["canx/g/can0/msg/MS_Dash0"])
        assert ms["signals"]["RPM"] == 3000 and ms["signals"]["MAP"] == pytest.approx(95.5)
    finally:
        tx.deinit()
        run.close()
        sub.close()


@needs_broker
def test_rate_limit_per_id(broker: Broker) -> None:
    sub = Subscriber(broker.port, "canx/#")
    run = Running("virtual:mq2", BridgeOptions("127.0.0.1", broker.port, gateway_id="g", rate_limit=0.5,
                                               stats_interval=0))
    tx = canx.CAN(channel="virtual:mq2")
    try:
        for _ in range(50):
            tx.send(canx.Message(0x10, b"\x00"))
            tx.send(canx.Message(0x11, b"\x00"))
        assert _wait(lambda: run.bridge.counters["received"] == 100)
        time.sleep(0.3)
        got = sub.wait_for(2, topic_part="/rx/")
        # 100 frames in well under 2 s: one per id passes, the rest are counted.
        assert sorted(t for t, _ in got) == ["canx/g/virtual:mq2/rx/010", "canx/g/virtual:mq2/rx/011"]
        assert run.bridge.counters["rate_limited"] == 98
    finally:
        tx.deinit()
        run.close()
        sub.close()


@needs_broker
def test_broker_restart_loses_nothing_that_fits_in_the_buffer_and_counts_the_rest(broker: Broker) -> None:
    # A persistent QoS 1 subscriber: the broker keeps its session over the restart (persistence on).
    sub = Subscriber(broker.port, "canx/gw/#", persistent=True)
    buffer = 200
    run = Running("virtual:mq3", BridgeOptions("127.0.0.1", broker.port, gateway_id="gw", qos=1, buffer=buffer,
                                               stats_interval=0))
    tx = canx.CAN(channel="virtual:mq3")
    n = 0

    def send(k: int) -> None:
        nonlocal n
        for _ in range(k):
            tx.send(canx.Message(0x200, n.to_bytes(4, "big")))
            n += 1

    def seqs() -> List[int]:
        with sub.lock:
            return [int(json.loads(p)["data"], 16) for t, p in sub.messages if "/rx/" in t]

    try:
        send(100)
        assert _wait(lambda: len(set(seqs())) == 100, 20)
        # Broker down in the middle of the stream; 150 frames fit in the buffer.
        broker.stop()
        assert _wait(lambda: not run.bridge.connected)
        send(150)
        assert _wait(lambda: run.bridge.counters["received"] == 250)
        assert run.bridge.buffered() == 150
        broker.start()
        assert _wait(lambda: run.bridge.connected, 20)
        send(50)
        assert _wait(lambda: set(range(300)) <= set(seqs()), 30), (sorted(set(range(300)) - set(seqs()))[:20],
                                                                   run.bridge.stats(), run.bridge.last_error)
        assert run.bridge.counters["buffer_dropped"] == 0
        # Down again, 500 frames: the buffer keeps the newest 200 and counts 300 dropped.
        broker.stop()
        assert _wait(lambda: not run.bridge.connected)
        send(500)
        assert _wait(lambda: run.bridge.counters["received"] == 800)
        assert run.bridge.counters["buffer_dropped"] == 500 - buffer
        broker.start()
        assert _wait(lambda: run.bridge.connected, 20)
        assert _wait(lambda: set(range(600, 800)) <= set(seqs()), 30)
        assert not set(range(300, 600)) & set(seqs())
    finally:
        tx.deinit()
        run.close()
        sub.close()


@needs_broker
def test_round_trip_can_mqtt_can_between_two_virtual_buses(broker: Broker) -> None:
    a = Running("virtual:mqa", BridgeOptions("127.0.0.1", broker.port, gateway_id="vehicle-a", bus_name="can0",
                                             qos=1, stats_interval=0))
    b = Running("virtual:mqb", BridgeOptions("127.0.0.1", broker.port, gateway_id="vehicle-b", bus_name="can0",
                                             qos=1, stats_interval=0))
    # The relay: every raw frame of vehicle-a, as published, to vehicle-b's command topic.
    relay = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="relay")
    ready = threading.Event()
    relay.on_connect = lambda c, u, f, rc, p: c.subscribe("canx/vehicle-a/can0/rx/#", qos=1)
    relay.on_subscribe = lambda c, u, mid, rc, p: ready.set()
    relay.on_message = lambda c, u, m: c.publish("canx/vehicle-b/can0/tx", m.payload, qos=1)
    relay.connect("127.0.0.1", broker.port)
    relay.loop_start()
    assert ready.wait(10)
    src = canx.CAN(channel="virtual:mqa")
    dst = canx.CAN(channel="virtual:mqb")
    listener = dst.listen(timeout=5.0)
    try:
        sent = [canx.Message(0x300 + i, bytes([i] * (i % 9))) for i in range(30)]
        sent.append(canx.Message(0x1ABCDEF0, b"\xca\xfe", extended=True))
        for m in sent:
            src.send(m)
        got = []
        for _ in sent:
            m = listener.receive()
            assert m is not None, f"only {len(got)} of {len(sent)} came back"
            got.append((m.id, m.extended, bytes(m.data)))
        assert sorted(got) == sorted((m.id, m.extended, bytes(m.data)) for m in sent)
        # cansend text on the command topic works too.
        relay.publish("canx/vehicle-b/can0/tx", "7E0#0210", qos=1)
        m = listener.receive()
        assert m is not None and (m.id, bytes(m.data)) == (0x7E0, b"\x02\x10")
        relay.publish("canx/vehicle-b/can0/tx", "not a frame", qos=1)
        assert _wait(lambda: b.bridge.counters["command_errors"] == 1)
    finally:
        listener.deinit()
        src.deinit()
        dst.deinit()
        relay.disconnect()
        relay.loop_stop()
        a.close()
        b.close()


@needs_broker
def test_cli_bridge_on_udp_multicast(broker: Broker) -> None:
    """``canx bridge mqtt`` as a process: frames from another process arrive, stats are published."""
    group = "udp_multicast:239.74.163.9:43219"
    sub = Subscriber(broker.port, "cli/#")
    proc = subprocess.Popen([sys.executable, "-m", "canx", "bridge", "mqtt", group, "--broker",
                             f"127.0.0.1:{broker.port}", "--prefix", "cli", "--gateway-id", "p1", "--bus-name", "bus",
                             "--stats-interval", "0.5"], stderr=subprocess.PIPE)
    tx = canx.CAN(channel=group)
    try:
        assert sub.wait_for(1, topic_part="/status")[0][1] == b"online"
        tx.send(canx.Message(0x55, b"\x01"))
        got = sub.wait_for(1, topic_part="/rx/")
        assert got and got[0][0] == "cli/p1/bus/rx/055"
        stats = sub.wait_for(1, topic_part="/stats")
        assert stats and "buffer_dropped" in json.loads(stats[-1][1])
    finally:
        tx.deinit()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        sub.close()
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == 0, err
