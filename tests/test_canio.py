"""The CircuitPython ``canio`` surface of canx, tested from the spec
(docs/protocols/canio.md) on the in-process virtual bus.

``import canx as canio`` must be enough for canio code: names, signatures,
semantics, error types and messages. canx extensions used here only to pick
an isolated channel (``channel="virtual:..."``) per test.
"""

from __future__ import annotations

import _thread
import array
import os
import signal
import struct
import threading
import time

import pytest
from canio_helpers import DEINIT_MSG, channel, make_can, wait_for  # noqa: F401 (fixtures)
from conftest import TIMEOUT_SCALE

import canx as canio


# Slack for timing assertions on a loaded 2-core machine (scaled like every
# timeout: CANX_TIMEOUT_SCALE, 10 in the VM).
MARGIN = 0.5 * TIMEOUT_SCALE


# --------------------------------------------------------------------------- helpers





def drain(listener, timeout=0.05):
    """Everything queued (and arriving within ``timeout``) on ``listener``."""
    old = listener.timeout
    listener.timeout = timeout
    try:
        out = []
        while True:
            m = listener.receive()
            if m is None:
                return out
            out.append(m)
    finally:
        listener.timeout = old


def key(frame):
    """(kind, id, extended, payload) of a received frame, for comparisons."""
    if isinstance(frame, canio.RemoteTransmissionRequest):
        return ("rtr", frame.id, frame.extended, frame.length)
    return ("msg", frame.id, frame.extended, bytes(frame.data))


class ThreadRunner:
    """Runs functions in threads, re-raising their exceptions in the test
    (an exception escaping a thread would be a warning, i.e. an error)."""

    def __init__(self):
        self.threads = []
        self.errors = []

    def start(self, fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - reported in join()
                self.errors.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def join(self, timeout=10.0):
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), "helper thread did not finish"
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def threads():
    r = ThreadRunner()
    yield r
    for t in r.threads:
        t.join(5)


# --------------------------------------------------------------------------- module


CANIO_NAMES = ["BusState", "CAN", "Listener", "Match", "Message", "RemoteTransmissionRequest"]


@pytest.mark.parametrize("name", CANIO_NAMES)
def test_module_exports_canio_name(name):
    obj = getattr(canio, name)
    assert isinstance(obj, type)
    assert obj.__name__ == name


def test_module_all_lists_canio_names():
    assert set(CANIO_NAMES) <= set(canio.__all__)


# --------------------------------------------------------------------------- BusState

BUS_STATES = ["ERROR_ACTIVE", "ERROR_WARNING", "ERROR_PASSIVE", "BUS_OFF"]


@pytest.mark.parametrize("name", BUS_STATES)
def test_busstate_str(name):
    assert str(getattr(canio.BusState, name)) == f"canio.BusState.{name}"


def test_busstate_members_are_distinct_singletons():
    members = [getattr(canio.BusState, n) for n in BUS_STATES]
    for n, m in zip(BUS_STATES, members):
        assert getattr(canio.BusState, n) is m
        assert isinstance(m, canio.BusState)
    for i, a in enumerate(members):
        for j, b in enumerate(members):
            assert (a == b) == (i == j)


def test_busstate_not_constructible_into_new_member():
    with pytest.raises(TypeError):
        canio.BusState()


def test_can_state_is_the_busstate_singleton(make_can):
    """BusState members are enum singletons: the state of a fresh bus *is*
    BusState.ERROR_ACTIVE (canio code may compare with ``is``)."""
    can = make_can()
    assert can.state == canio.BusState.ERROR_ACTIVE
    assert can.state is canio.BusState.ERROR_ACTIVE


# --------------------------------------------------------------------------- Match


def test_match_defaults_standard():
    m = canio.Match(0x408)
    assert m.id == 0x408
    assert m.mask == 0x7FF
    assert m.extended is False


def test_match_defaults_extended():
    m = canio.Match(0x408, extended=True)
    assert m.id == 0x408
    assert m.mask == 0x1FFFFFFF
    assert m.extended is True


def test_match_explicit_mask():
    m = canio.Match(0x400, mask=0x700)
    assert (m.id, m.mask, m.extended) == (0x400, 0x700, False)
    m = canio.Match(0x100, mask=0)
    assert m.mask == 0


def test_match_limits_accepted():
    assert canio.Match(0x7FF).id == 0x7FF
    assert canio.Match(0, mask=0x7FF).mask == 0x7FF
    assert canio.Match(0x1FFFFFFF, extended=True).id == 0x1FFFFFFF
    assert canio.Match(0x800, extended=True).id == 0x800
    assert canio.Match(0, mask=0x1FFFFFFF, extended=True).mask == 0x1FFFFFFF


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(id=0x800),
        dict(id=0x20000000, extended=True),
        dict(id=0xFFFFFFFF, extended=True),
        dict(id=0x800, mask=0x800),  # id is checked first
    ],
    ids=["std", "ext", "ext-32bit", "both"],
)
def test_match_id_out_of_range(kwargs):
    with pytest.raises(ValueError, match=r"^id out of range$"):
        canio.Match(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [dict(id=1, mask=0x800), dict(id=1, mask=0x20000000, extended=True)],
    ids=["std", "ext"],
)
def test_match_mask_out_of_range(kwargs):
    with pytest.raises(ValueError, match=r"^mask out of range$"):
        canio.Match(**kwargs)


