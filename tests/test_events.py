"""Engine events cross into Python as frozen native classes with named
fields (canx._canx.*Event), not positional tuples."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

import canx
from canx import _canx, canxproto, reliable

_names = itertools.count()

EVENT_CLASSES = [
    name for name in dir(_canx) if name.endswith("Event") and isinstance(getattr(_canx, name), type)
]


def test_every_event_class_is_frozen_named_and_in_the_native_module():
    assert len(EVENT_CLASSES) == 23, EVENT_CLASSES
    for name in EVENT_CLASSES:
        cls = getattr(_canx, name)
        assert cls.__module__ == "canx._canx", name
        assert isinstance(cls.kind, str) and cls.kind, name
        assert isinstance(cls.__match_args__, tuple), name
        with pytest.raises(TypeError):
            cls()  # only the engines make events


def two_endpoints_see_one_message():
    ch = f"virtual:events-{next(_names)}"
    a, b = canx.CAN(channel=ch), canx.CAN(channel=ch)
    host = canxproto.Endpoint(a)
    # Two native endpoints on one bus get the same frames (same timestamps).
    d1 = _canx.NativeCanxEndpoint(b, direction=1, receive_direction=0, device=5)
    d2 = _canx.NativeCanxEndpoint(b, direction=1, receive_direction=0, device=5)
    return a, b, host, d1, d2


def test_canx_message_event_fields_eq_repr_and_immutability():
    a, b, host, d1, d2 = two_endpoints_see_one_message()
    try:
        host.send(5, 300, 0x42, b"hello", priority=2)
        e1, e2 = d1.next_event(2.0), d2.next_event(2.0)
        assert isinstance(e1, _canx.CanxMessageEvent)
        assert (e1.direction, e1.device, e1.stream, e1.priority, e1.msg_id, e1.body) == (0, 5, 300, 2, 0x42, b"hello")
        assert type(e1.body) is bytes and isinstance(e1.timestamp, float)
        assert e1.kind == "message"
        assert e1 == e2 and e1 is not e2
        assert repr(e1).startswith("CanxMessageEvent(direction=0, device=5, stream=300, priority=2, msg_id=66, body=b'hello'")
        with pytest.raises(AttributeError):
            e1.device = 6  # type: ignore[misc]
        match e1:
            case _canx.CanxMessageEvent(direction, device, stream):
                assert (direction, device, stream) == (0, 5, 300)
            case _:
                pytest.fail("no match")
    finally:
        for n in (d1, d2, host):
            n.close()
        a.deinit()
        b.deinit()


def test_reliable_outcome_event_has_named_fields():
    ch = f"virtual:events-{next(_names)}"
    a, b = canx.CAN(channel=ch), canx.CAN(channel=ch)
    rx = reliable.Receiver(b, [canx.Match(0x100)])
    tx = _canx.NativeReliableSender(a, timeout=0.1, retries=3, backoff=2, max_timeout=1.0, ack_offset=1,
                                    ack_id=None, ack_extended=False, initial_seq=0, max_outstanding=8)
    try:
        ticket = tx.send(0x100, b"x", False)
        ev = tx.next_event(2.0)
        assert isinstance(ev, _canx.ReliableOutcomeEvent)
        assert (ev.ticket, ev.delivered, ev.tries) == (ticket, True, 1)
        assert rx.receive(2.0).data == b"x"
    finally:
        tx.close()
        rx.close()
        a.deinit()
        b.deinit()


def test_public_classes_are_unchanged():
    # The public classes users see keep their names and fields.
    assert reliable.Outcome._fields == ("delivered", "tries", "id", "data", "extended")
    assert canxproto.Message._fields == ("direction", "device", "stream", "msg_id", "body", "priority", "timestamp")
    from canx import j1939

    assert [f.name for f in dataclasses.fields(j1939.J1939Message)] == [
        "pgn", "source", "destination", "priority", "data", "timestamp", "via", "decoded"
    ]
