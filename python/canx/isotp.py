"""ISO-TP (ISO 15765-2:2016) over any canx bus, with python-can-isotp's names.

Porting from python-can-isotp is a change of import::

    import canx.isotp as isotp

    addr = isotp.Address(isotp.AddressingMode.Normal_11bits, txid=0x7E0, rxid=0x7E8)
    with isotp.CanStack("virtual:demo", address=addr, params={"stmin": 0, "blocksize": 8}) as stack:
        stack.send(b"\\x22\\xF1\\x90")
        reply = stack.recv(block=True, timeout=1.0)   # bytearray, or None after 1 s

The protocol runs natively: the engine (``canx_core::isotp::Channel``) is
driven by the bus's receive thread (``runtime::drivers::isotp``), which
answers flow control, paces consecutive frames at STmin and copies each
complete message into a bounded queue. Python runs once per message
(``recv``), never per frame. Errors travel as reports carrying the
standard's N_Result (§8.3.7, Table 23 for unexpected N_PDUs); they are
passed to ``error_handler`` (or logged) by one thread started with
:meth:`CanStack.start`, and raised by a blocking send.

Sources: ISO 15765-2:2016 through the facts page ``docs/protocols/isotp.md``;
python-can-isotp 2.0.7 (``isotp/address.py``, ``isotp/protocol.py``,
``isotp/errors.py``) for the names, parameter keys, units and defaults.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple, Union

from . import _aio
from ._canx import CAN, IsotpErrorEvent, NativeIsoTp
from ._dispatch import CallbackPump
from .errors import CanxError

__all__ = [
    "AddressingMode",
    "TargetAddressType",
    "Address",
    "CanStack",
    "TransportLayer",
    "socket",
    "DEFAULT_PARAMS",
    "IsoTpError",
    "BlockingSendFailure",
    "BlockingSendTimeout",
    "FlowControlTimeoutError",
    "ConsecutiveFrameTimeoutError",
    "TransmitTimeoutError",
    "WrongSequenceNumberError",
    "InvalidCanDataError",
    "InvalidFlowStatusError",
    "UnexpectedPduError",
    "UnexpectedFlowControlError",
    "UnexpectedConsecutiveFrameError",
    "ReceptionInterruptedWithSingleFrameError",
    "ReceptionInterruptedWithFirstFrameError",
    "MaximumWaitFrameReachedError",
    "UnsupportedWaitFrameError",
    "FrameTooLongError",
    "OverflowError",
    "ChangingInvalidRXDLError",
    "MissingEscapeSequenceError",
    "InvalidCanFdFirstFrameRXDL",
    "BadGeneratorError",
]

_log = logging.getLogger("isotp")


class AddressingMode(enum.Enum):
    """The addressing formats (ISO 15765-2:2016 §10.3; python-can-isotp's values)."""

    Normal_11bits = 0
    Normal_29bits = 1
    NormalFixed_29bits = 2
    Extended_11bits = 3
    Extended_29bits = 4
    Mixed_11bits = 5
    Mixed_29bits = 6

    @classmethod
    def get_name(cls, num: Union[int, "AddressingMode"]) -> str:
        return cls(num).name


class TargetAddressType(enum.Enum):
    """N_TAtype (§8.3.2): Physical (1 to 1) or Functional (1 to n, single frames only)."""

    Physical = 0
    Functional = 1


_29BIT = {
    AddressingMode.Normal_29bits,
    AddressingMode.NormalFixed_29bits,
    AddressingMode.Extended_29bits,
    AddressingMode.Mixed_29bits,
}
#: PF of the fixed formats: normal fixed 0xDA/0xDB, mixed 29-bit 0xCE/0xCD (§10.3.3, §10.3.5).
_FIXED_PF = {
    AddressingMode.NormalFixed_29bits: (0xDA, 0xDB),
    AddressingMode.Mixed_29bits: (0xCE, 0xCD),
}


class Address:
    """The N_AI of a channel (ISO 15765-2:2016 §10.3), as python-can-isotp's
    ``isotp.Address``:

    - ``Normal_11bits`` / ``Normal_29bits``: ``txid``, ``rxid``.
    - ``NormalFixed_29bits``: ``target_address``, ``source_address``; sends
      on ``0x18DA<TA><SA>`` (functional ``0x18DB<TA><SA>``), receives
      ``0x18DA<SA><TA>`` at any priority.
    - ``Extended_11bits`` / ``Extended_29bits``: ``txid``, ``rxid``,
      ``target_address`` (data byte 0 sent), ``source_address`` (data byte 0
      a received frame must carry).
    - ``Mixed_11bits``: ``txid``, ``rxid``, ``address_extension`` (N_AE,
      data byte 0 both ways).
    - ``Mixed_29bits``: ``target_address``, ``source_address``,
      ``address_extension``; ``0x18CE<TA><SA>`` / ``0x18CD<TA><SA>``.

    ``physical_id`` / ``functional_id`` (fixed formats, bits 28-16 used):
    the priority (bits 28-26) of the frames sent; the PF of ``physical_id``
    must be the standard one (0xDA, 0xCE), ``functional_id`` may carry any
    PF. canx additions: ``functional_txid`` (e.g. OBD's 0x7DF) and
    ``functional_rxid`` (an ECU answering functional requests).
    ValueError for a missing or out-of-range field, or txid == rxid."""

    def __init__(
        self,
        addressing_mode: AddressingMode = AddressingMode.Normal_11bits,
        txid: Optional[int] = None,
        rxid: Optional[int] = None,
        target_address: Optional[int] = None,
        source_address: Optional[int] = None,
        physical_id: Optional[int] = None,
        functional_id: Optional[int] = None,
        address_extension: Optional[int] = None,
        *,
        functional_txid: Optional[int] = None,
        functional_rxid: Optional[int] = None,
    ) -> None:
        mode = AddressingMode(addressing_mode)
        self._mode = mode
        self._txid = txid
        self._rxid = rxid
        self._target_address = target_address
        self._source_address = source_address
        self._address_extension = address_extension
        self._priority: Optional[int] = None
        self._functional_txid = functional_txid
        self._functional_rxid = functional_rxid
        for name, v, top in (
            ("target_address", target_address, 0xFF),
            ("source_address", source_address, 0xFF),
            ("address_extension", address_extension, 0xFF),
        ):
            if v is not None and not 0 <= v <= top:
                raise ValueError(f"{name} must be 0..0xFF")
        width = 0x1FFFFFFF if mode in _29BIT else 0x7FF
        for name, v in (("txid", txid), ("rxid", rxid)):
            if v is not None and not 0 <= v <= width:
                raise ValueError(f"{name} 0x{v:X} does not fit {'29' if mode in _29BIT else '11'} bits")
        needs: Dict[AddressingMode, Tuple[str, ...]] = {
            AddressingMode.Normal_11bits: ("txid", "rxid"),
            AddressingMode.Normal_29bits: ("txid", "rxid"),
            AddressingMode.NormalFixed_29bits: ("target_address", "source_address"),
            AddressingMode.Extended_11bits: ("txid", "rxid", "target_address", "source_address"),
            AddressingMode.Extended_29bits: ("txid", "rxid", "target_address", "source_address"),
            AddressingMode.Mixed_11bits: ("txid", "rxid", "address_extension"),
            AddressingMode.Mixed_29bits: ("target_address", "source_address", "address_extension"),
        }
        for name in needs[mode]:
            if getattr(self, "_" + name) is None:
                raise ValueError(f"{name} must be specified for {mode.name} addressing")
        if "txid" in needs[mode] and txid == rxid and mode not in (
            AddressingMode.Extended_11bits,
            AddressingMode.Extended_29bits,
        ):
            raise ValueError("txid and rxid must be different")
        if mode in _FIXED_PF:
            pf_phys, _ = _FIXED_PF[mode]
            ta, sa = int(target_address or 0), int(source_address or 0)
            if physical_id is not None:
                if (physical_id >> 16) & 0x3FF != pf_phys:
                    raise ValueError(f"physical_id must carry PF 0x{pf_phys:02X} (data page 0) in {mode.name}")
                self._priority = (physical_id >> 26) & 7
                if functional_id is None:  # the priority applies to physical frames only
                    functional_id = (6 << 26) | (_FIXED_PF[mode][1] << 16)
            if functional_id is not None:
                base = functional_id & 0x1FFF0000
                self._functional_txid = base | (ta << 8) | sa
                self._functional_rxid = base | (sa << 8) | ta
        elif physical_id is not None or functional_id is not None:
            raise ValueError("physical_id and functional_id apply to NormalFixed_29bits and Mixed_29bits only")

    @property
    def addressing_mode(self) -> AddressingMode:
        return self._mode

    def is_29bits(self) -> bool:
        return self._mode in _29BIT

    def _native_kwargs(self) -> Dict[str, Any]:
        return {
            "txid": self._txid,
            "rxid": self._rxid,
            "target_address": self._target_address,
            "source_address": self._source_address,
            "address_extension": self._address_extension,
            "priority": self._priority,
            "functional_txid": self._functional_txid,
            "functional_rxid": self._functional_rxid,
        }

    def get_tx_arbitration_id(self, address_type: TargetAddressType = TargetAddressType.Physical) -> int:
        """The identifier frames of ``address_type`` are sent on."""
        functional = TargetAddressType(address_type) == TargetAddressType.Functional
        if self._mode in _FIXED_PF:
            if functional and self._functional_txid is not None:
                return self._functional_txid
            prio = 6 if self._priority is None else self._priority
            pf = _FIXED_PF[self._mode][1 if functional else 0]
            return (prio << 26) | (pf << 16) | (int(self._target_address or 0) << 8) | int(self._source_address or 0)
        if functional and self._functional_txid is not None:
            return self._functional_txid
        return int(self._txid or 0)

    def get_rx_arbitration_id(self, address_type: TargetAddressType = TargetAddressType.Physical) -> int:
        """The identifier frames of ``address_type`` are received on (fixed
        formats: at priority 6; any priority is accepted)."""
        functional = TargetAddressType(address_type) == TargetAddressType.Functional
        if self._mode in _FIXED_PF:
            if functional and self._functional_rxid is not None:
                return self._functional_rxid
            pf = _FIXED_PF[self._mode][1 if functional else 0]
            return (6 << 26) | (pf << 16) | (int(self._source_address or 0) << 8) | int(self._target_address or 0)
        if functional and self._functional_rxid is not None:
            return self._functional_rxid
        return int(self._rxid or 0)

    def get_tx_extension_byte(self) -> Optional[int]:
        """Data byte 0 of every frame sent (extended: N_TA; mixed: N_AE)."""
        if self._mode in (AddressingMode.Extended_11bits, AddressingMode.Extended_29bits):
            return self._target_address
        if self._mode in (AddressingMode.Mixed_11bits, AddressingMode.Mixed_29bits):
            return self._address_extension
        return None

    def get_rx_extension_byte(self) -> Optional[int]:
        """Data byte 0 a received frame must carry."""
        if self._mode in (AddressingMode.Extended_11bits, AddressingMode.Extended_29bits):
            return self._source_address
        return self.get_tx_extension_byte()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._native_kwargs().items() if v is not None)
        return f"<isotp.Address {self._mode.name}: {fields}>"


