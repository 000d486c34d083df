"""canx.isotp on the virtual bus: canx <-> canx, and python-can-isotp over
canx's python-can plugin <-> canx (both directions)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import canx
import canx.isotp as isotp
from isotpdump_cases import CASES, shown

SIZES = [1, 6, 7, 8, 62, 63, 64, 4095, 4096, 10000, 66000]
_names = itertools.count()


def payload(n: int) -> bytes:
    """isotpsend -D's pattern: byte i = (i % 0xFF) + 1."""
    return bytes((i % 0xFF) + 1 for i in range(n))


def channel() -> str:
    return f"virtual:isotp-{next(_names)}"


def pair(
    mode: isotp.AddressingMode = isotp.AddressingMode.Normal_11bits,
    params: Optional[Dict[str, Any]] = None,
    **kw: int,
) -> tuple[isotp.Address, isotp.Address]:
    """A tester address and its ECU's mirror for `mode`."""
    M = isotp.AddressingMode
    if mode in (M.Normal_11bits, M.Normal_29bits):
        tx, rx = (0x7E0, 0x7E8) if mode == M.Normal_11bits else (0x18DA10F1, 0x18DAF110)
        return isotp.Address(mode, txid=tx, rxid=rx), isotp.Address(mode, txid=rx, rxid=tx)
    if mode == M.NormalFixed_29bits:
        return (
            isotp.Address(mode, target_address=0x10, source_address=0xF1),
            isotp.Address(mode, target_address=0xF1, source_address=0x10),
        )
    if mode in (M.Extended_11bits, M.Extended_29bits):
        tx, rx = (0x6F1, 0x610) if mode == M.Extended_11bits else (0x18000001, 0x18000002)
        return (
            isotp.Address(mode, txid=tx, rxid=rx, target_address=0x10, source_address=0xF1),
            isotp.Address(mode, txid=rx, rxid=tx, target_address=0xF1, source_address=0x10),
        )
    if mode == M.Mixed_11bits:
        return (
            isotp.Address(mode, txid=0x700, rxid=0x708, address_extension=0x55),
            isotp.Address(mode, txid=0x708, rxid=0x700, address_extension=0x55),
        )
    return (
        isotp.Address(mode, target_address=0x10, source_address=0xF1, address_extension=0x55),
        isotp.Address(mode, target_address=0xF1, source_address=0x10, address_extension=0x55),
    )


BIG = {"max_frame_size": 70000}


@pytest.mark.parametrize("fd", [False, True])
def test_every_size_both_ways(fd: bool) -> None:
    ch = channel()
    a, b = pair()
    p: Dict[str, Any] = dict(BIG, blocking_send=True)
    if fd:
        p.update(can_fd=True, tx_data_length=64)
    with isotp.CanStack(ch, a, params=p) as s1, isotp.CanStack(ch, b, params=p) as s2:
        for n in SIZES:
            for tx, rx in ((s1, s2), (s2, s1)):
                tx.send(payload(n), send_timeout=10)
                got = rx.recv(block=True, timeout=10)
                assert got == payload(n), (n, fd)
                assert isinstance(got, bytearray)
        st = s1.stats()
        assert st["tx_messages"] == len(SIZES) and st["rx_messages"] == len(SIZES)
        if fd:
            # 66000 bytes over TX_DL 64: 1 FF + ceil((66000 - 58) / 63) CFs, far fewer than classic.
            assert st["tx_frames"] < 2000


@pytest.mark.parametrize("mode", list(isotp.AddressingMode))
def test_addressing_modes(mode: isotp.AddressingMode) -> None:
    ch = channel()
    a, b = pair(mode)
    # A third channel on other addresses must see none of it.
    with canx.CAN(channel=ch) as bus, canx.CAN(channel=ch) as bus2:
        s1 = isotp.CanStack(bus, a, params=BIG)
        s2 = isotp.CanStack(bus2, b, params=BIG)
        try:
            for n in (5, 100, 4095):
                s1.send(payload(n))
                assert s2.recv(block=True, timeout=5) == payload(n)
                s2.send(payload(n)[::-1])
                assert s1.recv(block=True, timeout=5) == payload(n)[::-1]
        finally:
            s1.stop()
            s2.stop()


