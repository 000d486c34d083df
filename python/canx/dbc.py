"""Signal decoding with a DBC file, through cantools (``pip install canx[dbc]``).

    import canx.dbc

    db = canx.dbc.load(canx.dbc.SAMPLE)                 # or your own .dbc
    d = db.decode(0x0CF00417, bytes.fromhex("F07D7D403800FF7D"), is_extended_id=True)
    print(d)        # EEC1 EngineTorqueMode=0 ... EngineSpeed=1800.0 rpm ...
    d.signals["EngineSpeed"], d.units["EngineSpeed"]    # (1800.0, 'rpm')
    db.decode_pgn(61444, payload)                       # J1939: by PGN, any length

How frames find their DBC message:

* :meth:`Database.decode` looks the identifier up exactly (11-bit and 29-bit
  ids are kept apart: ``is_extended_id`` must agree with the DBC message).
  A 29-bit id with no exact match is then matched on its PGN against the
  DBC's J1939 messages (``VFrameFormat`` = ``J1939PG``, the Vector J1939 DBC
  convention), so priority and source address do not matter.
* :meth:`Database.decode_pgn` matches on the PGN alone, against every 29-bit
  message of the DBC (J1939PG or not), for payloads that arrive without an
  identifier, e.g. reassembled by J1939 TP.

The PGN of an identifier follows J1939-21 (docs/protocols/j1939.md):
``PGN = EDP<<17 | DP<<16 | PF<<8 | (PF >= 240 ? PS : 0)``. For PDU1 messages
(PF < 240) the PS byte is the destination address (DA), not part of the PGN:
a DBC message defined with any DA matches frames to every DA, and a PGN
passed to :meth:`~Database.decode_pgn` with a nonzero low byte for PDU1 has
that byte ignored. When several DBC messages share a PGN (the same PG from
several source addresses), the first one in the file is used.

Decoding errors: a frame whose message is found but whose data is shorter
than the DBC message length raises :class:`DecodeError` (a ``ValueError``)
unless ``allow_truncated=True``, which decodes the signals that fit. Longer
data (TP payloads, padding) is accepted: signals are read from the start.
Signal values are ``float`` or ``int`` after scaling, or ``str`` for values
with a DBC value table (``VAL_``).

J1939 parameter ranges (J1939-71, docs/protocols/j1939.md): in J1939
messages (``J1939PG``), an unsigned 1-, 2- or 4-byte signal whose most
significant byte is 0xFF is "not available" and 0xFE "error"; such signals
keep cantools' scaled value in ``signals`` and are named in
``Decoded.status`` (``"n/a"`` or ``"error"``), which ``str()`` shows instead
of the value (``EngineSpeed=n/a``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple, Union

from .errors import CanxError

if TYPE_CHECKING:  # cantools is an optional dependency
    import cantools.database.can as _cdb

__all__ = [
    "SAMPLE",
    "Database",
    "Decoded",
    "DbcError",
    "DecodeError",
    "load",
    "pgn_of",
]

#: Path of the sample DBC shipped with canx (EEC1, ET1, DM1, MegaSquirt dash
#: broadcast 0x5E8..0x5EC), written by the project; sources are in its comments.
SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "canx_sample.dbc")

SignalValue = Union[float, int, str]
_NUMBERS = (int, float)

_INSTALL_HINT = "canx.dbc needs cantools: pip install canx[dbc]"


class DbcError(CanxError, ValueError):
    """A DBC file that cannot be read or parsed; the message names the file
    and what cantools reported."""


class DecodeError(CanxError, ValueError):
    """A frame matched a DBC message but its data could not be decoded (too
    short for the message, or a value cantools rejects); the message names
    the DBC message and the data length."""


def pgn_of(arbitration_id: int) -> int:
    """The PGN (0..0x3FFFF) of a 29-bit J1939 identifier (J1939-21,
    docs/protocols/j1939.md): EDP, DP, PF, and PS only for PDU2 (PF >= 240)."""
    pf = (arbitration_id >> 16) & 0xFF
    pgn = (arbitration_id >> 8) & 0x3FFFF
    return pgn if pf >= 240 else pgn & 0x3FF00


def _normalize_pgn(pgn: int) -> int:
    """A PGN with the DA byte cleared for PDU1 (PF < 240)."""
    return pgn & 0x3FF00 if ((pgn >> 8) & 0xFF) < 240 else pgn


@dataclass
class Decoded:
    """One decoded frame or payload.

    ``name``: the DBC message name; ``frame_id``: the DBC message's frame id
    (11 or 29 bits, without the extended flag; for J1939 messages the id
    written in the DBC, not the received one); ``signals``: signal name ->
    physical value (float/int, or str from a value table), in DBC order;
    ``units``: signal name -> unit ("" when the DBC gives none); ``pgn``: the
    PGN for 29-bit messages, None for 11-bit ones; ``source_address``: the SA
    of the received 29-bit id (J1939), None when unknown (decode_pgn) or 11-bit;
    ``status``: J1939 signals whose raw value is in the "not available"
    (``"n/a"``) or ``"error"`` range (see the module doc); empty otherwise.
    """

    name: str
    frame_id: int
    signals: Dict[str, SignalValue]
    units: Dict[str, str]
    pgn: Optional[int] = None
    source_address: Optional[int] = None
    is_extended_id: bool = False
    status: Dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        """``EEC1 EngineSpeed=1800.0 rpm EngineCoolantTemperature=90 degC ...``
        (``NAME=n/a`` / ``NAME=error`` for the signals in ``status``)."""
        parts = [self.name]
        for k, v in self.signals.items():
            unit = self.units.get(k, "")
            flag = self.status.get(k)
            if flag is not None:
                parts.append(f"{k}={flag}")
            else:
                parts.append(f"{k}={v} {unit}" if unit else f"{k}={v}")
        return " ".join(parts)


class Database:
    """A loaded DBC (see :func:`load`). ``cantools`` is the underlying
    ``cantools.database.can.Database`` for anything this class does not wrap."""

    def __init__(self, db: "_cdb.Database", path: str = "") -> None:
        self.cantools = db
        self.path = path
        self._by_id: Dict[Tuple[int, bool], "_cdb.Message"] = {}
        self._by_pgn: Dict[int, "_cdb.Message"] = {}
        self._j1939_by_pgn: Dict[int, "_cdb.Message"] = {}
        self._units: Dict[str, Dict[str, str]] = {}
        #: J1939 message name -> [(signal, bit length)] checked for n/a and error ranges
        self._ranges: Dict[str, List[Tuple[str, int]]] = {}
        self._conversions: Dict[str, Dict[str, Any]] = {}
        for m in db.messages:
            self._by_id.setdefault((m.frame_id, bool(m.is_extended_frame)), m)
            if m.is_extended_frame:
                pgn = pgn_of(m.frame_id)
                self._by_pgn.setdefault(pgn, m)
                if m.protocol == "j1939":
                    self._j1939_by_pgn.setdefault(pgn, m)
                    checked = [(s.name, s.length) for s in m.signals if not s.is_signed and s.length in (8, 16, 32)]
                    if checked:
                        self._ranges[m.name] = checked
                        self._conversions[m.name] = {sg.name: sg.conversion for sg in m.signals}

    def __repr__(self) -> str:
        return f"<canx.dbc.Database {self.path!r}: {len(self.cantools.messages)} messages>"

    def __iter__(self) -> Iterator[str]:
        """The message names, in file order."""
        return (m.name for m in self.cantools.messages)

    def __len__(self) -> int:
        return len(self.cantools.messages)

    @property
    def message_names(self) -> List[str]:
        return [m.name for m in self.cantools.messages]

    def signal_names(self) -> Dict[str, str]:
        """Every signal name -> the name of its message (the first message,
        when a name is used in several)."""
        out: Dict[str, str] = {}
        for m in self.cantools.messages:
            for s in m.signals:
                out.setdefault(s.name, m.name)
        return out

    def message_for(self, arbitration_id: int, is_extended_id: bool) -> "Optional[_cdb.Message]":
        """The cantools message a received id decodes as (exact id, then the
        J1939 PGN for 29-bit ids; see the module doc), or None."""
        m = self._by_id.get((arbitration_id, is_extended_id))
        if m is None and is_extended_id:
            m = self._j1939_by_pgn.get(pgn_of(arbitration_id))
        return m

    def message_for_pgn(self, pgn: int) -> "Optional[_cdb.Message]":
        """The cantools message of a PGN (any 29-bit DBC message), or None."""
        return self._by_pgn.get(_normalize_pgn(pgn))

    def decode(self, arbitration_id: int, data: bytes, is_extended_id: Optional[bool] = None, *,
               allow_truncated: bool = False, decode_choices: bool = True) -> Optional[Decoded]:
        """Decodes one frame. ``is_extended_id`` None means: 29-bit when
        ``arbitration_id`` > 0x7FF, else 11-bit (pass it whenever you know it:
        a 29-bit id may be small). Returns None when no DBC message matches;
        raises :class:`DecodeError` when one matches but ``data`` is too short
        (unless ``allow_truncated``) or otherwise undecodable.
        ``decode_choices=False`` keeps value-table signals numeric.
        ``source_address`` of the result: the id's low byte for J1939
        messages (VFrameFormat J1939PG or matched by PGN), else None."""
        ext = arbitration_id > 0x7FF if is_extended_id is None else bool(is_extended_id)
        m = self.message_for(arbitration_id, ext)
        if m is None:
            return None
        j1939 = ext and (m.protocol == "j1939" or m.frame_id != arbitration_id)
        return self._decode(m, bytes(data), allow_truncated, decode_choices,
                            source_address=(arbitration_id & 0xFF) if j1939 else None)

    def decode_pgn(self, pgn: int, data: bytes, *, allow_truncated: bool = False,
                   source_address: Optional[int] = None, decode_choices: bool = True) -> Optional[Decoded]:
        """Decodes a J1939 payload of any length (single frame or reassembled
        by TP/ETP) by its PGN (see the module doc for PDU1 and duplicate PGNs).
        ``source_address`` is only copied into the result. None when no 29-bit
        DBC message has this PGN; :class:`DecodeError` as in :meth:`decode`."""
        m = self.message_for_pgn(pgn)
        if m is None:
            return None
        return self._decode(m, bytes(data), allow_truncated, decode_choices, source_address=source_address)

    def _decode(self, m: "_cdb.Message", data: bytes, allow_truncated: bool, decode_choices: bool,
                source_address: Optional[int]) -> Decoded:
        ranges = self._ranges.get(m.name)
        try:
            if ranges:
                # J1939 message with range-checked signals: decode raw once, then scale
                # (what cantools does with scaling=True: Signal.conversion.raw_to_scaled).
                rawvalues: Any = m.decode(data, decode_choices=False, scaling=False,
                                          allow_truncated=allow_truncated, allow_excess=True)
                convs = self._conversions[m.name]
                scaled: Any = {k: convs[k].raw_to_scaled(v, decode_choices) for k, v in rawvalues.items()}
            else:
                rawvalues = None
                scaled = m.decode(data, decode_choices=decode_choices, scaling=True,
                                  allow_truncated=allow_truncated, allow_excess=True)
        except Exception as e:  # cantools raises its DecodeError, ValueError, bitstruct errors
            raise DecodeError(f"cannot decode {len(data)} bytes as {m.name} "
                              f"(DBC length {m.length} bytes): {e}") from None
        # numbers stay numbers; value-table entries (cantools' NamedSignalValue) become str
        signals: Dict[str, SignalValue] = {k: v if type(v) in _NUMBERS else str(v) for k, v in scaled.items()}
        units = self._units.get(m.name)
        if units is None:
            units = self._units[m.name] = {s.name: s.unit or "" for s in m.signals}
        status: Dict[str, str] = {}
        if ranges and rawvalues:
            for name, bits in ranges:
                r = rawvalues.get(name)
                if type(r) is int:
                    top = r >> (bits - 8)
                    if top == 0xFF:
                        status[name] = "n/a"
                    elif top == 0xFE:
                        status[name] = "error"
        sig_units = dict(units) if len(signals) == len(units) else {k: units.get(k, "") for k in signals}
        return Decoded(m.name, m.frame_id, signals, sig_units,
                       pgn=pgn_of(m.frame_id) if m.is_extended_frame else None,
                       source_address=source_address, is_extended_id=bool(m.is_extended_frame), status=status)


def load(path: Union[str, "os.PathLike[str]"], *, strict: bool = True) -> Database:
    """Loads a DBC file. Raises ImportError (naming ``pip install canx[dbc]``)
    when cantools is not installed, FileNotFoundError when the file does not
    exist, and :class:`DbcError` when cantools cannot parse it (``strict``:
    cantools' checks for overlapping signals and signals beyond the message
    length)."""
    try:
        import cantools.database
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"no such DBC file: {p!r}")
    try:
        db = cantools.database.load_file(p, database_format="dbc", strict=strict)
    except Exception as e:  # textparser.ParseError, UnicodeDecodeError, cantools errors
        raise DbcError(f"cannot load DBC file {p!r}: {type(e).__name__}: {e}") from None
    if not isinstance(db, cantools.database.can.Database):
        raise DbcError(f"{p!r} is not a CAN database")
    return Database(db, p)
