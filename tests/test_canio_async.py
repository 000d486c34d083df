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


# ------------------------------------------------ cancellation and the executor


async def cancel_storm(next_item, n, limit=30.0):
    """Takes ``n`` items through ``next_item()`` (a fresh awaitable each call)
    while cancelling it over and over: every other try runs under
    ``asyncio.wait_for`` with a tiny timeout, the others as a task cancelled
    after a random short time. Returns what arrived (stops after ``limit`` s,
    so that losses show as a short list rather than a hang)."""
    import random

    rng = random.Random(11)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    got, cancels, tries = [], 0, 0
    while len(got) < n and loop.time() < deadline:
        tries += 1
        if tries % 2:
            try:
                got.append(await asyncio.wait_for(next_item(), rng.choice((0, 0.0001, 0.0005, 0.002))))
            except asyncio.TimeoutError:
                cancels += 1
        else:
            task = asyncio.ensure_future(next_item())
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            if rng.random() < 0.5:
                await asyncio.sleep(rng.choice((0.0002, 0.001)))
            task.cancel()
            try:
                got.append(await task)
            except asyncio.CancelledError:
                cancels += 1
    return got, cancels


class Producer:
    """Sends ``n`` numbered items from a thread through ``send(i)``, pausing
    briefly every few items so that consumers are caught waiting."""

    def __init__(self, send, n):
        self.error = None

        def run():
            try:
                for i in range(n):
                    send(i)
                    if i % 7 == 0:
                        time.sleep(0.0005)
            except BaseException as e:  # noqa: BLE001 - re-raised in join()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self):
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def test_cancelled_async_for_loses_no_frame(make_can):
    """Issue 11 / review B5: 1,000 numbered frames, consumers cancelled over
    and over: every frame arrives exactly once, in order. (With the old
    executor-slice iterator, a cancelled step dropped the frame its executor
    call had already taken.)"""
    a, b = make_can(), make_can()
    listener = b.listen(timeout=30)
    it = listener.__aiter__()
    n = 1000

    async def main():
        producer = Producer(lambda i: a.send(canx.Message(0x7, seq(i))), n)
        got, cancels = await cancel_storm(it.__anext__, n)
        producer.join()
        return got, cancels

    got, cancels = asyncio.run(main())
    assert [unseq(m) for m in got] == list(range(n))
    assert cancels > 100  # the storm really cancelled
    assert listener.in_waiting() == 0


def test_cancelled_fresh_async_for_loops_lose_no_frame(make_can):
    """The same with a new ``async for`` loop per try, as application code
    written with ``async for msg in listener: ...; break`` does."""
    a, b = make_can(), make_can()
    listener = b.listen(timeout=30)
    n = 300

    async def first():
        async for m in listener:
            return m

    async def main():
        producer = Producer(lambda i: a.send(canx.Message(0x7, seq(i))), n)
        got, _ = await cancel_storm(first, n)
        producer.join()
        return got

    assert [unseq(m) for m in asyncio.run(main())] == list(range(n))


def _executor_threads():
    return [t for t in threading.enumerate() if t.name.startswith("asyncio_")]