def test_extended_addressing_ignores_other_target_bytes() -> None:
    ch = channel()
    M = isotp.AddressingMode.Extended_11bits
    tester = isotp.Address(M, txid=0x6F1, rxid=0x610, target_address=0x10, source_address=0xF1)
    ecu = isotp.Address(M, txid=0x610, rxid=0x6F1, target_address=0xF1, source_address=0x10)
    other = isotp.Address(M, txid=0x610, rxid=0x6F1, target_address=0xF1, source_address=0x20)
    with isotp.CanStack(ch, tester) as t, isotp.CanStack(ch, ecu) as e, isotp.CanStack(ch, other) as o:
        t.send(b"\x22\xf1\x90")
        assert e.recv(block=True, timeout=2) == b"\x22\xf1\x90"
        assert o.recv(block=True, timeout=0.2) is None


def test_functional_single_frames_only() -> None:
    ch = channel()
    M = isotp.AddressingMode.Normal_11bits
    tester = isotp.Address(M, txid=0x7E0, rxid=0x7E8, functional_txid=0x7DF)
    ecu = isotp.Address(M, txid=0x7E8, rxid=0x7E0, functional_rxid=0x7DF)
    with isotp.CanStack(ch, tester) as t, isotp.CanStack(ch, ecu) as e:
        t.send(b"\x01\x00", target_address_type=isotp.TargetAddressType.Functional)
        assert e.recv(block=True, timeout=2) == b"\x01\x00"
        with pytest.raises(ValueError, match="functional"):
            t.send(payload(8), target_address_type=isotp.TargetAddressType.Functional)


def test_no_flow_control_gives_n_timeout_bs() -> None:
    ch = channel()
    a, _ = pair()
    errors: List[isotp.IsoTpError] = []
    with canx.CAN(channel=ch) as peer:  # a node that never answers
        assert peer is not None
        with isotp.CanStack(
            ch, a, error_handler=errors.append, params={"blocking_send": True, "rx_flowcontrol_timeout": 100}
        ) as s:
            t0 = time.monotonic()
            with pytest.raises(isotp.BlockingSendFailure) as ei:
                s.send(payload(100), send_timeout=5)
            assert time.monotonic() - t0 >= 0.09
            assert ei.value.n_result == "N_TIMEOUT_Bs"
            assert isinstance(ei.value.__cause__, isotp.FlowControlTimeoutError)
            deadline = time.monotonic() + 2
            while not errors and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [type(e) for e in errors] == [isotp.FlowControlTimeoutError]
            assert errors[0].n_result == "N_TIMEOUT_Bs"


def test_stalled_sender_gives_n_timeout_cr_and_wrong_sn() -> None:
    ch = channel()
    _, b = pair()
    errors: List[isotp.IsoTpError] = []
    with canx.CAN(channel=ch) as raw:
        with isotp.CanStack(ch, b, error_handler=errors.append, params={"rx_consecutive_frame_timeout": 100}) as s:
            listener = raw.listen(timeout=2)
            # FF of 20 bytes, then nothing: N_Cr expires after the FC.
            raw.send(canx.Message(0x7E0, bytes([0x10, 20, 1, 2, 3, 4, 5, 6])))
            fc = listener.receive()
            assert fc is not None and fc.id == 0x7E8 and fc.data[0] == 0x30
            # FF, then a CF with SN 2 instead of 1 (after the FC: the
            # repeats of the first FC, fc_repeat_ms, are stale by then).
            time.sleep(0.3)
            while listener.in_waiting():
                listener.receive()
            raw.send(canx.Message(0x7E0, bytes([0x10, 20, 1, 2, 3, 4, 5, 6])))
            assert listener.receive() is not None
            raw.send(canx.Message(0x7E0, bytes([0x22, 7, 8, 9, 10, 11, 12, 13])))
            deadline = time.monotonic() + 3
            while len(errors) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [e.n_result for e in errors] == ["N_TIMEOUT_Cr", "N_WRONG_SN"]
            assert isinstance(errors[0], isotp.ConsecutiveFrameTimeoutError)
            assert isinstance(errors[1], isotp.WrongSequenceNumberError)
            assert s.recv() is None


