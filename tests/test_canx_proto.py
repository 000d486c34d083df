"""canx.canxproto on the virtual bus: the wire format of
docs/protocols/can-x.md checked frame by frame, every receiver rule as an
error event, the open-envelope limit, callbacks and asyncio."""

from __future__ import annotations

import asyncio
import binascii
import itertools
import threading
import time

import pytest

import canx
from canx import canxproto

_names = itertools.count()


def canx_id(prio: int, direction: int, device: int, stream: int, seq: int, cont: int) -> int:
    """can-x.md "Identifier", written out independently of the engine."""
    return prio << 27 | direction << 26 | device << 18 | stream << 8 | seq << 1 | cont


def crc(msg_id: int, body: bytes) -> int:
    """CRC-16/IBM-3740 (CCITT-FALSE) over msg_id + body (can-x.md "Messages")."""
    return binascii.crc_hqx(bytes([msg_id]) + body, 0xFFFF)


def test_crc_reference_is_ibm_3740():
    assert binascii.crc_hqx(b"123456789", 0xFFFF) == 0x29B1


@pytest.fixture
def nodes():
    name = f"virtual:cx-{next(_names)}"
    ns = [canx.CAN(channel=name) for _ in range(3)]
    yield ns
    for n in ns:
        n.deinit()


@pytest.fixture
def host_dev(nodes):
    a, b, obs = nodes
    host = canxproto.Endpoint(a, timeout=1.0)
    dev = canxproto.Endpoint(b, direction=canxproto.FROM_DEVICE, device=5, timeout=1.0)
    yield host, dev, obs
    host.close()
    dev.close()


@pytest.mark.parametrize("size", [0, 1, 7, 8, 11, 12, 100, 1000, 2031, 2032])
def test_bodies_of_every_shape_arrive_intact(host_dev, size):
    host, dev, _ = host_dev
    body = bytes((i * 31 + size) % 256 for i in range(size))
    host.send(5, 17, 0x42, body, priority=2)
    m = dev.receive()
    assert m == canxproto.Message(0, 5, 17, 0x42, body, 2, m.timestamp)


def test_wire_format_single_frame_and_envelope(host_dev):
    host, _, obs = host_dev
    seen = obs.listen(timeout=1.0)
    host.send(5, 300, 0x11, b"abc", priority=1)
    body = bytes(range(20))
    host.send(5, 300, 0x12, body, priority=1)
    frames = [seen.receive() for _ in range(5)]
    assert all(f is not None and f.extended for f in frames)
    # single frame: continue = 0, data [msg_id, body...]
    assert frames[0].id == canx_id(1, 0, 5, 300, 0, 0)
    assert frames[0].data == b"\x11abc"
    # envelope: N = ceil((20 + 8) / 8) = 4 frames; the sequence number goes on across messages
    c = crc(0x12, body)
    assert [f.id for f in frames[1:]] == [
        canx_id(1, 0, 5, 300, 1, 0),
        canx_id(1, 0, 5, 300, 2, 1),
        canx_id(1, 0, 5, 300, 3, 1),
        canx_id(1, 0, 5, 300, 4, 1),
    ]
    stream = b"".join(f.data for f in frames[1:])
    assert stream == bytes([0x12, 0, 0, 4]) + body + bytes([1, 0]) + c.to_bytes(2, "little")
    assert [len(f.data) for f in frames[1:]] == [8, 8, 8, 4]


def test_seven_byte_body_that_looks_like_a_head_goes_as_an_envelope(host_dev):
    host, dev, obs = host_dev
    seen = obs.listen(timeout=1.0)
    body = bytes([0, 0, 5, 1, 2, 3, 4])
    host.send(5, 1, 0x20, body)
    assert dev.receive().body == body
    assert seen.receive().data[:4] == bytes([0x20, 0, 0, 2])


