"""``canx monitor``: a live full-screen view of a bus, one row per identifier.

    canx monitor vcan0                       # one row per CAN id
    canx monitor vcan0 --dbc python/canx/data/canx_sample.dbc   # canx.dbc.SAMPLE
    canx monitor can0 --j1939                # one row per PGN and source address, TP reassembled
    canx monitor vcan0 --megasquirt          # MegaSquirt dash/advanced broadcast fields by name
    canx monitor --replay run.log --speed 4  # a log file, at its own timing (4x faster)

Every row shows count, rate (frames/s), period and jitter (ms), the latest
data with the bytes that changed in the last second highlighted, and the
decoded signals with units (``--dbc``, ``--megasquirt``). The header shows
the estimated bus load, frames/s, error frames, bus state (with TEC/REC) and
frames dropped (kernel, receive queue). Keys: ``space``/``p`` pause the
view (counting goes on), ``s`` next sort order (id, count, rate, last
change), ``/`` filter by id (``123``, ``18FEF1`` or a PGN with ``--j1939``,
``100:700`` id:mask, several separated by spaces; empty: all), ``c`` clear,
``up``/``down``/``PgUp``/``PgDn`` scroll, ``q`` quit.

Layers: :class:`MonitorModel` (per-row statistics, J1939 grouping and TP
reassembly; no terminal, tested alone) is fed batches of received frames;
:class:`CursesView` draws it at a fixed rate (10 Hz by default), so the work
per frame is a dict lookup and a few arithmetic operations, and decoding
happens only for the rows on screen, at redraw time.

Terminal library: the standard library's :mod:`curses`. It is maintained
with CPython, needs no dependency on Linux and macOS, starts in milliseconds
and redraws only the cells that changed (ncurses' own diffing), which keeps
the CPU use at 10,000 frames/s low (``benches/monitor_cpu.py``). A row table
with a one-line filter prompt does not need textual's widgets or its asyncio
app loop; urwid is heavier for the same result. On Windows the optional
extra ``monitor`` installs ``windows-curses`` (the maintained port).
"""

from __future__ import annotations

import abc
import argparse
import select
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ._common import Fields, ToolError, open_bus, parse_channel_spec

# ------------------------------------------------------------------------------------------- model

#: Gain of the running averages of period and jitter: RFC 3550 section 6.4.1
#: (interarrival jitter, J += (|D| - J) / 16), used for the period too.
GAIN = 1.0 / 16

#: SAE J1939-21 transport protocol PGNs (5.10): TP.CM (connection management) and TP.DT (data).
PGN_TP_CM = 0xEC00
PGN_TP_DT = 0xEB00
#: TP.CM control bytes (J1939-21 5.10.3): RTS, CTS, EndOfMsgAck, BAM, Conn_Abort.
TP_RTS, TP_CTS, TP_EOMA, TP_BAM, TP_ABORT = 16, 17, 19, 32, 255
#: J1939-21 5.12.3: T1 = 750 ms, the longest gap between TP.DT packets of one message.
TP_T1 = 0.75
#: Most open TP sessions at once (one per source/destination pair); the oldest is dropped beyond.
TP_MAX_SESSIONS = 256

SORTS = ("id", "count", "rate", "change")
#: s between reads of the source (frames wait in the bus's receive queue meanwhile).
POLL = 0.01


def frame_bits(is_extended_id: bool, is_remote_frame: bool, data_length: int) -> int:
    """Bits on the wire of a classic frame, worst-case bit stuffing and
    intermission included: :func:`canx.busload.frame_bits`'s formula
    (``g + 8n + 13 + floor((g + 8n - 1) / 4)``, g = 34 for an 11-bit id, 54
    for a 29-bit one; 135 bits for a standard 8-byte frame), computed inline
    because it runs for every frame. CAN FD frames go through
    :func:`canx.busload.frame_bits` (arbitration and data phase bits added:
    the estimate assumes no bit rate switch)."""
    g = (54 if is_extended_id else 34) + (0 if is_remote_frame else 8 * min(data_length, 8))
    return g + 13 + (g - 1) // 4


