"""Assertions for tests of CAN applications: ``expect_frame`` and friends.

    from canx.testing import Recorder, expect_frame, expect_no_frame

    with Recorder("virtual:t") as rec:
        app.start()
        f = expect_frame(rec, id=0x18FEF100, mask=0x00FFFF00, extended=True, within=0.1)
        expect_no_frame(rec, id=0x7DF, during=0.2)

A :class:`Recorder` receives every frame on a channel (vcan0, can0,
virtual:NAME, ...) from the moment it is opened, with the receive
timestamps, in a thread of its own. The ``expect_*`` functions wait on it:
each looks at the frames the recorder holds that no earlier expectation has
consumed, and a match consumes the frames up to and including it (like
pexpect); a failed one consumes the frames of its window. Their first argument (``bus``) may also be a ``canx.CAN`` or a channel
name: then a recorder is opened on that channel for the one call, so it
only sees frames that arrive after the call starts.

Failures raise :class:`ExpectationError` (an AssertionError) whose message
lists the frames seen in the window in candump ``-L`` syntax
(``(1700000000.123456) vcan0 123#1122``), written by canx's Rust log codec
(the one ``canx log`` uses).

Times (``within``) are multiplied by ``$CANX_TIMEOUT_SCALE`` (default 1;
canx's VM runs set 10); ``during`` windows are not scaled.

The pytest plugin (:mod:`canx.pytest_plugin`) builds fixtures on these.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Union

from . import _canx
from .errors import CanxError

__all__ = [
    "Frame",
    "Recorder",
    "ExpectationError",
    "expect_frame",
    "expect_no_frame",
    "expect_sequence",
    "expect_pgn",
    "timeout_scale",
]

#: TP.CM (J1939-21 5.10.3) and its BAM/RTS control bytes: an announced PGN counts for expect_pgn.
_PGN_TP_CM = 0xEC00
_ETP_CM = 0xC800
_TP_ANNOUNCE = (16, 32, 20)  # RTS, BAM (TP); ETP RTS


def timeout_scale() -> float:
    """``$CANX_TIMEOUT_SCALE`` as a float (1.0 if unset or empty)."""
    text = os.environ.get("CANX_TIMEOUT_SCALE") or "1"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"CANX_TIMEOUT_SCALE={text!r} is not a number") from None
    if not value > 0:
        raise ValueError(f"CANX_TIMEOUT_SCALE={text!r} must be positive")
    return value


@dataclass(frozen=True)
class Frame:
    """One received frame. ``timestamp``: s, the receive time the runtime
    stamped (wall clock); ``channel``: where it was received."""

    timestamp: float
    channel: str
    arbitration_id: int
    is_extended_id: bool
    is_remote_frame: bool
    is_error_frame: bool
    is_fd: bool
    bitrate_switch: bool
    error_state_indicator: bool
    dlc: int
    data: bytes

    def _fields(self) -> tuple[int, bool, bool, bool, bool, bool, bool, int, bytes]:
        return (self.arbitration_id, self.is_extended_id, self.is_remote_frame, self.is_error_frame,
                self.is_fd, self.bitrate_switch, self.error_state_indicator, self.dlc, self.data)

    def log_line(self) -> str:
        """candump ``-L`` line: ``(1700000000.123456) vcan0 123#1122``."""
        return _canx.format_log_line(self.timestamp, self.channel, *self._fields())

    def __str__(self) -> str:
        """cansend syntax: ``123#1122``, ``18FEF100#...``, ``123##1...`` (FD), ``123#R``."""
        return _canx.format_frame_text(*self._fields())


class ExpectationError(AssertionError):
    """An expectation on the bus failed. ``frames``: what was seen in the window."""

    def __init__(self, message: str, frames: Sequence[Frame]) -> None:
        self.frames = list(frames)
        lines = [f.log_line() for f in self.frames]
        if len(lines) > 200:
            lines = [*lines[:100], f"... {len(lines) - 200} frames left out ...", *lines[-100:]]
        seen = "\n".join(f"  {line}" for line in lines) if lines else "  (none)"
        super().__init__(f"{message}\nframes seen in the window ({len(self.frames)}, candump -L):\n{seen}")