def test_idle_async_consumers_leave_the_default_executor_free(make_can):
    """A dozen idle ``async for`` consumers (listeners, a reliable receiver,
    a J1939 stream) park no thread in the loop's default executor: none
    exists until the test's own call, which completes at once; then every
    consumer still gets its frame."""
    from canx import j1939, reliable

    a, b = make_can(), make_can()
    listeners = [b.listen(matches=[canx.Match(0x100 + i)], timeout=30) for i in range(9)]
    rx = reliable.Receiver(b, matches=[canx.Match(0x200)], timeout=30)
    tx = reliable.Sender(a)
    ecu = j1939.ECU(bus=b, name=0x1234, address=0x30)
    stream = ecu.messages(0xFEEE, timeout=30)
    stream2 = ecu.messages(0xFEEF, timeout=30)
    before = set(_executor_threads())

    async def first(aiterable):
        async for m in aiterable:
            return m

    async def main():
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(first(x)) for x in [*listeners, rx, stream, stream2]]
        assert len(tasks) == 12
        for _ in range(20):  # let every consumer reach its wait
            await asyncio.sleep(0)
        assert not any(t.done() for t in tasks)
        parked = set(_executor_threads()) - before
        assert not parked, f"consumers parked executor threads: {parked}"
        t0 = loop.time()
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: 42), 5) == 42
        fast = loop.time() - t0
        # now feed every consumer
        for i in range(9):
            a.send(canx.Message(0x100 + i, seq(i)))
        out = await asyncio.wait_for(tx.send_async(0x200, b"r"), 5)
        assert out.delivered
        peer = j1939.ECU(bus=a, name=0x5678, address=0x31)
        try:
            await peer.claim_address_async()
            peer.send_pgn(0xFEEE, b"12345678")
            peer.send_pgn(0xFEEF, b"abcdefgh")
            got = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        finally:
            peer.close()
        return got, fast, len(set(_executor_threads()) - before)

    try:
        got, fast, threads_after = asyncio.run(main())
    finally:
        tx.close()
        rx.close()
        ecu.close()
    assert [unseq(m) for m in got[:9]] == list(range(9))
    assert got[9].data == b"r"
    assert (got[10].pgn, got[10].data) == (0xFEEE, b"12345678")
    assert (got[11].pgn, got[11].data) == (0xFEEF, b"abcdefgh")
    assert fast < 2.0
    assert threads_after <= 1  # only the thread of the test's own call


def test_async_for_ends_when_the_listener_is_deinitialized_while_waiting(make_can):
    """Deinitializing a listener wakes its readiness waiter at once: the
    ``async for`` raises canio's ValueError instead of waiting on."""
    listener = make_can().listen(timeout=30)

    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(first_or_error())
        for _ in range(5):
            await asyncio.sleep(0)
        t0 = loop.time()
        listener.deinit()
        err = await asyncio.wait_for(task, 5)
        return err, loop.time() - t0

    async def first_or_error():
        try:
            async for _ in listener:
                return None
        except ValueError as e:
            return e

    err, _ = asyncio.run(main())
    assert isinstance(err, ValueError) and str(err) == DEINIT_MSG


def test_async_for_without_a_readiness_descriptor_polls(make_can):
    """Where the platform has no descriptor (fileno raises
    UnsupportedError), ``async for`` falls back to polling on the loop's
    timer: frames still arrive, in order, with no executor thread."""
    from canx import _aio

    a, b = make_can(), make_can()
    listener = b.listen(timeout=5)

    def no_fd():
        raise canx.UnsupportedError("no readiness descriptor on this platform")

    async def main():
        it = _aio.AsyncQueueIterator(listener._receive_nowait, no_fd, lambda: listener.timeout)
        producer = Producer(lambda i: a.send(canx.Message(0x7, seq(i))), 50)
        got, _ = await cancel_storm(it.__anext__, 50)
        producer.join()
        return got

    before = set(_executor_threads())
    assert [unseq(m) for m in asyncio.run(main())] == list(range(50))
    assert set(_executor_threads()) <= before


def test_several_consumers_of_one_listener_share_its_frames(make_can):
    """Three coroutines iterate one listener at once (one descriptor, one
    reader per loop waking them all): together they get every frame exactly
    once."""
    a, b = make_can(), make_can()
    listener = b.listen(timeout=30)
    n = 300

    async def main():
        got = []

        async def consume():
            async for m in listener:
                got.append(unseq(m))
                if len(got) >= n:
                    return

        tasks = [asyncio.create_task(consume()) for _ in range(3)]
        producer = Producer(lambda i: a.send(canx.Message(0x7, seq(i))), n)
        done, pending = await asyncio.wait(tasks, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        producer.join()
        return got

    got = asyncio.run(main())
    assert sorted(got) == list(range(n))
