"""canx as a python-can interface (``can.Bus(interface="canx")``): python-can's
own back-to-back pattern (two buses, every frame kind, filters, FD,
timestamps, thread-safe bus, asyncio Notifier) on the virtual bus.
``tests/test_pycan_vcan.py`` runs the same class on vcan."""

from __future__ import annotations

import asyncio
import itertools
import select
import sys
import threading
import time
from typing import Iterator, Tuple

import pytest

can = pytest.importorskip("can")

from canx.pycan import CanxBus  # noqa: E402

_names = itertools.count()


def _same(a: "can.Message", b: "can.Message") -> None:
    assert a.arbitration_id == b.arbitration_id
    assert a.is_extended_id == b.is_extended_id
    assert a.is_remote_frame == b.is_remote_frame
    assert a.is_fd == b.is_fd
    assert a.bitrate_switch == b.bitrate_switch
    assert a.error_state_indicator == b.error_state_indicator
    assert a.dlc == b.dlc
    if not a.is_remote_frame:
        assert bytes(a.data) == bytes(b.data)


class BackToBack:
    """python-can's back2back tests, for any canx channel (subclasses set `channel`)."""

    TIMEOUT = 1.0

    @pytest.fixture
    def channel(self) -> str:
        return f"virtual:b2b-{next(_names)}"

    @pytest.fixture
    def buses(self, channel: str, timeout_scale: float) -> Iterator[Tuple["can.BusABC", "can.BusABC"]]:
        self.TIMEOUT = 1.0 * timeout_scale
        a = can.Bus(interface="canx", channel=channel, fd=True)
        b = can.Bus(interface="canx", channel=channel, fd=True)
        yield a, b
        a.shutdown()
        b.shutdown()

    def _check(self, buses, msg: "can.Message") -> "can.Message":
        a, b = buses
        a.send(msg)
        got = b.recv(self.TIMEOUT)
        assert got is not None, f"{msg} did not arrive"
        _same(msg, got)
        assert got.is_rx
        return got

    def test_is_a_bus_abc(self, buses) -> None:
        a, _ = buses
        assert isinstance(a, can.BusABC) and isinstance(a, CanxBus)
        if hasattr(can, "CanProtocol"):  # python-can >= 4.3
            assert a.protocol == can.CanProtocol.CAN_FD
        assert a.state == can.BusState.ACTIVE

    def test_no_message(self, buses) -> None:
        assert buses[1].recv(0.1) is None

    def test_timestamp_is_absolute_and_fine(self, buses) -> None:
        t0 = time.time()
        got = self._check(buses, can.Message(arbitration_id=1, is_extended_id=False))
        assert t0 - 1 < got.timestamp < time.time() + 1
        later = self._check(buses, can.Message(arbitration_id=2, is_extended_id=False))
        assert isinstance(got.timestamp, float)
        assert 0 <= later.timestamp - got.timestamp < 1, "sub-second, monotonic between frames"

    def test_standard_extended_remote_and_lengths(self, buses) -> None:
        self._check(buses, can.Message(arbitration_id=0x7FF, is_extended_id=False, data=[1, 2, 3, 4, 5, 6, 7, 8]))
        self._check(buses, can.Message(arbitration_id=0x1FFFFFFF, is_extended_id=True, data=[0xAA]))
        self._check(buses, can.Message(arbitration_id=0x123, is_extended_id=False, is_remote_frame=True, dlc=5))
        self._check(buses, can.Message(arbitration_id=0x12345, is_extended_id=True, is_remote_frame=True, dlc=0))
        for n in range(9):
            self._check(buses, can.Message(arbitration_id=0x10, is_extended_id=False, data=bytes(range(n))))

    def test_fd_messages(self, buses) -> None:
        for n in (0, 8, 12, 16, 20, 24, 32, 48, 64):
            self._check(buses, can.Message(arbitration_id=0x300, is_extended_id=False, is_fd=True,
                                           data=bytes(range(n))))
        got = self._check(buses, can.Message(arbitration_id=0x1234567, is_fd=True, bitrate_switch=True,
                                             error_state_indicator=True, data=b"x" * 64))
        assert got.dlc == 64
        # python-can's socketcan pads FD payloads to the next valid length; so does canx.
        a, b = buses
        a.send(can.Message(arbitration_id=0x301, is_extended_id=False, is_fd=True, data=bytes(range(10))))
        got = b.recv(self.TIMEOUT)
        assert got is not None and got.dlc == 12 and bytes(got.data) == bytes(range(10)) + b"\0\0"

    def test_message_is_rx_and_own_messages(self, channel: str, timeout_scale: float) -> None:
        with can.Bus(interface="canx", channel=channel, receive_own_messages=True) as a, \
                can.Bus(interface="canx", channel=channel) as b:
            a.send(can.Message(arbitration_id=5, is_extended_id=False, data=b"own"))
            own = a.recv(timeout_scale)
            other = b.recv(timeout_scale)
            assert own is not None and not own.is_rx and bytes(own.data) == b"own"
            assert other is not None and other.is_rx
            assert own.channel == channel == other.channel

    def test_no_own_messages_by_default(self, buses) -> None:
        a, _ = buses
        a.send(can.Message(arbitration_id=5, is_extended_id=False))
        assert a.recv(0.1) is None

    def test_filters(self, buses) -> None:
        a, b = buses
        b.set_filters([{"can_id": 0x100, "can_mask": 0x7F0, "extended": False},
                       {"can_id": 0x1ABCDE00, "can_mask": 0x1FFFFF00, "extended": True}])
        sent = [(0x105, False), (0x205, False), (0x1ABCDE42, True), (0x105, True), (0x1ABCDF42, True)]
        for i, e in sent:
            a.send(can.Message(arbitration_id=i, is_extended_id=e))
        got = []
        while (m := b.recv(0.2 * self.TIMEOUT)) is not None:
            got.append((m.arbitration_id, m.is_extended_id))
        assert got == [(0x105, False), (0x1ABCDE42, True)]
        # without "extended", both kinds pass (python-can semantics)
        b.set_filters([{"can_id": 0x105, "can_mask": 0x7FF}])
        a.send(can.Message(arbitration_id=0x105, is_extended_id=True))
        a.send(can.Message(arbitration_id=0x105, is_extended_id=False))
        a.send(can.Message(arbitration_id=0x106, is_extended_id=False))
        got = [b.recv(self.TIMEOUT), b.recv(self.TIMEOUT), b.recv(0.1)]
        assert [(m.arbitration_id, m.is_extended_id) for m in got[:2]] == [(0x105, True), (0x105, False)]
        assert got[2] is None
        b.set_filters(None)
        self._check(buses, can.Message(arbitration_id=0x7AA, is_extended_id=False))

    def test_filters_given_at_construction(self, channel: str, timeout_scale: float) -> None:
        with can.Bus(interface="canx", channel=channel, can_filters=[{"can_id": 0x42, "can_mask": 0x7FF}]) as b, \
                can.Bus(interface="canx", channel=channel) as a:
            a.send(can.Message(arbitration_id=0x41, is_extended_id=False))
            a.send(can.Message(arbitration_id=0x42, is_extended_id=False))
            m = b.recv(timeout_scale)
            assert m is not None and m.arbitration_id == 0x42
            assert b.recv(0.1) is None

    @pytest.mark.skipif(sys.platform == "win32", reason="no readiness descriptor on Windows")
    def test_fileno_is_readable_while_messages_are_queued(self, buses) -> None:
        a, b = buses
        fd = b.fileno()
        assert select.select([fd], [], [], 0)[0] == []
        a.send(can.Message(arbitration_id=1, is_extended_id=False))
        a.send(can.Message(arbitration_id=2, is_extended_id=False))
        assert select.select([fd], [], [], self.TIMEOUT)[0] == [fd]
        deadline = time.time() + self.TIMEOUT
        got = []
        while len(got) < 2 and time.time() < deadline:
            if select.select([fd], [], [], 0.05)[0]:
                m = b.recv(0)
                if m is not None:
                    got.append(m.arbitration_id)
        assert got == [1, 2]
        assert select.select([fd], [], [], 0)[0] == []
        b.set_filters([{"can_id": 9, "can_mask": 0x7FF}])
        assert b.fileno() == fd, "the descriptor survives a filter change"

    @pytest.mark.skipif(sys.platform != "win32", reason="Windows only")
    def test_fileno_is_not_implemented_on_windows(self, buses) -> None:
        """python-can's contract: a bus without a descriptor raises
        NotImplementedError (its Notifier then uses a thread)."""
        _, b = buses
        with pytest.raises(NotImplementedError):
            b.fileno()

    def test_asyncio_notifier(self, buses) -> None:
        a, b = buses

        async def main() -> list:
            reader = can.AsyncBufferedReader()
            notifier = can.Notifier(b, [reader], loop=asyncio.get_running_loop())
            try:
                for i in range(20):
                    a.send(can.Message(arbitration_id=i, is_extended_id=False, data=[i]))
                return [await asyncio.wait_for(reader.get_message(), self.TIMEOUT) for _ in range(20)]
            finally:
                notifier.stop()

        got = asyncio.run(main())
        assert [m.arbitration_id for m in got] == list(range(20))

    def test_thread_safe_bus_and_threaded_notifier(self, channel: str, timeout_scale: float) -> None:
        with can.ThreadSafeBus(interface="canx", channel=channel) as a, \
                can.Bus(interface="canx", channel=channel) as b:
            reader = can.BufferedReader()
            notifier = can.Notifier(b, [reader], timeout=0.05)
            n, threads = 200, 4

            def sender(k: int) -> None:
                for i in range(n):
                    a.send(can.Message(arbitration_id=k, is_extended_id=False, data=i.to_bytes(2, "big")))

            ts = [threading.Thread(target=sender, args=(k,)) for k in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            got = []
            deadline = time.time() + 5 * timeout_scale
            while len(got) < n * threads and time.time() < deadline:
                m = reader.get_message(0.1)
                if m is not None:
                    got.append(m)
            notifier.stop()
            assert len(got) == n * threads
            for k in range(threads):  # per-sender order is kept
                seq = [int.from_bytes(m.data, "big") for m in got if m.arbitration_id == k]
                assert seq == list(range(n))

    def test_send_periodic_native(self, buses) -> None:
        a, b = buses
        msg = can.Message(arbitration_id=0x55, is_extended_id=False, data=[1])
        task = a.send_periodic(msg, 0.01)
        assert isinstance(task, can.ModifiableCyclicTaskABC)
        time.sleep(0.2)
        task.modify_data(can.Message(arbitration_id=0x55, is_extended_id=False, data=[2]))
        time.sleep(0.1)
        task.stop()
        time.sleep(0.05)
        got = []
        while (m := b.recv(0.05)) is not None:
            got.append(m)
        assert 20 <= len(got) <= 35, len(got)
        assert got[0].data == bytearray([1]) and got[-1].data == bytearray([2])
        assert b.recv(0.1) is None, "stopped"

    def test_send_periodic_duration_and_restart(self, buses) -> None:
        a, b = buses
        task = a.send_periodic(can.Message(arbitration_id=0x56, is_extended_id=False), 0.02, duration=0.1,
                               store_task=False)
        time.sleep(0.3)
        n = 0
        while b.recv(0.05) is not None:
            n += 1
        assert 4 <= n <= 7, n
        task.start()
        time.sleep(0.15)
        assert b.recv(self.TIMEOUT) is not None
        task.stop()

    @pytest.mark.skipif(
        "autostart" not in __import__("inspect").signature(can.BusABC.send_periodic).parameters,
        reason="python-can < 4.5 has no autostart",
    )
    def test_send_periodic_autostart_false_sends_nothing(self, buses) -> None:
        """Review B1: a task made with autostart=False sends nothing before
        start() (it used to be started natively and stopped afterwards, so
        one frame went out, always with BCM and racing the timer natively)."""
        a, b = buses
        tasks = [a.send_periodic(can.Message(arbitration_id=0x60 + k, is_extended_id=False), 0.001,
                                 autostart=False, store_task=False) for k in range(10)]
        assert b.recv(0.2 * self.TIMEOUT) is None, "a frame went out before start()"
        assert all(t._task.sent == 0 and not t._task.running for t in tasks)
        tasks[3].start()
        got = b.recv(self.TIMEOUT)
        assert got is not None and got.arbitration_id == 0x63
        for t in tasks:
            t.stop()

    def test_send_periodic_infinite_duration_runs_until_stopped(self, buses) -> None:
        """Review B7: duration=float("inf") means "until stopped" (as with
        python-can's own tasks) instead of raising PanicException; NaN is a
        ValueError."""
        a, b = buses
        msg = can.Message(arbitration_id=0x59, is_extended_id=False, data=[7])
        task = a.send_periodic(msg, 0.01, duration=float("inf"), store_task=False)
        assert b.recv(self.TIMEOUT) is not None
        assert task._task.running
        task.stop()
        task.start()  # start() passes the task's duration (inf) again
        assert task._task.running
        for _ in range(5):
            assert b.recv(self.TIMEOUT) is not None, "still sending after a restart"
        task.stop()
        with pytest.raises(ValueError, match="duration"):
            a.send_periodic(msg, 0.01, duration=float("nan"), store_task=False)

    @pytest.mark.skipif(
        "modifier_callback" not in __import__("inspect").signature(can.BusABC.send_periodic).parameters,
        reason="python-can < 4.3 has no modifier_callback",
    )
    def test_send_periodic_with_modifier_callback(self, buses) -> None:
        a, b = buses
        seen = []

        def bump(m: "can.Message") -> None:
            m.data[0] = (m.data[0] + 1) % 256
            seen.append(m.data[0])

        task = a.send_periodic(can.Message(arbitration_id=0x57, is_extended_id=False, data=[0]), 0.01,
                               modifier_callback=bump)
        time.sleep(0.1)
        task.stop()
        got = [b.recv(self.TIMEOUT) for _ in range(3)]
        assert [m.data[0] for m in got] == seen[:3]

    def test_bad_messages(self, buses) -> None:
        a, _ = buses
        with pytest.raises(ValueError, match="arbitration_id"):
            a.send(can.Message(arbitration_id=0x800, is_extended_id=False))
        with pytest.raises(ValueError, match="at most 8"):
            a.send(can.Message(arbitration_id=1, is_extended_id=False, data=bytes(9)))
        with pytest.raises(can.CanOperationError, match="error frames"):
            a.send(can.Message(is_error_frame=True))

    def test_shutdown_is_idempotent_and_final(self, channel: str) -> None:
        a = can.Bus(interface="canx", channel=channel)
        a.shutdown()
        a.shutdown()
        with pytest.raises(can.CanOperationError):
            a.send(can.Message(arbitration_id=1, is_extended_id=False))
        with pytest.raises(can.CanOperationError):
            a.recv(0)


class TestVirtual(BackToBack):
    def test_fd_frame_on_classic_bus(self, channel: str) -> None:
        with can.Bus(interface="canx", channel=channel) as a:
            if hasattr(can, "CanProtocol"):  # python-can >= 4.3
                assert a.protocol == can.CanProtocol.CAN_20
            with pytest.raises(can.CanOperationError, match="fd=True"):
                a.send(can.Message(arbitration_id=1, is_fd=True, data=b"x"))

    def test_detect_available_configs(self, channel: str) -> None:
        with can.Bus(interface="canx", channel=channel):
            configs = can.detect_available_configs("canx")
        assert {"interface": "canx", "channel": channel} in configs

    def test_unknown_channel(self) -> None:
        with pytest.raises(can.CanInitializationError, match="pcan"):
            can.Bus(interface="canx", channel="pcan:x")

    def test_state_follows_the_controller(self, channel: str) -> None:
        with can.Bus(interface="canx", channel=channel) as bus:
            assert bus.state == can.BusState.ACTIVE
            for name, want in (("ERROR_WARNING", can.BusState.ACTIVE), ("ERROR_PASSIVE", can.BusState.PASSIVE),
                               ("BUS_OFF", can.BusState.ERROR)):
                bus._raw.inject_state(name, 200, 0)
                assert bus.state == want
            with pytest.raises(can.CanOperationError, match="BUS_OFF"):
                bus.send(can.Message(arbitration_id=1, is_extended_id=False))
            bus._raw.restart()
            assert bus.state == can.BusState.ACTIVE
            with pytest.raises(NotImplementedError):
                bus.state = can.BusState.PASSIVE

    def test_python_can_tools_load_the_plugin(self, tmp_path, timeout_scale: float) -> None:
        """`python -m can.logger -i canx` and `can.player -i canx` find the entry point and run."""
        import signal
        import subprocess
        import sys

        p = subprocess.Popen([sys.executable, "-m", "can.logger", "-i", "canx", "-c", "virtual:tool"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout is not None
        assert "Connected to CanxBus" in p.stdout.readline()
        assert "Can Logger" in p.stdout.readline()
        time.sleep(0.5 * timeout_scale)  # into its receive loop, where Ctrl-C ends it cleanly
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10 * timeout_scale)
        assert "Traceback" not in err
        log = tmp_path / "in.log"
        log.write_text("(1.000000) vcan0 123#11\n(1.010000) vcan0 12345678##1AABB\n")
        r = subprocess.run([sys.executable, "-m", "can.player", "-i", "canx", "-c", "virtual:tool",
                            "--fd", str(log)], capture_output=True, text=True, timeout=20 * timeout_scale)
        assert r.returncode == 0, r.stderr


# --- python-can contract (BusABC) and the private python-can API canx relies on


def test_canxbus_implements_recv_internal_and_keeps_busabc_recv() -> None:
    # BusABC: "New implementations should always override _recv_internal
    # instead of recv". Before the fix CanxBus overrode recv.
    assert "recv" not in CanxBus.__dict__
    assert CanxBus.recv is can.BusABC.recv
    assert "_recv_internal" in CanxBus.__dict__


def test_recv_internal_returns_already_filtered_messages() -> None:
    ch = f"virtual:pycan-ri-{next(_names)}"
    with can.Bus(interface="canx", channel=ch) as a, can.Bus(
        interface="canx", channel=ch, can_filters=[{"can_id": 0x10, "can_mask": 0x7FF, "extended": False}]
    ) as b:
        a.send(can.Message(arbitration_id=0x11, is_extended_id=False, data=b"x"))
        a.send(can.Message(arbitration_id=0x10, is_extended_id=False, data=b""))
        msg, filtered = b._recv_internal(2.0)
        assert filtered is True
        assert msg is not None and msg.arbitration_id == 0x10 and msg.dlc == 0 and msg.is_rx
        assert b._recv_internal(0)[0] is None


def test_after_shutdown_send_and_recv_say_shut_down() -> None:
    a = can.Bus(interface="canx", channel=f"virtual:pycan-sd-{next(_names)}")
    a.shutdown()
    with pytest.raises(can.CanOperationError, match="shut down"):
        a.send(can.Message(arbitration_id=1, is_extended_id=False))
    with pytest.raises(can.CanOperationError, match="shut down"):
        a.recv(0)


def test_native_message_slots_are_python_cans() -> None:
    # The native receive path builds can.Message with object.__new__ and
    # sets these attributes, which are python-can's private __slots__: every
    # one must exist, and every slot must be set (else reading it raises).
    from canx import _canx

    native = _canx._pycan_message_slots()
    slots = set(can.Message.__slots__) - {"__weakref__", "__dict__"}
    assert len(native) == len(set(native))
    assert set(native) == slots, (can.__version__, sorted(set(native) ^ slots))


def test_received_message_equals_a_constructed_one() -> None:
    ch = f"virtual:pycan-eq-{next(_names)}"
    with can.Bus(interface="canx", channel=ch, fd=True) as a, can.Bus(interface="canx", channel=ch, fd=True) as b:
        sent = can.Message(arbitration_id=0x123456, is_extended_id=True, is_fd=True, bitrate_switch=True,
                           data=bytes(range(12)), channel=ch)
        a.send(sent)
        got = b.recv(2.0)
        assert got is not None
        assert got.equals(sent, timestamp_delta=None, check_direction=False)
        assert isinstance(got.data, bytearray)
        assert repr(got)  # every slot is readable