class Recorder:
    """Records every frame on ``channel`` with receive timestamps, from now
    until :meth:`close` (also a context manager).

    ``Recorder(channel, *, fd=True, error_frames=False, queue_size=65536)``:
    opens its own ``RawBus`` on the channel (an FD bus where the interface
    allows, else classic), so it hears what every other handle sends on it;
    it never sends. Raises the errors of ``canx.RawBus`` for the channel.
    ``dropped``: frames the receive queue lost because the recorder fell
    behind (0 in a healthy test).
    """

    def __init__(self, channel: str, *, fd: bool = True, error_frames: bool = False,
                 queue_size: int = 65536) -> None:
        self.channel = channel
        try:
            self._bus = _canx.RawBus(channel, fd=fd, error_frames=error_frames, queue_size=queue_size)
        except CanxError:
            if not fd:
                raise
            self._bus = _canx.RawBus(channel, fd=False, error_frames=error_frames, queue_size=queue_size)
        self._frames: List[Frame] = []
        self._cursor = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"canx-recorder-{channel}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._bus.recv_many(512, 0.02)
            except (CanxError, ValueError, OSError):
                if self._stop.is_set():
                    return
                time.sleep(0.01)
                continue
            if batch:
                with self._cond:
                    self._frames.extend(Frame(f[9], self.channel, *f[:9]) for f in batch)
                    self._cond.notify_all()

    @property
    def frames(self) -> List[Frame]:
        """A copy of every frame recorded so far, oldest first."""
        with self._cond:
            return list(self._frames)

    @property
    def dropped(self) -> int:
        """Frames lost by the receive queue (``RawBus.stats()`` drops)."""
        return int(self._bus.stats()[1])

    def log_text(self) -> str:
        """Every recorded frame as candump ``-L`` lines (what ``candump -l`` writes)."""
        return "".join(f.log_line() + "\n" for f in self.frames)

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes :meth:`log_text` to ``path`` (readable by canplayer and ``canx replay``)."""
        with open(path, "w") as fh:
            fh.write(self.log_text())

    def clear(self) -> None:
        """Marks every frame recorded so far as consumed: the next expectation only sees newer frames."""
        with self._cond:
            self._cursor = len(self._frames)

    def close(self) -> None:
        """Stops recording (the frames stay readable). Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._bus.shutdown()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- matching core

    def _wait_for(self, matchers: Sequence["_Matcher"], within: float, what: str) -> List[Frame]:
        """Waits until the matchers matched in order (each after the one before)
        among the unconsumed frames, up to ``within`` s; consumes through the last match."""
        deadline = time.monotonic() + within
        found: List[Frame] = []
        with self._cond:
            start = self._cursor
            pos = start
            while True:
                while pos < len(self._frames) and len(found) < len(matchers):
                    if matchers[len(found)].matches(self._frames[pos]):
                        found.append(self._frames[pos])
                    pos += 1
                if len(found) == len(matchers):
                    self._cursor = pos
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = self._frames[start:]
                    self._cursor = len(self._frames)
                    got = "" if len(matchers) == 1 else f" (matched {len(found)} of {len(matchers)}; next: " \
                                                          f"{matchers[len(found)]})"
                    raise ExpectationError(f"no {what} within {within:g} s{got} on {self.channel}", seen)
                self._cond.wait(left)

    def _none_during(self, matcher: "_Matcher", during: float) -> None:
        deadline = time.monotonic() + during
        with self._cond:
            start = pos = self._cursor
            while True:
                while pos < len(self._frames):
                    if matcher.matches(self._frames[pos]):
                        self._cursor = pos + 1
                        raise ExpectationError(
                            f"unexpected {matcher} on {self.channel} within {during:g} s: "
                            f"{self._frames[pos].log_line()}", self._frames[start:pos + 1])
                    pos += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    self._cursor = pos
                    return
                self._cond.wait(left)


@dataclass(frozen=True)
class _Matcher:
    id: Optional[int] = None
    data: Optional[bytes] = None
    mask: Optional[int] = None
    extended: Optional[bool] = None
    pgn: Optional[int] = None
    source: Optional[int] = None

    def matches(self, f: Frame) -> bool:
        if f.is_error_frame:
            return False
        if self.extended is not None and f.is_extended_id != self.extended:
            return False
        if self.id is not None:
            mask = self.mask if self.mask is not None else (0x1FFFFFFF if f.is_extended_id else 0x7FF)
            if (f.arbitration_id ^ self.id) & mask:
                return False
        if self.data is not None and f.data != self.data:
            return False
        if self.pgn is not None:
            return self._pgn_matches(f)
        return True

    def _pgn_matches(self, f: Frame) -> bool:
        if not f.is_extended_id or f.is_remote_frame:
            return False
        _, pgn, sa, _ = _canx.j1939_decode_id(f.arbitration_id)
        if self.source is not None and sa != self.source:
            return False
        if _pdu1(pgn) == _pdu1(self.pgn or 0):
            return True
        # A multi-packet message is announced by TP.CM/ETP.CM RTS or BAM; its bytes 5..7 are the PGN.
        if _pdu1(pgn) in (_PGN_TP_CM, _ETP_CM) and len(f.data) == 8 and f.data[0] in _TP_ANNOUNCE:
            return _pdu1(int.from_bytes(f.data[5:8], "little")) == _pdu1(self.pgn or 0)
        return False

    def __str__(self) -> str:
        parts = []
        if self.pgn is not None:
            parts.append(f"PGN {self.pgn:#x}" + (f" from SA {self.source:#04x}" if self.source is not None else ""))
        if self.id is not None:
            parts.append(f"id {self.id:X}" + (f" mask {self.mask:X}" if self.mask is not None else ""))
        if self.extended is not None:
            parts.append("extended" if self.extended else "standard")
        if self.data is not None:
            parts.append(f"data {self.data.hex().upper() or '(empty)'}")
        return "frame " + (", ".join(parts) if parts else "(any)")