# --------------------------------------------------------------------------- errors


class IsoTpError(CanxError):
    """Base class of the ISO-TP errors. ``n_result`` is the standard's
    N_Result name (ISO 15765-2:2016 §8.3.7: ``"N_TIMEOUT_Bs"``, ...) or None
    for an N_PDU that Table 23 says to ignore (the standard reports nothing
    then; canx tells)."""

    n_result: Optional[str] = None

    def __init__(self, *args: Any, n_result: Optional[str] = None) -> None:
        super().__init__(*args)
        if n_result is not None:
            self.n_result = n_result


class BlockingSendFailure(IsoTpError):
    """A blocking send (``blocking_send``) failed; ``n_result`` says how, and
    ``__cause__`` is the specific error."""


class BlockingSendTimeout(BlockingSendFailure, TimeoutError):
    """A blocking send did not end within ``send_timeout``; the message stays queued."""


class FlowControlTimeoutError(IsoTpError, TimeoutError):
    """N_TIMEOUT_Bs: no flow control within ``rx_flowcontrol_timeout`` ms
    (N_Bs, §9.7 Table 16) after an FF, a block or an FC.WAIT."""

    n_result = "N_TIMEOUT_Bs"


class ConsecutiveFrameTimeoutError(IsoTpError, TimeoutError):
    """N_TIMEOUT_Cr: no consecutive frame within ``rx_consecutive_frame_timeout`` ms (N_Cr)."""

    n_result = "N_TIMEOUT_Cr"


