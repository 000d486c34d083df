"""canx extensions of the canio API, tested from the spec on the virtual bus:
channels, stats, error-state injection (BUS_OFF, restart, auto_restart),
silent mode, error frames, CAN FD, listener queues (queue_size, dropped,
drop_oldest), receive_many, timestamps, is_own, dlc, equality and repr, the
exception hierarchy. None of them may change canio behaviour.
"""

from __future__ import annotations

import struct
import threading
import time

import pytest
from canio_helpers import DEINIT_MSG, channel, make_can, wait_for  # noqa: F401 (fixtures)

import canx
import canx.errors



# --------------------------------------------------------------------------- helpers





def seq(i):
    return struct.pack("<I", i)


def unseq(m):
    return struct.unpack("<I", m.data)[0]


# --------------------------------------------------------------------------- exceptions


@pytest.mark.parametrize(
    "name,bases",
    [
        ("CanxError", (Exception,)),
        ("ChannelError", (canx.errors.CanxError, ValueError)),
        ("InterfaceError", (canx.errors.CanxError, OSError)),
        ("InterfaceDownError", (canx.errors.InterfaceError, OSError)),
        ("BusOffError", (canx.errors.CanxError, OSError)),
        ("SilentModeError", (canx.errors.CanxError, RuntimeError)),
        ("SendTimeoutError", (canx.errors.CanxError, TimeoutError)),
        ("UnsupportedError", (canx.errors.CanxError, ValueError)),
    ],
)
def test_error_hierarchy(name, bases):
    cls = getattr(canx.errors, name)
    assert isinstance(cls, type) and issubclass(cls, BaseException)
    for b in bases:
        assert issubclass(cls, b), (name, b)
    # re-exported at top level as the same object
    assert getattr(canx, name) is cls


def test_error_frame_class_exported():
    assert isinstance(canx.ErrorFrame, type)
    assert canx.ErrorFrame.__name__ == "ErrorFrame"


# --------------------------------------------------------------------------- CAN(channel=...)


def test_channel_property(make_can, channel):
    can = make_can()
    assert can.channel == channel


def test_channel_without_pins_is_allowed(make_can):
    can = make_can(loopback=True)
    listener = can.listen(timeout=1)
    can.send(canx.Message(0x1, b"x"))
    assert listener.receive().data == b"x"


def test_channel_with_pins_and_positional_args(channel):
    can = canx.CAN(object(), object(), 500_000, True, channel=channel)
    try:
        assert can.channel == channel
        assert (can.baudrate, can.loopback) == (500_000, True)
    finally:
        can.deinit()


def test_a_str_tx_is_the_channel():
    """CAN("can0") opens that channel (python-can's first argument), never
    "virtual:default" behind the caller's back: a board pin is never a str."""
    ch = "virtual:str-tx"
    with canx.CAN("virtual:str-tx", loopback=True) as a, canx.CAN(channel=ch) as b:
        assert a.channel == ch
        listener = b.listen(timeout=1)
        a.send(canx.Message(0x123, b"pin"))
        got = listener.receive()
        assert got is not None and got.data == b"pin"


def test_a_str_rx_without_a_channel_is_refused():
    with pytest.raises(ValueError, match="rx is a board pin"):
        canx.CAN(object(), "vcan0")


def test_channel_keyword_only(channel):
    with pytest.raises(TypeError):
        canx.CAN(None, None, 250000, False, False, False, channel)


def test_explicit_none_pins_with_channel(channel):
    can = canx.CAN(None, None, channel=channel)
    try:
        assert can.channel == channel
        assert can.state == canx.BusState.ERROR_ACTIVE
    finally:
        can.deinit()


def test_interface_alone_opens_its_default_channel():
    """canx: `interface="virtual"` without pins or channel names a bus
    (virtual:default); only a call with nothing at all is canio's error."""
    with canx.CAN(interface="virtual") as can:
        assert can.channel == "virtual:default"
    with pytest.raises(ValueError, match=r"^tx and rx cannot both be None$"):
        canx.CAN()


