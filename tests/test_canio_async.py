"""``async for`` over a canx Listener (extension), tested from the spec on
the virtual bus: frames sent from another thread arrive in order, the loop
ends after the listener's timeout, and the event loop stays free meanwhile.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time

import pytest
from canio_helpers import DEINIT_MSG, channel, make_can  # noqa: F401 (fixtures)
from conftest import TIMEOUT_SCALE

import canx





class Sender:
    """Sends frames from a thread; exceptions are re-raised by join()."""

    def __init__(self, can, frames, delay=0.0, interval=0.0):
        self.error = None
        self.sent_at = []

        def run():
            try:
                time.sleep(delay)
                for f in frames:
                    can.send(f)
                    self.sent_at.append(time.monotonic())
                    if interval:
                        time.sleep(interval)
            except BaseException as e:  # noqa: BLE001 - re-raised in join()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self):
        self.thread.join(10)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def seq(i):
    return struct.pack("<I", i)


def unseq(m):
    return struct.unpack("<I", m.data)[0]


def test_async_for_receives_frames_from_another_thread_and_ends(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=0.3)
    n = 10
    sender = Sender(a, [canx.Message(0x408, seq(i)) for i in range(n)], delay=0.1, interval=0.01)

    async def main():
        got = []
        async for m in listener:
            got.append(m)
        return got, time.monotonic()

    got, ended = asyncio.run(main())
    sender.join()
    assert [unseq(m) for m in got] == list(range(n))
    assert all(isinstance(m, canx.Message) and m.id == 0x408 for m in got)
    assert all(isinstance(m.timestamp, float) for m in got)
    idle = ended - sender.sent_at[-1]
    assert 0.3 - 0.05 <= idle < 0.3 + 0.5


def test_async_for_on_quiet_bus_ends_after_timeout(make_can):
    listener = make_can().listen(timeout=0.25)

    async def main():
        t0 = time.monotonic()
        got = [m async for m in listener]
        return got, time.monotonic() - t0

    got, elapsed = asyncio.run(main())
    assert got == []
    assert 0.23 <= elapsed < 0.25 + 0.5


def test_async_for_gets_queued_frames_at_once(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=0.1)
    for i in range(50):
        a.send(canx.Message(0x1, seq(i)))
    deadline = time.monotonic() + 3
    while listener.in_waiting() < 50 and time.monotonic() < deadline:
        time.sleep(0.005)

    async def main():
        return [unseq(m) async for m in listener]

    assert asyncio.run(main()) == list(range(50))


def test_async_for_respects_matches(make_can):
    a, b = make_can(), make_can()
    listener = b.listen([canx.Match(0x409)], timeout=0.2)
    sender = Sender(
        a,
        [canx.Message(0x408, b"no"), canx.Message(0x409, b"yes"), canx.RemoteTransmissionRequest(0x409, 2)],
        delay=0.05,
    )

    async def main():
        return [m async for m in listener]

    got = asyncio.run(main())
    sender.join()
    assert len(got) == 2
    assert isinstance(got[0], canx.Message) and got[0].data == b"yes"
    assert isinstance(got[1], canx.RemoteTransmissionRequest) and got[1].length == 2


def test_async_for_keeps_event_loop_free(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=0.5)
    sender = Sender(a, [canx.Message(0x1, seq(i)) for i in range(3)], delay=0.2, interval=0.05)

    async def ticker(ticks, stop):
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)

    async def main():
        ticks, stop = [], asyncio.Event()
        t = asyncio.create_task(ticker(ticks, stop))
        got = [unseq(m) async for m in listener]
        stop.set()
        await t
        return got, ticks

    got, ticks = asyncio.run(main())
    sender.join()
    assert got == [0, 1, 2]
    # ~0.8 s of waiting: the ticker must have run all along (no long stalls)
    assert len(ticks) >= 10
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) < 0.25 * TIMEOUT_SCALE


def test_async_for_can_be_cancelled(make_can):
    listener = make_can().listen(timeout=30)

    async def consume():
        async for _ in listener:
            pass

    async def main():
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    assert asyncio.run(main()) < 0.5


def test_async_for_twice_on_same_listener(make_can):
    a, b = make_can(), make_can()
    listener = b.listen(timeout=0.2)

    async def main():
        a.send(canx.Message(0x1, seq(1)))
        first = [unseq(m) async for m in listener]
        a.send(canx.Message(0x1, seq(2)))
        second = [unseq(m) async for m in listener]
        return first, second

    assert asyncio.run(main()) == ([1], [2])


def test_async_for_on_deinitialized_listener_raises(make_can):
    can = make_can()
    listener = can.listen(timeout=0.1)
    can.deinit()

    async def main():
        async for _ in listener:
            pass

    with pytest.raises(ValueError) as ei:
        asyncio.run(main())
    assert str(ei.value) == DEINIT_MSG


def test_two_listeners_concurrently_in_one_loop(make_can):
    a, b = make_can(), make_can()
    l1 = b.listen([canx.Match(0x100)], timeout=0.3)
    l2 = b.listen([canx.Match(0x200)], timeout=0.3)
    frames = []
    for i in range(5):
        frames += [canx.Message(0x100, seq(i)), canx.Message(0x200, seq(10 + i))]
    sender = Sender(a, frames, delay=0.05, interval=0.005)

    async def collect(listener):
        return [unseq(m) async for m in listener]

    async def main():
        return await asyncio.gather(collect(l1), collect(l2))

    r1, r2 = asyncio.run(main())
    sender.join()
    assert r1 == [0, 1, 2, 3, 4]
    assert r2 == [10, 11, 12, 13, 14]