def test_match_negative_id_out_of_range():
    with pytest.raises(ValueError, match=r"^id out of range$"):
        canio.Match(-1)


def test_match_negative_mask_out_of_range():
    with pytest.raises(ValueError, match=r"^mask out of range$"):
        canio.Match(1, mask=-1)


def test_match_mask_and_extended_are_keyword_only():
    with pytest.raises(TypeError):
        canio.Match(0x408, 0x7FF)


# --------------------------------------------------------------------------- Message


def test_message_construction():
    m = canio.Message(0x408, b"\x01\x02\x03")
    assert m.id == 0x408
    assert m.data == b"\x01\x02\x03"
    assert type(m.data) is bytes
    assert m.extended is False


def test_message_keywords_and_extended():
    m = canio.Message(id=0x1ABCDEF0, data=b"x", extended=True)
    assert (m.id, m.data, m.extended) == (0x1ABCDEF0, b"x", True)


def test_message_extended_is_keyword_only():
    with pytest.raises(TypeError):
        canio.Message(0x408, b"", True)


@pytest.mark.parametrize(
    "buf",
    [
        b"\x01\x02\x03\x04",
        bytearray(b"\x01\x02\x03\x04"),
        memoryview(b"\x01\x02\x03\x04"),
        array.array("B", [1, 2, 3, 4]),
        memoryview(b"\x00\x01\x02\x03\x04\x05")[1:5],
    ],
    ids=["bytes", "bytearray", "memoryview", "array", "memoryview-slice"],
)
def test_message_data_from_any_buffer(buf):
    m = canio.Message(0x10, buf)
    assert m.data == b"\x01\x02\x03\x04"
    assert type(m.data) is bytes


def test_message_data_from_wide_array_uses_raw_bytes():
    a = array.array("H", [0x0102, 0x0304])
    m = canio.Message(0x10, a)
    assert m.data == a.tobytes()
    assert len(m.data) == 4


def test_message_data_is_copied():
    buf = bytearray(b"abc")
    m = canio.Message(0x10, buf)
    buf[0] = ord("z")
    assert m.data == b"abc"


@pytest.mark.parametrize("n", range(9))
def test_message_data_lengths_0_to_8(n):
    m = canio.Message(0x10, bytes(range(n)))
    assert m.data == bytes(range(n))
    assert len(m.data) == n


@pytest.mark.parametrize("n", [9, 16, 64])
def test_message_data_too_long(n):
    with pytest.raises(ValueError, match=r"^data length must be 0-8$"):
        canio.Message(0x10, bytes(n))


def test_message_data_setter_too_long_keeps_old_data():
    m = canio.Message(0x10, b"ok")
    with pytest.raises(ValueError, match=r"^data length must be 0-8$"):
        m.data = bytes(9)
    assert m.data == b"ok"


@pytest.mark.parametrize("bad", [5, "abc", 1.5, [1, 2], None], ids=["int", "str", "float", "list", "None"])
def test_message_data_setter_non_buffer_type_error(bad):
    m = canio.Message(0x10, b"ok")
    with pytest.raises(TypeError):
        m.data = bad
    assert m.data == b"ok"


@pytest.mark.parametrize("bad", [5, "abc", 1.5, [1, 2]], ids=["int", "str", "float", "list"])
def test_message_non_buffer_data_type_error(bad):
    with pytest.raises(TypeError):
        canio.Message(0x10, bad)


def test_message_attributes_are_writable():
    m = canio.Message(0x10, b"a")
    m.id = 0x7FF
    m.data = bytearray(b"\x09\x08")
    assert m.id == 0x7FF
    assert m.data == b"\x09\x08"
    assert type(m.data) is bytes
    m.extended = True
    m.id = 0x1FFFFFFF
    assert (m.id, m.extended) == (0x1FFFFFFF, True)
    m.data = memoryview(b"")
    assert m.data == b""


# --------------------------------------------------------------------------- RemoteTransmissionRequest


def test_rtr_construction():
    r = canio.RemoteTransmissionRequest(0x408, 4)
    assert (r.id, r.length, r.extended) == (0x408, 4, False)
    r = canio.RemoteTransmissionRequest(0x1ABCDEF0, 0, extended=True)
    assert (r.id, r.length, r.extended) == (0x1ABCDEF0, 0, True)