@pytest.mark.parametrize("bad", ["nosuchscheme:thing", "virtual:"])
def test_bad_channel_is_channel_error(bad):
    with pytest.raises(canx.ChannelError) as ei:
        canx.CAN(channel=bad)
    assert isinstance(ei.value, ValueError)


def test_channel_property_after_deinit_raises(make_can):
    can = make_can()
    can.deinit()
    with pytest.raises(ValueError) as ei:
        can.channel  # noqa: B018
    assert str(ei.value) == DEINIT_MSG


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.stats(),
        lambda c: c.inject_error_state(canx.BusState.BUS_OFF),
    ],
    ids=["stats", "inject_error_state"],
)
def test_extension_members_after_deinit_raise(make_can, call):
    can = make_can()
    can.deinit()
    with pytest.raises(ValueError) as ei:
        call(can)
    assert str(ei.value) == DEINIT_MSG


def test_send_timeout_parameter_accepted(make_can):
    a = make_can(send_timeout=0.25)
    b = make_can()
    listener = b.listen(timeout=1)
    a.send(canx.Message(0x5, b"t"))
    assert listener.receive().data == b"t"


def test_send_timeout_unbounded(make_can):
    a, b = make_can(send_timeout=float("inf")), make_can()
    listener = b.listen(timeout=1)
    a.send(canx.Message(0x5, b"inf"))
    assert listener.receive().data == b"inf"


def test_nodes_on_the_same_channel_are_separate(make_can):
    """Each CAN on the same virtual channel is a node; a frame goes to all others."""
    a, b, c = make_can(), make_can(), make_can()
    la, lb, lc = (x.listen(timeout=0.15) for x in (a, b, c))
    a.send(canx.Message(0xA, b"a"))
    assert lb.receive().data == b"a"
    assert lc.receive().data == b"a"
    assert la.receive() is None


# --------------------------------------------------------------------------- stats


def processed(can, n):
    """Waits until the receive thread of ``can`` has taken ``n`` error frames
    (the injected ones) off its backend, so what they change is settled."""
    return wait_for(lambda: can.stats()["error_frames"] >= n)


STATS_KEYS = {"received", "sent", "backend_dropped", "listener_dropped", "echo_dropped", "malformed", "error_frames",
              "receive_thread_stopped"}


def test_stats_fresh(make_can):
    s = make_can().stats()
    assert isinstance(s, dict)
    assert set(s) == STATS_KEYS
    assert all(v == 0 for v in s.values()), s


def test_stats_count_sent_and_received(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1)
    n = 37
    for i in range(n):
        a.send(canx.Message(0x10, seq(i)))
    for i in range(n):
        assert unseq(listener.receive()) == i
    assert wait_for(lambda: b.stats()["received"] == n)
    sa, sb = a.stats(), b.stats()
    assert sa["sent"] == n
    assert sa["received"] == 0
    assert sb["sent"] == 0
    assert sb["received"] == n
    for s in (sa, sb):
        assert s["backend_dropped"] == 0
        assert s["listener_dropped"] == 0
        assert s["error_frames"] == 0


def test_stats_received_counts_own_frames_with_loopback(make_can):
    a = make_can(loopback=True)
    listener = a.listen(timeout=1)
    for i in range(5):
        a.send(canx.Message(0x10, seq(i)))
    assert [unseq(listener.receive()) for _ in range(5)] == list(range(5))
    assert wait_for(lambda: a.stats()["received"] == 5)
    assert a.stats()["sent"] == 5


def test_stats_listener_dropped_does_not_go_down_when_listener_closes(make_can):
    """stats() are counters: frames once dropped stay counted."""
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1, queue_size=1)
    for i in range(4):
        a.send(canx.Message(0x1, seq(i)))
    assert wait_for(lambda: listener.dropped == 3)
    assert b.stats()["listener_dropped"] == 3
    listener.deinit()
    assert b.stats()["listener_dropped"] == 3


def test_stats_failed_sends_are_not_counted(make_can):
    a = make_can(silent=True)
    with pytest.raises(canx.SilentModeError):
        a.send(canx.Message(0x1, b""))
    with pytest.raises(TypeError):
        a.send(1)
    assert a.stats()["sent"] == 0


# --------------------------------------------------------------------------- silent


