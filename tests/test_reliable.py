"""canx.reliable on the virtual bus: general mode (sequence numbers, duplicate
suppression, ACK mapping, timeout/retry/backoff, several peers, outcomes as
futures/awaitables/callbacks, statistics, native ACK) and the canio guide's
protocol against the unmodified guide programs under ``canx run``."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import canx
from canx import reliable

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "examples" / "circuitpython"
_names = itertools.count()


@pytest.fixture
def pair():
    """Two nodes (a, b) of a fresh virtual bus, plus a raw observer node."""
    name = f"virtual:rel-{next(_names)}"
    nodes = [canx.CAN(channel=name) for _ in range(3)]
    yield nodes
    for n in nodes:
        n.deinit()


def raw_frames(listener, n, timeout=2.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        m = listener.receive()
        if m is not None:
            out.append(m)
    return out


# ---------------------------------------------------------------- general mode


def test_round_trip_outcome_message_and_stats(pair):
    a, b, obs = pair
    seen = obs.listen(timeout=0.5)
    with reliable.Receiver(b, matches=[canx.Match(0x123)], timeout=1.0) as rx, reliable.Sender(a) as tx:
        out = tx.send(0x123, b"hello").result(2)
        assert out == reliable.Outcome(True, 1, 0x123, b"hello", False)
        msg = rx.receive()
        assert (msg.id, msg.data, msg.seq, msg.extended) == (0x123, b"hello", 0, False)
        assert msg.timestamp == pytest.approx(time.time(), abs=5)
        assert tx.stats()["sent"] == 1 and tx.stats()["acknowledged"] == 1
        assert rx.stats()["delivered"] == 1 and rx.stats()["ack_sent"] == 1
    data, ack = raw_frames(seen, 2)
    assert (data.id, data.data) == (0x123, b"\x00hello")  # [seq, payload]
    assert (ack.id, ack.data) == (0x124, b"\xac\x00")  # [0xAC, seq] on data id + 1


def test_duplicate_is_delivered_once_but_acked_twice(pair):
    a, b, _ = pair
    acks = a.listen(matches=[canx.Match(0x124)], timeout=1.0)
    with reliable.Receiver(b, matches=[canx.Match(0x123)], timeout=0.3) as rx:
        a.send(canx.Message(0x123, b"\x07abc"))
        a.send(canx.Message(0x123, b"\x07abc"))  # a resend
        a.send(canx.Message(0x123, b"\x08def"))
        got = list(rx)
        assert [(m.seq, m.data) for m in got] == [(7, b"abc"), (8, b"def")]
        assert [m.data for m in raw_frames(acks, 3)] == [b"\xac\x07", b"\xac\x07", b"\xac\x08"]
        assert rx.stats()["duplicates_dropped"] == 1


def test_failure_after_retries_with_backoff(pair):
    a, _, obs = pair
    seen = obs.listen(matches=[canx.Match(0x200)], timeout=2.0)
    with reliable.Sender(a, timeout=0.03, retries=3, backoff=2, max_timeout=1.0) as tx:
        out = tx.send(0x200, b"x").result(5)
        assert (out.delivered, out.tries) == (False, 4)
        s = tx.stats()
        assert (s["sent"], s["resent"], s["failed"], s["acknowledged"]) == (1, 3, 1, 0)
    frames = raw_frames(seen, 4)
    assert len(frames) == 4 and all(f.data == b"\x00x" for f in frames), "a resend repeats seq and payload"
    gaps = [b.timestamp - a_.timestamp for a_, b in zip(frames, frames[1:])]
    # 30, 60, 120 ms: each wait doubles.
    assert gaps[0] >= 0.025 and gaps[1] >= 0.055 and gaps[2] >= 0.11, gaps  # a fixed 30 ms would fail


def test_lost_ack_is_recovered_by_a_resend(pair):
    a, b, _ = pair
    data = b.listen(matches=[canx.Match(0x300)], timeout=2.0)
    with reliable.Sender(a, timeout=0.05, retries=3) as tx:
        fut = tx.send(0x300, b"again")
        first = data.receive()
        second = data.receive()  # no ACK for the first copy: the sender resent it
        assert first.data == second.data == b"\x00again"
        b.send(canx.Message(0x301, b"\xac\x00"))
        out = fut.result(2)
        assert (out.delivered, out.tries) == (True, 2)
        assert tx.stats()["resent"] >= 1


def test_fixed_ack_id_and_extended_ids(pair):
    a, b, obs = pair
    acks = obs.listen(matches=[canx.Match(0x7F0)], timeout=1.0)
    with reliable.Receiver(b, matches=[canx.Match(0x1ABCDE, extended=True)], ack_id=0x7F0) as rx, reliable.Sender(
        a, ack_id=0x7F0
    ) as tx:
        out = tx.send(0x1ABCDE, b"ext", extended=True).result(2)
        assert out.delivered and out.extended
        m = rx.receive(1.0)
        assert (m.id, m.extended, m.data) == (0x1ABCDE, True, b"ext")
    (ack,) = raw_frames(acks, 1)
    assert (ack.id, ack.extended, ack.data) == (0x7F0, False, b"\xac\x00")


def test_several_peers_in_flight_and_per_peer_order(pair):
    a, b, _ = pair
    got = []
    rx = reliable.Receiver(b, matches=[canx.Match(0x100, mask=0x700)], on_message=got.append)
    with rx, reliable.Sender(a, timeout=0.3, retries=1, backoff=1) as tx:
        lost = tx.send(0x400, b"nobody")  # no receiver: fails after 2 tries (600 ms)
        futs = [tx.send(0x100 + 2 * (i % 4), bytes([i])) for i in range(20)]
        outcomes = [f.result(5) for f in futs]
        assert all(o.delivered for o in outcomes)
        assert not lost.done(), "the unanswered message did not hold the others up"
        assert lost.result(5).delivered is False
        deadline = time.monotonic() + 2
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
    for peer in range(4):
        mine = [m for m in got if m.id == 0x100 + 2 * peer]
        assert [m.data[0] for m in mine] == [i for i in range(20) if i % 4 == peer], "in order per data id"
        assert [m.seq for m in mine] == list(range(5)), "seq counts per data id"


def test_outcome_callbacks_and_raising_callback_is_counted(pair):
    a, b, _ = pair
    seen = []
    done = threading.Event()

    def bad(o):
        raise RuntimeError("boom")

    with reliable.Receiver(b, matches=[canx.Match(0x10)]), reliable.Sender(a, on_outcome=bad) as tx:
        tx.on_outcome(lambda o: (seen.append(o), done.set()))
        tx.send(0x10, b"cb").result(2)
        assert done.wait(2)
        assert seen[0].data == b"cb"
        deadline = time.monotonic() + 2
        while tx.stats()["callback_errors"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tx.stats()["callback_errors"] == 1


def test_send_async(pair):
    a, b, _ = pair

    async def main():
        with reliable.Receiver(b, matches=[canx.Match(0x55)], timeout=1.0) as rx, reliable.Sender(a) as tx:
            outs = await asyncio.gather(tx.send_async(0x55, b"1"), tx.send_async(0x57, b"2"))
            msg = await rx.receive_async()
            return outs, msg

    rx_outs, msg = asyncio.run(main())
    assert [o.delivered for o in rx_outs] == [True, False]  # nobody receives 0x57
    assert msg.data == b"1"


def test_async_iteration_of_a_receiver(pair):
    a, b, _ = pair

    async def main():
        with reliable.Receiver(b, matches=[canx.Match(0x60)], timeout=0.5) as rx, reliable.Sender(a) as tx:
            for i in range(3):
                await tx.send_async(0x60, bytes([i]))
            return [m.data async for m in rx]

    assert asyncio.run(main()) == [b"\x00", b"\x01", b"\x02"]


def test_ack_is_native_while_python_holds_the_gil(pair):
    """The receiver ACKs in the native receive thread: while the only Python
    thread that could answer is busy holding the GIL, the ACK still leaves."""
    a, b, _ = pair
    acks = a.listen(matches=[canx.Match(0x71)], timeout=2.0)
    with reliable.Receiver(b, matches=[canx.Match(0x70)]) as rx:
        old = sys.getswitchinterval()
        sys.setswitchinterval(5.0)  # no other Python thread runs during the loop
        try:
            t_send = time.time()
            a.send(canx.Message(0x70, b"\x01x"))
            end = time.perf_counter() + 0.3
            while time.perf_counter() < end:
                pass
        finally:
            sys.setswitchinterval(old)
        ack = acks.receive()
        assert ack is not None and ack.data == b"\xac\x01"
        assert ack.timestamp - t_send < 0.2, "ACK was sent while Python was busy (0.3 s)"
        assert rx.in_waiting() == 1


def test_receiver_never_acks_what_it_cannot_deliver(pair):
    a, b, _ = pair
    rx = reliable.Receiver(b, matches=[canx.Match(0x100, mask=0x700)], queue_size=2)
    with rx, reliable.Sender(a, timeout=0.02, retries=None, backoff=1) as tx:
        futs = [tx.send(0x100 + 2 * i, b"q") for i in range(4)]
        time.sleep(0.3)
        assert sum(f.done() for f in futs) == 2, "only what fits the queue is ACKed"
        assert rx.stats()["dropped_no_room"] > 0
        got = [rx.receive(1.0) for _ in range(4)]
        assert all(m is not None for m in got)
        assert all(f.result(2).delivered for f in futs)
        assert sorted(m.id for m in got) == [0x100, 0x102, 0x104, 0x106]


def test_malformed_frames_are_reported(pair):
    a, b, _ = pair
    errors = []
    got = threading.Event()
    rx = reliable.Receiver(b, matches=[canx.Match(0x90)], on_error=lambda e: (errors.append(e), got.set()))
    with rx:
        a.send(canx.Message(0x90, b""))
        assert got.wait(2)
        assert errors[0] == reliable.Malformed(0x90, False, "unexpected data length 0")
        assert rx.stats()["malformed"] == 1
        with pytest.raises(RuntimeError):
            rx.receive(0.1)  # callbacks take the events


def test_bad_arguments_and_limits(pair):
    a, b, _ = pair
    with reliable.Sender(a, timeout=0.5, retries=None, max_outstanding=1) as tx:
        with pytest.raises(ValueError, match="7 bytes"):
            tx.send(0x10, bytes(8))
        with pytest.raises(ValueError, match="id out of range"):
            tx.send(0x800, b"")
        with pytest.raises(TypeError):
            tx.send(0x10, 5)
        tx.send(0x10, b"")
        with pytest.raises(canx.LimitError):
            tx.send(0x11, b"")
        assert tx.outstanding == 1
    with pytest.raises(ValueError, match="whole number"):
        reliable.Sender(a, backoff=1.5)
    with pytest.raises(ValueError, match="positive"):
        reliable.Sender(a, timeout=0)
    with pytest.raises(ValueError, match="ack_offset"):
        reliable.Sender(a, ack_offset=0)
    with pytest.raises(ValueError, match="Match"):
        reliable.Receiver(b, matches=[])
    with pytest.raises(ValueError, match="no valid id"):
        reliable.Sender(a).send(0x7FF, b"")  # 0x7FF + 1 is no standard id


def test_close_cancels_and_deinit_stops(pair):
    a, _, _ = pair
    tx = reliable.Sender(a, timeout=1.0, retries=None)
    fut = tx.send(0x33, b"never")
    tx.close()
    assert fut.cancelled()
    with pytest.raises(ValueError, match="deinitialized"):
        tx.send(0x33, b"x")
    tx2 = reliable.Sender(a)
    a.deinit()
    with pytest.raises(ValueError, match="deinitialized"):
        tx2.send(0x33, b"x")
    tx2.close()


# ---------------------------------------------------------------- guide mode


def test_guide_sender_and_listener(pair):
    a, b, obs = pair
    seen = obs.listen(timeout=1.0)
    with reliable.GuideListener(b, timeout=1.0) as gl, reliable.GuideSender(a, retries=3) as gs:
        outs = [gs.send(now_ms=1000 + i) for i in range(3)]
        assert [(o.result(2).count, o.result(2).tries, o.result(2).now_ms) for o in outs] == [
            (0, 1, 1000),
            (1, 1, 1001),
            (2, 1, 1002),
        ]
        assert [(m.count, m.now_ms) for m in (gl.receive(), gl.receive(), gl.receive())] == [
            (0, 1000),
            (1, 1001),
            (2, 1002),
        ]
    frames = raw_frames(seen, 6)
    import struct

    assert (frames[0].id, frames[0].data) == (0x408, struct.pack("<II", 0, 1000))
    assert (frames[1].id, frames[1].data) == (0x409, struct.pack("<I", 0))


def test_guide_listener_reports_bad_length_and_does_not_ack(pair):
    a, b, _ = pair
    acks = a.listen(matches=[canx.Match(0x409)], timeout=0.3)
    with reliable.GuideListener(b, timeout=0.3) as gl:
        a.send(canx.Message(0x408, b"1234"))
        assert gl.receive() is None
        assert gl.errors[0].reason == "unexpected data length 4"
        assert acks.receive() is None


def test_guide_sender_resends_until_acked(pair):
    a, b, _ = pair
    data = b.listen(matches=[canx.Match(0x408)], timeout=2.0)
    with reliable.GuideSender(a, timeout=0.05) as gs:
        fut = gs.send(count=41, now_ms=7)
        frames = raw_frames(data, 3)
        assert all(f.data == frames[0].data for f in frames), "the same 8 bytes each time"
        b.send(canx.Message(0x409, (41).to_bytes(4, "little")))
        out = fut.result(2)
        assert out.delivered and out.count == 41 and out.tries >= 3


def canx_run(*scripts: str, duration: float) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "canx", "run", *scripts, "--duration", str(duration), "--channel", "virtual:guide"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_canx_sender_against_unmodified_guide_listener():
    out = canx_run(str(GUIDE / "listener_ack.py"), "examples/reliable_guide_sender.py", duration=2.0)
    delivered = [line for line in out.splitlines() if line.startswith("[reliable_guide_sender] delivered")]
    received = [line for line in out.splitlines() if line.startswith("[listener_ack] received message: count=")]
    assert len(delivered) >= 3, out
    for i, line in enumerate(delivered):
        assert line.startswith(f"[reliable_guide_sender] delivered count={i} tries="), out
        assert f"[listener_ack] received message: count={i} " in out


def test_unmodified_guide_sender_against_canx_listener():
    out = canx_run(str(GUIDE / "sender_ack.py"), "examples/reliable_guide_listener.py", duration=3.5)
    received = [line for line in out.splitlines() if line.startswith("[reliable_guide_listener] received message")]
    assert len(received) >= 3, out
    for i, line in enumerate(received):
        assert f"count={i} " in line, out
    assert out.count("[sender_ack] Received ACK") >= 3, out


def test_guide_sender_gives_up_after_retries_and_reports_bad_acks(pair):
    a, b, _ = pair
    bad = []
    with reliable.GuideSender(a, timeout=0.03, retries=2, on_outcome=None) as gs:
        gs.on_error(bad.append)
        fut = gs.send(count=5, now_ms=1)
        b.send(canx.Message(0x409, b"\x05\x00"))  # wrong length: reported, not an ACK
        out = fut.result(2)
        assert out == reliable.GuideOutcome(False, 3, 5, 1)
        s = gs.stats()
        assert (s["sent"], s["resent"], s["failed"], s["malformed"]) == (1, 2, 1, 1)
        deadline = time.monotonic() + 1
        while not bad and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bad == [reliable.Malformed(0x409, False, "unexpected data length 2")]


# ------------------------------------------------------ asyncio on readiness


def test_cancelled_receive_async_loses_no_message(pair):
    """Issue 11 / review B5 on an engine queue: 1,000 numbered messages,
    ``receive_async`` and ``async for`` steps cancelled over and over
    (``wait_for`` with tiny timeouts, ``task.cancel()``): every message
    arrives exactly once, in order. (The old executor-slice form dropped the
    message its executor call had already taken.)"""
    import random

    a, b, _ = pair
    n = 1000
    with reliable.Receiver(b, matches=[canx.Match(0x123)], timeout=30) as rx, reliable.Sender(a, retries=None) as tx:
        it = rx.__aiter__()
        nexts = [rx.receive_async, it.__anext__]

        def produce():
            futs = [tx.send(0x123, i.to_bytes(2, "little")) for i in range(n)]
            return [f.result(30).delivered for f in futs]

        async def main():
            loop = asyncio.get_running_loop()
            producer = loop.run_in_executor(None, produce)
            rng = random.Random(5)
            got, cancels, tries = [], 0, 0
            deadline = loop.time() + 30
            while len(got) < n and loop.time() < deadline:
                tries += 1
                step = nexts[tries % 3 == 0]
                if tries % 2:
                    try:
                        got.append(await asyncio.wait_for(step(), rng.choice((0, 0.0001, 0.0005, 0.002))))
                    except asyncio.TimeoutError:
                        cancels += 1
                else:
                    task = asyncio.ensure_future(step())
                    for _ in range(rng.randrange(3)):
                        await asyncio.sleep(0)
                    task.cancel()
                    try:
                        got.append(await task)
                    except asyncio.CancelledError:
                        cancels += 1
            return got, cancels, await producer

        got, cancels, delivered = asyncio.run(main())
        assert all(delivered)
        assert [int.from_bytes(m.data, "little") for m in got] == list(range(n))
        assert cancels > 100
        assert rx.in_waiting() == 0


def test_receive_async_wakes_when_closed(pair):
    """``close()`` wakes a waiting ``receive_async`` at once (readiness),
    which then raises canio's deinitialized ValueError."""
    _, b, _ = pair
    rx = reliable.Receiver(b, matches=[canx.Match(0x123)], timeout=30)

    async def main():
        task = asyncio.create_task(rx.receive_async())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()
        rx.close()
        with pytest.raises(ValueError):
            await asyncio.wait_for(task, 5)

    asyncio.run(main())


