"""python-can interface plugin: ``can.Bus(interface="canx", channel="vcan0")``.

Registered through the ``can.interface`` entry point as ``canx``, so every
python-can tool takes ``-i canx``::

    python -m can.logger -i canx -c vcan0
    python -m can.viewer -i canx -c virtual:test

Channels: ``"vcan0"``, ``"can0"`` (SocketCAN), ``"virtual:NAME"`` (canx's
in-process virtual bus) or ``"udp_multicast:[GROUP[:PORT]]"`` (a bus shared
between processes, python-can's ``udp_multicast`` on the wire). Frames are received by canx's native receive thread
and filtered in the kernel (SocketCAN) or natively (virtual), so ``recv``
only pops a queue and builds the ``can.Message`` natively. ``send_periodic``
runs on a native timer of the bus (no Python per frame) unless a
``modifier_callback`` is given (then python-can's thread-based task is used).

python-can is an optional dependency of canx: importing this module needs it.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

import can
from can import BusABC, Message
from can.broadcastmanager import (
    LimitedDurationCyclicSendTaskABC,
    ModifiableCyclicTaskABC,
    RestartableCyclicTaskABC,
)

from . import errors
from ._canx import RawBus, pycan_filter

__all__ = ["CanxBus", "CanxCyclicSendTask"]

#: The optional parameters of this python-can's BusABC._send_periodic_internal, in order.
_PERIODIC_ARGS = tuple(
    name for name in inspect.signature(BusABC._send_periodic_internal).parameters
    if name in ("autostart", "modifier_callback")
)

_STATES = {
    "ERROR_ACTIVE": can.BusState.ACTIVE,
    "ERROR_WARNING": can.BusState.ACTIVE,
    "ERROR_PASSIVE": can.BusState.PASSIVE,
    "BUS_OFF": can.BusState.ERROR,
}


def _fields(msg: Message) -> Tuple[int, bool, bool, bool, bool, bool, int, bytes]:
    data = bytes(msg.data or b"")
    dlc = msg.dlc if msg.dlc is not None else len(data)
    return (msg.arbitration_id, msg.is_extended_id, msg.is_remote_frame, msg.is_fd,
            msg.bitrate_switch, msg.error_state_indicator, dlc, data)


class CanxBus(BusABC):
    """A python-can bus on canx.

    ``CanxBus(channel=None, can_filters=None, receive_own_messages=False,
    fd=False, bitrate=None, data_bitrate=None, **kwargs)``: ``channel`` ``"vcan0"``, ``"can0"``,
    ``"virtual:NAME"``, ``"udp_multicast:GROUP"``, ``"slcan:/dev/ttyACM0"``/``"slcan:COM3"`` (options
    as in README "USB adapters: slcan") or ``"gs_usb:0"`` (None: ``$CANX_CHANNEL``, else
    ``"virtual:default"``); ``can_filters`` python-can's
    ``[{"can_id", "can_mask", "extended"?}]``; ``receive_own_messages``
    delivers this bus's own frames with ``is_rx=False``; ``fd=True`` opens
    for CAN FD; ``bitrate`` (bit/s) programs an slcan adapter and is
    informational on SocketCAN (rates are set with ``ip link``); ``data_bitrate``
    (bit/s) is the CAN FD data-phase rate, used with ``fd=True`` (gs_usb: required
    for FD; slcan: ``Yn``). Other python-can options are accepted and ignored.

    Raises ``can.CanInitializationError`` when the channel cannot be opened
    (unknown interface name, no such device, no permission).
    """

    def __init__(
        self,
        channel: Optional[str] = None,
        can_filters: Optional[can.typechecking.CanFilters] = None,
        receive_own_messages: bool = False,
        fd: bool = False,
        bitrate: Optional[int] = None,
        data_bitrate: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        if channel is None:
            channel = os.environ.get("CANX_CHANNEL", "virtual:default")
        channel = str(channel)
        try:
            self._raw = RawBus(channel, fd=bool(fd), receive_own=bool(receive_own_messages),
                               bitrate=int(bitrate or 250_000),
                               data_bitrate=None if data_bitrate is None else int(data_bitrate))
        except (errors.CanxError, ValueError) as e:
            raise can.CanInitializationError(f"canx: cannot open {channel!r}: {e}") from None
        self._raw.set_message_class(Message, channel)
        # recv_msg builds instances of the class given to set_message_class.
        self._recv_msg = cast(Callable[[Optional[float]], Optional[Message]], self._raw.recv_msg)
        self._send_msg = self._raw.send_msg
        self.channel = channel
        self.channel_info = f"canx {channel}"
        self.receive_own_messages = bool(receive_own_messages)
        protocol = getattr(can, "CanProtocol", None)  # python-can >= 4.3
        if protocol is not None:
            self._can_protocol = protocol.CAN_FD if fd else protocol.CAN_20
        super().__init__(channel=channel, can_filters=can_filters, **kwargs)

    # -- receive ---------------------------------------------------------

    def _recv_internal(self, timeout: Optional[float]) -> Tuple[Optional[Message], bool]:
        """BusABC's receive hook (``recv`` is BusABC's): the next
        ``can.Message``, or None after ``timeout`` seconds (None: wait
        forever), with ``True``: filtering happened in the kernel or natively,
        so BusABC does not filter again. Raises ``can.CanOperationError``
        after shutdown or when the receive thread stopped."""
        try:
            return self._recv_msg(timeout), True
        except errors.ClosedError:
            raise can.CanOperationError("canx: the bus has been shut down") from None
        except errors.CanxError as e:  # e.g. ReceiveThreadError
            raise can.CanOperationError(f"canx: {e}") from e

    def _apply_filters(self, filters: Optional[can.typechecking.CanFilters]) -> None:
        if not filters:
            self._raw.set_filters(None)
            return
        native: List[Tuple[int, int, bool]] = []
        for f in filters:
            ext = f.get("extended")
            native.append(pycan_filter(int(f["can_id"]), int(f["can_mask"]),
                                       None if ext is None else bool(ext)))
        self._raw.set_filters(native)

    def fileno(self) -> int:
        """A descriptor readable while messages are queued (python-can's
        asyncio Notifier watches it). Spurious readiness is possible: then
        ``recv(0)`` returns None."""
        return self._raw.fileno()

    # -- send --------------------------------------------------------------

    def send(self, msg: Message, timeout: Optional[float] = None) -> None:
        """Queues ``msg`` for transmission; ``timeout`` bounds the wait for
        room in a full transmit queue (None: wait). Raises
        ``can.CanOperationError`` (queue full after ``timeout``, bus off,
        interface down, FD frame on a non-FD bus, error frame, shut down) and
        ``ValueError`` for a message no CAN frame can carry."""
        try:
            self._send_msg(msg, timeout)
        except errors.ClosedError:
            raise can.CanOperationError("canx: the bus has been shut down") from None
        except errors.CanxError as e:
            raise can.CanOperationError(f"canx: {e}") from None
        except ValueError as e:
            if self._raw.is_shut_down:
                raise can.CanOperationError("canx: the bus has been shut down") from None
            raise ValueError(f"canx: cannot send {msg!r}: {e}") from None

    def _send_periodic_internal(
        self,
        msgs: Union[Sequence[Message], Message],
        period: float,
        duration: Optional[float] = None,
        *args: Any,
        **kwargs: Any,
    ) -> can.broadcastmanager.CyclicSendTaskABC:
        # BusABC.send_periodic passes what its python-can release has, by
        # position: (autostart, modifier_callback) from 4.5, (modifier_callback)
        # in 4.3-4.4, nothing in 4.2 (scripts/test-python-can-versions).
        opts: Dict[str, Any] = {"autostart": True, "modifier_callback": None}
        opts.update(zip(_PERIODIC_ARGS, args))
        opts.update(kwargs)
        if opts["modifier_callback"] is not None:
            # The callback is Python code per frame: python-can's thread does that.
            return super()._send_periodic_internal(msgs, period, duration, *args, **kwargs)
        return CanxCyclicSendTask(self._raw, msgs, period, duration, bool(opts["autostart"]))

    def flush_tx_buffer(self) -> None:
        """Nothing to flush: ``send`` hands each frame to the kernel (or the
        virtual bus) before it returns."""

    # -- state -------------------------------------------------------------

    @property
    def state(self) -> can.BusState:
        """ACTIVE (error active or warning), PASSIVE, or ERROR (bus off or interface down)."""
        name, _tec, _rec = self._raw.state()
        return _STATES[name]

    @state.setter
    def state(self, new_state: can.BusState) -> None:
        # python-can's contract (BusABC.state setter): a bus that cannot change
        # its controller state raises NotImplementedError; can.Bus users expect it.
        raise NotImplementedError("canx: the controller state cannot be set (listen-only: canx.CAN(silent=True))")

    def shutdown(self) -> None:
        """Stops periodic tasks and the receive thread, releases the interface. Idempotent."""
        super().shutdown()
        self._raw.shutdown()

    @staticmethod
    def _detect_available_configs() -> List[can.typechecking.AutoDetectedConfig]:
        """Every channel canx can open now, as the native backend registry
        lists them: CAN network interfaces (SocketCAN, Linux), then the open
        canx virtual channels, then python-can's two default ``udp_multicast``
        groups."""
        out: List[can.typechecking.AutoDetectedConfig] = [
            {"interface": "canx", "channel": ch} for ch in RawBus.available_channels()
        ]
        return out


class CanxCyclicSendTask(LimitedDurationCyclicSendTaskABC, ModifiableCyclicTaskABC, RestartableCyclicTaskABC):
    """A ``send_periodic`` task run in native code: on SocketCAN by the
    kernel's broadcast manager (``CAN_BCM``), on the virtual bus by canx's
    timer on the bus's receive thread. The frames go out in turn, one every
    ``period`` seconds; ``duration`` (seconds) ends it (None or
    ``float("inf")``: it runs until stopped, as with python-can's own tasks).
    With ``autostart=False`` nothing is sent before ``start()``.
    ``modify_data`` takes effect at the next period; ``stop`` / ``start``
    pause and resume. Raises ``ValueError`` for a NaN ``duration``."""

    def __init__(self, raw: RawBus, messages: Union[Sequence[Message], Message], period: float,
                 duration: Optional[float], autostart: bool = True) -> None:
        super().__init__(messages, period, duration)
        self._raw = raw
        # Created stopped when autostart is False: not even one frame goes out.
        self._task = raw.send_periodic([_fields(m) for m in self.messages], period, duration,
                                       autostart=autostart)

    def modify_data(self, messages: Union[Sequence[Message], Message]) -> None:
        super().modify_data(messages)
        self._task.modify([_fields(m) for m in self.messages])

    def stop(self) -> None:
        self._task.stop()

    def start(self) -> None:
        self._task.start(self.duration)

    @property
    def sent(self) -> int:
        """Frames sent so far (canx extension; with BCM estimated from the clock)."""
        return self._task.sent

    @property
    def mechanism(self) -> str:
        """``"bcm"`` (the kernel's broadcast manager) or ``"native"`` (canx's timer)."""
        return self._task.mechanism