def test_silent_send_raises(make_can):
    a = make_can(silent=True)
    assert a.silent is True
    with pytest.raises(canx.SilentModeError) as ei:
        a.send(canx.Message(0x1, b"x"))
    assert isinstance(ei.value, RuntimeError)
    with pytest.raises(canx.SilentModeError):
        a.send(canx.RemoteTransmissionRequest(0x1, 1))


def test_silent_node_still_receives(make_can):
    a, quiet = make_can(), make_can(silent=True)
    listener = quiet.listen(timeout=1)
    a.send(canx.Message(0x42, b"hear"))
    got = listener.receive()
    assert got is not None and got.data == b"hear"


def test_silent_failed_send_reaches_nobody(make_can):
    quiet, b = make_can(silent=True, loopback=True), make_can()
    lb, lq = b.listen(timeout=0.15), quiet.listen(timeout=0.05)
    with pytest.raises(canx.SilentModeError):
        quiet.send(canx.Message(0x1, b"x"))
    assert lb.receive() is None
    assert lq.receive() is None


# --------------------------------------------------------------------------- error states


@pytest.mark.parametrize(
    "state,tec,rec",
    [
        ("ERROR_WARNING", 100, 5),
        ("ERROR_WARNING", 3, 97),
        ("ERROR_PASSIVE", 130, 0),
        ("ERROR_PASSIVE", 0, 128),
        ("BUS_OFF", 255, 7),
    ],
)
def test_inject_error_state_readable(make_can, state, tec, rec):
    can = make_can()
    st = getattr(canx.BusState, state)
    can.inject_error_state(st, tec=tec, rec=rec)
    assert can.state == st
    assert can.transmit_error_count == tec
    assert can.receive_error_count == rec
    # still so a little later (after the receive thread saw the error frame)
    assert processed(can, 1)
    assert (can.state, can.transmit_error_count, can.receive_error_count) == (st, tec, rec)


def test_inject_error_state_default_counters_fit_thresholds(make_can):
    """Without tec/rec the counters agree with the state (ERROR_WARNING > 96,
    ERROR_PASSIVE > 127, ERROR_ACTIVE <= 96)."""
    can = make_can()
    S = canx.BusState
    can.inject_error_state(S.ERROR_WARNING)
    worst = max(can.transmit_error_count, can.receive_error_count)
    assert 96 < worst <= 127
    can.inject_error_state(S.ERROR_PASSIVE)
    assert max(can.transmit_error_count, can.receive_error_count) > 127
    can.inject_error_state(S.ERROR_ACTIVE)
    assert max(can.transmit_error_count, can.receive_error_count) <= 96
    assert can.state == S.ERROR_ACTIVE


def test_inject_error_state_does_not_affect_other_nodes(make_can):
    a, b = make_can(), make_can()
    a.inject_error_state(canx.BusState.ERROR_PASSIVE, tec=140, rec=1)
    assert processed(a, 1)
    assert b.state == canx.BusState.ERROR_ACTIVE
    assert (b.transmit_error_count, b.receive_error_count) == (0, 0)


def test_inject_back_to_error_active(make_can):
    can = make_can()
    can.inject_error_state(canx.BusState.ERROR_WARNING, tec=100, rec=0)
    assert processed(can, 1)
    can.inject_error_state(canx.BusState.ERROR_ACTIVE, tec=10, rec=2)
    assert processed(can, 2)
    assert can.state == canx.BusState.ERROR_ACTIVE
    assert (can.transmit_error_count, can.receive_error_count) == (10, 2)


def test_error_passive_can_still_send(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1)
    a.inject_error_state(canx.BusState.ERROR_PASSIVE, tec=130)
    a.send(canx.Message(0x1, b"p"))
    assert listener.receive().data == b"p"


def test_bus_off_send_raises(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=0.15)
    a.inject_error_state(canx.BusState.BUS_OFF)
    assert a.state == canx.BusState.BUS_OFF
    with pytest.raises(canx.BusOffError) as ei:
        a.send(canx.Message(0x1, b"x"))
    assert isinstance(ei.value, OSError)
    assert listener.receive() is None


