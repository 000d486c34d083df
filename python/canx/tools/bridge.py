"""``canx bridge mqtt``: a CAN <-> MQTT gateway (paho-mqtt; ``pip install canx[mqtt]``).

    canx bridge mqtt can0 --broker mqtt.example.com --gateway-id truck-17
    canx bridge mqtt vcan0 --broker localhost:1883 --dbc python/canx/data/canx_sample.dbc --qos 1
    canx bridge mqtt can0 --broker host:8883 --tls --cafile ca.pem --username u   # password: $CANX_MQTT_PASSWORD

Received frames are published as JSON under
``PREFIX/GATEWAY/BUS/rx/ID`` (and, with ``--dbc``, decoded per DBC message
under ``PREFIX/GATEWAY/BUS/msg/NAME``); frames published to
``PREFIX/GATEWAY/BUS/tx`` are sent on the bus. ``PREFIX/GATEWAY/status`` is
``online``/``offline`` (retained; ``offline`` is the MQTT will), and
``PREFIX/GATEWAY/BUS/stats`` carries the counters. The layout and the
message format are in docs/mqtt.md.

While the broker is away, messages wait in a bounded buffer (``--buffer``
messages); when it is full the oldest is dropped and counted
(``buffer_dropped``). With QoS 1, paho keeps the messages already handed to
it until the broker acknowledges them and sends them again after a
reconnect (at least once: a message may arrive twice). At most
``--max-inflight`` messages are handed to paho at a time, so a broker that
stops reading cannot grow memory without bound.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .._canx import RawBus, parse_frame_text
from ..errors import CanxError
from ._common import Fields, ToolError, open_bus, parse_channel_spec

#: paho's MQTTErrorCode values (paho.mqtt.enums) that mean "not taken".
MQTT_ERR_NO_CONN = 4
MQTT_ERR_QUEUE_SIZE = 15

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"


def topic_part(text: str) -> str:
    """``text`` made safe as one MQTT topic level: ``/``, ``+``, ``#``,
    NUL and whitespace become ``_`` (MQTT 3.1.1 4.7: ``/`` separates levels,
    ``+`` and ``#`` are wildcards)."""
    out = "".join("_" if c in "/+#\0" or c.isspace() else c for c in text)
    return out or "_"


def id_text(arbitration_id: int, is_extended_id: bool) -> str:
    """The id as candump writes it: 3 hex digits (11-bit) or 8 (29-bit)."""
    return f"{arbitration_id:08X}" if is_extended_id else f"{arbitration_id:03X}"


def frame_json(f: Fields) -> str:
    """A received frame as the documented raw JSON (docs/mqtt.md):
    ``{"ts": 1700000000.123456, "id": 291, "ext": false, "dlc": 4, "data": "DEADBEEF"}``
    plus ``"rtr": true``, ``"fd": true``, ``"brs": true``, ``"esi": true`` when set.
    ``ts`` is the receive time (s since the epoch), ``id`` the arbitration id
    (int), ``data`` hex (upper case, no spaces)."""
    text = (f'{{"ts":{f[9]:.6f},"id":{f[0]},"ext":{"true" if f[1] else "false"},"dlc":{f[7]},'
            f'"data":"{f[8].hex().upper()}"')
    if f[2]:
        text += ',"rtr":true'
    if f[4]:
        text += ',"fd":true'
        if f[5]:
            text += ',"brs":true'
        if f[6]:
            text += ',"esi":true'
    return text + "}"


def parse_command(payload: bytes) -> Tuple[int, bool, bool, bool, bool, bool, int, bytes]:
    """A command message -> RawBus send fields (arbitration_id,
    is_extended_id, is_remote_frame, is_fd, bitrate_switch,
    error_state_indicator, dlc, data). The payload is either the raw JSON
    format (``ts`` is ignored; ``ext`` defaults to ``id > 0x7FF``; ``dlc``
    defaults to the data length) or cansend text (``123#DEADBEEF``).
    Raises ValueError naming what is wrong."""
    text = payload.decode("utf-8", "strict").strip()
    if not text.startswith("{"):
        f = parse_frame_text(text)
        if f[3]:
            raise ValueError("error frames cannot be sent")
        return f[0], f[1], f[2], f[4], f[5], f[6], f[7], f[8]
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    aid = obj.get("id")
    if isinstance(aid, str):
        aid = int(aid, 16)
    if not isinstance(aid, int) or isinstance(aid, bool) or not 0 <= aid <= 0x1FFFFFFF:
        raise ValueError(f"bad id {obj.get('id')!r}: an int (or hex text) up to 0x1FFFFFFF")
    ext = obj.get("ext", aid > 0x7FF)
    if not isinstance(ext, bool):
        raise ValueError(f"bad ext {ext!r}: true or false")
    if not ext and aid > 0x7FF:
        raise ValueError(f"id 0x{aid:X} needs \"ext\": true")
    data_text = obj.get("data", "")
    if not isinstance(data_text, str):
        raise ValueError("data must be hex text")
    data = bytes.fromhex(data_text)
    rtr, fd, brs, esi = (bool(obj.get(k, False)) for k in ("rtr", "fd", "brs", "esi"))
    dlc = obj.get("dlc", len(data))
    if not isinstance(dlc, int) or isinstance(dlc, bool):
        raise ValueError(f"bad dlc {dlc!r}")
    return aid, ext, rtr, fd, brs, esi, dlc, data


@dataclass
class BridgeOptions:
    """What :class:`MqttBridge` connects to and publishes (see ``canx bridge mqtt -h``)."""

    host: str
    port: int = 1883
    prefix: str = "canx"
    gateway_id: str = field(default_factory=socket.gethostname)
    bus_name: Optional[str] = None
    qos: int = 0
    raw: bool = True
    buffer: int = 10_000
    max_inflight: int = 1000
    rate_limit: Optional[float] = None
    username: Optional[str] = None
    password: Optional[str] = None
    tls: bool = False
    cafile: Optional[str] = None
    certfile: Optional[str] = None
    keyfile: Optional[str] = None
    tls_insecure: bool = False
    client_id: Optional[str] = None
    keepalive: int = 30
    stats_interval: float = 5.0
    commands: bool = True


Decode = Callable[[Fields], Optional[Tuple[str, str]]]


class MqttBridge:
    """Publishes what ``bus`` receives and sends what arrives on the command
    topic. ``run(stop)`` loops until ``stop`` is set (or Ctrl-C), in one
    thread: it selects on the bus and the broker's socket and drives paho's
    ``loop_read``/``loop_write``/``loop_misc`` itself (paho's own thread would
    cost a wake-up and a GIL hand-over per published message). After a lost
    connection it reconnects after 0.25 s, doubling up to 5 s; a connection
    attempt blocks for at most paho's connect timeout (5 s), while the bus's
    receive queue keeps the frames (and counts what it drops).

    Counters (:meth:`stats`): ``received`` (frames from the bus), ``published``
    (messages handed to paho while connected), ``acknowledged`` (QoS 1
    PUBACKs; with QoS 0 the messages written to the socket), ``buffer_dropped`` (oldest dropped from a full
    buffer), ``rate_limited`` (frames over ``--rate-limit``), ``commands``,
    ``command_errors``, ``decode_errors``, ``bus_dropped`` (kernel/queue drops
    of the bus), ``reconnects``."""

    def __init__(self, bus: RawBus, channel: str, options: BridgeOptions,
                 decode: Optional[Decode] = None) -> None:
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:
            raise ToolError("canx bridge mqtt needs paho-mqtt: pip install canx[mqtt]") from None
        if options.qos not in (0, 1):
            raise ToolError(f"--qos must be 0 or 1, not {options.qos}")
        if options.buffer < 1 or options.max_inflight < 1:
            raise ToolError("--buffer and --max-inflight must be at least 1")
        if options.rate_limit is not None and not options.rate_limit > 0:
            raise ToolError(f"--rate-limit must be positive, not {options.rate_limit}")
        self.bus = bus
        self.options = options
        self.decode = decode
        prefix = options.prefix.rstrip("/")
        gw = topic_part(options.gateway_id)
        busname = topic_part(options.bus_name or channel)
        self.base = f"{prefix}/{gw}/{busname}" if prefix else f"{gw}/{busname}"
        self.status_topic = (f"{prefix}/{gw}/status" if prefix else f"{gw}/status")
        self.command_topic = f"{self.base}/tx"
        self.stats_topic = f"{self.base}/stats"
        self._buffer: Deque[Tuple[str, str]] = collections.deque()
        self._outstanding = 0
        self._connected = False
        self._retry_at = 0.0
        self._backoff = 0.25
        self.last_error = ""
        self._last_pub: Dict[Tuple[int, bool], float] = {}
        self.counters: Dict[str, int] = dict.fromkeys(
            ("received", "published", "acknowledged", "buffer_dropped", "rate_limited", "commands",
             "command_errors", "decode_errors", "reconnects"), 0)
        self.last_command_error = ""
        cid = options.client_id or f"canx-{gw}-{os.getpid()}"
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
        # paho's own in-flight limit walks every message it holds on each PUBACK (O(n) per
        # message); the bridge enforces --max-inflight itself (pump) and leaves paho's off.
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        c.will_set(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        if options.username is not None:
            c.username_pw_set(options.username, options.password)
        if options.tls or options.cafile or options.certfile:
            import ssl
            c.tls_set(ca_certs=options.cafile, certfile=options.certfile, keyfile=options.keyfile,
                      cert_reqs=ssl.CERT_NONE if options.tls_insecure else ssl.CERT_REQUIRED)
            if options.tls_insecure:
                c.tls_insecure_set(True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        if options.qos == 1:
            # QoS 1: count PUBACKs to bound what paho holds. QoS 0 needs no callback per message
            # (paho builds two objects per call): ``pump`` stops while paho has unwritten data.
            c.on_publish = self._on_publish
        c.on_message = self._on_message
        self.client = c
        self._ever_connected = False

    # ---- paho callbacks (called from loop_read/loop_write/loop_misc in run's thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            self.last_error = f"broker refused the connection: {reason}"
            return
        if self.options.qos == 0:
            # paho forgets unsent QoS 0 packets on reconnect: none is outstanding any more.
            self._outstanding = 0
        if self._ever_connected:
            self.counters["reconnects"] += 1
        self._ever_connected = True
        self._backoff = 0.25
        client.publish(self.status_topic, STATUS_ONLINE, qos=1, retain=True)
        if self.options.commands:
            client.subscribe(self.command_topic, qos=self.options.qos)
        self._connected = True

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected = False
        self._retry_at = time.monotonic() + self._backoff

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if self._outstanding > 0:
            self._outstanding -= 1
        self.counters["acknowledged"] += 1

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic != self.command_topic:
            return
        try:
            f = parse_command(bytes(msg.payload))
            self.bus.send(*f, 0.2)  # short: this runs in the bridge's only thread
            self.counters["commands"] += 1
        except (ValueError, TypeError, UnicodeDecodeError, CanxError) as e:
            self.counters["command_errors"] += 1
            self.last_command_error = f"{type(e).__name__}: {e}"

    # ---- main thread
    @property
    def connected(self) -> bool:
        return self._connected

    def buffered(self) -> int:
        """Messages waiting in the buffer (not yet handed to paho)."""
        return len(self._buffer)

    def stats(self) -> Dict[str, int]:
        s = dict(self.counters)
        try:
            b = self.bus.stats()
            s["bus_dropped"] = b[2] + b[3]
        except CanxError:
            s["bus_dropped"] = 0
        s["buffered"] = len(self._buffer)
        return s

    def start(self) -> None:
        """Sets the broker up; ``run`` connects (a broker that is not up yet
        is retried like a lost one)."""
        self.client.connect_async(self.options.host, self.options.port, keepalive=self.options.keepalive)

    def stop(self) -> None:
        """Publishes ``offline`` (waiting up to 1 s for the broker) and disconnects."""
        if self.connected:
            info = self.client.publish(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
            deadline = time.monotonic() + 1.0
            while not info.is_published() and self.connected and time.monotonic() < deadline:
                self._network(0.05)
        self.client.disconnect()
        self._connected = False

    def _connect(self) -> None:
        now = time.monotonic()
        if now < self._retry_at:
            return
        try:
            self.client.reconnect()
        except (OSError, ValueError) as e:  # refused, unreachable, TLS failures (ssl.SSLError is an OSError)
            self.last_error = f"{type(e).__name__}: {e}"
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, 5.0)

    def _network(self, timeout: float, bus_fd: Optional[int] = None) -> bool:
        """One select over the broker's socket (and the bus): paho's reads,
        writes and keepalive. Returns whether the bus is readable."""
        sock = self.client.socket()
        if sock is None:
            if bus_fd is None:
                time.sleep(timeout)
                return False
            ready, _, _ = select.select([bus_fd], [], [], timeout)
            return bool(ready)
        rlist: List[Any] = [sock] if bus_fd is None else [sock, bus_fd]
        wlist = [sock] if self.client.want_write() else []
        readable: List[Any]
        readable, writable, _ = select.select(rlist, wlist, [], timeout)
        if sock in readable:
            self.client.loop_read()
        if writable and self.client.socket() is not None:
            self.client.loop_write()
        if self.client.socket() is not None:
            self.client.loop_misc()
        return bus_fd is not None and bus_fd in readable

    def handle(self, frames: List[Fields]) -> None:
        """Formats received frames into the buffer (rate limit, DBC decode)."""
        buf = self._buffer
        limit = self.options.buffer
        base = self.base
        raw = self.options.raw
        decode = self.decode
        gap = 1.0 / self.options.rate_limit if self.options.rate_limit else 0.0
        last_pub = self._last_pub
        dropped = 0
        for f in frames:
            if f[3]:
                continue
            if gap:
                key = (f[0], f[1])
                t = last_pub.get(key)
                if t is not None and f[9] - t < gap:
                    self.counters["rate_limited"] += 1
                    continue
                last_pub[key] = f[9]
            if raw:
                if len(buf) >= limit:
                    buf.popleft()
                    dropped += 1
                buf.append((f"{base}/rx/{f'{f[0]:08X}' if f[1] else f'{f[0]:03X}'}", frame_json(f)))
            if decode is not None:
                try:
                    d = decode(f)
                except Exception:  # noqa: BLE001 -- a frame the DBC cannot decode is counted
                    self.counters["decode_errors"] += 1
                    d = None
                if d is not None:
                    if len(buf) >= limit:
                        buf.popleft()
                        dropped += 1
                    buf.append((f"{base}/msg/{topic_part(d[0])}", d[1]))
        self.counters["received"] += len(frames)
        self.counters["buffer_dropped"] += dropped

    def pump(self) -> int:
        """Hands buffered messages to paho while connected, at most
        ``max_inflight`` outstanding; returns how many it handed over."""
        if not self._connected:
            return 0
        buf = self._buffer
        qos = self.options.qos
        publish = self.client.publish
        n = 0
        room = self.options.max_inflight - self._outstanding if qos else self.options.max_inflight
        want_write = self.client.want_write
        while buf and n < room and self._connected:
            if not qos and want_write():
                # The socket takes no more now: the rest waits here, not in paho.
                break
            topic, payload = buf[0]
            info = publish(topic, payload, qos)
            # paho keeps a QoS 1 message whatever the socket did (it sends it again after a
            # reconnect); a QoS 0 message it could not queue stays in the buffer.
            if info.rc == MQTT_ERR_QUEUE_SIZE or (qos == 0 and info.rc == MQTT_ERR_NO_CONN):
                break
            buf.popleft()
            n += 1
        if qos:
            self._outstanding += n
        else:
            self.counters["acknowledged"] += n
        self.counters["published"] += n
        return n

    def publish_stats(self) -> None:
        if self.connected:
            self.client.publish(self.stats_topic, json.dumps(self.stats(), sort_keys=True), qos=0)

    def run(self, stop: Optional[threading.Event] = None, batch: int = 4096) -> None:
        """Receives and publishes until ``stop`` is set."""
        fd = self.bus.fileno()
        next_stats = time.monotonic() + self.options.stats_interval
        while stop is None or not stop.is_set():
            if self.client.socket() is None:
                self._connected = False
                self._connect()
            if self._network(0.02, fd):
                self.handle(self.bus.recv_many(batch, 0))
            if self.pump() and self.client.want_write() and self.client.socket() is not None:
                self.client.loop_write()
            if self.options.stats_interval > 0 and time.monotonic() >= next_stats:
                next_stats = time.monotonic() + self.options.stats_interval
                self.publish_stats()


def dbc_decode(path: str) -> Decode:
    """A :data:`Decode` through :mod:`canx.dbc`: (message name, JSON text)
    with ``ts``, ``id``, ``ext``, ``name``, ``signals``, ``units`` (and ``pgn``, ``sa``
    for J1939 messages, ``status`` for signals in J1939's not-available/error
    ranges). ToolError if the DBC cannot be loaded."""
    try:
        from .. import dbc
    except ImportError as e:
        raise ToolError(f"--dbc needs cantools (pip install canx[dbc]): {e}") from None
    try:
        db = dbc.load(path)
    except Exception as e:  # noqa: BLE001 -- any load error becomes one line
        raise ToolError(f"cannot load DBC {path!r}: {e}") from None

    def decode(f: Fields) -> Optional[Tuple[str, str]]:
        d = db.decode(f[0], f[8], f[1])
        if d is None:
            return None
        obj: Dict[str, Any] = {"ts": round(f[9], 6), "id": f[0], "ext": f[1], "name": d.name,
                               "signals": d.signals, "units": d.units}
        if d.pgn is not None:
            obj["pgn"] = d.pgn
        if d.source_address is not None:
            obj["sa"] = d.source_address
        if d.status:
            obj["status"] = d.status
        return d.name, json.dumps(obj, separators=(",", ":"))

    return decode


def parse_broker(text: str) -> Tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]:PORT`` -> (host, port); default port 1883."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ToolError(f"bad --broker {text!r}: expected HOST[:PORT]")
    try:
        p = int(port) if port else 1883
    except ValueError:
        raise ToolError(f"bad --broker {text!r}: port must be a number") from None
    if not 0 < p < 65536:
        raise ToolError(f"bad --broker {text!r}: port out of range")
    return host, p


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("bridge", help="gateways: CAN <-> MQTT (canx bridge mqtt)",
                       description="Bridge a CAN channel to another transport.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    m = kinds.add_parser("mqtt", help="publish frames to an MQTT broker and send frames from a command topic",
                         description="Publish received frames (raw JSON, and decoded per DBC message) under "
                                     "PREFIX/GATEWAY/BUS/..., send frames published to PREFIX/GATEWAY/BUS/tx. "
                                     "Topics and formats: docs/mqtt.md.")
    m.add_argument("channel", metavar="CHANNEL[,FILTER...]", help="as canx dump (candump filters apply)")
    m.add_argument("--broker", required=True, metavar="HOST[:PORT]", help="MQTT broker (port 1883 by default)")
    m.add_argument("--prefix", default="canx", help="first topic level(s) (default canx)")
    m.add_argument("--gateway-id", default=socket.gethostname(),
                   help="this gateway's topic level (default: the host name); one per vehicle/machine")
    m.add_argument("--bus-name", help="the bus's topic level (default: the channel, / + # made _)")
    m.add_argument("--qos", type=int, choices=[0, 1], default=0, help="MQTT QoS of published frames (default 0)")
    m.add_argument("--dbc", metavar="FILE", help="also publish decoded messages under .../msg/NAME")
    m.add_argument("--no-raw", action="store_true", help="with --dbc: publish decoded messages only")
    m.add_argument("--no-commands", action="store_true", help="do not subscribe to the command topic")
    m.add_argument("--rate-limit", type=float, metavar="HZ",
                   help="publish at most HZ frames per second per id (the rest are counted, not sent)")
    m.add_argument("--buffer", type=int, default=10_000,
                   help="messages kept while the broker is away (default 10000; the oldest is dropped beyond)")
    m.add_argument("--max-inflight", type=int, default=1000, help="messages handed to paho at once (default 1000)")
    m.add_argument("--username", help="broker user name")
    m.add_argument("--password", help="broker password (better: $CANX_MQTT_PASSWORD)")
    m.add_argument("--tls", action="store_true", help="TLS with the system's CAs")
    m.add_argument("--cafile", help="CA certificate(s) for TLS (implies --tls)")
    m.add_argument("--certfile", help="client certificate for TLS")
    m.add_argument("--keyfile", help="client key for TLS")
    m.add_argument("--tls-insecure", action="store_true", help="do not check the broker's certificate")
    m.add_argument("--client-id", help="MQTT client id (default canx-GATEWAY-PID)")
    m.add_argument("--stats-interval", type=float, default=5.0, help="s between stats messages (0: none)")


def run(args: argparse.Namespace) -> int:
    host, port = parse_broker(args.broker)
    if args.no_raw and not args.dbc:
        raise ToolError("--no-raw needs --dbc (nothing would be published)")
    spec = parse_channel_spec(args.channel)
    decode = dbc_decode(args.dbc) if args.dbc else None
    opts = BridgeOptions(host, port, prefix=args.prefix, gateway_id=args.gateway_id, bus_name=args.bus_name,
                         qos=args.qos, raw=not args.no_raw, buffer=args.buffer, max_inflight=args.max_inflight,
                         rate_limit=args.rate_limit, username=args.username,
                         password=args.password if args.password is not None else os.environ.get("CANX_MQTT_PASSWORD"),
                         tls=args.tls, cafile=args.cafile, certfile=args.certfile, keyfile=args.keyfile,
                         tls_insecure=args.tls_insecure, client_id=args.client_id,
                         stats_interval=args.stats_interval, commands=not args.no_commands)
    if spec.join:
        raise ToolError("canx bridge mqtt takes match filters (ID:MASK, ID~MASK), not the 'j' flag")
    bus = open_bus(spec.channel, filters=spec.kernel_filters())
    bridge = MqttBridge(bus, args.bus_name or spec.channel, opts, decode)
    try:
        bridge.start()
        bridge.run()
    except KeyboardInterrupt:
        pass
    finally:
        bridge.stop()
        bus.shutdown()
    return 0