def _pdu1(pgn: int) -> int:
    return pgn & 0x3FF00 if ((pgn >> 8) & 0xFF) < 240 else pgn


Source = Union[Recorder, str, Any]


class _Borrowed:
    """The recorder to wait on: the given one, or one opened for this call."""

    def __init__(self, source: Source) -> None:
        if isinstance(source, Recorder):
            self.rec, self.own = source, False
        else:
            channel = source if isinstance(source, str) else getattr(source, "channel", None)
            if not isinstance(channel, str):
                raise TypeError(f"expected a Recorder, a channel name or a canx.CAN, not {type(source).__name__}")
            self.rec, self.own = Recorder(channel), True

    def __enter__(self) -> Recorder:
        return self.rec

    def __exit__(self, *exc: Any) -> None:
        if self.own:
            self.rec.close()


def _matcher(id: Optional[int], data: Optional[bytes], mask: Optional[int], extended: Optional[bool]) -> _Matcher:
    if mask is not None and id is None:
        raise ValueError("mask= needs id=")
    return _Matcher(id=id, data=None if data is None else bytes(data), mask=mask, extended=extended)


def expect_frame(bus: Source, *, id: Optional[int] = None, data: Optional[bytes] = None,
                 mask: Optional[int] = None, extended: Optional[bool] = None, within: float = 0.1) -> Frame:
    """Waits up to ``within`` s (scaled, see :func:`timeout_scale`) for a
    frame with ``(frame.id & mask) == (id & mask)`` (``mask`` defaults to
    every id bit), the exact ``data`` and, if given, the id format
    (``extended``); returns it. None means "any". Error frames never match.
    Raises :class:`ExpectationError` listing the frames seen in the window."""
    m = _matcher(id, data, mask, extended)
    with _Borrowed(bus) as rec:
        return rec._wait_for([m], within * timeout_scale(), str(m))[0]


def expect_no_frame(bus: Source, *, id: Optional[int] = None, data: Optional[bytes] = None,
                    mask: Optional[int] = None, extended: Optional[bool] = None, during: float = 0.2) -> None:
    """Waits ``during`` s (not scaled) and fails with :class:`ExpectationError`
    at the first frame matching (same rules as :func:`expect_frame`; no
    arguments: any frame). Unconsumed frames already recorded count too."""
    m = _matcher(id, data, mask, extended)
    with _Borrowed(bus) as rec:
        rec._none_during(m, during)


def expect_sequence(bus: Source, frames: Sequence[Mapping[str, Any]], *, within: float = 1.0) -> List[Frame]:
    """Waits up to ``within`` s (scaled) for frames matching each item of
    ``frames`` in this order (other frames may come between). Each item is
    a dict of :func:`expect_frame`'s keywords (``id``, ``data``, ``mask``,
    ``extended``). Returns the matched frames; the error names the first item
    not matched."""
    matchers = []
    for item in frames:
        unknown = set(item) - {"id", "data", "mask", "extended"}
        if unknown:
            raise TypeError(f"unknown key(s) {sorted(unknown)} in {dict(item)!r}")
        matchers.append(_matcher(item.get("id"), item.get("data"), item.get("mask"), item.get("extended")))
    if not matchers:
        raise ValueError("expect_sequence needs at least one frame")
    with _Borrowed(bus) as rec:
        return rec._wait_for(matchers, within * timeout_scale(), f"sequence of {len(matchers)} frames")


def expect_pgn(bus: Source, pgn: int, *, source: Optional[int] = None, within: float = 0.1) -> Frame:
    """Waits up to ``within`` s (scaled) for a J1939 frame of parameter group
    ``pgn`` (29-bit id decoded per J1939-21 5.2; a PDU1 PGN's destination byte
    is ignored), sent from source address ``source`` if given.
    A multi-packet message counts from its TP.CM / ETP.CM RTS or BAM
    (J1939-21 5.10.3, bytes 5..7 name the PGN): that frame is returned.
    Returns the frame; :class:`ExpectationError` otherwise."""
    m = _Matcher(pgn=pgn, source=source)
    with _Borrowed(bus) as rec:
        return rec._wait_for([m], within * timeout_scale(), str(m))[0]


def intervals(frames: Sequence[Frame]) -> List[float]:
    """Seconds between consecutive frames' timestamps (for rate checks)."""
    return [b.timestamp - a.timestamp for a, b in zip(frames, frames[1:])]


__all__.append("intervals")