def test_interrupting_frames_and_stray_frames_are_reported() -> None:
    ch = channel()
    _, b = pair()
    errors: List[isotp.IsoTpError] = []
    with canx.CAN(channel=ch) as raw:
        with isotp.CanStack(ch, b, error_handler=errors.append) as s:
            raw.send(canx.Message(0x7E0, bytes([0x10, 20, 1, 2, 3, 4, 5, 6])))
            raw.send(canx.Message(0x7E0, bytes([0x02, 0xAA, 0xBB])))  # SF during the reception
            assert s.recv(block=True, timeout=2) == b"\xaa\xbb"
            raw.send(canx.Message(0x7E0, bytes([0x21, 1, 2])))  # CF nobody waits for
            raw.send(canx.Message(0x7E0, bytes([0x30, 0, 0])))  # FC nobody waits for
            deadline = time.monotonic() + 3
            while len(errors) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [type(e) for e in errors] == [
                isotp.ReceptionInterruptedWithSingleFrameError,
                isotp.UnexpectedConsecutiveFrameError,
                isotp.UnexpectedFlowControlError,
            ]
            assert errors[0].n_result == "N_UNEXP_PDU" and errors[1].n_result is None


def test_frame_too_long_answers_overflow_and_sender_sees_it() -> None:
    ch = channel()
    a, b = pair()
    rx_errors: List[isotp.IsoTpError] = []
    with isotp.CanStack(ch, a, params={"blocking_send": True}) as s1, isotp.CanStack(
        ch, b, error_handler=rx_errors.append, params={"max_frame_size": 100}
    ) as s2:
        with pytest.raises(isotp.BlockingSendFailure) as ei:
            s1.send(payload(101), send_timeout=5)
        assert ei.value.n_result == "N_BUFFER_OVFLW"
        assert isinstance(ei.value.__cause__, isotp.OverflowError)
        s1.send(payload(100), send_timeout=5)
        assert s2.recv(block=True, timeout=2) == payload(100)
        time.sleep(0.1)
        assert [type(e) for e in rx_errors] == [isotp.FrameTooLongError]


def test_stmin_paces_consecutive_frames() -> None:
    ch = channel()
    a, b = pair()
    with canx.CAN(channel=ch) as sniff:
        listener = sniff.listen(timeout=2)
        with isotp.CanStack(ch, a, params={"blocking_send": True}) as s1, isotp.CanStack(
            ch, b, params={"stmin": 5, "blocksize": 0}
        ) as s2:
            s1.send(payload(50), send_timeout=5)
            assert s2.recv(block=True, timeout=2) == payload(50)
            own_gap = s1.stats()["min_paced_gap_us"]
            assert own_gap is not None and own_gap >= 5000, own_gap
        stamps = []
        while True:
            m = listener.receive()
            if m is None:
                break
            if m.id == 0x7E0 and m.data[0] >> 4 == 2:
                stamps.append(m.timestamp)
        assert len(stamps) == 7  # 50 bytes: FF with 6, 7 CFs of up to 7
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        assert min(gaps) >= 0.005 - 0.0002, gaps


def test_padding_and_padding_checks() -> None:
    ch = channel()
    a, b = pair()
    with canx.CAN(channel=ch) as sniff:
        listener = sniff.listen(timeout=1)
        with isotp.CanStack(ch, a, params={"tx_padding": 0xAA}) as s1, isotp.CanStack(
            ch, b, params={"rx_check_padding_len": True, "rx_padding_byte": 0xAA, "tx_padding": 0xAA}
        ) as s2:
            s1.send(b"\x01\x02")
            assert s2.recv(block=True, timeout=2) == b"\x01\x02"
        m = listener.receive()
        assert m is not None and bytes(m.data) == b"\x02\x01\x02" + b"\xaa" * 5
    # A checking receiver refuses an unpadded SF (N_ERROR).
    ch = channel()
    errors: List[isotp.IsoTpError] = []
    with isotp.CanStack(ch, a) as s1, isotp.CanStack(
        ch, b, error_handler=errors.append, params={"rx_check_padding_len": True}
    ) as s2:
        s1.send(b"\x01\x02")
        assert s2.recv(block=True, timeout=0.3) is None
        assert [e.n_result for e in errors] == ["N_ERROR"]


def test_params_are_checked() -> None:
    a, _ = pair()
    with pytest.raises(ValueError, match="unknown ISO-TP parameter"):
        isotp.CanStack(channel(), a, params={"stmn": 1})
    with pytest.raises(ValueError):
        isotp.CanStack(channel(), a, params={"tx_data_length": 9})
    with pytest.raises(ValueError):
        isotp.CanStack(channel(), a, params={"tx_data_length": 64})  # needs can_fd
    with pytest.raises(ValueError):
        isotp.CanStack(channel(), a, params={"blocksize": 256})
    with pytest.raises(ValueError):
        isotp.Address(isotp.AddressingMode.Normal_11bits, txid=0x800, rxid=1)
    with pytest.raises(ValueError):
        isotp.Address(isotp.AddressingMode.Normal_11bits, txid=1, rxid=1)
    with pytest.raises(ValueError):
        isotp.Address(isotp.AddressingMode.Mixed_11bits, txid=1, rxid=2)
    with pytest.raises(RuntimeError):
        isotp.CanStack(channel(), a, params={"listen_mode": True}).send(b"x")