def j1939_fields(arbitration_id: int) -> Tuple[int, int, int]:
    """(PGN, SA, DA) of a 29-bit J1939 id (SAE J1939-21 5.2): PDU1 (PF < 240)
    carries the DA in PS and the PGN has PS = 0; PDU2 is broadcast (DA 0xFF)."""
    pf = (arbitration_id >> 16) & 0xFF
    if pf < 240:
        return (arbitration_id >> 8) & 0x3FF00, arbitration_id & 0xFF, (arbitration_id >> 8) & 0xFF
    return (arbitration_id >> 8) & 0x3FFFF, arbitration_id & 0xFF, 0xFF


@dataclass
class Row:
    """Statistics of one identifier (or PGN + SA, or a TP-reassembled PGN + SA).

    Times are the frames' timestamps in s; ``period`` and ``jitter`` are
    running averages in s (0.0 until two frames arrived). ``changed_at[i]`` is
    the time byte ``i`` last changed (the first frame counts as a change)."""

    key: Tuple[Any, ...]
    arbitration_id: int
    is_extended_id: bool
    pgn: Optional[int] = None
    source: Optional[int] = None
    destination: Optional[int] = None
    transport: bool = False
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    period: float = 0.0
    jitter: float = 0.0
    data: bytes = b""
    flags: str = ""
    changed_at: List[float] = field(default_factory=list)
    last_change: float = 0.0
    decoded: Optional[Tuple[bytes, str]] = None

    @property
    def rate(self) -> float:
        """Frames/s from the running period (0.0 before two frames)."""
        return 1.0 / self.period if self.period > 0 else 0.0

    def changed_mask(self, now: float, hold: float) -> int:
        """Bit ``i`` set when byte ``i`` changed in the last ``hold`` s before ``now``."""
        mask = 0
        for i, t in enumerate(self.changed_at):
            if now - t <= hold:
                mask |= 1 << i
        return mask

    def _update(self, ts: float, data: bytes) -> None:
        if self.count:
            interval = ts - self.last
            if self.count == 1:
                self.period = interval
            else:
                d = interval - self.period
                self.period += d * GAIN
                self.jitter += (abs(d) - self.jitter) * GAIN
        else:
            self.first = ts
        self.count += 1
        self.last = ts
        old = self.data
        if data != old:
            ch = self.changed_at
            n = len(data)
            if len(ch) != n:
                # A new length: every byte counts as changed.
                self.changed_at = [ts] * n
            else:
                for i in range(n):
                    if data[i] != old[i]:
                        ch[i] = ts
            self.data = data
            self.last_change = ts


class TpReassembler:
    """Passive SAE J1939-21 transport protocol reassembly (5.10): BAM and
    RTS/CTS (CMDT) sessions seen on the bus, keyed by (SA, DA). It only
    listens (it never sends CTS or aborts): a sniffer's view of transfers
    between other nodes. ``feed`` returns ``(pgn, sa, da, payload)`` when a
    message is complete. Sessions end on Conn_Abort, on a new RTS/BAM from the
    same SA to the same DA, when a TP.DT comes more than T1 (750 ms) after the
    previous packet (counted in ``timeouts``), or when more than
    ``TP_MAX_SESSIONS`` are open (the oldest, counted in ``evicted``).

    Why not canx's J1939 engine: it reassembles only what is addressed to
    its own ECU (it answers RTS with CTS, J1939-21 5.10.2), and
    :class:`canx.j1939.BusMonitor` decodes frames without reassembling, so a
    sniffer needs this listen-only reassembler. ETP (J1939-21 5.10.5, PGNs
    0xC800/0xC700, > 1785 bytes) is not reassembled: its frames show as
    rows of their own."""

    def __init__(self) -> None:
        # (sa, da) -> [pgn, size, packets, buffer, received set bitmask, last ts]
        self._sessions: Dict[Tuple[int, int], List[Any]] = {}
        self.completed = 0
        self.aborted = 0
        self.timeouts = 0
        self.evicted = 0

    def feed(self, pgn: int, sa: int, da: int, data: bytes, ts: float) -> Optional[Tuple[int, int, int, bytes]]:
        if pgn == PGN_TP_CM:
            if len(data) < 8:
                return None
            ctrl = data[0]
            if ctrl in (TP_RTS, TP_BAM):
                size = data[1] | (data[2] << 8)
                packets = data[3]
                if size < 9 or packets == 0 or packets * 7 < size:
                    return None
                key = (sa, 0xFF if ctrl == TP_BAM else da)
                if key not in self._sessions and len(self._sessions) >= TP_MAX_SESSIONS:
                    oldest = min(self._sessions, key=lambda k: self._sessions[k][5])
                    del self._sessions[oldest]
                    self.evicted += 1
                tpgn = data[5] | (data[6] << 8) | (data[7] << 16)
                self._sessions[key] = [tpgn, size, packets, bytearray(packets * 7), 0, ts]
            elif ctrl == TP_ABORT:
                # Either side may abort (J1939-21 5.10.3.5): the session is (SA, DA) or (DA, SA).
                for key in ((sa, da), (da, sa)):
                    if self._sessions.pop(key, None) is not None:
                        self.aborted += 1
            return None
        if pgn != PGN_TP_DT or len(data) < 1:
            return None
        key = (sa, da)
        s = self._sessions.get(key)
        if s is None:
            return None
        if ts - s[5] > TP_T1:
            del self._sessions[key]
            self.timeouts += 1
            return None
        seq = data[0]
        if not 1 <= seq <= s[2]:
            return None
        s[3][(seq - 1) * 7:seq * 7] = data[1:8].ljust(7, b"\xff")
        s[4] |= 1 << (seq - 1)
        s[5] = ts
        if s[4] == (1 << s[2]) - 1:
            del self._sessions[key]
            self.completed += 1
            return s[0], sa, da, bytes(s[3][:s[1]])
        return None

    def clear(self) -> None:
        self._sessions.clear()