def test_bus_off_then_restart_recovers(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1)
    a.inject_error_state(canx.BusState.BUS_OFF, tec=255, rec=3)
    with pytest.raises(canx.BusOffError):
        a.send(canx.Message(0x1, b"x"))
    assert processed(a, 1)
    a.restart()
    assert a.state == canx.BusState.ERROR_ACTIVE
    assert processed(a, 1)
    assert a.state == canx.BusState.ERROR_ACTIVE
    assert (a.transmit_error_count, a.receive_error_count) == (0, 0)
    a.send(canx.Message(0x2, b"back"))
    got = listener.receive()
    assert got is not None and (got.id, got.data) == (0x2, b"back")


def test_restart_immediately_after_bus_off_recovers(make_can):
    """restart() right after the controller went BUS_OFF must leave it
    ERROR_ACTIVE: the state must not fall back to BUS_OFF later."""
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1)
    states = []
    for i in range(10):
        a.inject_error_state(canx.BusState.BUS_OFF)
        a.restart()
        time.sleep(0.02)
        states.append(str(a.state))
        try:
            a.send(canx.Message(0x3, seq(i)))
        except canx.BusOffError:
            states[-1] += " (send: BusOffError)"
    assert states == ["canio.BusState.ERROR_ACTIVE"] * 10
    got = []
    while len(got) < 10:
        batch = listener.receive_many(timeout=1)
        if not batch:
            break
        got.extend(batch)
    assert [unseq(m) for m in got] == list(range(10))


def test_restart_when_not_bus_off_is_harmless(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1)
    a.restart()
    assert a.state == canx.BusState.ERROR_ACTIVE
    a.send(canx.Message(0x4, b"fine"))
    assert listener.receive().data == b"fine"


def test_auto_restart_send_after_bus_off_succeeds(make_can):
    a, b = make_can(auto_restart=True), make_can()
    listener = b.listen(timeout=1)
    a.inject_error_state(canx.BusState.BUS_OFF)
    assert processed(a, 1)
    a.send(canx.Message(0x5, b"auto"))
    got = listener.receive()
    assert got is not None and got.data == b"auto"
    assert processed(a, 1)
    assert a.state != canx.BusState.BUS_OFF


def test_auto_restart_set_after_construction(make_can):
    """auto_restart is read/write: turning it on later has the same effect."""
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1)
    a.auto_restart = True
    a.inject_error_state(canx.BusState.BUS_OFF)
    assert processed(a, 1)
    a.send(canx.Message(0x6, b"later"))
    got = listener.receive()
    assert got is not None and got.data == b"later"


def test_auto_restart_turned_off_after_construction(make_can):
    a = make_can(auto_restart=True)
    a.auto_restart = False
    a.inject_error_state(canx.BusState.BUS_OFF)
    assert processed(a, 1)
    with pytest.raises(canx.BusOffError):
        a.send(canx.Message(0x7, b"no"))


def test_bus_off_node_does_not_receive_until_restart(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=0.15)
    b.inject_error_state(canx.BusState.BUS_OFF)
    assert processed(b, 1)
    a.send(canx.Message(0x8, b"lost"))
    assert listener.receive() is None
    b.restart()
    assert processed(b, 1)
    a.send(canx.Message(0x8, b"seen"))
    listener.timeout = 1
    got = listener.receive()
    assert got is not None and got.data == b"seen"


# --------------------------------------------------------------------------- error frames


@pytest.mark.parametrize("state", ["ERROR_WARNING", "ERROR_PASSIVE", "BUS_OFF"])
def test_error_frames_listener_receives_error_frame(make_can, state):
    can = make_can()
    errs = can.listen(timeout=1, error_frames=True)
    plain = can.listen(timeout=0.1)
    st = getattr(canx.BusState, state)
    can.inject_error_state(st)
    f = errs.receive()
    assert isinstance(f, canx.ErrorFrame)
    assert f.state == st
    assert isinstance(f.timestamp, float)
    assert plain.receive() is None
    assert wait_for(lambda: can.stats()["error_frames"] == 1)


def test_error_frames_listener_also_gets_data_frames(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1, error_frames=True)
    a.send(canx.Message(0x1, b"d"))
    b.inject_error_state(canx.BusState.ERROR_WARNING, tec=100)
    first, second = listener.receive(), listener.receive()
    assert isinstance(first, canx.Message) and first.data == b"d"
    assert isinstance(second, canx.ErrorFrame) and second.state == canx.BusState.ERROR_WARNING