def test_fixed_addressing_ids_and_priority() -> None:
    M = isotp.AddressingMode.NormalFixed_29bits
    a = isotp.Address(M, target_address=0x10, source_address=0xF1, physical_id=0x1CDA0000)
    assert a.get_tx_arbitration_id() == 0x1CDA10F1
    assert a.get_tx_arbitration_id(isotp.TargetAddressType.Functional) == 0x18DB10F1
    assert a.get_rx_arbitration_id() == 0x18DAF110
    ch = channel()
    b = isotp.Address(M, target_address=0xF1, source_address=0x10)
    with canx.CAN(channel=ch) as sniff, isotp.CanStack(ch, a) as s1, isotp.CanStack(ch, b) as s2:
        listener = sniff.listen(timeout=1)
        s1.send(b"\x3e\x00")
        assert s2.recv(block=True, timeout=2) == b"\x3e\x00"  # priority 7 received by a priority-6 peer
        m = listener.receive()
        assert m is not None and m.id == 0x1CDA10F1 and m.extended


def test_async_forms() -> None:
    ch = channel()
    a, b = pair()

    async def main() -> None:
        with isotp.CanStack(ch, a, params=BIG) as s1, isotp.CanStack(ch, b, params=BIG) as s2:
            waiter = asyncio.ensure_future(s2.recv_async(timeout=5))
            await asyncio.sleep(0.01)
            await s1.send_async(payload(5000), send_timeout=5)
            assert await waiter == payload(5000)
            assert await s2.recv_async(timeout=0.05) is None

    asyncio.run(main())


def test_socket_like() -> None:
    ch = channel()
    a, b = pair()
    with isotp.socket(timeout=2) as s1, isotp.socket(timeout=2) as s2:
        s1.bind(ch, a)
        s2.set_fc_opts(bs=1, stmin=0)
        s2.bind(ch, b)
        import select

        assert s1.send(payload(300)) == 300
        r, _, _ = select.select([s2.fileno()], [], [], 2)
        assert r == [s2.fileno()]
        assert s2.recv() == payload(300)
        s2.settimeout(0.05)
        assert s2.recv() is None


def test_many_messages_queue_in_order() -> None:
    ch = channel()
    a, b = pair()
    with isotp.CanStack(ch, a) as s1, isotp.CanStack(ch, b) as s2:
        msgs = [payload(1 + (i * 37) % 300) for i in range(50)]
        for m in msgs:
            s1.send(m)
        got = [s2.recv(block=True, timeout=5) for _ in msgs]
        assert got == msgs
        deadline = time.monotonic() + 2
        while s1.transmitting() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not s1.transmitting() and not s2.available()


# ------------------------------------------------------------ python-can-isotp as the peer


@pytest.mark.parametrize("n", SIZES)
def test_python_can_isotp_over_the_canx_plugin_both_ways(n: int) -> None:
    can = pytest.importorskip("can")
    pi = pytest.importorskip("isotp")
    ch = channel()
    bus = can.Bus(interface="canx", channel=ch)
    notifier = can.Notifier(bus, [])
    pi_addr = pi.Address(pi.AddressingMode.Normal_11bits, txid=0x7E8, rxid=0x7E0)
    peer = pi.NotifierBasedCanStack(
        bus, notifier, address=pi_addr, params={"max_frame_size": 70000, "blocking_send": True}
    )
    peer.start()
    try:
        a, _ = pair()
        with isotp.CanStack(bus, a, params=dict(BIG, blocking_send=True)) as s:
            s.send(payload(n), send_timeout=30)
            assert peer.recv(block=True, timeout=30) == payload(n)
            t = threading.Thread(target=peer.send, args=(payload(n)[::-1],), kwargs={"send_timeout": 30})
            t.start()
            assert s.recv(block=True, timeout=30) == payload(n)[::-1]
            t.join(30)
    finally:
        peer.stop()
        notifier.stop()
        bus.shutdown()


# ------------------------------------------------------------ CLI