class TransmitTimeoutError(IsoTpError, TimeoutError):
    """N_TIMEOUT_A: a frame was not handed to the bus within N_As (sender)
    or N_Ar (receiver's FC); canx only (python-can-isotp has no N_As/N_Ar)."""

    n_result = "N_TIMEOUT_A"


class WrongSequenceNumberError(IsoTpError):
    """N_WRONG_SN: a CF with an unexpected sequence number (§9.6.4.3)."""

    n_result = "N_WRONG_SN"


class InvalidCanDataError(IsoTpError):
    """N_ERROR: a frame that breaks a rule the channel checks (the padding
    checks ``rx_check_padding_len`` / ``rx_padding_byte``, §10.4.2)."""

    n_result = "N_ERROR"


class InvalidFlowStatusError(InvalidCanDataError):
    """N_INVALID_FS: an FC with a reserved FlowStatus, or OVFLW after the first FC (§9.6.5.2)."""

    n_result = "N_INVALID_FS"


class UnexpectedPduError(IsoTpError):
    """An N_PDU that Table 23 (§9.8.3) says to ignore (a functional FF, an
    SF/FF during a half-duplex send); ``pdu`` names it (``"SF"``, ``"FF"``,
    ``"CF"``, ``"FC"``)."""

    pdu: Optional[str] = None


class UnexpectedFlowControlError(UnexpectedPduError):
    """An FC nobody waits for (Table 23: ignored)."""


class UnexpectedConsecutiveFrameError(UnexpectedPduError):
    """A CF nobody waits for (Table 23: ignored)."""


class ReceptionInterruptedWithSingleFrameError(IsoTpError):
    """N_UNEXP_PDU: an SF ended a segmented reception (Table 23); the SF is received."""

    n_result = "N_UNEXP_PDU"


class ReceptionInterruptedWithFirstFrameError(IsoTpError):
    """N_UNEXP_PDU: an FF ended a segmented reception and starts a new one (Table 23)."""

    n_result = "N_UNEXP_PDU"