def test_device_and_direction_filters(nodes):
    a, b, c = nodes
    host = canxproto.Endpoint(a, timeout=0.3)
    dev5 = canxproto.Endpoint(b, direction=canxproto.FROM_DEVICE, device=5, timeout=0.3)
    both = canxproto.Endpoint(c, receive_direction=None, timeout=0.3)
    with host, dev5, both:
        host.send(6, 0, 1, b"for six")
        host.send(5, 0, 2, b"for five")
        dev5.send(5, 0, 3, b"from five")
        assert [m.body for m in dev5] == [b"for five"]
        assert [m.body for m in host] == [b"from five"]
        # Two senders' receive threads: no order between them.
        assert sorted(m.body for m in both) == [b"for five", b"for six", b"from five"]


def raw(node, id, data):
    node.send(canx.Message(id, bytes(data), extended=True))


def head(msg_id, n, first4):
    return bytes([msg_id, 0, 0, n]) + bytes(first4)


def wait_error(ep, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = ep.receive(0.05)
        assert m is None, f"unexpected message {m}"
        if ep.errors:
            return ep.errors.popleft()
    raise AssertionError("no error event")


def test_receiver_rules_become_error_events(nodes):
    a, b, _ = nodes
    ep = canxproto.Endpoint(b, receive_direction=None, reassembly_timeout=0.2)
    with ep:
        # CRC mismatch: a correct 3-frame envelope with the CRC off by one.
        body = bytes(range(12))
        tail = bytes([1, 0]) + ((crc(9, body) + 1) & 0xFFFF).to_bytes(2, "little")
        stream_ = body[4:] + tail
        raw(a, canx_id(0, 0, 1, 7, 0, 0), head(9, 3, body[:4]))
        raw(a, canx_id(0, 0, 1, 7, 1, 1), stream_[:8])
        raw(a, canx_id(0, 0, 1, 7, 2, 1), stream_[8:])
        e = wait_error(ep)
        assert (e.device, e.stream, e.msg_id, e.reason) == (1, 7, 9, "crc_mismatch")
        # Bad tail PID.
        tail = bytes([2, 0]) + crc(9, body).to_bytes(2, "little")
        stream_ = body[4:] + tail
        raw(a, canx_id(0, 0, 1, 7, 3, 0), head(9, 3, body[:4]))
        raw(a, canx_id(0, 0, 1, 7, 4, 1), stream_[:8])
        raw(a, canx_id(0, 0, 1, 7, 5, 1), stream_[8:])
        assert wait_error(ep).reason == "bad_tail_pid"
        # Sequence gap.
        raw(a, canx_id(0, 0, 1, 7, 6, 0), head(9, 3, body[:4]))
        raw(a, canx_id(0, 0, 1, 7, 8, 1), bytes(8))
        e = wait_error(ep)
        assert e.reason == "bad_sequence" and "expected 7" in e.text
        # Stray continue frame (the rest of the broken envelope, and one out of nowhere).
        raw(a, canx_id(0, 0, 2, 9, 1, 1), bytes(8))
        e = wait_error(ep)
        assert (e.device, e.stream, e.msg_id, e.reason) == (2, 9, None, "stray")
        # Frame count mismatch: a short frame before the declared 4th.
        raw(a, canx_id(0, 0, 1, 8, 0, 0), head(3, 4, b"abcd"))
        raw(a, canx_id(0, 0, 1, 8, 1, 1), b"xyz")
        assert wait_error(ep).reason == "frame_count_mismatch"
        # A new head supersedes an open envelope.
        raw(a, canx_id(0, 0, 1, 8, 2, 0), head(3, 4, b"abcd"))
        raw(a, canx_id(0, 0, 1, 8, 3, 0), b"\x05single")
        assert ep.receive(1.0).body == b"single"
        assert ep.errors.popleft().reason == "superseded"
        # Reassembly timeout (0.2 s here).
        raw(a, canx_id(0, 0, 1, 9, 0, 0), head(3, 4, b"abcd"))
        t0 = time.monotonic()
        e = wait_error(ep)
        assert e.reason == "timeout" and time.monotonic() - t0 >= 0.15
        assert ep.stats()["errors"] == 7


def test_open_envelope_limit_is_enforced_and_counted(nodes):
    a, b, _ = nodes
    errors = []
    got = threading.Event()
    ep = canxproto.Endpoint(b, receive_direction=None, max_open=2, on_error=lambda e: (errors.append(e), got.set()))
    with ep:
        for stream in range(3):
            raw(a, canx_id(0, 0, 1, stream, 0, 0), head(1, 3, b"abcd"))
        assert got.wait(2)
        time.sleep(0.05)
        assert [(e.stream, e.reason) for e in errors] == [(2, "no_free_slot")]
        s = ep.stats()
        assert (s["refused_open"], s["open_envelopes"]) == (1, 2)
    with pytest.raises(ValueError, match="max_open"):
        canxproto.Endpoint(b, max_open=65)


def test_many_large_messages_in_order_with_a_small_send_queue(nodes):
    a, b, _ = nodes
    host = canxproto.Endpoint(a, max_waiting=2)
    got = []
    done = threading.Event()

    def on_message(m):
        got.append(m)
        if len(got) == 100:
            done.set()

    dev = canxproto.Endpoint(b, direction=canxproto.FROM_DEVICE, on_message=on_message)
    with host, dev:
        bodies = [bytes([i]) * 2032 for i in range(100)]
        for i, body in enumerate(bodies):
            host.send(i % 3, 1000 + i % 2, i, body, timeout=5.0)  # blocks while 2 wait
        assert host.flush(5.0)
        assert done.wait(5)
        for dev_id in range(3):
            for s in (1000, 1001):
                mine = [m.msg_id for m in got if (m.device, m.stream) == (dev_id, s)]
                assert mine == sorted(mine), "in order per key"
        assert sorted(m.body for m in got) == sorted(bodies)
        st = host.stats()
        assert st["messages_sent"] == 100 and st["frames_sent"] == 100 * 255


def test_send_validation(host_dev):
    host, _, _ = host_dev
    with pytest.raises(ValueError, match="2032"):
        host.send(1, 1, 1, bytes(2033))
    with pytest.raises(ValueError, match="stream"):
        host.send(1, 1024, 1, b"")
    with pytest.raises(ValueError, match="priority"):
        host.send(1, 1, 1, b"", priority=4)
    with pytest.raises(OverflowError):
        host.send(256, 1, 1, b"")
    with pytest.raises(TypeError):
        host.send(1, 1, 1, 3)
    with pytest.raises(ValueError):
        canxproto.Endpoint(host._native, direction=2)


def test_async_iteration(host_dev):
    host, dev, _ = host_dev

    async def main():
        for i in range(3):
            host.send(5, 2, i, bytes(i * 10))
        dev.timeout = 0.5
        return [(m.msg_id, len(m.body)) async for m in dev]

    assert asyncio.run(main()) == [(0, 0), (1, 10), (2, 20)]


def test_close_and_deinit(nodes):
    a, _, _ = nodes
    ep = canxproto.Endpoint(a)
    ep.close()
    with pytest.raises(ValueError, match="deinitialized"):
        ep.send(1, 1, 1, b"")
    ep2 = canxproto.Endpoint(a)
    a.deinit()
    with pytest.raises(ValueError, match="deinitialized"):
        ep2.receive(0.1)


def test_cancelled_async_iteration_loses_no_message(host_dev):
    """Issue 11 / review B5 on the CAN-X endpoint's queue: 300 numbered
    messages while ``async for`` steps are cancelled over and over (tiny
    ``wait_for`` timeouts): each arrives exactly once, in order."""
    host, dev, _ = host_dev
    dev.timeout = 30
    n = 300

    def produce():
        for i in range(n):
            host.send(5, 1, i % 256, i.to_bytes(2, "little") * (1 + i % 5))

    async def main():
        loop = asyncio.get_running_loop()
        producer = loop.run_in_executor(None, produce)
        it = dev.__aiter__()
        got, cancels, tries = [], 0, 0
        deadline = loop.time() + 30
        while len(got) < n and loop.time() < deadline:
            tries += 1
            try:
                got.append(await asyncio.wait_for(it.__anext__(), (0, 0.0001, 0.001, 0.005)[tries % 4]))
            except asyncio.TimeoutError:
                cancels += 1
        await producer
        return got, cancels

    got, cancels = asyncio.run(main())
    assert [int.from_bytes(m.body[:2], "little") for m in got] == list(range(n))
    assert cancels > 10