def test_cli_isotp_send_and_recv(capsys: pytest.CaptureFixture[str]) -> None:
    from canx.cli import main

    ch = channel()
    a, b = pair()
    with isotp.CanStack(ch, b, params=BIG) as ecu:
        assert main(["isotp", "send", ch, "-s", "7E0", "-d", "7E8", "-D", "100"]) == 0
        assert ecu.recv(block=True, timeout=5) == payload(100)
        rc: List[int] = []
        t = threading.Thread(target=lambda: rc.append(main(["isotp", "recv", ch, "-s", "7E0", "-d", "7E8"])))
        t.start()
        time.sleep(0.3)
        ecu.send(b"\x62\xf1\x90" + b"VIN", send_timeout=5)
        t.join(10)
    assert rc == [0]
    assert capsys.readouterr().out.strip() == "62 F1 90 56 49 4E"
    # No peer: the send fails with N_TIMEOUT_Bs, exit status 2.
    assert main(["isotp", "send", channel(), "-s", "7E0", "-d", "7E8", "-D", "20", "-t", "3"]) == 2
    assert "N_TIMEOUT_Bs" in capsys.readouterr().err


def _isotpdump_capture() -> Dict[str, List[str]]:
    """tests/data/isotpdump-2020.11.txt: what can-utils 2020.11's isotpdump
    printed for each case of tests/isotpdump_cases.py (captured in the VM)."""
    out: Dict[str, List[str]] = {}
    name = ""
    for line in (Path(__file__).parent / "data" / "isotpdump-2020.11.txt").read_text().splitlines():
        if line.startswith("## "):
            name = line[3:].split(":")[0]
            out[name] = []
        elif line:
            out[name].append(line)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_dump_explains_frames_as_isotpdump(case: str) -> None:
    """`canx isotp dump` prints, for a known capture, the lines isotpdump printed."""
    from canx.tools.isotp import explain

    opts, frames = CASES[case]
    ext = "-x" in opts
    got = [explain(i, eff, fd, data, "vcan0", ext, "-a" in opts) for i, eff, fd, data in shown(opts, frames)]
    assert got == _isotpdump_capture()[case]


def test_dump_cli_on_a_virtual_bus(capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI: -t z, -c and -n, and the reassembling view (-r)."""
    from canx.cli import main

    ch = channel()
    rc: List[int] = []
    t = threading.Thread(target=lambda: rc.append(main(["isotp", "dump", ch, "-s", "7E0", "-d", "7E8", "-t", "z", "-c", "-n", "3"])))
    t.start()
    time.sleep(0.3)
    with canx.CAN(channel=ch) as bus:
        bus.send(canx.Message(0x7E0, bytes.fromhex("0322F190")))
        bus.send(canx.Message(0x123, bytes.fromhex("0322F190")))
        bus.send(canx.Message(0x7E8, bytes.fromhex("101462F190414243")))
        bus.send(canx.Message(0x7E0, bytes.fromhex("300000")))
    t.join(10)
    assert rc == [0]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("\33[31m(0.000000)  " + ch + "  7E0  [4]  [SF] ln: 3    data: 22 F1 90 ")
    assert lines[1].startswith("\33[34m(0.") and "[FF] ln: 20   data: 62 F1 90 41 42 43" in lines[1]
    assert lines[2].endswith("[FC] FC: 0 = CTS # BS: 0 = off # STmin: 0x00 = 0 ms\33[0m")
    # -r: reassembled messages of both directions
    a, b = pair()
    rc.clear()
    t = threading.Thread(target=lambda: rc.append(main(["isotp", "dump", ch, "-s", "7E0", "-d", "7E8", "-r", "-n", "2"])))
    t.start()
    time.sleep(0.5)
    with isotp.CanStack(ch, a, params=BIG) as ta, isotp.CanStack(ch, b, params=BIG) as tb:
        ta.send(payload(20), send_timeout=5)
        assert tb.recv(block=True, timeout=5) == payload(20)
        tb.send(b"\x62\xf1\x90", send_timeout=5)
        assert ta.recv(block=True, timeout=5) == b"\x62\xf1\x90"
    t.join(10)
    assert rc == [0]
    out = capsys.readouterr().out.splitlines()
    # each direction's messages in order; the two directions interleave as polled
    assert sorted(out) == [f"     7E0  [20]  {' '.join(f'{x:02X}' for x in payload(20))}", "     7E8  [3]  62 F1 90"]