class MaximumWaitFrameReachedError(IsoTpError):
    """N_WFT_OVRN: more FC.WAIT in a row than ``wftmax`` (N_WFTmax, §9.6.5.2)."""

    n_result = "N_WFT_OVRN"


class UnsupportedWaitFrameError(MaximumWaitFrameReachedError):
    """N_WFT_OVRN with ``wftmax`` 0: an FC.WAIT where none is allowed."""


class FrameTooLongError(IsoTpError):
    """N_BUFFER_OVFLW (receiver): an FF announced more than ``max_frame_size``
    bytes; it was answered with FC.OVFLW (§9.6.5.2)."""

    n_result = "N_BUFFER_OVFLW"


class OverflowError(IsoTpError):  # noqa: A001 (python-can-isotp's name)
    """N_BUFFER_OVFLW (sender): the receiver answered the FF with FC.OVFLW."""

    n_result = "N_BUFFER_OVFLW"


class ChangingInvalidRXDLError(InvalidCanDataError):
    """python-can-isotp's name for a CF whose length breaks RX_DL (§9.6.4.2).
    canx never raises it: such frames are dropped and counted
    (``stats()["malformed"]``)."""


class MissingEscapeSequenceError(InvalidCanDataError):
    """python-can-isotp's name; canx never raises it (malformed frames are counted)."""


class InvalidCanFdFirstFrameRXDL(InvalidCanDataError):
    """python-can-isotp's name; canx never raises it (malformed frames are counted)."""


class BadGeneratorError(IsoTpError, ValueError):
    """A ``(generator, size)`` send whose generator did not give ``size`` bytes."""


_TX_ERRORS: Dict[str, type] = {
    "N_TIMEOUT_A": TransmitTimeoutError,
    "N_TIMEOUT_Bs": FlowControlTimeoutError,
    "N_INVALID_FS": InvalidFlowStatusError,
    "N_WFT_OVRN": MaximumWaitFrameReachedError,
    "N_BUFFER_OVFLW": OverflowError,
    "N_ERROR": InvalidCanDataError,
}
_RX_ERRORS: Dict[str, type] = {
    "N_TIMEOUT_A": TransmitTimeoutError,
    "N_TIMEOUT_Cr": ConsecutiveFrameTimeoutError,
    "N_WRONG_SN": WrongSequenceNumberError,
    "N_WFT_OVRN": MaximumWaitFrameReachedError,
    "N_BUFFER_OVFLW": FrameTooLongError,
    "N_ERROR": InvalidCanDataError,
}


def _tx_error(n_result: str, wftmax: int) -> IsoTpError:
    if n_result == "N_WFT_OVRN" and wftmax == 0:
        return UnsupportedWaitFrameError("received an FC.WAIT but wftmax is 0", n_result=n_result)
    cls = _TX_ERRORS.get(n_result, IsoTpError)
    return cls(f"send failed: {n_result}", n_result=n_result)  # type: ignore[no-any-return]


def _report_error(ev: IsotpErrorEvent, wftmax: int) -> IsoTpError:
    """The exception for one native error report."""
    if ev.n_result is None:
        cls: type = {"FC": UnexpectedFlowControlError, "CF": UnexpectedConsecutiveFrameError}.get(
            ev.pdu or "", UnexpectedPduError
        )
        what = "functional " if ev.functional else ""
        e = cls(f"ignored an unexpected {what}{ev.pdu} (ISO 15765-2:2016 Table 23)")
        e.pdu = ev.pdu
        return e  # type: ignore[no-any-return]
    if ev.direction == "tx":
        return _tx_error(ev.n_result, wftmax)
    if ev.n_result == "N_UNEXP_PDU":
        if ev.pdu == "FF":
            return ReceptionInterruptedWithFirstFrameError("reception interrupted by a first frame")
        return ReceptionInterruptedWithSingleFrameError("reception interrupted by a single frame")
    cls = _RX_ERRORS.get(ev.n_result, IsoTpError)
    return cls(f"reception failed: {ev.n_result}", n_result=ev.n_result)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- parameters