@dataclass
class Snapshot:
    """Header figures over the interval since the previous snapshot."""

    frames_per_s: float
    bus_load: float  # percent of `bitrate`
    frames: int
    error_frames: int


class MonitorModel:
    """Per-row statistics of received frames; no terminal. ``add`` takes
    batches of RawBus field tuples (see :data:`canx.tools._common.Fields`).

    ``j1939=True`` groups 29-bit frames by (PGN, SA) and reassembles TP
    messages into rows of their own (``transport=True``). ``bitrate`` (bit/s)
    is the nominal rate the bus load is computed against."""

    def __init__(self, *, j1939: bool = False, bitrate: int = 500_000) -> None:
        if bitrate <= 0:
            raise ValueError(f"bitrate must be positive, not {bitrate}")
        self.j1939 = j1939
        self.bitrate = bitrate
        self.rows: Dict[Tuple[Any, ...], Row] = {}
        self.tp = TpReassembler()
        self.frames = 0
        self.error_frames = 0
        self.bits = 0
        self._snap: Optional[Tuple[float, int, int]] = None

    def add(self, frames: Iterable[Fields]) -> None:
        rows = self.rows
        j1939 = self.j1939
        bits = 0
        n = 0
        for f in frames:
            if f[3]:
                self.error_frames += 1
                continue
            n += 1
            data = f[8]
            ext = f[1]
            aid = f[0]
            if f[4]:
                bits += _fd_bits(ext, len(data))
            else:
                g = (54 if ext else 34) + (0 if f[2] else 8 * min(len(data), 8))
                bits += g + 13 + (g - 1) // 4
            if j1939 and ext:
                pf = (aid >> 16) & 0xFF
                if pf < 240:
                    pgn, da = (aid >> 8) & 0x3FF00, (aid >> 8) & 0xFF
                else:
                    pgn, da = (aid >> 8) & 0x3FFFF, 0xFF
                sa = aid & 0xFF
                key: Tuple[Any, ...] = ("j", pgn, sa)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = Row(key, aid, True, pgn, sa, da, flags=_flags(f))
                row.arbitration_id = aid
                row.destination = da
                row._update(f[9], data)
                if pgn == PGN_TP_CM or pgn == PGN_TP_DT:
                    done = self.tp.feed(pgn, sa, da, data, f[9])
                    if done is not None:
                        self._add_transport(done, f[9], aid)
            else:
                key = (aid, ext)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = Row(key, aid, ext, flags=_flags(f))
                row._update(f[9], data)
        self.frames += n
        self.bits += bits

    def _add_transport(self, done: Tuple[int, int, int, bytes], ts: float, aid: int) -> None:
        pgn, sa, da, payload = done
        key = ("tp", pgn, sa)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row(key, aid, True, pgn, sa, da, transport=True)
        row.destination = da
        row._update(ts, payload)

    def snapshot(self, now: float) -> Snapshot:
        """Frames/s and bus load (% of ``bitrate``, worst-case stuff bits:
        :func:`frame_bits`) since the previous call at monotonic time ``now`` (s)."""
        if self._snap is None:
            self._snap = (now, self.frames, self.bits)
            return Snapshot(0.0, 0.0, self.frames, self.error_frames)
        t0, f0, b0 = self._snap
        dt = now - t0
        if dt <= 0:
            return Snapshot(0.0, 0.0, self.frames, self.error_frames)
        self._snap = (now, self.frames, self.bits)
        return Snapshot((self.frames - f0) / dt, 100.0 * (self.bits - b0) / (dt * self.bitrate),
                        self.frames, self.error_frames)

    def clear(self) -> None:
        """Forgets every row and counter (the header's snapshot restarts too)."""
        self.rows.clear()
        self.tp.clear()
        self.frames = self.error_frames = self.bits = 0
        self._snap = None

    def select(self, sort: str = "id", id_filter: Sequence[Tuple[int, int]] = ()) -> List[Row]:
        """Rows passing ``id_filter`` ((value, mask) pairs; a row passes when
        its id, or with J1939 its PGN, matches one), in ``sort`` order: ``id``
        (ascending; J1939 rows by PGN then SA), ``count``, ``rate`` (both
        descending), ``change`` (most recent data change first)."""
        rows: Iterable[Row] = self.rows.values()
        if id_filter:
            rows = [r for r in rows if _passes(r, id_filter)]
        if sort == "count":
            return sorted(rows, key=lambda r: -r.count)
        if sort == "rate":
            return sorted(rows, key=lambda r: -r.rate)
        if sort == "change":
            return sorted(rows, key=lambda r: -r.last_change)
        if sort != "id":
            raise ValueError(f"unknown sort {sort!r} (one of {', '.join(SORTS)})")
        return sorted(rows, key=_id_order)