@pytest.mark.parametrize("n", range(9))
def test_rtr_lengths_0_to_8(n):
    assert canio.RemoteTransmissionRequest(0x1, n).length == n


@pytest.mark.parametrize("n", [9, 100])
def test_rtr_length_too_long(n):
    with pytest.raises(ValueError, match=r"^RemoteTransmissionRequests limited to 8 bytes$"):
        canio.RemoteTransmissionRequest(0x1, n)


def test_rtr_negative_length():
    with pytest.raises(ValueError, match=r"^RemoteTransmissionRequests limited to 8 bytes$"):
        canio.RemoteTransmissionRequest(0x1, -1)


def test_rtr_attributes_are_writable():
    r = canio.RemoteTransmissionRequest(0x10, 1)
    r.id = 0x123
    r.length = 8
    r.extended = True
    assert (r.id, r.length, r.extended) == (0x123, 8, True)
    with pytest.raises(ValueError, match=r"^RemoteTransmissionRequests limited to 8 bytes$"):
        r.length = 9
    assert r.length == 8


def test_rtr_is_not_a_message():
    r = canio.RemoteTransmissionRequest(0x10, 1)
    assert not isinstance(r, canio.Message)


# --------------------------------------------------------------------------- CAN constructor


def test_can_both_pins_none_raises():
    with pytest.raises(ValueError, match=r"^tx and rx cannot both be None$"):
        canio.CAN()
    with pytest.raises(ValueError, match=r"^tx and rx cannot both be None$"):
        canio.CAN(None, None)
    with pytest.raises(ValueError, match=r"^tx and rx cannot both be None$"):
        canio.CAN(tx=None, rx=None, baudrate=500000, loopback=True)


def test_can_positional_arguments(make_can):
    tx, rx = object(), object()
    can = make_can(tx, rx, 500000, True, False, True)
    assert can.baudrate == 500000
    assert can.loopback is True
    assert can.silent is False
    assert can.auto_restart is True


def test_can_keyword_arguments(make_can):
    can = make_can(tx="D5", rx="D6", baudrate=125000, loopback=False, silent=True, auto_restart=False)
    assert can.baudrate == 125000
    assert can.loopback is False
    assert can.silent is True
    assert can.auto_restart is False


def test_can_defaults(make_can):
    can = make_can(object(), object())
    assert can.baudrate == 250000
    assert can.loopback is False
    assert can.silent is False
    assert can.auto_restart is False
    assert can.state == canio.BusState.ERROR_ACTIVE
    assert can.transmit_error_count == 0
    assert can.receive_error_count == 0


def test_can_one_pin_is_enough(make_can):
    assert make_can(object(), None).baudrate == 250000
    assert make_can(None, object()).baudrate == 250000


def test_canio_script_runs_unchanged_with_only_pins(monkeypatch, channel):
    """A canio script passes only pins; on a PC it still gets a working bus."""
    monkeypatch.setenv("CANX_CHANNEL", channel)

    class board:  # stand-in for CircuitPython's board module
        CAN_TX = object()
        CAN_RX = object()

    can = canio.CAN(rx=board.CAN_RX, tx=board.CAN_TX, baudrate=250_000, auto_restart=True, loopback=True)
    try:
        listener = can.listen(matches=[canio.Match(0x6A5)], timeout=2)
        can.send(canio.Message(id=0x6A5, data=b"adafruit"))
        got = listener.receive()
        assert got is not None
        assert (got.id, got.data) == (0x6A5, b"adafruit")
    finally:
        can.deinit()


@pytest.mark.parametrize("attr", ["loopback", "silent", "baudrate", "state", "transmit_error_count", "receive_error_count"])
def test_can_readonly_properties(make_can, attr):
    can = make_can(object(), object())
    before = getattr(can, attr)
    with pytest.raises(AttributeError):
        setattr(can, attr, before)


def test_can_auto_restart_is_writable(make_can):
    can = make_can(object(), object())
    can.auto_restart = True
    assert can.auto_restart is True
    can.auto_restart = False
    assert can.auto_restart is False


def test_can_error_counts_are_ints_in_range(make_can):
    can = make_can(object(), object())
    for c in (can.transmit_error_count, can.receive_error_count):
        assert isinstance(c, int)
        assert 0 <= c <= 255
    can.inject_error_state(canio.BusState.ERROR_PASSIVE, tec=255, rec=200)
    assert can.transmit_error_count == 255
    assert can.receive_error_count == 200


@pytest.mark.parametrize(
    "bad,tname",
    [(5, "int"), ("hi", "str"), (b"\x01", "bytes"), (None, "NoneType"), (canio.Match(1), "Match")],
)
def test_can_send_wrong_type(make_can, bad, tname):
    can = make_can(object(), object())
    with pytest.raises(TypeError) as ei:
        can.send(bad)
    assert str(ei.value) == f"message must be of type Message or RemoteTransmissionRequest, not {tname}"


