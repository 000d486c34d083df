"""canx's pytest plugin (canx.pytest_plugin) and canx.testing, tested with
pytest's own ``pytester``: each inner test file runs in a pytest of its own
(in process), with the plugin loaded from its ``pytest11`` entry point."""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import canx
from canx import testing
from canx.pytest_plugin import vcan_problem

pytest_plugins = ["pytester"]


def run(pytester: pytest.Pytester, src: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=src)
    return pytester.runpytest("-p", "no:cacheprovider", "-rs", *args)


# ------------------------------------------------------------------ loading


def test_plugin_is_registered_by_entry_point(pytester: pytest.Pytester) -> None:
    r = pytester.runpytest("--help")
    r.stdout.fnmatch_lines(["*--can-channel=CHANNEL*", "*--can-fallback-virtual*"])
    r = pytester.runpytest("--help", "-p", "no:canx")
    assert "--can-channel" not in r.stdout.str()


def test_loading_the_plugin_opens_nothing_and_imports_little() -> None:
    code = ("import threading, sys, canx.pytest_plugin; "
            "print(threading.active_count(), sorted(m for m in ('canx.testing', 'canx.j1939', "
            "'canx.megasquirt', 'can', 'canx.tools.replay') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "[]"]


# ------------------------------------------------------------------ channels


def test_default_channel_is_fresh_virtual_per_test(pytester: pytest.Pytester) -> None:
    r = run(pytester, """
        import canx
        from canx.testing import expect_no_frame
        seen = []
        def test_a(can_channel, can_bus, can_recorder):
            seen.append(can_channel)
            assert can_channel.startswith("virtual:pytest-")
            can_bus.send(canx.Message(0x123, b"a"))
        def test_b(can_channel, can_recorder):
            seen.append(can_channel)
            assert seen[0] != seen[1]
            expect_no_frame(can_recorder, during=0.1)
    """)
    r.assert_outcomes(passed=2)


@pytest.mark.parametrize("how", ["option", "env"])
def test_channel_from_option_or_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    args = []
    if how == "option":
        args = ["--can-channel", "virtual:chosen-opt"]
        monkeypatch.setenv("CANX_TEST_CHANNEL", "virtual:ignored")  # the option wins
    else:
        monkeypatch.setenv("CANX_TEST_CHANNEL", "virtual:chosen-env")
    r = run(pytester, f"""
        def test_c(can_channel, can_bus):
            assert can_channel == "virtual:chosen-{'opt' if how == 'option' else 'env'}"
            assert can_bus.channel == can_channel
    """, *args)
    r.assert_outcomes(passed=1)


VCAN_PROBLEM = vcan_problem()


@pytest.mark.skipif(VCAN_PROBLEM is None, reason="this machine can make vcan interfaces")
def test_vcan_skips_with_the_reason(pytester: pytest.Pytester) -> None:
    r = run(pytester, """
        def test_v(vcan):
            raise AssertionError("not reached")
    """)
    r.assert_outcomes(skipped=1)
    r.stdout.fnmatch_lines([f"SKIPPED*no vcan: {VCAN_PROBLEM}*"])


@pytest.mark.skipif(VCAN_PROBLEM is None, reason="this machine can make vcan interfaces")
@pytest.mark.parametrize("how", ["option", "marker", "can-channel=vcan"])
def test_vcan_falls_back_to_virtual_when_asked(pytester: pytest.Pytester, how: str) -> None:
    marker = "@pytest.mark.can_fallback_virtual" if how == "marker" else ""
    fixture = "can_channel" if how == "can-channel=vcan" else "vcan"
    args = {"option": ["--can-fallback-virtual"], "marker": [],
            "can-channel=vcan": ["--can-channel=vcan", "--can-fallback-virtual"]}[how]
    r = run(pytester, f"""
        import pytest, canx
        from canx.testing import expect_frame
        {marker}
        def test_v({fixture}, can_recorder):
            assert {fixture}.startswith("virtual:pytest-")
            with canx.CAN(channel={fixture}) as bus:
                bus.send(canx.Message(0x42, b"v"))
            expect_frame(can_recorder, id=0x42, within=2.0)
    """, *args)
    r.assert_outcomes(passed=1)


@pytest.mark.vcan
@pytest.mark.skipif(VCAN_PROBLEM is not None, reason=f"cannot make vcan here: {VCAN_PROBLEM}")
def test_vcan_is_made_and_removed(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("names = []")
    r = run(pytester, """
        import os, canx
        from conftest import names
        from canx.testing import expect_frame
        def test_v(vcan, can_recorder):
            names.append(vcan)
            assert vcan.startswith("vcan") and os.path.exists(f"/sys/class/net/{vcan}")
            with canx.CAN(channel=vcan) as bus:
                bus.send(canx.Message(0x42, b"v"))
            expect_frame(can_recorder, id=0x42, within=1.0)
        def test_gone():
            assert names and not os.path.exists(f"/sys/class/net/{names[0]}")
    """, "--can-channel=vcan")
    r.assert_outcomes(passed=2)


@pytest.mark.vcan
@pytest.mark.skipif(VCAN_PROBLEM is not None, reason=f"cannot make vcan here: {VCAN_PROBLEM}")
def test_vcan_link_down_and_up(pytester: pytest.Pytester) -> None:
    r = run(pytester, """
        import canx, pytest
        def test_l(vcan_link, can_bus, can_expect):
            can_bus.send(canx.Message(0x1, b"u"))
            can_expect.frame(id=0x1, within=1.0)
            vcan_link.down()
            with pytest.raises(canx.errors.InterfaceDownError) as ei:
                can_bus.send(canx.Message(0x2, b"d"))
            print("send while down:", type(ei.value).__name__, ei.value)
            can_expect.no_frame(during=0.2)
            vcan_link.up()
            can_bus.send(canx.Message(0x3, b"u"))
            can_expect.frame(id=0x3, within=2.0)
    """, "-s")
    r.assert_outcomes(passed=1)
    r.stdout.fnmatch_lines(["*send while down: InterfaceDownError interface vcan* is down*"])


@pytest.mark.skipif(VCAN_PROBLEM is None, reason="this machine can make vcan interfaces")
def test_vcan_link_skips_without_vcan(pytester: pytest.Pytester) -> None:
    r = run(pytester, """
        def test_l(vcan_link):
            pass
    """, "--can-fallback-virtual")
    r.assert_outcomes(skipped=1)
    r.stdout.fnmatch_lines(["*vcan_link needs a vcan interface (the test channel is virtual:pytest-*)*"])


# ------------------------------------------------------------------ fixtures


def test_can_bus_and_recorder_and_expect(pytester: pytest.Pytester) -> None:
    r = run(pytester, """
        import canx
        from canx.testing import expect_frame, expect_sequence, expect_no_frame
        def test_x(can_bus, can_recorder, can_expect):
            with canx.CAN(channel=can_bus.channel) as peer:
                peer.send(canx.Message(0x18FEF100, b"\\x01\\x02", extended=True))
                peer.send(canx.Message(0x100, b"a"))
                peer.send(canx.Message(0x101, b"b"))
            f = expect_frame(can_recorder, id=0x00FEF100, mask=0x00FFFF00, extended=True, within=2.0)
            assert (f.arbitration_id, f.data, str(f)) == (0x18FEF100, b"\\x01\\x02", "18FEF100#0102")
            a, b = can_expect.sequence([{"id": 0x100}, {"id": 0x101, "data": b"b"}])
            assert b.timestamp >= a.timestamp
            can_expect.no_frame(during=0.05)
            assert len(can_recorder.frames) == 3
            # a canx.CAN as the source: sees only what comes after the call starts
            with canx.CAN(channel=can_bus.channel) as peer:
                import threading
                threading.Timer(0.05, lambda: peer.send(canx.Message(0x7FF, b""))).start()
                assert expect_frame(can_bus, id=0x7FF, within=1.0).dlc == 0
    """)
    r.assert_outcomes(passed=1)


def test_pycan_bus(pytester: pytest.Pytester) -> None:
    r = run(pytester, """
        import can
        def test_p(pycan_bus, can_bus, can_expect):
            pycan_bus.send(can.Message(arbitration_id=0x321, data=b"\\x05", is_extended_id=False))
            assert can_expect.frame(id=0x321, within=2.0).data == b"\\x05"
            lst = can_bus.listen(timeout=1.0)
            pycan_bus.send(can.Message(arbitration_id=0x322, data=b"", is_extended_id=False))
            assert lst.receive().id == 0x322
    """)
    r.assert_outcomes(passed=1)


def test_pycan_bus_skips_without_python_can(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import sys\nsys.modules['can'] = None  # python-can not installed\n")
    r = run(pytester, """
        def test_p(pycan_bus):
            pass
    """)
    r.assert_outcomes(skipped=1)
    r.stdout.fnmatch_lines(["*pycan_bus needs python-can (pip install python-can)*"])


def test_failing_expect_frame_shows_the_frames_seen(pytester: pytest.Pytester) -> None:
    r = run(pytester, """
        import canx
        def test_f(can_bus, can_recorder, can_expect):
            with canx.CAN(channel=can_bus.channel) as peer:
                peer.send(canx.Message(0x123, b"\\x11\\x22"))
                peer.send(canx.Message(0x1ABCDE, b"", extended=True))
            can_expect.frame(id=0x456, within=0.05)
    """)
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines([
        "*ExpectationError: no frame id 456 within 0.05 s on virtual:pytest-*",
        "*frames seen in the window (2, candump -L):",
        "*(*.*) virtual:pytest-* 123#1122",
        "*(*.*) virtual:pytest-* 001ABCDE#",
    ])


def test_expect_no_frame_and_sequence_failures() -> None:
    with canx.CAN(channel="virtual:t-nf") as bus, testing.Recorder("virtual:t-nf") as rec:
        bus.send(canx.Message(0x10, b"\x01"))
        bus.send(canx.Message(0x20, b"\x02"))
        deadline = time.monotonic() + 5.0        # a loaded host may deliver late
        while len(rec.frames) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(testing.ExpectationError, match=r"unexpected frame id 20 .*\n.*\n.*010#01\n.*020#02"):
            testing.expect_no_frame(rec, id=0x20, during=0.05)
        bus.send(canx.Message(0x30, b"\x03"))
        with pytest.raises(testing.ExpectationError, match=r"matched 1 of 2; next: frame id 31") as ei:
            testing.expect_sequence(rec, [{"id": 0x30}, {"id": 0x31}], within=0.05)
        assert [f.arbitration_id for f in ei.value.frames] == [0x30]
        with pytest.raises(TypeError, match="unknown key"):
            testing.expect_sequence(rec, [{"ident": 1}])
        with pytest.raises(ValueError, match="mask= needs id="):
            testing.expect_frame(rec, mask=0x7FF)


def test_timeout_scale_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANX_TIMEOUT_SCALE", "3")
    with testing.Recorder("virtual:t-scale") as rec:
        with pytest.raises(testing.ExpectationError, match="within 0.15 s"):
            testing.expect_frame(rec, id=1, within=0.05)
    monkeypatch.setenv("CANX_TIMEOUT_SCALE", "fast")
    with pytest.raises(ValueError, match="not a number"):
        testing.timeout_scale()


def test_recorder_log_attached_on_failure(pytester: pytest.Pytester) -> None:
    r = run(pytester, """
        import canx
        def test_ok(can_bus, can_recorder, can_expect):
            with canx.CAN(channel=can_bus.channel) as peer:
                peer.send(canx.Message(0x1, b"ok"))
            can_expect.frame(id=1, within=2.0)
        def test_bad(can_bus, can_recorder, can_expect):
            with canx.CAN(channel=can_bus.channel) as peer:
                peer.send(canx.Message(0x7E8, b"\\x02\\x41\\x0C"))
            can_expect.frame(id=0x7E8, within=2.0)
            assert False, "the application did the wrong thing"
    """, "--junitxml=out.xml", "-p", "no:randomly")
    out = r.stdout.str()
    assert "test_bad" in out
    r.stdout.fnmatch_lines(["*- canx candump log -*", "# 1 frames on virtual:pytest-*; written to *canx-test_bad.log",
                            "(*.*) virtual:pytest-* 7E8#02410C"])
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "out.xml").iter("property")}
    log = props["canx_candump_log"]
    assert log.endswith("canx-test_bad.log")
    lines = Path(log).read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(" 7E8#02410C")
    assert canx.parse_log_line(lines[0])[2][8] == b"\x02\x41\x0c"
    # a passing test gets no section
    assert out.count("canx candump log") == 1


def test_j1939_ecu_factory_and_expect_pgn(pytester: pytest.Pytester) -> None:
    r = run(pytester, """
        from canx import j1939
        def test_j(can_recorder, can_expect, j1939_ecu):
            engine = j1939_ecu(0x00)
            tool = j1939_ecu(0xF9)
            assert (engine.address, tool.address) == (0x00, 0xF9)
            claim = can_expect.pgn(j1939.PGN_ADDRESS_CLAIMED, source=0x00, within=0.5)
            assert claim.data == engine.name.to_bytes()
            engine.set_response(j1939.PGN_VEHICLE_IDENTIFICATION, b"1M8GDM9AXKP042788*")
            vin = tool.request_pgn(j1939.PGN_VEHICLE_IDENTIFICATION, destination=0x00, timeout=2.0)
            assert vin.data == b"1M8GDM9AXKP042788*"
            # 18 bytes: a TP transfer, found by its RTS announcing the PGN
            rts = can_expect.pgn(j1939.PGN_VEHICLE_IDENTIFICATION, source=0x00, within=2.0)
            assert rts.data[0] == 16
    """)
    r.assert_outcomes(passed=1)


def test_megasquirt_node_factory(pytester: pytest.Pytester) -> None:
    r = run(pytester, """
        def test_m(megasquirt_node, can_recorder, can_expect):
            ecu = megasquirt_node(0)
            dash = megasquirt_node(3)
            ecu.serve_table(7, bytes(range(64)))
            assert dash.read(0, 7, 4, 4) == bytes([4, 5, 6, 7])
            # the request and the reply, both 29-bit (MegaSquirt CAN protocol)
            req, rep = can_expect.sequence([{"extended": True}, {"extended": True}])
            assert req.arbitration_id != rep.arbitration_id
    """)
    r.assert_outcomes(passed=1)


def test_can_faults(pytester: pytest.Pytester) -> None:
    r = run(pytester, """
        import canx, pytest
        def test_f(can_bus, can_faults):
            can_faults.error_passive(tec=140)
            assert can_bus.state == canx.BusState.ERROR_PASSIVE and can_bus.transmit_error_count == 140
            can_faults.bus_off()
            assert can_bus.state == canx.BusState.BUS_OFF
            can_faults.recover()
            assert can_bus.state == canx.BusState.ERROR_ACTIVE
        def test_jam(can_bus, can_faults, can_expect):
            with can_faults.jam_tx():
                with pytest.raises(canx.SendTimeoutError) as ei:
                    can_bus.send(canx.Message(1, b"j"))
                print("jammed send:", type(ei.value).__name__, ei.value)
            can_expect.no_frame(during=0.05)
            can_bus.send(canx.Message(2, b"k"))
            can_expect.frame(id=2, within=2.0)
    """, "--can-channel", "virtual:faults", "-s")
    r.assert_outcomes(passed=2)
    r = run(pytester, """
        def test_f(can_faults):
            can_faults.bus_off()
    """, "--can-channel", "udp_multicast:")
    r.assert_outcomes(skipped=1)
    r.stdout.fnmatch_lines(["*error states and jam_tx need a virtual: channel (the test channel is udp_multicast:*"])


def test_can_faults_drop_and_delay(pytester: pytest.Pytester) -> None:
    """Counted drop/delay rules on what can_bus receives (rx) or sends (tx)."""
    r = run(pytester, """
        import time, canx, pytest
        def test_rx_drop_counted(can_bus, can_faults):
            other = canx.CAN(channel=can_bus.channel)
            lst = can_bus.listen(timeout=0.3)
            rule = can_faults.drop(2, id=0x100)
            for i in range(4):
                other.send(canx.Message(0x100, bytes([i])))
                other.send(canx.Message(0x101, bytes([i])))
            got = [(m.id, m.data[0]) for m in iter(lst.receive, None)]
            assert got == [(0x101, 0), (0x101, 1), (0x100, 2), (0x101, 2), (0x100, 3), (0x101, 3)]
            assert (rule.taken, rule.remaining) == (2, 0)
            assert can_faults.counts["dropped"] == 2
            other.deinit()
        def test_tx_drop_reaches_nobody(can_bus, can_faults, can_expect):
            can_faults.drop(1, direction="tx")
            can_bus.send(canx.Message(0x7, b"lost"))  # succeeds for the sender
            can_bus.send(canx.Message(0x8, b"kept"))
            can_expect.frame(id=0x8, within=1.0)
            assert all(f.arbitration_id != 0x7 for f in can_expect.recorder.frames)
        def test_rx_delay_is_overtaken(can_bus, can_faults):
            other = canx.CAN(channel=can_bus.channel)
            lst = can_bus.listen(timeout=1.0)
            rule = can_faults.delay(1, 0.2, id=0x1, mask=0x7FF, extended=False)
            t0 = time.monotonic()
            other.send(canx.Message(0x1, b"late"))
            other.send(canx.Message(0x2, b"early"))
            assert lst.receive().id == 0x2
            m = lst.receive()
            assert m is not None and m.id == 0x1 and time.monotonic() - t0 >= 0.19
            rule.wait(0)
            other.deinit()
        def test_tx_delay(can_bus, can_faults, can_expect):
            can_faults.delay(1, 0.15, direction="tx")
            t0 = time.monotonic()
            can_bus.send(canx.Message(0x9, b"x"))
            can_expect.frame(id=0x9, within=2.0)
            assert time.monotonic() - t0 >= 0.14
        def test_bad_arguments(can_faults):
            for kw in ({"n": 0}, {"direction": "sideways"}):
                with pytest.raises(ValueError):
                    can_faults.drop(**kw)
            with pytest.raises(ValueError, match="delay"):
                can_faults.delay(1, 61)
            rules = [can_faults.drop(1, id=i) for i in range(64)]
            with pytest.raises(canx.UnsupportedError, match="64"):
                can_faults.drop(1)
            can_faults.clear()
            can_faults.drop(1)
        def test_on_another_bus_and_cleared_after(can_bus, can_faults):
            other = canx.CAN(channel=can_bus.channel)
            lst = other.listen(timeout=0.3)
            rule = can_faults.on(other).drop(1, id=0x42)
            can_bus.send(canx.Message(0x42, b"a"))
            can_bus.send(canx.Message(0x42, b"b"))
            assert [m.data for m in iter(lst.receive, None)] == [b"b"]
            assert rule.taken == 1
            can_faults.on(other).drop(5)
            can_faults.clear()  # clears the rules of every bus given to on()
            can_bus.send(canx.Message(0x43, b"c"))
            assert lst.receive().data == b"c"
            other.deinit()
        def test_wait_fails_with_the_count(can_faults):
            rule = can_faults.drop(3, id=0x55)
            rule.wait(0.05)
    """)
    r.assert_outcomes(passed=6, failed=1)
    r.stdout.fnmatch_lines(["*AssertionError: drop rx x3 id 55/1FFFFFFF: took 0 of 3 frames within 0.05 s*"])


def test_can_faults_protocols_recover(pytester: pytest.Pytester) -> None:
    """The worked fault tests of docs/testing.md: a J1939 RTS/CTS transfer
    recovers from a dropped DT (J1939-21 retransmission) and survives a late
    CTS; a reliable sender resends after its data frame or the ACK is lost."""
    r = run(pytester, """
        import canx
        from canx import j1939, reliable
        def test_j1939_dropped_dt_is_retransmitted(can_bus, can_faults, j1939_ecu):
            rx = j1939.ECU(bus=can_bus, name=j1939.Name(identity_number=7), address=0x20)
            rx.claim_address(timeout=2.0)
            got = rx.messages(pgn=0xEF00, timeout=3.0)
            tx = j1939_ecu(0x10)
            rule = can_faults.drop(1, id=0x00EB2010, mask=0x00FFFFFF)  # TP.DT 0x10 -> 0x20, packet 1
            data = bytes(range(40))                                      # 6 packets, one window
            assert tx.send_pgn(0xEF00, data, destination=0x20).result(5) == 40
            m = next(iter(got))
            assert (m.pgn, m.data, m.source) == (0xEF00, data, 0x10)
            assert rule.taken == 1
            rx.close()
        def test_j1939_late_cts(can_bus, can_faults, j1939_ecu):
            tx = j1939.ECU(bus=can_bus, name=j1939.Name(identity_number=8), address=0x10)
            tx.claim_address(timeout=2.0)
            j1939_ecu(0x20)
            rule = can_faults.delay(1, 0.3, id=0x00EC1020, mask=0x00FFFFFF)  # TP.CM 0x20 -> 0x10: the CTS
            assert tx.send_pgn(0xEF00, bytes(20), destination=0x20).result(5) == 20
            assert rule.taken == 1
            tx.close()
        def test_reliable_lost_data_and_lost_ack(can_bus, can_faults):
            peer = canx.CAN(channel=can_bus.channel)
            with reliable.Receiver(peer, matches=[canx.Match(0x123)], timeout=1.0) as rx, \
                    reliable.Sender(can_bus, timeout=0.05, retries=3) as tx:
                can_faults.drop(1, id=0x123, direction="tx")
                assert tx.send(0x123, b"one").result(3) == reliable.Outcome(True, 2, 0x123, b"one")
                can_faults.drop(1, id=0x124)  # the ACK, on its way in
                assert tx.send(0x123, b"two").result(3) == reliable.Outcome(True, 2, 0x123, b"two")
                assert [m.data for m in (rx.receive(), rx.receive())] == [b"one", b"two"]
                assert rx.stats()["duplicates_dropped"] == 1
            peer.deinit()
        def test_without_the_fault_the_counts_differ(can_bus, can_faults):
            peer = canx.CAN(channel=can_bus.channel)
            with reliable.Receiver(peer, matches=[canx.Match(0x123)], timeout=1.0), \
                    reliable.Sender(can_bus, timeout=0.05, retries=3) as tx:
                can_faults.drop(1, id=0x999, direction="tx")  # matches nothing
                assert tx.send(0x123, b"one").result(3).tries == 2  # fails: 1 try
            peer.deinit()
    """)
    r.assert_outcomes(passed=3, failed=1)
    r.stdout.fnmatch_lines(["*test_without_the_fault_the_counts_differ*", "*assert 1 == 2*"])


def test_replay_fixture(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("run.log").write_text(
        "(100.000000) can0 100#01\n(100.300000) can0 101#02\n(100.300000) can0 0000000F#\n")
    r = run(pytester, """
        import time
        def test_r(replay, can_recorder, can_expect):
            t0 = time.monotonic()
            assert replay("run.log", speed=3.0).sent == 3
            took = time.monotonic() - t0
            assert 0.05 < took < 0.3 * 5, took
            fs = can_expect.sequence([{"id": 0x100, "data": b"\\x01"}, {"id": 0x101}, {"id": 0xF, "extended": True}])
            gap = fs[1].timestamp - fs[0].timestamp
            assert 0.05 < gap, gap
        def test_bg(replay, can_expect):
            r = replay("run.log", timing=False, background=True)
            can_expect.frame(id=0x101, within=1.0)
            assert r.wait(2.0) == 3
        def test_bad_file(replay, can_expect, tmp_path):
            import pytest
            from canx.tools._common import ToolError
            p = tmp_path / "bad.log"
            p.write_text("(1.0) can0 100#01\\ngarbage\\n")
            with pytest.raises(ToolError, match="bad.log:2: unreadable log line 'garbage'"):
                replay(p)
            can_expect.no_frame(during=0.05)  # nothing sent: the file is checked first
    """)
    r.assert_outcomes(passed=3)


def test_replay_channel_map(pytester: pytest.Pytester) -> None:
    """A log with two interfaces goes into two test buses; a third interface
    is skipped and counted; the order of the file holds across channels."""
    pytester.path.joinpath("two.log").write_text(
        "(10.000000) can0 100#01\n(10.100000) can1 200#02\n(10.200000) can2 300#03\n"
        "(10.300000) can0 101#04\n(10.400000) can1 201#05\n")
    r = run(pytester, """
        import time, canx, pytest
        def test_map(replay, can_channel):
            a = canx.CAN(channel=can_channel + "-a")
            b = canx.CAN(channel=can_channel + "-b")
            la, lb = a.listen(timeout=1.0), b.listen(timeout=1.0)
            t0 = time.monotonic()
            r = replay("two.log", speed=2.0, channels={"can0": a, "can1": b.channel})
            assert time.monotonic() - t0 >= 0.4 / 2 * 0.9
            assert (r.sent, r.skipped, r.per_channel) == (4, 1, {"can0": 2, "can1": 2})
            ma = [la.receive(), la.receive()]
            mb = [lb.receive(), lb.receive()]
            assert [m.id for m in ma] == [0x100, 0x101] and [m.id for m in mb] == [0x200, 0x201]
            assert ma[0].timestamp < mb[0].timestamp < ma[1].timestamp < mb[1].timestamp
            assert la.receive() is None
            a.deinit(); b.deinit()
        def test_bad_target(replay):
            with pytest.raises(TypeError, match="channels\\['can0'\\]: a channel name or a canx.CAN, not int"):
                replay("two.log", channels={"can0": 5})
        def test_default_is_one_bus(replay, can_expect):
            assert replay("two.log", timing=False).sent == 5
            can_expect.frame(id=0x300, within=1.0)
    """)
    r.assert_outcomes(passed=3)


def test_readme_snippet(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example in README.md, verbatim, passes; with the wrong source it fails."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("    def test_engine_speed(")
    snippet = "\n".join(line[4:] for line in readme[start:].split("\n\n")[0].splitlines())
    monkeypatch.setenv("CANX_TIMEOUT_SCALE", "5")  # a loaded machine must not fail it
    run(pytester, snippet).assert_outcomes(passed=1)
    r = run(pytester, snippet.replace("source=0x00", "source=0x01"))
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*no frame PGN 0xf004 from SA 0x01 within 0.5 s*", "*0CF00400#*"])


@pytest.mark.vcan
@pytest.mark.skipif(VCAN_PROBLEM is not None, reason=f"cannot make vcan here: {VCAN_PROBLEM}")
def test_worked_example_on_vcan(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/testing.md's worked example, unchanged, on a fresh vcanN per test."""
    example = Path(__file__).resolve().parent / "test_testing_example.py"
    from conftest import TIMEOUT_SCALE  # 10 under qemu: the example's timing bounds widen

    monkeypatch.setenv("CANX_TIMEOUT_SCALE", str(TIMEOUT_SCALE))
    r = pytester.runpytest(str(example), "--can-channel=vcan", "-p", "no:cacheprovider", "-v")
    r.assert_outcomes(passed=4)
    r.stdout.no_fnmatch_line("*SKIPPED*")


def test_worked_example_on_virtual(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/testing.md's worked example, unchanged, on the default virtual channels."""
    example = Path(__file__).resolve().parent / "test_testing_example.py"
    monkeypatch.setenv("CANX_TIMEOUT_SCALE", "5")  # a loaded machine must not fail it
    r = pytester.runpytest(str(example), "-p", "no:cacheprovider", "-v")
    r.assert_outcomes(passed=4)
    r.stdout.fnmatch_lines(["*test_claims_address_0 PASSED*"])


@pytest.mark.vcan
@pytest.mark.skipif(VCAN_PROBLEM is not None, reason=f"cannot make vcan here: {VCAN_PROBLEM}")
def test_can_faults_drop_on_vcan(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """drop()/delay() sit in the runtime bus: the same tests pass on a kernel vcan."""
    from conftest import TIMEOUT_SCALE

    monkeypatch.setenv("CANX_TIMEOUT_SCALE", str(TIMEOUT_SCALE))
    r = run(pytester, """
        import time, canx
        from canx import reliable
        def test_rx_and_tx(can_bus, can_faults, can_channel):
            assert can_channel.startswith("vcan")
            other = canx.CAN(channel=can_channel)
            lst = other.listen(timeout=1.0)
            mine = can_bus.listen(timeout=0.3)
            can_faults.drop(1, id=0x10, direction="tx")
            can_bus.send(canx.Message(0x10, b"a"))
            can_bus.send(canx.Message(0x10, b"b"))
            assert lst.receive().data == b"b"
            can_faults.drop(1, id=0x20)
            other.send(canx.Message(0x20, b"c"))
            other.send(canx.Message(0x20, b"d"))
            assert [m.data for m in iter(mine.receive, None)] == [b"d"]
            other.deinit()
        def test_reliable(can_bus, can_faults, can_channel):
            peer = canx.CAN(channel=can_channel)
            with reliable.Receiver(peer, matches=[canx.Match(0x123)], timeout=2.0), \
                    reliable.Sender(can_bus, timeout=0.1, retries=3) as tx:
                can_faults.drop(1, id=0x124)
                assert tx.send(0x123, b"x").result(5).tries == 2
            peer.deinit()
    """, "--can-channel=vcan")
    r.assert_outcomes(passed=2)