def _fd_bits(is_extended_id: bool, n: int) -> int:
    from ..busload import frame_bits as busload_bits
    return busload_bits(0, is_extended_id, data=bytes(n), is_fd=True)


def _flags(f: Fields) -> str:
    return ("R" if f[2] else "") + ("FD" if f[4] else "") + ("B" if f[5] else "")


def _id_order(r: Row) -> Tuple[int, int, int, int]:
    if r.pgn is not None:
        return (2, r.pgn, r.source or 0, 1 if r.transport else 0)
    return (1 if r.is_extended_id else 0, r.arbitration_id, 0, 0)


def _passes(r: Row, id_filter: Sequence[Tuple[int, int]]) -> bool:
    for value, mask in id_filter:
        if (r.arbitration_id & mask) == (value & mask):
            return True
        if r.pgn is not None and (r.pgn & mask) == (value & mask):
            return True
    return False


def parse_id_filter(text: str) -> List[Tuple[int, int]]:
    """``"123 18FEF1 100:700"`` -> [(value, mask)]: a bare hex id matches
    exactly, ``id:mask`` matches under the mask. Raises ValueError naming the item."""
    out = []
    for item in text.replace(",", " ").split():
        value, sep, mask = item.partition(":")
        try:
            v = int(value, 16)
            m = int(mask, 16) if sep else 0x1FFFFFFF
        except ValueError:
            raise ValueError(f"bad id filter {item!r}: expected hex ID or ID:MASK") from None
        out.append((v, m))
    return out


# ---------------------------------------------------------------------------------------- decoders

Decoder = Callable[[Row], str]


def dbc_decoder(path: str) -> Decoder:
    """Decoded signals of a row as ``name=value unit`` text, through
    :mod:`canx.dbc` (cantools). ToolError if the file cannot be loaded."""
    try:
        from .. import dbc
    except ImportError as e:
        raise ToolError(f"--dbc needs cantools (pip install canx[dbc]): {e}") from None
    try:
        db = dbc.load(path)
    except Exception as e:  # noqa: BLE001 -- any load error becomes one line
        raise ToolError(f"cannot load DBC {path!r}: {e}") from None

    def decode(r: Row) -> str:
        try:
            if r.transport and r.pgn is not None:
                d = db.decode_pgn(r.pgn, r.data)
            else:
                d = db.decode(r.arbitration_id, r.data, r.is_extended_id)
        except dbc.DecodeError:
            return "(not decodable)"
        if d is None:
            return ""
        # "EEC1 EngineSpeed=1800.0 rpm ...", J1939 not-available/error values as NAME=n/a / NAME=error.
        return str(d)

    return decode