def test_can_send_wrong_type_exact_text_for_int(make_can):
    can = make_can(object(), object())
    with pytest.raises(TypeError) as ei:
        can.send(1)
    assert str(ei.value) == "message must be of type Message or RemoteTransmissionRequest, not int"


def test_can_deinit_is_idempotent(make_can):
    can = make_can(object(), object())
    can.deinit()
    can.deinit()
    with pytest.raises(ValueError):
        can.state  # noqa: B018


CAN_MEMBERS_AFTER_DEINIT = {
    "send": lambda c: c.send(canio.Message(1, b"")),
    "send-rtr": lambda c: c.send(canio.RemoteTransmissionRequest(1, 0)),
    "listen": lambda c: c.listen(),
    "listen-matches": lambda c: c.listen([canio.Match(1)], timeout=0.1),
    "restart": lambda c: c.restart(),
    "enter": lambda c: c.__enter__(),
    "with": lambda c: _with(c),
    "auto_restart": lambda c: c.auto_restart,
    "set-auto_restart": lambda c: setattr(c, "auto_restart", True),
    "baudrate": lambda c: c.baudrate,
    "loopback": lambda c: c.loopback,
    "silent": lambda c: c.silent,
    "state": lambda c: c.state,
    "transmit_error_count": lambda c: c.transmit_error_count,
    "receive_error_count": lambda c: c.receive_error_count,
}


def _with(c):
    with c:
        pass


@pytest.mark.parametrize("member", list(CAN_MEMBERS_AFTER_DEINIT))
def test_can_member_after_deinit_raises(make_can, member):
    can = make_can(object(), object())
    can.deinit()
    with pytest.raises(ValueError) as ei:
        CAN_MEMBERS_AFTER_DEINIT[member](can)
    assert str(ei.value) == DEINIT_MSG


def test_can_context_manager(channel):
    with canio.CAN(object(), object(), channel=channel, loopback=True) as can:
        assert isinstance(can, canio.CAN)
        assert can.state == canio.BusState.ERROR_ACTIVE
    with pytest.raises(ValueError, match="deinitialized"):
        can.send(canio.Message(1, b""))


def test_can_context_manager_deinits_on_exception(channel):
    with pytest.raises(RuntimeError, match="boom"):
        with canio.CAN(object(), object(), channel=channel) as can:
            raise RuntimeError("boom")
    with pytest.raises(ValueError) as ei:
        can.state  # noqa: B018
    assert str(ei.value) == DEINIT_MSG


LISTENER_MEMBERS = {
    "receive": lambda l: l.receive(),
    "in_waiting": lambda l: l.in_waiting(),
    "timeout": lambda l: l.timeout,
    "set-timeout": lambda l: setattr(l, "timeout", 1.0),
    "iter": lambda l: iter(l),
    "for": lambda l: [m for m in l],
    "enter": lambda l: l.__enter__(),
}


@pytest.mark.parametrize("member", list(LISTENER_MEMBERS))
def test_listener_of_deinitialized_can_is_unusable(make_can, member):
    can = make_can(object(), object())
    listener = can.listen(timeout=0.2)
    can.deinit()
    with pytest.raises(ValueError) as ei:
        LISTENER_MEMBERS[member](listener)
    assert str(ei.value) == DEINIT_MSG


@pytest.mark.parametrize("member", list(LISTENER_MEMBERS))
def test_listener_member_after_its_deinit_raises(make_can, member):
    can = make_can(object(), object())
    listener = can.listen(timeout=0.2)
    listener.deinit()
    listener.deinit()  # idempotent
    with pytest.raises(ValueError) as ei:
        LISTENER_MEMBERS[member](listener)
    assert str(ei.value) == DEINIT_MSG
    # the CAN itself is unaffected
    assert can.state == canio.BusState.ERROR_ACTIVE


def test_listener_context_manager(make_can):
    a = make_can(object(), object())
    b = make_can(object(), object())
    with b.listen(timeout=1) as listener:
        a.send(canio.Message(0x55, b"in"))
        got = listener.receive()
        assert got is not None and got.data == b"in"
    with pytest.raises(ValueError) as ei:
        listener.receive()
    assert str(ei.value) == DEINIT_MSG


def test_blocked_receive_ends_when_can_is_deinitialized(make_can, threads):
    can = make_can(object(), object())
    listener = can.listen(timeout=5)
    result = {}

    def rx():
        t0 = time.monotonic()
        try:
            result["value"] = listener.receive()
        except ValueError as e:
            result["error"] = str(e)
        result["elapsed"] = time.monotonic() - t0

    threads.start(rx)
    time.sleep(0.2)
    can.deinit()
    threads.join()
    assert result["elapsed"] < 0.2 + 1.0
    assert result.get("error") == DEINIT_MSG


# --------------------------------------------------------------------------- Listener


