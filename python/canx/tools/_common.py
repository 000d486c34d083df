"""Shared pieces of the tools: opening channels with candump filters, frame
text, field tuples (see ``canx._canx.RawBus``)."""

from __future__ import annotations

import select
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Sequence, TextIO, Tuple, Union

from .. import errors
from .._canx import RawBus, format_frame_text, parse_candump_filter, parse_frame_text

if TYPE_CHECKING:
    from ..dbc import Database

#: RawBus field tuple: (arbitration_id, is_extended_id, is_remote_frame, is_error_frame,
#: is_fd, bitrate_switch, error_state_indicator, dlc, data, timestamp, own)
Fields = Tuple[int, bool, bool, bool, bool, bool, bool, int, bytes, float, bool]
#: The first nine of :data:`Fields` (a frame without timestamp and direction).
FrameFields = Tuple[int, bool, bool, bool, bool, bool, bool, int, bytes]

EFF_FLAG = 0x80000000
RTR_FLAG = 0x40000000


class ToolError(Exception):
    """Bad input or an unusable channel: the message is one line naming the
    problem and the input. The CLI prints it and exits with status 2."""


@dataclass
class ChannelSpec:
    """``CHANNEL[,FILTER,...]`` in candump syntax."""

    channel: str
    filters: List[Tuple[int, int, bool]] = field(default_factory=list)
    error_mask: int = 0
    join: bool = False

    def kernel_filters(self) -> Optional[List[Tuple[int, int, bool]]]:
        """What the bus can filter (None: everything). With ``j`` every
        filter must match: that is checked in Python (``accepts``)."""
        if self.join or not self.filters:
            return None
        return self.filters

    def accepts(self, f: Fields) -> bool:
        """The filters on a received frame (error frames: the error mask)."""
        if f[3]:
            return bool(f[0] & self.error_mask)
        if not self.join or not self.filters:
            return True
        key = f[0] | (EFF_FLAG if f[1] else 0) | (RTR_FLAG if f[2] else 0)
        return all((((key ^ fid) & mask) == 0) != inv for fid, mask, inv in self.filters)


def receive_batches(buses: Sequence[RawBus], specs: Sequence["ChannelSpec"], idle: Optional[float],
                    batch: int) -> Iterator[Tuple["ChannelSpec", List[Fields]]]:
    """What the buses receive, as (spec, accepted frames) per read of up to
    `batch` frames from a ready bus; ends after `idle` s without any bus
    becoming readable (None: never)."""
    fds = {b.fileno(): (b, s) for b, s in zip(buses, specs)}
    while True:
        ready, _, _ = select.select(list(fds), [], [], idle)
        if not ready:
            return
        for fd in ready:
            bus, spec = fds[fd]
            yield spec, [f for f in bus.recv_many(batch, 0) if spec.accepts(f)]


def parse_channel_spec(text: str) -> ChannelSpec:
    """``vcan0``, ``vcan0,123:7FF,#FFFFFFFF``, ``virtual:x,12345678~1FFFFFFF,j``,
    ``slcan:/dev/ttyACM0,dialect=lawicel,123:7FF`` (``KEY=VALUE`` items stay
    with the channel). Raises ToolError naming the bad item."""
    channel, _, rest = text.partition(",")
    if not channel:
        raise ToolError(f"missing channel name in {text!r}")
    items = [i for i in rest.split(",") if i]
    # KEY=VALUE items are options of the channel (slcan:/dev/ttyACM0,dialect=lawicel);
    # candump filters never contain "=".
    options = [i for i in items if "=" in i]
    spec = ChannelSpec(",".join([channel, *options]))
    for item in (i for i in items if "=" not in i):
        try:
            parsed = parse_candump_filter(item)
        except ValueError as e:
            raise ToolError(f"bad filter {item!r} in {text!r}: {e}") from None
        if parsed[0] == "filter" and len(parsed) == 4:
            spec.filters.append((parsed[1], parsed[2], parsed[3]))
        elif parsed[0] == "error_mask" and len(parsed) == 2:
            spec.error_mask |= parsed[1]
        else:
            spec.join = True
    return spec