def test_error_frames_respects_matches_for_data(make_can):
    a, b = make_can(), make_can()
    listener = b.listen([canx.Match(0x100)], timeout=0.5, error_frames=True)
    a.send(canx.Message(0x200, b"no"))
    a.send(canx.Message(0x100, b"yes"))
    b.inject_error_state(canx.BusState.ERROR_PASSIVE, tec=130)
    got = [listener.receive(), listener.receive()]
    assert isinstance(got[0], canx.Message) and got[0].data == b"yes"
    assert isinstance(got[1], canx.ErrorFrame)
    listener.timeout = 0.05
    assert listener.receive() is None


# --------------------------------------------------------------------------- CAN FD


def test_fd_frames_between_fd_nodes(make_can):
    a, b = make_can(fd=True), make_can(fd=True)
    listener = b.listen(timeout=1)
    payload = bytes(range(64))
    a.send(canx.Message(0x123, payload, fd=True, bitrate_switch=True))
    a.send(canx.Message(0x1ABCDEF0, bytes(12), extended=True, fd=True, error_state_indicator=True))
    a.send(canx.Message(0x124, b"classic"))
    m1, m2, m3 = listener.receive(), listener.receive(), listener.receive()
    assert (m1.id, m1.data, m1.fd, m1.bitrate_switch, m1.error_state_indicator) == (0x123, payload, True, True, False)
    assert m1.dlc == 15
    assert (m2.id, m2.extended, len(m2.data), m2.fd, m2.bitrate_switch, m2.error_state_indicator) == (
        0x1ABCDEF0,
        True,
        12,
        True,
        False,
        True,
    )
    assert m2.dlc == 9
    assert (m3.data, m3.fd) == (b"classic", False)


def test_fd_send_on_classic_bus_raises_unsupported(make_can):
    a = make_can(fd=False)
    with pytest.raises(canx.UnsupportedError) as ei:
        a.send(canx.Message(0x1, bytes(16), fd=True))
    assert isinstance(ei.value, ValueError)
    assert a.stats()["sent"] == 0


def test_fd_send_on_classic_bus_raises_even_if_short(make_can):
    a = make_can()
    with pytest.raises(canx.UnsupportedError):
        a.send(canx.Message(0x1, b"ab", fd=True))


@pytest.mark.parametrize("n", [0, 1, 8, 12, 16, 20, 24, 32, 48, 64])
def test_fd_valid_lengths(n):
    m = canx.Message(0x1, bytes(n), fd=True)
    assert len(m.data) == n
    assert m.fd is True


@pytest.mark.parametrize("n", [9, 13, 63, 65])
def test_fd_invalid_lengths(n):
    with pytest.raises(ValueError):
        canx.Message(0x1, bytes(n), fd=True)


def test_classic_message_still_limited_to_8_with_fd_false():
    with pytest.raises(ValueError, match=r"^data length must be 0-8$"):
        canx.Message(0x1, bytes(12))


def test_message_extension_defaults():
    m = canx.Message(0x1)
    assert m.data == b""
    assert (m.fd, m.bitrate_switch, m.error_state_indicator) == (False, False, False)
    assert m.timestamp is None
    assert m.is_own is False


@pytest.mark.parametrize("n,dlc", [(0, 0), (1, 1), (8, 8), (12, 9), (16, 10), (20, 11), (24, 12), (32, 13), (48, 14), (64, 15)])
def test_message_dlc(n, dlc):
    m = canx.Message(0x1, bytes(n), fd=n > 8)
    assert m.dlc == dlc


# --------------------------------------------------------------------------- equality and repr