#: python-can-isotp 2.0.7's parameters and defaults (``TransportLayerLogic.Params``),
#: plus canx's own (after ``wait_func``).
DEFAULT_PARAMS: Dict[str, Any] = {
    "stmin": 0,  # raw STmin byte this receiver puts in its FCs (Table 20: 0x00-0x7F ms, 0xF1-0xF9 100-900 us)
    "blocksize": 8,  # BS of this receiver's FCs (0: no further FC)
    "override_receiver_stmin": None,  # s: sender gap instead of the receiver's STmin
    "rx_flowcontrol_timeout": 1000,  # ms, N_Bs
    "rx_consecutive_frame_timeout": 1000,  # ms, N_Cr
    "tx_padding": None,  # padding byte of SF, FC and last CF (None: frames <= 8 bytes keep their length)
    "wftmax": 0,  # FC.WAIT accepted in a row by the sender (0: none)
    "tx_data_length": 8,  # TX_DL, bytes per frame: 8, 12, 16, 20, 24, 32, 48, 64
    "tx_data_min_length": None,  # None, or 8: every classic frame padded to 8 bytes
    "max_frame_size": 4095,  # bytes: the receive buffer; a longer FF gets FC.OVFLW
    "can_fd": False,
    "bitrate_switch": False,
    "default_target_address_type": TargetAddressType.Physical,
    "rate_limit_max_bitrate": 100000000,
    "rate_limit_window_size": 0.2,
    "rate_limit_enable": False,  # True is not supported (ValueError)
    "listen_mode": False,
    "blocking_send": False,
    "logger_name": "isotp",
    "wait_func": time.sleep,  # accepted for compatibility; canx's timing is native
    # canx's own:
    "tx_buffer_size": 1 << 20,  # bytes: the longest message send() takes (allocated on first touch)
    "n_as_timeout": 1000,  # ms, N_As (sender frame to the bus)
    "n_ar_timeout": 1000,  # ms, N_Ar (receiver FC to the bus)
    # us: the FC after a block's last CF waits this long from the CF's arrival
    # (part of N_Br), if a socket on this host sent the CF: a Linux sender ignores
    # an FC that arrives before its own CF's echo (docs/protocols/isotp.md section 8)
    "block_fc_delay_us": 300,
    # ms: an FC.CTS no CF answers within this (plus the STmin it asked for) is
    # sent again, until N_Cr; 0: never. A sender that took it ignores the copy
    # (ISO 15765-2:2016 section 9.8.3, Table 23); one that missed it (Linux can-isotp
    # on this host, see block_fc_delay_us) goes on instead of failing after 1 s
    "fc_repeat_ms": 50,
    "rx_check_padding_len": False,  # receive: SF/FC/last CF must be 8 bytes (Linux CHK_PAD_LEN)
    "rx_padding_byte": None,  # receive: padding bytes must equal this (Linux CHK_PAD_DATA)
    "half_duplex": False,
    "rx_queue_size": 1024,  # messages received and not read, at most (more: dropped, counted)
    "tx_queue_size": 64,  # messages waiting to be sent, at most (more: canx.LimitError)
}

_MAX_SIZE = 0xFFFFFFFF


def _int(params: Dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = params[key]
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"{key} must be an integer {lo}..{hi}")
    return v


def _opt_byte(params: Dict[str, Any], key: str) -> Optional[int]:
    return None if params[key] is None else _int(params, key, 0, 0xFF)


def _bool(params: Dict[str, Any], key: str) -> bool:
    v = params[key]
    if not isinstance(v, bool):
        raise ValueError(f"{key} must be a boolean value")
    return v


def _native_params(params: Dict[str, Any]) -> Dict[str, Any]:
    """python-can-isotp's parameters as NativeIsoTp keywords. ValueError for
    an unknown key or a bad value."""
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ValueError(f"unknown ISO-TP parameter(s): {', '.join(unknown)}")
    p = dict(DEFAULT_PARAMS)
    p.update(params)
    tx_dl = _int(p, "tx_data_length", 8, 64)
    if tx_dl not in (8, 12, 16, 20, 24, 32, 48, 64):
        raise ValueError("tx_data_length must be one of these value : 8, 12, 16, 20, 24, 32, 48, 64")
    can_fd = _bool(p, "can_fd")
    if tx_dl > 8 and not can_fd:
        raise ValueError("tx_data_length above 8 needs can_fd=True")
    padding = _opt_byte(p, "tx_padding")
    min_len = p["tx_data_min_length"]
    if min_len is not None:
        if min_len != 8 or tx_dl != 8:
            raise ValueError("tx_data_min_length: canx supports only None or 8 (with tx_data_length 8)")
        padding = 0xCC if padding is None else padding
    override = p["override_receiver_stmin"]
    override_us: Optional[int] = None
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, (int, float)) or not math.isfinite(override):
            raise ValueError("override_receiver_stmin must be a float (seconds)")
        if override < 0:
            raise ValueError("Invalid override_receiver_stmin")
        override_us = int(round(float(override) * 1e6))
    if _bool(p, "rate_limit_enable"):
        raise ValueError("rate_limit_enable: canx has no rate limiter (STmin and BS pace the sender)")
    if not callable(p["wait_func"]):
        raise ValueError("wait_func should be a callable")
    if not isinstance(p["logger_name"], str):
        raise ValueError("logger_name must be a string")
    TargetAddressType(p["default_target_address_type"])
    _bool(p, "blocking_send")
    return {
        "fd": can_fd,
        "brs": _bool(p, "bitrate_switch"),
        "tx_dl": tx_dl,
        "padding": padding,
        "bs": _int(p, "blocksize", 0, 0xFF),
        "stmin": _int(p, "stmin", 0, 0xFF),
        "stmin_override_us": override_us,
        "tx_wft_max": _int(p, "wftmax", 0, 0xFF),
        "n_as_ms": max(1, _int(p, "n_as_timeout", 0, 86_400_000)),
        "n_ar_ms": max(1, _int(p, "n_ar_timeout", 0, 86_400_000)),
        "n_bs_ms": max(1, _int(p, "rx_flowcontrol_timeout", 0, 86_400_000)),
        "n_cr_ms": max(1, _int(p, "rx_consecutive_frame_timeout", 0, 86_400_000)),
        "block_fc_delay_us": _int(p, "block_fc_delay_us", 0, 100_000),
        "fc_repeat_ms": _int(p, "fc_repeat_ms", 0, 86_400_000),
        "rx_check_padding_len": _bool(p, "rx_check_padding_len"),
        "rx_padding_byte": _opt_byte(p, "rx_padding_byte"),
        "half_duplex": _bool(p, "half_duplex"),
        "listen_only": _bool(p, "listen_mode"),
        "rx_size": _int(p, "max_frame_size", 1, _MAX_SIZE),
        "tx_size": _int(p, "tx_buffer_size", 1, _MAX_SIZE),
        "queue_size": _int(p, "rx_queue_size", 1, 1 << 24),
        "max_waiting": _int(p, "tx_queue_size", 1, 1 << 24),
    }