def test_listener_not_constructible():
    with pytest.raises(TypeError) as ei:
        canio.Listener()
    assert str(ei.value) == "can't create 'Listener' instances"


def test_listener_default_timeout_is_10(make_can):
    listener = make_can(object(), object()).listen()
    assert listener.timeout == 10


def test_listener_timeout_read_write(make_can):
    listener = make_can(object(), object()).listen(timeout=0.25)
    assert listener.timeout == pytest.approx(0.25)
    listener.timeout = 1.5
    assert listener.timeout == pytest.approx(1.5)
    assert isinstance(listener.timeout, float)
    listener.timeout = 2
    assert listener.timeout == 2


def test_listen_timeout_is_keyword_only(make_can):
    can = make_can(object(), object())
    with pytest.raises(TypeError):
        can.listen(None, 1.0)


def test_listener_returned_type(make_can):
    listener = make_can(object(), object()).listen(timeout=0.1)
    assert isinstance(listener, canio.Listener)


def test_receive_returns_at_once_when_queued(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=5)
    a.send(canio.Message(0x10, b"q"))
    assert wait_for(lambda: listener.in_waiting() == 1)
    t0 = time.monotonic()
    got = listener.receive()
    assert time.monotonic() - t0 < 0.1 * TIMEOUT_SCALE
    assert isinstance(got, canio.Message)
    assert (got.id, got.data) == (0x10, b"q")


def test_receive_returns_when_frame_arrives_during_wait(make_can, threads):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=5)

    def later():
        time.sleep(0.2)
        a.send(canio.Message(0x11, b"late"))

    threads.start(later)
    t0 = time.monotonic()
    got = listener.receive()
    elapsed = time.monotonic() - t0
    threads.join()
    assert got is not None and got.data == b"late"
    assert 0.15 <= elapsed < 0.2 + MARGIN


@pytest.mark.parametrize("timeout", [0.0, 0.3])
def test_receive_none_after_timeout(make_can, timeout):
    listener = make_can(object(), object()).listen(timeout=timeout)
    t0 = time.monotonic()
    got = listener.receive()
    elapsed = time.monotonic() - t0
    assert got is None
    assert elapsed >= timeout - 0.02
    assert elapsed < timeout + MARGIN


def test_receive_respects_changed_timeout(make_can):
    listener = make_can(object(), object()).listen(timeout=5)
    listener.timeout = 0.15
    t0 = time.monotonic()
    assert listener.receive() is None
    elapsed = time.monotonic() - t0
    assert 0.13 <= elapsed < 0.15 + MARGIN


def test_in_waiting_is_a_method_counting_queued_frames(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=1)
    assert callable(listener.in_waiting)
    assert listener.in_waiting() == 0
    for i in range(3):
        a.send(canio.Message(0x20 + i, bytes([i])))
    assert wait_for(lambda: listener.in_waiting() == 3)
    time.sleep(0.02)
    assert listener.in_waiting() == 3
    listener.receive()
    assert listener.in_waiting() == 2


def test_iteration_yields_frames_then_stops_after_timeout(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=0.2)
    sent = [canio.Message(0x30, bytes([i])) for i in range(3)]
    for m in sent:
        a.send(m)
    assert wait_for(lambda: listener.in_waiting() == 3)
    t0 = time.monotonic()
    got = [key(m) for m in listener]
    elapsed = time.monotonic() - t0
    assert got == [key(m) for m in sent]
    assert 0.18 <= elapsed < 0.2 + MARGIN


def test_next_raises_stop_iteration_after_timeout(make_can):
    listener = make_can(object(), object()).listen(timeout=0.1)
    it = iter(listener)
    t0 = time.monotonic()
    with pytest.raises(StopIteration):
        next(it)
    assert time.monotonic() - t0 >= 0.08


def test_iterating_again_blocks_again_and_gets_new_frames(make_can, threads):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=0.3)
    a.send(canio.Message(0x40, b"1"))
    assert [m.data for m in listener] == [b"1"]
    assert [m.data for m in listener] == []  # blocks ~timeout again, nothing new

    def later():
        time.sleep(0.1)
        a.send(canio.Message(0x40, b"2"))
        a.send(canio.Message(0x40, b"3"))

    threads.start(later)
    t0 = time.monotonic()
    second = [m.data for m in listener]
    elapsed = time.monotonic() - t0
    threads.join()
    assert second == [b"2", b"3"]
    assert elapsed >= 0.1 + 0.3 - 0.05


def test_for_loop_canio_style(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(matches=[canio.Match(0x408)], timeout=0.1)
    for i in range(5):
        a.send(canio.Message(id=0x408, data=struct.pack("<I", i)))
    counts = []
    for message in listener:
        counts.append(struct.unpack("<I", message.data)[0])
    assert counts == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("timeout", [float("inf"), 1e300], ids=["inf", "huge"])
def test_receive_with_unbounded_timeout_waits_for_frame(make_can, threads, timeout):
    """timeout is any float; a very large (or infinite) one just waits."""
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=timeout)
    assert listener.timeout == timeout

    def later():
        time.sleep(0.2)
        a.send(canio.Message(0x12, b"inf"))

    threads.start(later)
    got = listener.receive()
    threads.join()
    assert got is not None and got.data == b"inf"


