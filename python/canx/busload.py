"""Bus load from frame lengths on the wire (ISO 11898-1 frame formats).

    from canx.busload import frame_bits, frame_time, bus_load

    frame_bits(0x123, False, data=bytes(8))          # 135 bits: 47 + 64 + 24 stuff bits (worst case)
    frame_bits(0x123, False, data=bytes(8), stuffing="none")     # 111
    frame_bits(0x123, False, data=bytes(8), stuffing="exact")    # 125: the stuff bits this frame has
    frame_time(0x123, False, data=bytes(8), bitrate=500_000)     # 0.00027 s (worst case)
    bus_load(frames, bitrate=500_000, interval=0.1)  # [(t_start, percent), ...]

A classic frame (ISO 11898-1) has ``g + 8n + 13`` bits without stuffing:
``g`` = 34 bits of SOF, identifier, control and CRC for an 11-bit id (54 for
29-bit), ``8n`` data bits (none for a remote frame), and 13 fixed-form bits
(CRC delimiter 1, ACK slot and delimiter 2, EOF 7, intermission 3), as in
Linux ``include/linux/can/length.h`` (47 and 67 bits of overhead). Bit
stuffing adds one bit after each 5 equal bits from SOF to the end of the CRC:

* ``stuffing="worst"`` (the default): the most stuff bits that can occur,
  ``floor((g + 8n - 1) / 4)`` (Davis, Burns, Bril, Lukkien, "Controller
  Area Network (CAN) schedulability analysis: refuted, revisited and
  revised", Real-Time Systems 35, 2007, eq. 1). Standard 8-byte frame: 135
  bits; extended 8-byte frame: 160 bits. (can-utils' canbusload calls
  ``(g + 8n) / 5`` stuff bits its worst case, which is lower: 130 and 150.)
* ``stuffing="exact"``: the stuff bits the frame really has, counted on its
  bit stream with the CRC-15 computed (classic frames; the same count as
  ``canbusload -e``, checked against it in tests/test_busload.py; remote
  frames here have no data field, canbusload counts DLC data bytes for
  them). For CAN FD frames it falls back to "worst".
* ``stuffing="none"``: no stuff bits (the lower bound).

CAN FD frames (ISO 11898-1:2015): arbitration fields at ``bitrate``, and,
when ``bitrate_switch`` is set, ESI, DLC, data, stuff count and CRC at
``data_bitrate``. Fields: SOF 1, identifier 11 (29-bit: 11 + SRR 1 + IDE 1 +
18), RRS 1, IDE 1 (11-bit only), FDF 1, res 1, BRS 1, ESI 1, DLC 4, data 8n,
stuff count 4, CRC 17 (n <= 16) or 21, fixed stuff bits 6 or 7 (one per 4
bits of stuff count + CRC, plus one before), then CRC delimiter, ACK, EOF,
intermission (13) at the nominal rate. Dynamic stuff bits (SOF to the end
of the data) count as in the worst case above, or none.

The load of an interval is the wire time of the frames whose timestamps
fall into it, divided by its length, in percent; it can exceed 100 % when
timestamps are bunched (USB adapters deliver frames in batches).
"""

from __future__ import annotations

from typing import Iterable, List, Literal, Optional, Sequence, Tuple

__all__ = ["frame_bits", "frame_time", "bus_load", "LoadBins", "Stuffing"]

Stuffing = Literal["worst", "exact", "none"]

#: Fixed-form bits after the CRC: delimiter 1, ACK 2, EOF 7, intermission 3.
_TAIL = 13


def _crc15(bits: Sequence[int]) -> int:
    """CRC-15/CAN (polynomial 0x4599, ISO 11898-1 10.4.2.6) of a bit sequence."""
    crc = 0
    for b in bits:
        nxt = b ^ ((crc >> 14) & 1)
        crc = (crc << 1) & 0x7FFF
        if nxt:
            crc ^= 0x4599
    return crc


def _bits(value: int, n: int) -> List[int]:
    return [(value >> i) & 1 for i in range(n - 1, -1, -1)]


def _stuff_count(bits: Sequence[int]) -> int:
    """Stuff bits the transmitter inserts into ``bits``: one after every 5
    equal bits; the stuff bit starts the next run."""
    count = 0
    run = 0
    last = -1
    for b in bits:
        if b == last:
            run += 1
        else:
            last, run = b, 1
        if run == 5:
            count += 1
            last, run = 1 - b, 1
    return count


def _classic_stream(arbitration_id: int, is_extended_id: bool, is_remote_frame: bool, dlc: int,
                    data: bytes) -> List[int]:
    """The bits of a classic frame from SOF to the end of the CRC (unstuffed)."""
    if is_extended_id:
        head = ([0] + _bits(arbitration_id >> 18, 11) + [1, 1] + _bits(arbitration_id & 0x3FFFF, 18)
                + [int(is_remote_frame), 0, 0])
    else:
        head = [0] + _bits(arbitration_id, 11) + [int(is_remote_frame), 0, 0]
    body = head + _bits(dlc, 4)
    if not is_remote_frame:
        for byte in data:
            body += _bits(byte, 8)
    return body + _bits(_crc15(body), 15)


def _fd_split(is_extended_id: bool, n: int, stuffing: Stuffing) -> Tuple[int, int]:
    """(bits at the nominal rate, bits in the data phase) of an FD frame."""
    arb = 1 + (31 if is_extended_id else 12) + (0 if is_extended_id else 1) + 3   # ...RRS, IDE, FDF, res, BRS
    data = 1 + 4 + 8 * n                                                          # ESI, DLC, data
    dynamic = 0 if stuffing == "none" else (arb + data - 1) // 4
    crc = 17 if n <= 16 else 21
    fixed = 6 if n <= 16 else 7
    # Dynamic stuff bits: counted in the data phase (where most of them are).
    return arb + _TAIL, data + dynamic + 4 + crc + fixed