def megasquirt_decoder() -> Decoder:
    """MegaSquirt dash and advanced broadcast fields by name (``canx.megasquirt.Broadcast``'s names)."""
    from .. import Message
    from ..megasquirt import Broadcast

    bc = Broadcast()

    def decode(r: Row) -> str:
        if r.is_extended_id or r.pgn is not None:
            return ""
        values = bc.decode(Message(r.arbitration_id, r.data))
        if not values:
            return ""
        return " ".join(f"{k}={_value(v)}" for k, v in values.items())

    return decode


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# ----------------------------------------------------------------------------------------- sources

class Source(abc.ABC):
    """Where frames come from: ``fileno()`` for select (or None), ``read()`` a
    batch, ``status()`` -> (bus state text, frames dropped), ``close()``.
    Abstract: each kind of source (a bus, a replayed log) reads its own way."""

    @abc.abstractmethod
    def fileno(self) -> Optional[int]: ...

    @abc.abstractmethod
    def read(self) -> List[Fields]: ...

    def status(self) -> Tuple[str, int]:
        return "-", 0

    def done(self) -> bool:
        return False

    def close(self) -> None:
        pass


class BusSource(Source):
    """A canx channel (any that ``canx dump`` opens), with candump filters."""

    def __init__(self, channel: str, batch: int = 4096) -> None:
        spec = parse_channel_spec(channel)
        spec.error_mask = 0x1FFFFFFF
        self.spec = spec
        self.bus = open_bus(spec.channel, filters=spec.kernel_filters(), error_frames=True)
        self.batch = batch

    def fileno(self) -> Optional[int]:
        return self.bus.fileno()

    def read(self) -> List[Fields]:
        frames = self.bus.recv_many(self.batch, 0)
        if self.spec.join or self.spec.filters:
            return [f for f in frames if self.spec.accepts(f)]
        return frames

    def status(self) -> Tuple[str, int]:
        try:
            state, tec, rec = self.bus.state()
            s = self.bus.stats()
        except Exception:  # noqa: BLE001 -- a bus that went away shows as such
            return "CLOSED", 0
        return f"{state} TEC {tec} REC {rec}", s[2] + s[3]

    def close(self) -> None:
        self.bus.shutdown()


class ReplaySource(Source):
    """A log file (candump .log, or python-can's formats) fed at its own
    timing, ``speed`` times faster (0: as fast as the view reads)."""

    def __init__(self, path: str, speed: float = 1.0, loops: int = 1) -> None:
        from .replay import _read_log, _read_other
        p = Path(path)
        reader = _read_log if p.suffix.lower() == ".log" else _read_other
        self.frames = [f for _, _, f in reader(p)]
        self.speed = speed
        self.loops = loops
        self.i = 0
        self.loop = 0
        self._t0 = time.monotonic()
        self._log0 = self.frames[0][9] if self.frames else 0.0
        self._offset = 0.0  # log time already played in earlier loops

    def fileno(self) -> Optional[int]:
        return None

    def read(self) -> List[Fields]:
        out: List[Fields] = []
        now = time.monotonic()
        frames = self.frames
        while self.loop < self.loops and frames:
            while self.i < len(frames):
                f = frames[self.i]
                log_t = self._offset + f[9] - self._log0
                if self.speed > 0 and log_t / self.speed > now - self._t0:
                    return out
                # Receive time: now (the rows' rates follow the replay speed), as a bus would stamp it.
                # Receive time as a bus would stamp it; as fast as possible (speed 0) keeps the
                # log's own intervals so that periods and rates stay meaningful.
                out.append(f[:9] + (self._t0 + _EPOCH_OFFSET + (log_t / self.speed if self.speed > 0 else log_t),
                                    f[10]))
                self.i += 1
                if len(out) >= 4096:
                    return out
            self.loop += 1
            self.i = 0
            self._offset += frames[-1][9] - self._log0 + 1e-3
        return out

    def done(self) -> bool:
        return self.loop >= self.loops

    def status(self) -> Tuple[str, int]:
        return ("replay done" if self.done() else f"replay {self.loop + 1}/{self.loops}"), 0