def open_bus(channel: str, *, fd: bool = True, receive_own: bool = False,
             filters: Optional[List[Tuple[int, int, bool]]] = None, error_frames: bool = False) -> RawBus:
    """A RawBus on ``channel``; ToolError (naming the channel) if it cannot be opened.
    ``fd=True`` falls back to a classic bus where the interface has no FD."""
    try:
        try:
            return RawBus(channel, fd=fd, receive_own=receive_own, filters=filters, error_frames=error_frames)
        except (errors.InterfaceError, errors.UnsupportedError):
            # No FD on this interface (SocketCAN MTU 16, an slcan dialect without FD).
            if not fd:
                raise
            return RawBus(channel, fd=False, receive_own=receive_own, filters=filters, error_frames=error_frames)
    except errors.CanxError as e:
        raise ToolError(f"cannot open channel {channel!r}: {e}") from None


def parse_frame(text: str) -> Fields:
    """cansend frame text -> field tuple. ToolError names the text."""
    try:
        return parse_frame_text(text)
    except ValueError as e:
        raise ToolError(f"bad frame {text!r}: {e}") from None


def frame_text(f: Union[Fields, FrameFields]) -> str:
    return format_frame_text(*f[:9])


def send_fields(bus: RawBus, f: Fields, timeout: Optional[float] = 1.0) -> None:
    if f[3]:
        raise ToolError("error frames cannot be sent")
    bus.send(f[0], f[1], f[2], f[4], f[5], f[6], f[7], f[8], timeout)


def parse_hex(text: str, what: str, limit: int) -> int:
    try:
        v = int(text, 16)
    except ValueError:
        raise ToolError(f"bad {what} {text!r}: expected a hexadecimal number") from None
    if not 0 <= v <= limit:
        raise ToolError(f"bad {what} {text!r}: must be at most {limit:X}")
    return v


def stopping(count: Optional[int]) -> Callable[[int], bool]:
    return (lambda n: False) if not count else (lambda n: n >= count)


class Progress:
    """Progress of a long run on stderr: frames, rate (frames/s) and drops,
    rewritten in place about once a second, only when stderr is a terminal
    (so pipes and log files stay clean). ``drops()`` returns the frames lost
    so far (kernel and queue overflows)."""

    def __init__(self, what: str, drops: Optional[Callable[[], int]] = None,
                 stream: Optional[TextIO] = None, enabled: Optional[bool] = None,
                 interval: float = 1.0) -> None:
        self.what = what
        self.count = 0
        self._drops = drops
        self._stream = stream if stream is not None else sys.stderr
        isatty = getattr(self._stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self._interval = interval
        self._t0 = time.monotonic()
        self._next = self._t0 + interval
        self._shown = False

    def add(self, n: int = 1) -> None:
        self.count += n
        if self.enabled:
            now = time.monotonic()
            if now >= self._next:
                self._next = now + self._interval
                self._show(now)

    def _show(self, now: float) -> None:
        rate = self.count / max(now - self._t0, 1e-9)
        dropped = self._drops() if self._drops else 0
        self._stream.write(f"\r{self.what}: {self.count} frames, {rate:.0f}/s, {dropped} dropped ")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        """Writes the final line (when enabled)."""
        if self.enabled:
            self._show(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()


def bus_drops(buses: List[RawBus]) -> Callable[[], int]:
    """Frames lost so far on these buses (kernel overflow + queue overflow)."""
    def drops() -> int:
        total = 0
        for b in buses:
            s = b.stats()
            total += s[2] + s[3]
        return total
    return drops


def load_dbc(path: str) -> "Database":
    """``canx.dbc.load`` for the tools: a missing file, cantools not installed
    or a file cantools cannot parse become a ToolError naming the file."""
    from .. import dbc

    try:
        return dbc.load(path)
    except (ImportError, OSError, dbc.DbcError) as e:
        raise ToolError(f"--dbc {path}: {e}") from None