def frame_bits(arbitration_id: int, is_extended_id: bool, *, data: bytes = b"", is_remote_frame: bool = False,
               dlc: Optional[int] = None, is_fd: bool = False, stuffing: Stuffing = "worst") -> int:
    """Bits one frame takes on the wire, intermission included (see the
    module doc for the formula). ``dlc``: the DLC of a remote frame (default
    ``len(data)``). For CAN FD frames the sum of both phases' bits. Raises
    ValueError for an unknown ``stuffing``."""
    if stuffing not in ("worst", "exact", "none"):
        raise ValueError(f"stuffing must be 'worst', 'exact' or 'none', not {stuffing!r}")
    n = len(data)
    if is_fd:
        a, d = _fd_split(is_extended_id, n, stuffing)
        return a + d
    n = 0 if is_remote_frame else min(n, 8)
    g = 54 if is_extended_id else 34
    if stuffing == "none":
        return g + 8 * n + _TAIL
    if stuffing == "worst":
        return g + 8 * n + _TAIL + (g + 8 * n - 1) // 4
    stream = _classic_stream(arbitration_id, is_extended_id, is_remote_frame,
                             (len(data) if dlc is None else dlc) & 0xF, bytes(data[:8]))
    return len(stream) + _stuff_count(stream) + _TAIL


def frame_time(arbitration_id: int, is_extended_id: bool, *, data: bytes = b"", is_remote_frame: bool = False,
               dlc: Optional[int] = None, is_fd: bool = False, bitrate_switch: bool = False,
               bitrate: int = 500_000, data_bitrate: Optional[int] = None, stuffing: Stuffing = "worst") -> float:
    """Seconds one frame occupies the bus at ``bitrate`` bit/s (CAN FD with
    ``bitrate_switch``: the data phase at ``data_bitrate``, default
    ``bitrate``). ValueError for a bitrate <= 0."""
    if bitrate <= 0 or (data_bitrate is not None and data_bitrate <= 0):
        raise ValueError("bitrates must be positive")
    if is_fd:
        a, d = _fd_split(is_extended_id, len(data), stuffing)
        fast = (data_bitrate or bitrate) if bitrate_switch else bitrate
        return a / bitrate + d / fast
    return frame_bits(arbitration_id, is_extended_id, data=data, is_remote_frame=is_remote_frame, dlc=dlc,
                      stuffing=stuffing) / bitrate


#: What :func:`bus_load` takes per frame: (timestamp s, arbitration_id,
#: is_extended_id, is_remote_frame, is_fd, bitrate_switch, dlc, data).
LoadFrame = Tuple[float, int, bool, bool, bool, bool, int, bytes]


class LoadBins:
    """Bus load per interval, fed one frame at a time (constant memory per
    frame; one float per interval). ``add(ts, ...)`` takes frames in time
    order (an earlier timestamp counts in the current interval);
    ``result()`` gives ``[(interval start s, load %), ...]``. ``start``: the
    time of the first interval (default: the first frame's timestamp).
    ValueError for interval <= 0 or a bitrate <= 0."""

    def __init__(self, *, bitrate: int = 500_000, data_bitrate: Optional[int] = None, interval: float = 0.1,
                 stuffing: Stuffing = "worst", start: Optional[float] = None) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive, not {interval}")
        if bitrate <= 0 or (data_bitrate is not None and data_bitrate <= 0):
            raise ValueError("bitrates must be positive")
        self.bitrate = bitrate
        self.data_bitrate = data_bitrate
        self.interval = interval
        self.stuffing: Stuffing = stuffing
        self.start = start
        self.frames = 0
        self._busy: List[float] = []

    def add(self, ts: float, arbitration_id: int, is_extended_id: bool, is_remote_frame: bool, is_fd: bool,
            bitrate_switch: bool, dlc: int, data: bytes) -> None:
        if self.start is None:
            self.start = ts
        i = max(int((ts - self.start) // self.interval), len(self._busy) - 1, 0)
        while len(self._busy) <= i:
            self._busy.append(0.0)
        self._busy[i] += frame_time(arbitration_id, is_extended_id, data=data, is_remote_frame=is_remote_frame,
                                    dlc=dlc, is_fd=is_fd, bitrate_switch=bitrate_switch, bitrate=self.bitrate,
                                    data_bitrate=self.data_bitrate, stuffing=self.stuffing)
        self.frames += 1

    def result(self) -> List[Tuple[float, float]]:
        t0 = self.start if self.start is not None else 0.0
        return [(t0 + i * self.interval, 100.0 * busy / self.interval) for i, busy in enumerate(self._busy)]


def bus_load(frames: Iterable[LoadFrame], *, bitrate: int = 500_000, data_bitrate: Optional[int] = None,
             interval: float = 0.1, stuffing: Stuffing = "worst",
             start: Optional[float] = None) -> List[Tuple[float, float]]:
    """Bus load per ``interval`` s: ``[(interval start s, load %), ...]``
    from the first frame's timestamp (or ``start``) to the last, empty
    intervals included (see :class:`LoadBins`). ValueError for interval <= 0."""
    bins = LoadBins(bitrate=bitrate, data_bitrate=data_bitrate, interval=interval, stuffing=stuffing, start=start)
    for f in frames:
        bins.add(*f)
    return bins.result()