_EPOCH_OFFSET = time.time() - time.monotonic()
_WINDOWS = sys.platform == "win32"


# ------------------------------------------------------------------------------------------- view

class CursesView:
    """Draws a :class:`MonitorModel` with curses and handles the keys."""

    def __init__(self, model: MonitorModel, source: Source, title: str, decoders: Sequence[Decoder],
                 fps: float = 10.0, hold: float = 1.0) -> None:
        self.model = model
        self.source = source
        self.title = title
        self.decoders = list(decoders)
        self.interval = 1.0 / fps
        self.hold = hold
        self.paused = False
        self.sort = "id"
        self.filter_text = ""
        self.id_filter: List[Tuple[int, int]] = []
        self.scroll = 0
        self.message = ""
        self._snap = Snapshot(0.0, 0.0, 0, 0)
        self._frozen: Optional[List[Row]] = None
        self._frozen_at = 0.0

    def run(self) -> int:
        import curses
        return int(curses.wrapper(self._main))

    def _main(self, scr: Any) -> int:
        import curses
        curses.curs_set(0)
        scr.nodelay(True)
        scr.keypad(True)
        self._colors(curses)
        stdin = sys.stdin.fileno()
        next_draw = time.monotonic()
        while True:
            now = time.monotonic()
            # Wake for keys at once, for frames every POLL s: frames are read in batches of
            # what accumulated (the bus's receive queue holds them), not one wake-up each.
            wait = min(max(0.0, next_draw - now), POLL)
            if _WINDOWS:
                # select() takes only sockets there: poll the keyboard (getch does not block).
                time.sleep(wait)
                ready = [stdin]
            else:
                ready, _, _ = select.select([stdin], [], [], wait)
            batch = self.source.read()
            while batch:
                self.model.add(batch)
                if len(batch) < 4096 or time.monotonic() >= next_draw:
                    break
                batch = self.source.read()
            if stdin in ready:
                if not self._keys(scr, curses):
                    return 0
            now = time.monotonic()
            if now >= next_draw:
                next_draw = now + self.interval
                self._draw(scr, curses, now)

    def _colors(self, curses: Any) -> None:
        self.changed_attr = curses.A_BOLD | curses.A_REVERSE
        self.header_attr = curses.A_REVERSE
        self.stale_attr = curses.A_DIM
        if curses.has_colors():
            try:
                curses.use_default_colors()
                curses.init_pair(1, curses.COLOR_RED, -1)
                curses.init_pair(2, curses.COLOR_CYAN, -1)
                self.changed_attr = curses.color_pair(1) | curses.A_BOLD
                self.decoded_attr = curses.color_pair(2)
                return
            except curses.error:
                pass
        self.decoded_attr = curses.A_NORMAL

    # ---- keys
    def _keys(self, scr: Any, curses: Any) -> bool:
        while True:
            k = scr.getch()
            if k == -1:
                return True
            if k in (ord("q"), ord("Q")):
                return False
            if k in (ord(" "), ord("p"), ord("P")):
                self.paused = not self.paused
                self._frozen = None
            elif k in (ord("s"), ord("S")):
                self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
            elif k in (ord("c"), ord("C")):
                self.model.clear()
                self._frozen = None
                self.scroll = 0
            elif k == ord("/"):
                self._prompt_filter(scr, curses)
            elif k == curses.KEY_DOWN:
                self.scroll += 1
            elif k == curses.KEY_UP:
                self.scroll = max(0, self.scroll - 1)
            elif k == curses.KEY_NPAGE:
                self.scroll += max(1, scr.getmaxyx()[0] - 4)
            elif k == curses.KEY_PPAGE:
                self.scroll = max(0, self.scroll - max(1, scr.getmaxyx()[0] - 4))
            elif k == curses.KEY_RESIZE:
                scr.clear()

    def _prompt_filter(self, scr: Any, curses: Any) -> None:
        h, w = scr.getmaxyx()
        prompt = "filter ids (hex, ID:MASK, spaces; empty = all): "
        scr.nodelay(False)
        curses.echo()
        curses.curs_set(1)
        try:
            scr.move(h - 1, 0)
            scr.clrtoeol()
            scr.addnstr(h - 1, 0, prompt, w - 1)
            raw = scr.getstr(h - 1, min(len(prompt), w - 2), 60)
            text = raw.decode("ascii", "replace").strip() if isinstance(raw, bytes) else str(raw)
        finally:
            curses.noecho()
            curses.curs_set(0)
            scr.nodelay(True)
        try:
            self.id_filter = parse_id_filter(text)
            self.filter_text = text
            self.message = ""
        except ValueError as e:
            self.message = str(e)
        self.scroll = 0
        self._frozen = None

    # ---- drawing
    def _draw(self, scr: Any, curses: Any, now: float) -> None:
        h, w = scr.getmaxyx()
        snap = self.model.snapshot(now)
        if not self.paused:
            self._snap = snap
        wall = time.time()
        if self.paused and self._frozen is not None:
            rows = self._frozen
            wall = self._frozen_at
        else:
            rows = self.model.select(self.sort, self.id_filter)
            if self.paused:
                # Freeze what is on screen: the figures, the data and the change marks.
                rows = self._frozen = [_copy(r) for r in rows]
                self._frozen_at = wall
        self.scroll = min(self.scroll, max(0, len(rows) - 1))
        # Only the rows on screen are decoded (and their change masks computed).
        visible = rows[self.scroll:self.scroll + max(0, h - 3)]
        state, drops = self.source.status()
        s = self._snap
        tp = self.model.tp
        scr.erase()
        head = (f" canx monitor {self.title} | load {s.bus_load:5.1f}% @ {self.model.bitrate // 1000} kbit/s"
                f" | {s.frames_per_s:7.0f} frames/s | total {s.frames} | errors {s.error_frames}"
                f" | {state} | dropped {drops}")
        _put(scr, 0, 0, head.ljust(w), w, self.header_attr)
        status = (f" {'PAUSED' if self.paused else 'live'} | sort {self.sort} | filter "
                  f"{self.filter_text or 'none'} | rows {len(rows)}/{len(self.model.rows)}")
        if self.model.j1939:
            status += f" | TP done {tp.completed} aborted {tp.aborted} timeouts {tp.timeouts}"
        status += " | keys: space pause, s sort, / filter, c clear, q quit"
        if self.message:
            status += f" | {self.message}"
        _put(scr, 1, 0, status, w, curses.A_NORMAL)
        if self.model.j1939:
            cols = "  PGN    SA DA    count    rate/s  period ms  jitter ms  len data"
        else:
            cols = " ID          count    rate/s  period ms  jitter ms  len data"
        _put(scr, 2, 0, cols.ljust(w), w, curses.A_UNDERLINE)
        for y, r in enumerate(visible, 3):
            stale = r.period > 0 and wall - r.last > max(3 * r.period, 1.0) and not self.paused
            self._row(scr, y, w, r, r.changed_mask(wall, self.hold), self._decoded(r), stale)
        scr.noutrefresh()
        curses.doupdate()

    def _decoded(self, r: Row) -> str:
        if not self.decoders:
            return ""
        cached = r.decoded
        if cached is not None and cached[0] is r.data:
            return cached[1]
        text = " ".join(t for t in (d(r) for d in self.decoders) if t)
        r.decoded = (r.data, text)
        return text

    def _row(self, scr: Any, y: int, w: int, r: Row, mask: int, decoded: str, stale: bool) -> None:
        if r.pgn is not None:
            ident = f"{r.pgn:06X} {r.source:02X} {r.destination:02X}"
            ident += " TP" if r.transport else "   "
        elif r.is_extended_id:
            ident = f"{r.arbitration_id:08X}   "
        else:
            ident = f"{r.arbitration_id:03X}        "
        period_ms = r.period * 1e3
        text = (f" {ident} {r.count:8d} {r.rate:9.1f} {period_ms:10.2f} {r.jitter * 1e3:10.2f} "
                f"{len(r.data):4d} ")
        attr = self.stale_attr if stale else 0
        _put(scr, y, 0, text, w, attr)
        x = len(text)
        shown = r.data[:8] if r.transport or len(r.data) > 8 and w < 140 else r.data[:16]
        for i, b in enumerate(shown):
            if x + 3 > w:
                return
            _put(scr, y, x, f"{b:02X}", w, self.changed_attr if mask >> i & 1 else attr)
            x += 3
        if len(shown) < len(r.data):
            _put(scr, y, x, "..", w, attr)
            x += 3
        if r.flags:
            _put(scr, y, x, r.flags, w, attr)
            x += len(r.flags) + 1
        if decoded and x < w - 2:
            _put(scr, y, max(x, 0), " " + decoded, w, self.decoded_attr)