def test_message_value_equality():
    assert canx.Message(0x1, b"a") == canx.Message(0x1, b"a")
    assert canx.Message(0x1, b"a") == canx.Message(0x1, bytearray(b"a"))
    assert canx.Message(0x1) == canx.Message(0x1, b"")
    assert canx.Message(0x1, b"a") != canx.Message(0x1, b"b")
    assert canx.Message(0x1, b"a") != canx.Message(0x2, b"a")
    assert canx.Message(0x1, b"a") != canx.Message(0x1, b"a", extended=True)
    assert canx.Message(0x1, b"a") != canx.Message(0x1, b"a", fd=True)
    assert canx.Message(0x1, b"a") != canx.RemoteTransmissionRequest(0x1, 1)
    assert canx.Message(0x1, b"a") != b"a"


def test_rtr_value_equality():
    R = canx.RemoteTransmissionRequest
    assert R(0x1, 2) == R(0x1, 2)
    assert R(0x1, 2) != R(0x1, 3)
    assert R(0x1, 2) != R(0x2, 2)
    assert R(0x1, 2) != R(0x1, 2, extended=True)


def test_received_message_equals_sent_message(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1)
    sent = [
        canx.Message(0x408, b"\x01\x02"),
        canx.Message(0x1ABCDEF0, b"", extended=True),
        canx.RemoteTransmissionRequest(0x409, 4),
    ]
    for m in sent:
        a.send(m)
    got = [listener.receive() for _ in sent]
    assert got == sent
    assert all(g.timestamp is not None for g in got)


def test_message_repr_readable():
    r = repr(canx.Message(0x408, b"\x01\xab"))
    assert r.startswith("Message(")
    assert "0x408" in r.lower()
    assert "01ab" in r.lower() or "\\x01\\xab" in r.lower()
    assert " object at 0x" not in r
    assert "extended=True" in repr(canx.Message(0x408, b"", extended=True))


def test_rtr_repr_readable():
    r = repr(canx.RemoteTransmissionRequest(0x409, 3))
    assert r.startswith("RemoteTransmissionRequest(")
    assert "0x409" in r.lower()
    assert "3" in r
    assert " object at 0x" not in r


# --------------------------------------------------------------------------- timestamps, is_own


def test_built_messages_have_no_timestamp():
    assert canx.Message(0x1, b"x").timestamp is None
    assert canx.RemoteTransmissionRequest(0x1, 1).timestamp is None


def test_received_timestamps_close_to_time_and_non_decreasing(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1)
    before = time.time()
    for i in range(200):
        a.send(canx.Message(0x10, seq(i)))
    a.send(canx.RemoteTransmissionRequest(0x11, 0))
    got = [listener.receive() for _ in range(201)]
    after = time.time()
    stamps = [g.timestamp for g in got]
    assert all(isinstance(t, float) for t in stamps)
    assert all(before - 0.05 <= t <= after + 0.05 for t in stamps), (before, stamps[0], stamps[-1], after)
    assert stamps == sorted(stamps)


def test_timestamp_taken_at_arrival_not_at_receive(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1)
    t_send = time.time()
    a.send(canx.Message(0x1, b"x"))
    time.sleep(0.3)
    got = listener.receive()
    assert abs(got.timestamp - t_send) < 0.15


def test_is_own_with_loopback(make_can):
    a, b = make_can(loopback=True), make_can()
    listener = a.listen(timeout=1)
    a.send(canx.Message(0x1, b"mine"))
    b.send(canx.Message(0x2, b"theirs"))
    b.send(canx.RemoteTransmissionRequest(0x3, 1))
    a.send(canx.RemoteTransmissionRequest(0x4, 1))
    got = [listener.receive() for _ in range(4)]
    assert [(g.id, g.is_own) for g in got] == [(0x1, True), (0x2, False), (0x3, False), (0x4, True)]


# --------------------------------------------------------------------------- listener queues


def test_listen_extension_keywords_defaults(make_can):
    listener = make_can().listen()
    assert listener.timeout == 10
    assert listener.dropped == 0


def test_queue_overflow_counts_dropped_exactly(make_can):
    a, b = make_can(), make_can()
    q = 10
    n = 25
    listener = b.listen(timeout=1, queue_size=q)
    sync = b.listen(timeout=1)
    for i in range(n):
        a.send(canx.Message(0x1, seq(i)))
    assert wait_for(lambda: sync.in_waiting() == n)
    assert wait_for(lambda: listener.dropped == n - q)
    assert listener.in_waiting() == q
    listener.timeout = 0.05
    got = []
    while (m := listener.receive()) is not None:
        got.append(unseq(m))
    assert len(got) + listener.dropped == n
    assert got == list(range(q))  # default policy: the queued (oldest) frames stay
    assert b.stats()["listener_dropped"] == n - q
    assert sync.dropped == 0