# ------------------------------------------------------------ callback pump (B8)


def test_callback_pump_survives_an_unexpected_error_and_logs_it(caplog):
    """Review B8: an error from the pump's ``get`` that is not "closed"
    (a bug in event conversion, say) is logged on ``canx``, counted, and the
    pump keeps dispatching. (It used to end the pump silently.)"""
    from canx._dispatch import CallbackPump

    script = [RuntimeError("conversion bug"), ("ev", 1), None, TypeError("another"), ("ev", 2)]
    got, done = [], threading.Event()

    def get(_timeout):
        if not script:
            done.set()
            time.sleep(0.01)
            return None
        item = script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    with caplog.at_level("ERROR", logger="canx"):
        pump = CallbackPump("test-pump", get, got.append).start()
        try:
            assert done.wait(10)
        finally:
            pump.stop()
    assert got == [("ev", 1), ("ev", 2)]
    assert pump.pump_errors == 2 and isinstance(pump.last_pump_error, TypeError)
    assert sum("pump keeps running" in r.getMessage() for r in caplog.records) == 2


def test_callback_pump_ends_quietly_when_its_engine_closes(pair, caplog):
    """The engine-closed case is recognised precisely: closing a receiver
    with callbacks ends its pump thread without an error log."""
    _, b, _ = pair
    with caplog.at_level("ERROR", logger="canx"):
        rx = reliable.Receiver(b, matches=[canx.Match(0x123)], on_message=lambda m: None)
        pump = rx._pump
        assert pump is not None and pump.running
        rx._native.close()  # closed under the pump, without stop()
        deadline = time.monotonic() + 10
        while pump.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pump.running
        rx.close()
    assert pump.pump_errors == 0
    assert not [r for r in caplog.records if r.name == "canx"]


def test_receive_async_ends_when_the_bus_is_shut_down_under_it():
    """CAN.deinit() under an attached receiver signals nothing on its queue;
    the waiter's periodic re-check (canx._aio.LIVENESS) still ends a
    waiting receive_async with canio's deinitialized ValueError."""
    from canx._dispatch import DEINIT_MSG

    can = canx.CAN(channel=f"virtual:rel-{next(_names)}")
    rx = reliable.Receiver(can, matches=[canx.Match(0x123)], timeout=None)

    async def main():
        task = asyncio.create_task(rx.receive_async())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()
        can.deinit()
        with pytest.raises(ValueError) as ei:
            await asyncio.wait_for(task, 10)
        return str(ei.value)

    try:
        assert asyncio.run(main()) == DEINIT_MSG
    finally:
        rx.close()
