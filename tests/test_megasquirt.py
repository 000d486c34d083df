"""canx.megasquirt on the virtual bus: tables served natively, client
operations, callbacks, asyncio, broadcast decoding, and the examples.

Protocol rules: docs/protocols/megasquirt.md.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

import canx
from canx import megasquirt as ms

ROOT = Path(__file__).resolve().parent.parent
_ids = itertools.count()


@pytest.fixture
def channel() -> str:
    return f"virtual:ms-test-{next(_ids)}"


@pytest.fixture
def pair(channel):
    """An ECU (board 0) with outpc (7, read-only), a config table (20, rw) and
    a big table (40, read-only via MSG_REQX); a dash (board 3)."""
    ecu = ms.Node(channel=channel, can_id=0)
    dash = ms.Node(channel=channel, can_id=3)
    ecu.serve_table(7, bytes(range(256)))
    ecu.serve_table(20, 64, writable=True)
    ecu.serve_table(40, b"\xb0" * 100)
    yield ecu, dash
    dash.close()
    ecu.close()


def wait_until(pred, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def raw_frame(msg_type, from_id, to_id, blk, off, data):
    ident = off << 18 | msg_type << 15 | from_id << 11 | to_id << 7 | (blk & 0xF) << 3 | (blk & 0x10) >> 2
    return canx.Message(ident, bytes(data), extended=True)


# --------------------------------------------------------------------------- reads and writes


def test_reads_across_tables_and_split(pair):
    ecu, dash = pair
    assert dash.read(0, 7, 0, 8) == bytes(range(8))
    # > 8 bytes: split into MSG_REQ frames of <= 8, reassembled in order
    assert dash.read(0, 7, 100, 20) == bytes(range(100, 120))
    assert dash.read(0, 7, 0, 256) == bytes(range(256))
    # tables above 31 go by MSG_REQX
    assert dash.read(0, 40, 90, 10) == b"\xb0" * 10
    assert dash.read(0, 20, 0, 3) == b"\0\0\0"
    st = dash.stats()
    assert st["client_replies"] >= 1 + 3 + 32 + 2 + 1
    assert ecu.stats()["replies"] == st["client_replies"]


def test_request_frames_on_the_wire(channel):
    """A 20-byte read is MSG_REQ frames with the documented header and payload."""
    ecu = ms.Node(channel=channel, can_id=0)
    spy_can = canx.CAN(channel=channel)
    spy = spy_can.listen(timeout=1.0)
    dash = ms.Node(channel=channel, can_id=3)
    try:
        ecu.serve_table(7, bytes(range(256)))
        assert dash.read(0, 7, 200, 20) == bytes(range(200, 220))
        frames = spy.receive_many(100, 1.0)
        while len(frames) < 6:
            more = spy.receive_many(100, 1.0)
            if not more:
                break
            frames += more
        reqs = [m for m in frames if (m.id >> 15) & 7 == ms.MSG_REQ]
        rsps = [m for m in frames if (m.id >> 15) & 7 == ms.MSG_RSP]
        assert len(reqs) == 3 and len(rsps) == 3
        for k, m in enumerate(reqs):
            assert m.extended
            assert m.id >> 18 == 200 + 8 * k  # var_offset of the data on the ECU
            assert (m.id >> 11) & 0xF == 3 and (m.id >> 7) & 0xF == 0  # from 3 to 0
            assert (m.id >> 3) & 0xF == 7
            assert m.data[0] == 6  # reply to my table 6
            assert m.data[2] & 0xF == (8 if k < 2 else 4)  # count
        for m in rsps:
            assert (m.id >> 11) & 0xF == 0 and (m.id >> 7) & 0xF == 3
            assert (m.id >> 3) & 0xF == 6
    finally:
        dash.close()
        spy_can.deinit()
        ecu.close()


def test_writes_and_read_back(pair):
    ecu, dash = pair
    dash.write(0, 20, 4, bytes(range(1, 21)))  # 20 bytes: three MSG_CMD frames
    assert wait_until(lambda: ecu.table(20).read(4, 20) == bytes(range(1, 21)))
    assert dash.read(0, 20, 4, 20) == bytes(range(1, 21))
    dash.write(0, 20, 0, bytearray(b"\xAA"))
    assert wait_until(lambda: ecu.table(20)[0] == 0xAA)


def test_read_only_refusal_is_reported(pair):
    ecu, dash = pair
    refused = []
    got = threading.Event()

    @ecu.on_refused
    def _(ev):
        refused.append(ev)
        got.set()

    dash.write(0, 7, 0, b"\xff\xff")  # outpc is read-only
    assert got.wait(2.0)
    ev = refused[0]
    assert isinstance(ev, ms.Refused)
    assert (ev.from_id, ev.msg, ev.var_blk, ev.var_offset) == (3, "MSG_CMD", 7, 0)
    assert ev.reason == "table not writable"
    assert ecu.table(7)[0:2] == b"\x00\x01"  # unchanged
    assert ecu.stats()["refused"] == 1


def test_timeouts_raise_timeout_error(pair):
    ecu, dash = pair
    t0 = time.monotonic()
    with pytest.raises(ms.MegasquirtTimeoutError) as ei:
        dash.read(0, 9, 0, 4)  # unknown table: no reply at all
    assert isinstance(ei.value, TimeoutError) and isinstance(ei.value, canx.CanxError)
    assert "3 tries" in str(ei.value)
    assert 0.25 <= time.monotonic() - t0 < 2.0
    with pytest.raises(TimeoutError):
        dash.read(0, 7, 250, 8)  # out of range
    with pytest.raises(TimeoutError):
        dash.read(5, 7, 0, 1)  # no such board
    # the call's own timeout is shorter than the engine's retries
    t0 = time.monotonic()
    with pytest.raises(ms.MegasquirtTimeoutError, match="within"):
        dash.read(0, 9, 0, 1, timeout=0.05)
    assert time.monotonic() - t0 < 0.25
    assert ecu.stats()["refused"] >= 6
    # still works afterwards
    assert dash.read(0, 7, 1, 1) == b"\x01"


def test_bad_arguments_are_value_errors(pair):
    ecu, dash = pair
    with pytest.raises(ValueError, match="board"):
        dash.read(3, 7, 0, 1)  # own id
    with pytest.raises(ValueError, match="board"):
        dash.read(15, 7, 0, 1)  # broadcast can't reply
    with pytest.raises(ValueError, match="length"):
        dash.read(0, 7, 0, 0)
    with pytest.raises(ValueError, match="2047"):
        dash.read(0, 7, 2040, 16)
    with pytest.raises(ValueError, match="0-31"):
        dash.write(0, 40, 0, b"x")
    with pytest.raises(ValueError, match="reply table"):
        dash.serve_table(6, 8)
    with pytest.raises(ValueError, match="already served"):
        ecu.serve_table(7, 8)
    with pytest.raises(ValueError):
        ecu.serve_table(1, 0)
    with pytest.raises(ValueError, match="can_id"):
        ms.Node(channel="virtual:ms-bad", can_id=15)
    with pytest.raises(OverflowError):
        dash.read(0, 7, -1, 1)


def test_table_object(pair):
    ecu, dash = pair
    t = ecu.table(20)
    assert (len(t), t.blk, t.readable, t.writable) == (64, 20, True, True)
    t[0] = 7
    t[-1] = 9
    t[2:5] = b"abc"
    t.write(10, bytearray(b"\x01\x02"))
    assert t[0] == 7 and t[63] == 9 and t[2:5] == b"abc" and t.read(10, 2) == b"\x01\x02"
    assert bytes(t) == t.bytes() and len(t.bytes()) == 64
    assert t[::16] == bytes([7, 0, 0, 0])
    with pytest.raises(IndexError):
        t[64]
    with pytest.raises(ValueError):
        t[0] = 256
    with pytest.raises(ValueError, match="resize"):
        t[0:2] = b"abc"
    with pytest.raises(ValueError, match="outside"):
        t.write(63, b"ab")
    with pytest.raises(ValueError, match="outside"):
        t.read(60, 5)
    with pytest.raises(KeyError):
        ecu.table(21)
    # the bus sees the owner's changes at once
    assert dash.read(0, 20, 0, 5) == bytes([7, 0]) + b"abc"
    # the owner may change a read-only table
    ecu.table(7)[0] = 0x55
    assert dash.read(0, 7, 0, 1) == b"\x55"
    assert "blk=20" in repr(t)


def test_table_changes_while_served(pair):
    """Python rewrites the table continuously; every read sees a consistent 8-byte frame."""
    ecu, dash = pair
    t = ecu.table(7)
    stop = threading.Event()
    started = threading.Event()

    def writer():
        v = 0
        while not stop.is_set():
            t.write(0, bytes([v & 0xFF]) * 8)
            started.set()
            v += 1

    th = threading.Thread(target=writer)
    th.start()
    try:
        # Before the first write the table still holds the fixture's bytes.
        assert started.wait(10)
        seen = set()
        reads = 0
        deadline = time.monotonic() + 10
        # At least 50 reads, and on until the writer has been seen to move (a
        # loaded machine may not schedule it during the first 50).
        while reads < 50 or (len(seen) < 2 and time.monotonic() < deadline):
            d = dash.read(0, 7, 0, 8)
            assert len(set(d)) == 1, d  # one frame is copied under the lock
            seen.add(d[0])
            reads += 1
        assert len(seen) > 1
    finally:
        stop.set()
        th.join()


# --------------------------------------------------------------------------- outmsg, crc, burn


def test_outmsg_both_forms(pair):
    ecu, dash = pair
    outpc = ms.encode_outpc({"rpm": 3000, "map_kpa": 95.5, "mat_degF": 70, "clt_degF": 185.2, "tps_pct": 12.5},
                            size=256)
    ecu.table(7).write(0, outpc)
    ecu.set_outmsg(0, range(18, 26))
    ecu.set_outmsg(1, [6, 7, 18, 19, 20, 21, 22, 23, 24, 25])
    assert dash.request_outmsg(0, 0, 8) == bytes(outpc[18:26])
    got = dash.request_outmsg(0, 1, 10)
    rpm, map10, mat10, clt10, tps10 = struct.unpack(">Hhhhh", got)
    assert (rpm, map10, mat10, clt10, tps10) == (3000, 955, 700, 1852, 125)
    # into a served table of the requester (the GPIO-board style)
    dash.serve_table(3, 32, writable=True)
    assert dash.request_outmsg(0, 1, 10, into=(3, 16)) == got
    assert dash.table(3)[16:26] == got
    assert dash.request_outmsg(0, 0, into=(3, 0)) is None  # fire and forget
    assert wait_until(lambda: dash.table(3)[0:8] == bytes(outpc[18:26]))
    with pytest.raises(TimeoutError):
        dash.request_outmsg(0, 7, 4)  # not defined on the ECU
    with pytest.raises(ValueError, match="length"):
        dash.request_outmsg(0, 1)
    with pytest.raises(ValueError, match="not served"):
        dash.request_outmsg(0, 1, 10, into=(4, 0))
    with pytest.raises(ValueError):
        ecu.set_outmsg(20, [1])
    with pytest.raises(ValueError):
        ecu.set_outmsg(0, range(25))


def test_crc_and_burn(channel):
    with ms.Node(channel=channel, can_id=0) as ecu, ms.Node(channel=channel, can_id=3) as dash:
        ecu.serve_table(15, b"123456789")
        ecu.serve_table(20, 16, writable=True)
        assert dash.crc(0, 15) == 0xCBF43926 == zlib.crc32(b"123456789")
        burns = []

        @ecu.on_burn
        def burn(ev):
            burns.append(ev)
            return True  # -> MSG_BURNACK ok

        assert dash.burn(0, 20, wait_ack=True) is True
        assert burns == [ms.Burn(3, 20)]
        assert dash.burn(0, 20, wait_ack=False) is None
        assert wait_until(lambda: len(burns) == 2)


# --------------------------------------------------------------------------- callbacks


def test_callbacks_and_a_raising_callback_does_not_stop_the_node(pair, caplog):
    ecu, dash = pair
    commands, writes, xsubs, events = [], [], [], []
    ecu.on_command(commands.append)
    ecu.on_write(writes.append)
    ecu.on_xsub(xsubs.append)
    ecu.on_event(events.append)

    def boom(ev):
        raise RuntimeError("callback bug")

    ecu.on_command(boom)
    with caplog.at_level(logging.ERROR, logger="canx"):
        dash.write(0, 20, 8, b"\x01\x02\x03")
        assert wait_until(lambda: commands and ecu.callback_errors == 1)
        # the node still answers the bus natively and still runs callbacks
        assert dash.read(0, 20, 8, 3) == b"\x01\x02\x03"
        dash.write(0, 20, 0, b"\x09")
        assert wait_until(lambda: len(commands) == 2 and ecu.callback_errors == 2)
    assert "callback bug" in caplog.text
    assert isinstance(ecu.last_callback_error, RuntimeError)
    assert commands[0] == ms.Write(3, "MSG_CMD", 20, 8, b"\x01\x02\x03")
    assert writes == commands
    # MSG_XSUB and a MSG_SPND through a raw frame
    raw = canx.CAN(channel=ecu.can.channel)
    try:
        raw.send(raw_frame(ms.MSG_XSUB, 5, 0, 1, 2, b""))
        raw.send(raw_frame(ms.MSG_XTND, 5, 15, 0, 0, b"\x82\x01"))
        assert wait_until(lambda: xsubs and any(isinstance(e, ms.ServerEvent) for e in events))
    finally:
        raw.deinit()
    assert xsubs == [ms.Xsub(5, 1, 2)]
    assert ms.ServerEvent("suspend", 5, "MSG_SPND", (True,)) in events
    assert ecu.stats()["callback_errors"] == 2
    with pytest.raises(TypeError):
        ecu.on_command(42)


def test_malformed_frames_are_refused_not_fatal(pair):
    ecu, dash = pair
    refused = []
    ecu.on_refused(refused.append)
    raw = canx.CAN(channel=ecu.can.channel)
    try:
        raw.send(raw_frame(ms.MSG_REQ, 4, 0, 7, 0, b"\x06\x00"))  # truncated MSG_REQ payload
        raw.send(raw_frame(ms.MSG_REQ, 4, 0, 7, 0, b"\x06\x00\x00"))  # count 0
        raw.send(raw_frame(ms.MSG_CMD, 4, 0, 20, 0, b""))  # empty write
        raw.send(raw_frame(ms.MSG_CMD, 4, 15, 31, 0, b"\x01"))  # to every board, table 31: unknown
        assert wait_until(lambda: len(refused) == 4)
    finally:
        raw.deinit()
    assert [r.reason.split(":")[0] for r in refused] == [
        "malformed payload", "malformed payload", "write without data", "unknown table"]
    assert refused[3].var_blk == 31
    assert dash.read(0, 7, 0, 2) == b"\x00\x01"


# --------------------------------------------------------------------------- asyncio


def test_async_forms(pair):
    ecu, dash = pair
    ecu.set_outmsg(0, [6, 7])

    async def main():
        a, b, c = await asyncio.gather(
            dash.read_async(0, 7, 0, 16),
            dash.read_async(0, 40, 0, 4),
            dash.request_outmsg_async(0, 0, 2),
        )
        await dash.write_async(0, 20, 0, b"hi")
        crc = await dash.crc_async(0, 20)
        with pytest.raises(ms.MegasquirtTimeoutError):
            await dash.read_async(0, 9, 0, 1)
        with pytest.raises(ms.MegasquirtTimeoutError):
            await dash.read_async(0, 9, 0, 1, timeout=0.05)
        # cancellation is prompt and leaves the node usable
        task = asyncio.ensure_future(dash.read_async(0, 9, 0, 1, timeout=10))
        await asyncio.sleep(0.05)
        task.cancel()
        t0 = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - t0 < 0.5
        return a, b, c, crc, await dash.read_async(0, 20, 0, 2)

    a, b, c, crc, back = asyncio.run(main())
    assert a == bytes(range(16)) and b == b"\xb0" * 4 and c == bytes([6, 7])
    assert back == b"hi"
    assert crc == zlib.crc32(ecu.table(20).bytes())


def test_async_operations_wait_for_slots_without_executor_threads(pair):
    """48 concurrent read_async (more than the 32 slots): the ones refused
    with Busy wait for a slot on the node's completion descriptor, every
    result is right, and no thread is parked in the loop's default executor
    (the old form waited in executor slices and spun on sleep(0.002))."""
    ecu, dash = pair

    def executor_threads():
        return {t for t in threading.enumerate() if t.name.startswith("asyncio_")}

    before = executor_threads()

    async def main():
        tasks = [asyncio.ensure_future(dash.read_async(0, 7, i, 4, timeout=10)) for i in range(48)]
        for _ in range(10):
            await asyncio.sleep(0)
        parked = executor_threads() - before
        return await asyncio.gather(*tasks), parked

    got, parked = asyncio.run(main())
    assert got == [bytes(range(i, i + 4)) for i in range(48)]
    assert not parked, f"async operations parked executor threads: {parked}"


def test_async_operation_wakes_when_the_node_closes(pair):
    """close() wakes a waiting read_async at once: it raises canio's
    deinitialized ValueError (the operation is abandoned)."""
    ecu, dash = pair

    async def main():
        task = asyncio.ensure_future(dash.read_async(0, 9, 0, 1, timeout=30))  # table 9: never answered
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()
        dash._n.close()
        with pytest.raises(ValueError):
            await asyncio.wait_for(task, 5)

    asyncio.run(main())


def test_many_concurrent_operations_wait_for_slots(pair):
    """More operations than slots (32): callers wait for a free slot."""
    ecu, dash = pair
    results = {}

    def worker(i):
        results[i] = dash.read(0, 7, i, 4, timeout=5)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(48)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == {i: bytes(range(i, i + 4)) for i in range(48)}


# --------------------------------------------------------------------------- node life cycle


def test_node_on_an_open_can_and_close(channel):
    can = canx.CAN(channel=channel)
    node = ms.Node(can, can_id=2)
    node.serve_table(1, 4)
    with ms.Node(channel=channel, can_id=4) as other:
        assert other.read(2, 1, 0, 4) == b"\0" * 4
        node.close()
        assert node.closed
        with pytest.raises(TimeoutError):
            other.read(2, 1, 0, 4)  # detached: nobody answers
    can.send(canx.Message(1, b""))  # the CAN it was given stays open
    node.close()
    can.deinit()
    with pytest.raises(ValueError):
        ms.Node(can, can_id=2)
    with pytest.raises(ValueError):
        ms.Node(can, channel=channel, can_id=2)


def test_several_nodes_on_one_loopback_can(channel):
    with canx.CAN(channel=channel, loopback=True) as can:
        ecu = ms.Node(can, can_id=0)
        gpio = ms.Node(can, can_id=1)
        ecu.serve_table(7, bytes(range(32)))
        gpio.serve_table(2, b"\x01")
        assert gpio.read(0, 7, 4, 12) == bytes(range(4, 16))
        assert ecu.read(1, 2, 0, 1) == b"\x01"
        assert ecu.stats()["refused"] == gpio.stats()["refused"] == 0
        gpio.close()
        ecu.close()


def test_several_nodes_on_one_can_without_loopback(channel):
    # The runtime echoes each engine's frames to the other engines of its
    # bus, so nodes sharing one CAN talk without loopback=True.
    with canx.CAN(channel=channel) as can:
        ecu = ms.Node(can, can_id=0)
        gpio = ms.Node(can, can_id=1)
        ecu.serve_table(7, bytes(range(32)))
        assert gpio.read(0, 7, 4, 12) == bytes(range(4, 16))
        assert ecu.stats()["refused"] == gpio.stats()["refused"] == 0
        gpio.close()
        ecu.close()


def test_operations_after_the_bus_closed(channel):
    can = canx.CAN(channel=channel)
    node = ms.Node(can, can_id=2)
    can.deinit()
    with pytest.raises(ValueError, match="deinitialized"):
        node.read(0, 7, 0, 1)
    with pytest.raises(ValueError, match="deinitialized"):
        node.serve_table(1, 4)


# --------------------------------------------------------------------------- broadcast


def test_broadcast_decode_and_encode():
    bc = ms.Broadcast()
    frames = ms.encode_dash({"map_kpa": 100.0, "rpm": 3000, "clt_degF": -40.0, "tps_pct": 12.5, "mat_degF": 70.1})
    assert frames[0].id == 0x5E8 and frames[0].data == bytes.fromhex("03e80bb8fe70007d")
    assert bc.decode(frames[0]) == {"map_kpa": 100.0, "rpm": 3000.0, "clt_degF": -40.0, "tps_pct": 12.5}
    assert bc.decode(frames[1])["mat_degF"] == 70.1
    outpc = ms.encode_outpc({"rpm": 6500, "baro_kpa": 101.3, "map_kpa": 35.0, "clt_degF": 190.0, "tps_pct": 3.0})
    vals = {}
    for m in ms.encode_advanced(outpc, range(4)):
        vals.update(bc.decode(m))
    assert (vals["rpm"], vals["baro_kpa"], vals["map_kpa"], vals["clt_degF"], vals["tps_pct"]) == (
        6500.0, 101.3, 35.0, 190.0, 3.0)
    assert ms.decode_outpc(outpc)["clt_degF"] == 190.0
    assert bc.values["rpm"] == 6500.0
    assert bc.decode(canx.Message(0x123, b"12345678")) is None
    assert bc.decode(canx.Message(0x5E8, b"12345678", extended=True)) is None
    with pytest.raises(KeyError):
        ms.encode_dash({"nope": 1})
    off = ms.Broadcast(dash_base=None)
    assert off.decode(frames[0]) is None


def test_broadcast_listens_on_a_bus(channel):
    with canx.CAN(channel=channel) as tx, ms.Broadcast(channel=channel, timeout=0.3) as bc:
        tx.send(canx.Message(0x5F7, b"\0" * 8))  # advanced group 7 (decoded)
        tx.send(canx.Message(0x5E7, b"\0" * 8))  # not a broadcast id: filtered out
        for m in ms.encode_dash({"rpm": 1234, "clt_degF": 150.0}):
            tx.send(m)
        got = list(bc)
    assert len(got) == 6
    assert got[1]["rpm"] == 1234.0 and got[1]["clt_degF"] == 150.0
    assert bc.values["rpm"] == 1234.0


def test_broadcast_async(channel):
    async def main():
        with canx.CAN(channel=channel) as tx, ms.Broadcast(channel=channel, timeout=0.3) as bc:
            for m in ms.encode_dash({"rpm": 800}):
                tx.send(m)
            return [d async for d in bc]

    got = asyncio.run(main())
    assert len(got) == 5 and got[0]["rpm"] == 800.0


# --------------------------------------------------------------------------- examples


def test_examples_run_together_in_one_process_group():
    """The three examples on one virtual bus: virtual buses are per process,
    so they run in one interpreter through examples/megasquirt/all.py."""
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "megasquirt" / "all.py"),
                        "--channel", "virtual:ms-ex", "--duration", "5"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "simulator: serving" in out
    assert "fan ON" in out and "fan OFF" in out, out
    assert "dash: rpm=" in out, out


@pytest.mark.parametrize("name", ["simulator.py", "gpio_fan.py", "dash.py"])
def test_each_example_runs_alone_and_stops(name):
    """Alone on a bus (no peers): each example runs for --duration and exits 0."""
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "megasquirt" / name),
                        "--channel", f"virtual:ms-alone-{name}", "--duration", "0.6"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "done" in p.stdout, p.stdout


def test_random_reads_and_writes_match_a_model():
    """Hypothesis: any (offset, length) read returns the table's bytes; any
    write to the writable table lands exactly there and nowhere else."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    ch = f"virtual:ms-prop-{next(_ids)}"
    with ms.Node(channel=ch, can_id=0) as ecu, ms.Node(channel=ch, can_id=9) as dash:
        ro = bytes((i * 7 + 3) & 0xFF for i in range(512))
        ecu.serve_table(7, ro)
        ecu.serve_table(12, 300, writable=True)
        model = bytearray(300)

        @settings(max_examples=60, deadline=None)
        @given(st.data())
        def check(data):
            off = data.draw(st.integers(0, 511))
            n = data.draw(st.integers(1, min(64, 512 - off)))
            assert dash.read(0, 7, off, n) == ro[off:off + n]
            woff = data.draw(st.integers(0, 299))
            payload = data.draw(st.binary(min_size=1, max_size=min(40, 300 - woff)))
            dash.write(0, 12, woff, payload)
            model[woff:woff + len(payload)] = payload
            assert dash.read(0, 12, 0, 300) == bytes(model)
            assert ecu.table(12).bytes() == bytes(model)

        check()