def test_queue_after_overflow_accepts_again(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1, queue_size=2)
    for i in range(5):
        a.send(canx.Message(0x1, seq(i)))
    assert wait_for(lambda: listener.dropped == 3)
    assert [unseq(listener.receive()) for _ in range(2)] == [0, 1]
    a.send(canx.Message(0x1, seq(99)))
    assert unseq(listener.receive()) == 99
    assert listener.dropped == 3


def test_drop_oldest_keeps_newest(make_can):
    a, b = make_can(), make_can()
    q, n = 10, 25
    listener = b.listen(timeout=1, queue_size=q, drop_oldest=True)
    sync = b.listen(timeout=1)
    for i in range(n):
        a.send(canx.Message(0x1, seq(i)))
    assert wait_for(lambda: sync.in_waiting() == n)
    assert wait_for(lambda: listener.dropped == n - q)
    listener.timeout = 0.05
    got = []
    while (m := listener.receive()) is not None:
        got.append(unseq(m))
    assert got == list(range(n - q, n))
    assert len(got) + listener.dropped == n


def test_queue_size_one(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1, queue_size=1, drop_oldest=True)
    for i in range(4):
        a.send(canx.Message(0x1, seq(i)))
    assert wait_for(lambda: listener.dropped == 3)
    assert unseq(listener.receive()) == 3


def test_filtered_out_frames_are_not_dropped(make_can):
    a, b = make_can(), make_can()
    listener = b.listen([canx.Match(0x7)], timeout=1, queue_size=2)
    sync = b.listen(timeout=1)
    for i in range(20):
        a.send(canx.Message(0x8, seq(i)))
    a.send(canx.Message(0x7, b"k"))
    assert wait_for(lambda: sync.in_waiting() == 21)
    assert listener.receive().data == b"k"
    assert listener.dropped == 0


# --------------------------------------------------------------------------- receive_many


def test_receive_many(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1)
    for i in range(5):
        a.send(canx.Message(0x1, seq(i)))
    assert wait_for(lambda: listener.in_waiting() == 5)
    first = listener.receive_many(max=3, timeout=1)
    assert isinstance(first, list)
    assert [unseq(m) for m in first] == [0, 1, 2]
    rest = listener.receive_many()
    assert [unseq(m) for m in rest] == [3, 4]


def test_receive_many_default_max_256(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=1)
    for i in range(300):
        a.send(canx.Message(0x1, seq(i)))
    assert wait_for(lambda: listener.in_waiting() == 300)
    got = listener.receive_many()
    assert [unseq(m) for m in got] == list(range(256))
    assert [unseq(m) for m in listener.receive_many()] == list(range(256, 300))


def test_receive_many_empty_after_timeout(make_can):
    listener = make_can().listen(timeout=5)
    t0 = time.monotonic()
    got = listener.receive_many(timeout=0.2)
    elapsed = time.monotonic() - t0
    assert got == []
    assert 0.18 <= elapsed < 0.2 + 0.4


def test_receive_many_default_timeout_is_listeners(make_can):
    listener = make_can().listen(timeout=0.15)
    t0 = time.monotonic()
    assert listener.receive_many() == []
    assert 0.13 <= time.monotonic() - t0 < 0.15 + 0.4


def test_receive_many_waits_for_first(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=5)
    timer = threading.Timer(0.1, a.send, (canx.Message(0x1, b"w"),))
    timer.start()
    t0 = time.monotonic()
    got = listener.receive_many(timeout=3)
    timer.join()
    assert [m.data for m in got] == [b"w"]
    assert time.monotonic() - t0 < 0.1 + 0.5


def test_receive_many_after_deinit_raises(make_can):
    can = make_can()
    listener = can.listen(timeout=0.1)
    listener.deinit()
    with pytest.raises(ValueError) as ei:
        listener.receive_many()
    assert str(ei.value) == DEINIT_MSG