def test_set_unbounded_timeout_then_iterate(make_can, threads):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=1)
    listener.timeout = float("inf")
    threads.start(lambda: (time.sleep(0.1), a.send(canio.Message(0x13, b"it"))))
    got = next(iter(listener))
    threads.join()
    assert got.data == b"it"


def test_listener_deinit_leaves_other_listeners_working(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    l1, l2 = b.listen(timeout=1), b.listen(timeout=1)
    l1.deinit()
    a.send(canio.Message(0x14, b"still"))
    got = l2.receive()
    assert got is not None and got.data == b"still"


def test_deinit_of_one_node_leaves_others_working(make_can):
    a, b, c = (make_can(object(), object()) for _ in range(3))
    lb = b.listen(timeout=1)
    c.listen(timeout=1)
    c.deinit()
    a.send(canio.Message(0x15, b"alive"))
    got = lb.receive()
    assert got is not None and got.data == b"alive"
    b.send(canio.Message(0x16, b"back"))  # and b can still send


# --------------------------------------------------------------------------- matches


def test_listen_matches_list_and_tuple(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    l_list = b.listen(matches=[canio.Match(0x1)], timeout=1)
    l_tuple = b.listen(matches=(canio.Match(0x1),), timeout=1)
    l_pos = b.listen([canio.Match(0x1)], timeout=1)
    a.send(canio.Message(0x1, b"x"))
    for listener in (l_list, l_tuple, l_pos):
        got = listener.receive()
        assert got is not None and got.id == 0x1


@pytest.mark.parametrize(
    "bad",
    [
        lambda: canio.Match(1),
        lambda: {canio.Match(1)},
        lambda: (m for m in [canio.Match(1)]),
        lambda: "abc",
        lambda: 5,
        lambda: [5],
        lambda: [canio.Match(1), "x"],
        lambda: (None,),
    ],
    ids=["bare-Match", "set", "generator", "str", "int", "list-of-int", "list-with-str", "tuple-of-None"],
)
def test_listen_matches_type_error(make_can, bad):
    can = make_can(object(), object())
    with pytest.raises(TypeError):
        can.listen(bad(), timeout=0.1)


def test_listen_many_matches_no_hardware_limit(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen([canio.Match(i) for i in range(0, 0x7FF, 7)], timeout=1)
    a.send(canio.Message(7 * 100, b"hit"))
    got = listener.receive()
    assert got is not None and got.id == 700


def _canio_matches(match, frame_key):
    _, fid, fext, _ = frame_key
    return fext == match.extended and (fid & match.mask) == (match.id & match.mask)


FILTER_FRAMES = [
    canio.Message(0x408, b"a"),
    canio.Message(0x409, b"b"),
    canio.Message(0x4FF, b"c"),
    canio.Message(0x3FF, b"d"),
    canio.Message(0x000, b"e"),
    canio.Message(0x7FF, b"f"),
    canio.Message(0x408, b"g", extended=True),
    canio.Message(0x12345678, b"h", extended=True),
    canio.Message(0x12345600, b"i", extended=True),
    canio.Message(0x02345678, b"j", extended=True),
    canio.RemoteTransmissionRequest(0x408, 2),
    canio.RemoteTransmissionRequest(0x409, 0),
    canio.RemoteTransmissionRequest(0x12345678, 8, extended=True),
    canio.Message(0x408, b"k"),
]

FILTER_CASES = {
    "exact-std": [canio.Match(0x408)],
    "mask-std": [canio.Match(0x400, mask=0x700)],
    "mask-zero-std": [canio.Match(0x123, mask=0)],
    "exact-ext": [canio.Match(0x12345678, extended=True)],
    "mask-ext": [canio.Match(0x12345600, mask=0x1FFFFF00, extended=True)],
    "mask-zero-ext": [canio.Match(0, mask=0, extended=True)],
    "ext-0x408-not-std": [canio.Match(0x408, extended=True)],
    "two": [canio.Match(0x409), canio.Match(0x02345678, extended=True)],
    "low-bit": [canio.Match(0x1, mask=0x1)],
}


def _send_all_and_sync(sender, receiver_can, frames):
    """Sends ``frames``; returns once a catch-all listener on the receiver saw them all."""
    sync = receiver_can.listen(timeout=2)
    for f in frames:
        sender.send(f)
    assert wait_for(lambda: sync.in_waiting() == len(frames))
    return [key(f) for f in drain(sync, 0.0)]


def test_filtering_semantics_several_listeners_on_one_can(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listeners = {name: b.listen(ms, timeout=1) for name, ms in FILTER_CASES.items()}
    everything_none = b.listen(None, timeout=1)
    everything_empty = b.listen([], timeout=1)
    everything_empty_tuple = b.listen((), timeout=1)
    seen = _send_all_and_sync(a, b, FILTER_FRAMES)
    sent = [key(f) for f in FILTER_FRAMES]
    assert seen == sent
    for name, ms in FILTER_CASES.items():
        expected = [k for k in sent if any(_canio_matches(m, k) for m in ms)]
        got = [key(f) for f in drain(listeners[name])]
        assert got == expected, name
    for listener in (everything_none, everything_empty, everything_empty_tuple):
        assert [key(f) for f in drain(listener)] == sent


def test_filter_expectations_are_not_trivial():
    """Guards the table above: each case accepts something and rejects something."""
    sent = [key(f) for f in FILTER_FRAMES]
    for name, ms in FILTER_CASES.items():
        hits = [k for k in sent if any(_canio_matches(m, k) for m in ms)]
        assert 0 < len(hits) < len(sent), name


def test_rtr_matches_regardless(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen([canio.Match(0x408)], timeout=1)
    a.send(canio.RemoteTransmissionRequest(0x408, 3))
    a.send(canio.Message(0x408, b"d"))
    first, second = listener.receive(), listener.receive()
    assert isinstance(first, canio.RemoteTransmissionRequest) and first.length == 3
    assert isinstance(second, canio.Message) and second.data == b"d"


def test_standard_match_rejects_extended_frame_with_same_id(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    std = b.listen([canio.Match(0x123)], timeout=0.1)
    ext = b.listen([canio.Match(0x123, extended=True)], timeout=0.1)
    a.send(canio.Message(0x123, b"E", extended=True))
    a.send(canio.Message(0x123, b"S"))
    s, e = std.receive(), ext.receive()
    assert (s.data, s.extended) == (b"S", False)
    assert (e.data, e.extended) == (b"E", True)
    assert std.receive() is None
    assert ext.receive() is None


# --------------------------------------------------------------------------- delivery


def test_message_round_trip_between_two_nodes(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=1)
    assert a.send(canio.Message(0x408, b"\x00\x01\x02\x03\x04\x05\x06\x07")) is None
    got = listener.receive()
    assert isinstance(got, canio.Message)
    assert (got.id, got.data, got.extended) == (0x408, b"\x00\x01\x02\x03\x04\x05\x06\x07", False)
    assert type(got.data) is bytes


def test_empty_message_round_trip(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=1)
    a.send(canio.Message(0x1, b""))
    got = listener.receive()
    assert got is not None and got.data == b""


def test_extended_id_round_trip(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=1)
    for fid in (0x1FFFFFFF, 0x0, 0x800, 0x1ABCDEF0):
        a.send(canio.Message(fid, b"x", extended=True))
        got = listener.receive()
        assert got is not None
        assert (got.id, got.extended) == (fid, True)


def test_rtr_round_trip(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=1)
    a.send(canio.RemoteTransmissionRequest(0x409, 5))
    a.send(canio.RemoteTransmissionRequest(0x1ABCDEF0, 0, extended=True))
    r1, r2 = listener.receive(), listener.receive()
    assert isinstance(r1, canio.RemoteTransmissionRequest)
    assert (r1.id, r1.length, r1.extended) == (0x409, 5, False)
    assert isinstance(r2, canio.RemoteTransmissionRequest)
    assert (r2.id, r2.length, r2.extended) == (0x1ABCDEF0, 0, True)


def test_message_can_be_mutated_and_resent(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=1)
    m = canio.Message(0x100, b"a")
    a.send(m)
    m.data = b"b"
    m.id = 0x101
    a.send(m)
    got = [listener.receive(), listener.receive()]
    assert [(g.id, g.data) for g in got] == [(0x100, b"a"), (0x101, b"b")]


def test_order_preserved_10000_frames(make_can):
    a, b = make_can(object(), object()), make_can(object(), object())
    listener = b.listen(timeout=2)
    n = 10_000
    for i in range(n):
        a.send(canio.Message(i & 0x7FF, struct.pack("<I", i)))
    got = []
    for _ in range(n):
        m = listener.receive()
        assert m is not None, f"frame {len(got)} lost"
        got.append(struct.unpack("<I", m.data)[0])
    assert got == list(range(n))
    assert listener.in_waiting() == 0


def test_frames_from_two_senders(make_can, threads):
    a, b, c = make_can(object(), object()), make_can(object(), object()), make_can(object(), object())
    listener = c.listen(timeout=2)
    n = 2000

    def send(can, fid):
        for i in range(n):
            can.send(canio.Message(fid, struct.pack("<I", i)))

    threads.start(send, a, 0x100)
    threads.start(send, b, 0x200)
    per = {0x100: [], 0x200: []}
    for _ in range(2 * n):
        m = listener.receive()
        assert m is not None
        per[m.id].append(struct.unpack("<I", m.data)[0])
    threads.join()
    assert per[0x100] == list(range(n))
    assert per[0x200] == list(range(n))


def test_every_node_receives_a_frame(make_can):
    a = make_can(object(), object())
    others = [make_can(object(), object()) for _ in range(3)]
    listeners = [o.listen(timeout=1) for o in others]
    a.send(canio.Message(0x77, b"all"))
    for listener in listeners:
        got = listener.receive()
        assert got is not None and got.data == b"all"


def test_loopback_false_does_not_receive_own(make_can):
    a, b = make_can(object(), object(), loopback=False), make_can(object(), object())
    own = a.listen(timeout=0.2)
    other = b.listen(timeout=1)
    a.send(canio.Message(0x55, b"x"))
    assert other.receive() is not None
    assert own.receive() is None


def test_loopback_true_receives_own_and_others(make_can):
    a, b = make_can(object(), object(), loopback=True), make_can(object(), object())
    own = a.listen(timeout=1)
    other = b.listen(timeout=1)
    a.send(canio.Message(0x55, b"mine"))
    b.send(canio.Message(0x56, b"theirs"))
    got = [own.receive(), own.receive()]
    assert [(g.id, g.data) for g in got] == [(0x55, b"mine"), (0x56, b"theirs")]
    assert other.receive().data == b"mine"
    own.timeout = 0.1
    assert own.receive() is None


def test_loopback_alone_on_channel(make_can):
    a = make_can(object(), object(), loopback=True)
    listener = a.listen(timeout=1)
    a.send(canio.Message(0x3, b"solo"))
    got = listener.receive()
    assert got is not None and (got.id, got.data) == (0x3, b"solo")


def test_channels_are_isolated(make_can, channel):
    a = make_can(object(), object())
    b = make_can(object(), object())
    other = canio.CAN(object(), object(), channel=channel + "-other")
    try:
        l_other = other.listen(timeout=0.15)
        l_b = b.listen(timeout=1)
        a.send(canio.Message(0x99, b"here"))
        assert l_b.receive().data == b"here"
        assert l_other.receive() is None
    finally:
        other.deinit()


# --------------------------------------------------------------------------- Ctrl-C


class _Interrupted(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 (Windows)")
def test_blocking_receive_interrupted_by_signal(make_can, threads):
    listener = make_can(object(), object()).listen(timeout=30)

    def handler(signum, frame):
        raise _Interrupted()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(_Interrupted):
            listener.receive()
        elapsed = time.monotonic() - t0
        timer.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert 0.25 <= elapsed < 0.3 + 0.5


def test_blocking_iteration_interrupted_by_keyboard_interrupt(make_can):
    listener = make_can(object(), object()).listen(timeout=30)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in listener:
                pass
    finally:
        timer.join()
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 0.3 + 0.5
    # the listener is still usable afterwards
    listener.timeout = 0.0
    assert listener.receive() is None


# --------------------------------------------------------------------------- Adafruit guide


def test_adafruit_sender_and_listener_with_ack(make_can, threads):
    """The Learn guide's sender-ack / listener-ack pair on 0x408/0x409, in two
    threads with two CAN objects, exchanging 20 counted messages."""
    n = 20
    sender_can = make_can(object(), object(), baudrate=250_000, auto_restart=True)
    listener_can = make_can(object(), object(), baudrate=250_000, auto_restart=True)
    ready = threading.Event()
    received = []
    acked = []

    def listener_ack():
        listener = listener_can.listen(matches=[canio.Match(0x408)], timeout=0.9)
        ready.set()
        while len(received) < n:
            message = listener.receive()
            if message is None:
                raise AssertionError("listener: no message within timeout")
            assert message.id == 0x408
            count, now_ms = struct.unpack("<II", message.data)
            received.append((count, now_ms))
            listener_can.send(canio.Message(id=0x409, data=struct.pack("<I", count)))

    def sender_ack():
        listener = sender_can.listen(matches=[canio.Match(0x409)], timeout=0.9)
        assert ready.wait(5)
        for count in range(n):
            now_ms = (time.monotonic_ns() // 1_000_000) & 0xFFFFFFFF
            message = canio.Message(id=0x408, data=struct.pack("<II", count, now_ms))
            sender_can.send(message)
            ack = listener.receive()
            if ack is None:
                raise AssertionError(f"sender: no ACK for {count}")
            assert ack.id == 0x409
            acked.append(struct.unpack("<I", ack.data)[0])

    threads.start(listener_ack)
    threads.start(sender_ack)
    threads.join(15)
    assert [c for c, _ in received] == list(range(n))
    assert acked == list(range(n))
    stamps = [ms for _, ms in received]
    assert stamps == sorted(stamps) or max(stamps) - min(stamps) > 2**31  # wraparound only