def _copy(r: Row) -> Row:
    return Row(r.key, r.arbitration_id, r.is_extended_id, r.pgn, r.source, r.destination, r.transport,
               r.count, r.first, r.last, r.period, r.jitter, r.data, r.flags, list(r.changed_at),
               r.last_change, r.decoded)


def _put(scr: Any, y: int, x: int, text: str, w: int, attr: int) -> None:
    if x >= w:
        return
    try:
        scr.addnstr(y, x, text, w - x - (1 if y == scr.getmaxyx()[0] - 1 else 0), attr)
    except Exception:  # noqa: BLE001 -- curses raises when writing the last cell; nothing to do
        pass


# --------------------------------------------------------------------------------------------- CLI

def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("monitor", help="live full-screen view of a bus, one row per id (like cansniffer)",
                       description="A live view of a channel or a replayed log: one row per identifier "
                                   "(or PGN and SA) with count, rate, period, jitter, changed bytes and "
                                   "decoded signals.")
    p.add_argument("channel", nargs="?", metavar="CHANNEL[,FILTER...]",
                   help="vcan0, can0, virtual:NAME, udp_multicast:, slcan:PORT, gs_usb:0 ... with optional "
                        "candump filters (as canx dump)")
    p.add_argument("--replay", metavar="FILE", help="show a log file (candump .log or python-can formats) "
                                                    "at its own timing instead of a channel")
    p.add_argument("--speed", type=float, default=1.0,
                   help="with --replay: this many times faster (0: as fast as possible; default 1)")
    p.add_argument("--loops", type=int, default=1, help="with --replay: play the file this many times")
    p.add_argument("--dbc", metavar="FILE", help="decode frames with this DBC (cantools)")
    p.add_argument("--j1939", action="store_true",
                   help="one row per PGN and source address; TP (BAM, RTS/CTS) messages reassembled")
    p.add_argument("--megasquirt", action="store_true", help="MegaSquirt broadcast fields by name")
    p.add_argument("--bitrate", type=int, default=500_000,
                   help="nominal bit rate (bit/s) for the bus load estimate (default 500000)")
    p.add_argument("--fps", type=float, default=10.0, help="redraws per second (default 10)")