# --------------------------------------------------------------------------- the stack

_Data = Union[bytes, bytearray, memoryview, Tuple[Iterable[int], int]]
ErrorHandler = Callable[[IsoTpError], Any]


def _payload(data: _Data) -> bytes:
    if isinstance(data, tuple):
        gen, size = data
        out = bytes(b for _, b in zip(range(size), iter(gen)))
        if len(out) != size:
            raise BadGeneratorError(f"the generator gave {len(out)} bytes, not {size}")
        return out
    return bytes(data)


def _open_bus(bus: Union[CAN, str, Any], fd: bool) -> Tuple[CAN, bool]:
    """(canx.CAN, whether the stack owns it)."""
    if isinstance(bus, CAN):
        return bus, False
    if isinstance(bus, str):
        return CAN(channel=bus, fd=fd), True
    # canx's python-can plugin (canx.pycan.CanxBus): a node of its own on the same channel.
    channel = getattr(bus, "channel", None)
    if type(bus).__name__ == "CanxBus" and isinstance(channel, str):
        return CAN(channel=channel, fd=fd), True
    raise TypeError("bus must be a canx.CAN, a channel string (\"vcan0\", \"virtual:x\") or a canx python-can bus")


class CanStack:
    """An ISO-TP channel on a canx bus (python-can-isotp's ``CanStack``,
    without its two threads: the bus's receive thread runs the protocol).

    ``bus``: a :class:`canx.CAN` (opened with ``fd=True`` for ``can_fd``), a
    channel string (the stack opens and closes its own ``canx.CAN``), or a
    ``can.Bus(interface="canx", ...)`` (the stack opens its own node on that
    channel). ``address``: an :class:`Address`. ``params``: python-can-isotp's
    keys and units (see :data:`DEFAULT_PARAMS`; unknown keys raise
    ValueError). ``error_handler(error)`` receives each :class:`IsoTpError`
    on the thread :meth:`start` starts; without one, errors are logged as
    warnings on the ``logger_name`` logger.

    The channel works from construction (``send``/``recv`` need no
    ``start()``); ``start()`` adds the error-handler thread, ``stop()``
    detaches the channel (a later ``start()`` attaches a fresh one).
    """

    def __init__(
        self,
        bus: Union[CAN, str, Any],
        address: Address,
        error_handler: Optional[ErrorHandler] = None,
        params: Optional[Dict[str, Any]] = None,
        read_timeout: float = 0.05,
    ) -> None:
        if not isinstance(address, Address):
            raise TypeError("address must be a canx.isotp.Address")
        self.params: Dict[str, Any] = dict(DEFAULT_PARAMS)
        self._native_kw = _native_params(params or {})
        self.params.update(params or {})
        self.address = address
        self.error_handler = error_handler
        self.logger = logging.getLogger(str(self.params["logger_name"]))
        self._bus_arg = bus
        self._bus: Optional[CAN] = None
        self._owns_bus = False
        self._native: Optional[NativeIsoTp] = None
        self._pump: Optional[CallbackPump] = None
        self._attach()

    # -- lifecycle

    def _attach(self) -> NativeIsoTp:
        if self._native is None:
            self._bus, self._owns_bus = _open_bus(self._bus_arg, bool(self._native_kw["fd"]))
            self._native = NativeIsoTp(
                self._bus, self.address.addressing_mode.value, **self.address._native_kwargs(), **self._native_kw
            )
        return self._native

    @property
    def _n(self) -> NativeIsoTp:
        n = self._native
        if n is None:
            raise RuntimeError("the stack is stopped; call start()")
        return n

    def start(self) -> None:
        """Attaches the channel if stopped and starts the thread that hands
        error reports to ``error_handler``. Idempotent."""
        native = self._attach()
        if self._pump is None:
            self._pump = CallbackPump("canx-isotp-errors", native.next_report, self._dispatch, lambda: native.closed)
            self._pump.start()

    def stop(self) -> None:
        """Detaches the channel (an ongoing transfer is abandoned), stops the
        error thread and closes the bus if the stack opened it. Idempotent."""
        if self._pump is not None:
            self._pump.stop()
            self._pump = None
        if self._native is not None:
            self._native.close()
            self._native = None
        if self._owns_bus and self._bus is not None:
            self._bus.deinit()
        self._bus = None

    def __enter__(self) -> "CanStack":
        self.start()
        return self

    def __exit__(self, *_args: object) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # interpreter shutdown
            pass

    def _dispatch(self, ev: IsotpErrorEvent) -> None:
        self._handle(_report_error(ev, int(self.params["wftmax"])))

    def _handle(self, err: IsoTpError) -> None:
        if self.error_handler is not None:
            self.error_handler(err)
        else:
            self.logger.warning("[%s] : %s", type(err).__name__, err)

    # -- sending

    def _ta(self, target_address_type: Optional[Union[TargetAddressType, int]]) -> bool:
        t = self.params["default_target_address_type"] if target_address_type is None else target_address_type
        return TargetAddressType(t) == TargetAddressType.Functional

    def _queue(self, data: _Data, target_address_type: Optional[Union[TargetAddressType, int]], watch: bool) -> int:
        if self.params["listen_mode"]:
            raise RuntimeError("Cannot transmit when listen_mode=True")
        return self._n.send(_payload(data), functional=self._ta(target_address_type), watch=watch)

    def send(
        self,
        data: _Data,
        target_address_type: Optional[Union[TargetAddressType, int]] = None,
        send_timeout: Optional[float] = None,
    ) -> None:
        """Queues one message (1 byte to ``tx_buffer_size``; functional: one
        single frame's worth, §9.6.1). ``data``: bytes-like or python-can-isotp's
        ``(generator, size)``. With ``blocking_send``, waits up to
        ``send_timeout`` s (None: no limit) for the end: BlockingSendTimeout
        when it has not ended, BlockingSendFailure (``n_result``; the
        specific error as ``__cause__``) when it failed. ValueError for a
        message the channel cannot carry; RuntimeError in listen mode;
        :class:`canx.LimitError` (a RuntimeError) when ``tx_queue_size``
        messages wait."""
        blocking = bool(self.params["blocking_send"])
        ticket = self._queue(data, target_address_type, watch=blocking)
        if blocking:
            r = self._n.wait_sent(ticket, send_timeout)
            self._sent_result(ticket, r)

    def _sent_result(self, ticket: int, r: Optional[str]) -> None:
        if r is None:
            self._n.forget(ticket)
            raise BlockingSendTimeout("Failed to send IsoTP frame in time")
        if r != "N_OK":
            cause = _tx_error(r, int(self.params["wftmax"]))
            raise BlockingSendFailure(f"Error while sending IsoTP frame: {r}", n_result=r) from cause

    async def send_async(
        self,
        data: _Data,
        target_address_type: Optional[Union[TargetAddressType, int]] = None,
        send_timeout: Optional[float] = None,
    ) -> None:
        """Queues one message and waits (in the event loop, no thread) until
        it was sent; raises as a blocking :meth:`send` does, whatever
        ``blocking_send`` says."""
        ticket = self._queue(data, target_address_type, watch=True)
        n = self._n
        r = await _aio.take(lambda: n.wait_sent(ticket, 0.0), None, send_timeout)
        self._sent_result(ticket, r)

    def transmitting(self) -> bool:
        """A message is being sent or waits to be."""
        return self._native is not None and self._native.transmitting()

    def stop_sending(self) -> None:
        """Abandons the message being sent and every waiting one."""
        self._n.stop_sending()

    def clear_tx_queue(self) -> None:
        self.stop_sending()

    # -- receiving

    def recv(self, block: bool = False, timeout: Optional[float] = None) -> Optional[bytearray]:
        """The next message received, or None: at once when ``block`` is
        false, else after ``timeout`` s (None: wait forever). Ctrl-C
        interrupts the wait."""
        ev = self._n.recv(timeout if block else 0.0)
        return None if ev is None else bytearray(ev.data)

    def _recv_nowait(self) -> Optional[bytearray]:
        ev = self._n.recv(0.0)
        return None if ev is None else bytearray(ev.data)

    async def recv_async(self, timeout: Optional[float] = None) -> Optional[bytearray]:
        """``await`` form of ``recv(block=True, timeout=...)``: waits on the
        queue's readiness in the event loop (``canx._aio``); a cancelled call
        takes nothing off the queue."""
        n = self._n
        got: Optional[bytearray] = await _aio.take(self._recv_nowait, n.fileno, timeout)
        return got

    def available(self) -> bool:
        """A received message waits to be read."""
        return self._native is not None and self._native.available() > 0

    def clear_rx_queue(self) -> None:
        self._n.clear_rx_queue()

    def __iter__(self) -> Iterator[bytearray]:
        """Messages as they arrive (blocking; ends when the stack stops)."""
        while self._native is not None:
            m = self.recv(block=True, timeout=0.5)
            if m is not None:
                yield m

    # -- python-can-isotp compatibility and canx extras

    def process(self, rx_timeout: float = 0.0, do_rx: bool = True, do_tx: bool = True) -> None:
        """python-can-isotp v1's pump: nothing to do (the bus's receive
        thread runs the protocol); sleeps ``rx_timeout`` s."""
        if rx_timeout > 0:
            time.sleep(rx_timeout)

    def set_sleep_timing(self, idle: float, wait_fc: float) -> None:
        """Accepted for compatibility; canx does not poll."""

    def fileno(self) -> int:
        """Readable while a received message waits (for ``select``)."""
        return int(self._n.fileno())

    def stats(self) -> Dict[str, Optional[int]]:
        """The channel's counters (frames, messages, errors, drops,
        ``fc_repeated``: FC.CTS frames sent again, see ``fc_repeat_ms``) and
        ``min_paced_gap_us``: the smallest gap between two frames sent while
        an STmin above 0 applied (us; None before such a pair)."""
        s = dict(self._n.stats())
        s["callback_errors"] = self._pump.callback_errors if self._pump else 0
        return s

    @property
    def max_single_frame(self) -> int:
        """Largest message one single frame carries."""
        return int(self._n.max_single_frame)