def run(args: argparse.Namespace) -> int:
    if (args.channel is None) == (args.replay is None):
        raise ToolError("give a CHANNEL or --replay FILE (one of them)")
    if args.bitrate <= 0:
        raise ToolError(f"--bitrate must be positive, not {args.bitrate}")
    if not 0.5 <= args.fps <= 60:
        raise ToolError(f"--fps must be between 0.5 and 60, not {args.fps}")
    if args.speed < 0 or args.loops < 1:
        raise ToolError("--speed must be >= 0 and --loops >= 1")
    try:
        import curses  # noqa: F401
    except ImportError:
        raise ToolError("canx monitor needs curses (on Windows: pip install canx[monitor])") from None
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise ToolError("canx monitor needs a terminal (use canx dump for pipes)")
    decoders: List[Decoder] = []
    if args.dbc:
        decoders.append(dbc_decoder(args.dbc))
    if args.megasquirt:
        decoders.append(megasquirt_decoder())
    model = MonitorModel(j1939=args.j1939, bitrate=args.bitrate)
    source: Source = ReplaySource(args.replay, args.speed, args.loops) if args.replay else BusSource(args.channel)
    try:
        return CursesView(model, source, args.channel or args.replay, decoders, fps=args.fps).run()
    except KeyboardInterrupt:
        return 0
    finally:
        source.close()