#: python-can-isotp's general name for a stack.
TransportLayer = CanStack


class socket:  # noqa: N801 (python-can-isotp's and the kernel's name)
    """A blocking, socket-like ISO-TP endpoint (python-can-isotp's
    ``isotp.socket``, on canx instead of the kernel's CAN_ISOTP): ``bind``
    then ``send``/``recv``; ``fileno()`` is readable while a message waits.
    ``send`` returns once the message was sent (the kernel's
    ``CAN_ISOTP_WAIT_TX_DONE``) and raises its :class:`IsoTpError`.
    ``recv`` returns None after the timeout (``settimeout``)."""

    def __init__(self, timeout: Optional[float] = None, params: Optional[Dict[str, Any]] = None) -> None:
        self._timeout = timeout
        self._params: Dict[str, Any] = dict(params or {})
        _native_params(self._params)
        self._stack: Optional[CanStack] = None

    def settimeout(self, value: Optional[float]) -> None:
        self._timeout = value

    def gettimeout(self) -> Optional[float]:
        return self._timeout

    def set_fc_opts(self, bs: Optional[int] = None, stmin: Optional[int] = None, wftmax: Optional[int] = None) -> None:
        """The FC this receiver sends (BS, raw STmin) and the WAITs its sender accepts; before ``bind``."""
        for k, v in (("blocksize", bs), ("stmin", stmin), ("wftmax", wftmax)):
            if v is not None:
                self._params[k] = v
        _native_params(self._params)

    def set_ll_opts(self, mtu: Optional[int] = None, tx_dl: Optional[int] = None, tx_flags: Optional[int] = None) -> None:
        """Link layer: ``mtu`` 72 for CAN FD, ``tx_dl`` bytes per frame, ``tx_flags`` 1 = BRS; before ``bind``."""
        if mtu is not None:
            self._params["can_fd"] = mtu == 72
        if tx_dl is not None:
            self._params["tx_data_length"] = tx_dl
        if tx_flags is not None:
            self._params["bitrate_switch"] = bool(tx_flags & 1)
        _native_params(self._params)

    def bind(self, interface: Union[CAN, str], address: Address) -> None:
        """Opens the channel on ``interface`` (a canx channel string or a canx.CAN)."""
        if self._stack is not None:
            raise OSError("the socket is already bound")
        params = dict(self._params)
        params["blocking_send"] = True
        self._stack = CanStack(interface, address, params=params)

    def _s(self) -> CanStack:
        if self._stack is None:
            raise OSError("the socket is not bound")
        return self._stack

    def send(self, data: Union[bytes, bytearray, memoryview]) -> int:
        """Sends one message and returns its length once it was sent; raises the IsoTpError of a failed send."""
        s = self._s()
        try:
            s.send(data, send_timeout=self._timeout)
        except BlockingSendFailure as e:
            if isinstance(e, BlockingSendTimeout) or e.__cause__ is None:
                raise
            raise e.__cause__ from None
        return len(data)

    def recv(self, bufsize: Optional[int] = None) -> Optional[bytes]:
        """The next message (truncated to ``bufsize`` bytes if given), or None after the timeout."""
        m = self._s().recv(block=True, timeout=self._timeout)
        if m is None:
            return None
        return bytes(m if bufsize is None else m[:bufsize])

    def fileno(self) -> int:
        return self._s().fileno()

    def close(self) -> None:
        if self._stack is not None:
            self._stack.stop()
            self._stack = None

    def __enter__(self) -> "socket":
        return self

    def __exit__(self, *_args: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<canx.isotp.socket bound={self._stack is not None}>"

