"""canx.isotp against the Linux kernel's can-isotp (vcan, in the VM), both
directions: sizes, every addressing mode, padding checked by the kernel
(CAN_ISOTP_CHK_PAD_LEN/DATA), BS 0/1/8, STmin 0 / 5 ms / 300 us with candump
timestamps, CAN FD (vcan mtu 72) and a sender without flow control.

The kernel socket is opened as in docs/research isotp §2.2: every option set
before bind, bind((ifname, rx_id, tx_id)).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import canx
import canx.isotp as isotp
from conftest import TIMEOUT_SCALE, _CANDUMP_LINE

pytestmark = pytest.mark.vcan

SIZES = [1, 6, 7, 8, 62, 63, 64, 4095, 4096, 10000, 66000]
SOL_CAN_ISOTP = getattr(socket, "SOL_CAN_BASE", 100) + getattr(socket, "CAN_ISOTP", 6)
CAN_ISOTP_OPTS, CAN_ISOTP_RECV_FC, CAN_ISOTP_LL_OPTS = 1, 2, 5
EXTEND_ADDR, TX_PADDING, RX_PADDING, CHK_PAD_LEN, CHK_PAD_DATA = 0x2, 0x4, 0x8, 0x10, 0x20
RX_EXT_ADDR, WAIT_TX_DONE = 0x200, 0x400
EFF = socket.CAN_EFF_FLAG
M = isotp.AddressingMode
T = 5.0 * TIMEOUT_SCALE


def payload(n: int) -> bytes:
    return bytes((i % 0xFF) + 1 for i in range(n))


@contextlib.contextmanager
def kernel(
    ifc: str,
    rx: int,
    tx: int,
    *,
    flags: int = 0,
    ext: int = 0,
    rx_ext: int = 0,
    txpad: int = 0xCC,
    rxpad: int = 0xCC,
    bs: int = 0,
    stmin: int = 0,
    fd: bool = False,
) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_CAN, socket.SOCK_DGRAM, socket.CAN_ISOTP)
    try:
        s.setsockopt(SOL_CAN_ISOTP, CAN_ISOTP_OPTS, struct.pack("=IIBBBB", flags, 0, ext, txpad, rxpad, rx_ext))
        s.setsockopt(SOL_CAN_ISOTP, CAN_ISOTP_RECV_FC, struct.pack("=BBB", bs, stmin, 0))
        if fd:
            s.setsockopt(SOL_CAN_ISOTP, CAN_ISOTP_LL_OPTS, struct.pack("=BBB", 72, 64, 0))
        s.bind((ifc, rx, tx))
        s.settimeout(T)
        yield s
    finally:
        s.close()


# (canx tester address, kernel ECU: rx id, tx id, extra kernel options) per addressing mode.
def setup(mode: isotp.AddressingMode) -> Tuple[isotp.Address, int, int, Dict[str, int]]:
    if mode == M.Normal_11bits:
        return isotp.Address(mode, txid=0x7E0, rxid=0x7E8), 0x7E0, 0x7E8, {}
    if mode == M.Normal_29bits:
        return isotp.Address(mode, txid=0x18DA10F1, rxid=0x18DAF110), 0x18DA10F1 | EFF, 0x18DAF110 | EFF, {}
    if mode == M.NormalFixed_29bits:
        a = isotp.Address(mode, target_address=0x10, source_address=0xF1)
        return a, 0x18DA10F1 | EFF, 0x18DAF110 | EFF, {}
    if mode == M.Extended_11bits:
        a = isotp.Address(mode, txid=0x6F1, rxid=0x610, target_address=0x10, source_address=0xF1)
        return a, 0x6F1, 0x610, {"flags": EXTEND_ADDR | RX_EXT_ADDR, "ext": 0xF1, "rx_ext": 0x10}
    if mode == M.Extended_29bits:
        a = isotp.Address(mode, txid=0x18000001, rxid=0x18000002, target_address=0x10, source_address=0xF1)
        return a, 0x18000001 | EFF, 0x18000002 | EFF, {"flags": EXTEND_ADDR | RX_EXT_ADDR, "ext": 0xF1, "rx_ext": 0x10}
    if mode == M.Mixed_11bits:
        a = isotp.Address(mode, txid=0x700, rxid=0x708, address_extension=0x55)
        return a, 0x700, 0x708, {"flags": EXTEND_ADDR, "ext": 0x55}
    a = isotp.Address(mode, target_address=0x10, source_address=0xF1, address_extension=0x55)
    return a, 0x18CE10F1 | EFF, 0x18CEF110 | EFF, {"flags": EXTEND_ADDR, "ext": 0x55}


def kernel_send(ks: socket.socket, data: bytes) -> Tuple[threading.Thread, List[Any]]:
    """`ks.send(data)` on a started thread; the list gets its result: the
    byte count, or the errno of the OSError it raised (ECOMM, ...)."""
    out: List[Any] = []

    def send() -> None:
        try:
            out.append(ks.send(data))
        except OSError as e:
            out.append(e.errno)

    t = threading.Thread(target=send)
    t.start()
    return t, out


def exchange(stack: isotp.CanStack, ks: socket.socket, n: int) -> None:
    """canx -> kernel, then kernel -> canx, `n` bytes each."""
    stack.send(payload(n), send_timeout=T)
    assert ks.recv(70000) == payload(n)
    sent: List[int] = []
    t = threading.Thread(target=lambda: sent.append(ks.send(payload(n)[::-1])))
    t.start()
    assert stack.recv(block=True, timeout=T) == payload(n)[::-1]
    t.join(T)
    assert sent == [n]


# canx's receiver asks for whole messages in one block (BS 0) unless a test
# is about block sizes (those run more FC round trips).
BIG: Dict[str, Any] = {"max_frame_size": 66000, "blocking_send": True, "blocksize": 0}


def test_sizes_both_ways(vcan_channel: str) -> None:
    """Every size of the issue, both ways, with canx's receiver asking for
    the whole message in one block (BS 0); block sizes: the next tests."""
    a, rx, tx, _ = setup(M.Normal_11bits)
    with kernel(vcan_channel, rx, tx) as ks, isotp.CanStack(vcan_channel, a, params=BIG) as s:
        for n in SIZES:
            exchange(s, ks, n)


def test_kernel_sends_66000_bytes_to_canx_in_blocks_of_8(vcan_channel: str) -> None:
    """1,179 FC round trips from canx's receiver to Linux's sender; each
    block's FC waits `block_fc_delay_us` after the block's last CF, since
    Linux ignores an FC that beats its own CF's echo (docs/protocols/isotp.md §8)."""
    a, rx, tx, _ = setup(M.Normal_11bits)
    with kernel(vcan_channel, rx, tx) as ks, isotp.CanStack(vcan_channel, a, params=dict(BIG, blocksize=8)) as s:
        for _ in range(3):
            exchange(s, ks, 66000)


@pytest.mark.parametrize("mode", list(M))
def test_addressing_modes_both_ways(vcan_channel: str, mode: isotp.AddressingMode) -> None:
    a, rx, tx, kw = setup(mode)
    with kernel(vcan_channel, rx, tx, **kw) as ks, isotp.CanStack(vcan_channel, a, params=BIG) as s:
        for n in (5, 6, 7, 100, 4095, 4096):
            exchange(s, ks, n)


@pytest.mark.parametrize("pad", [0xCC, 0xAA, 0x00])
def test_padding_checked_by_the_kernel(vcan_channel: str, pad: int) -> None:
    a, rx, tx, _ = setup(M.Normal_11bits)
    flags = TX_PADDING | RX_PADDING | CHK_PAD_LEN | CHK_PAD_DATA
    params = dict(BIG, tx_padding=pad, rx_check_padding_len=True, rx_padding_byte=pad)
    with kernel(vcan_channel, rx, tx, flags=flags, txpad=pad, rxpad=pad) as ks, isotp.CanStack(
        vcan_channel, a, params=params
    ) as s:
        for n in (1, 7, 8, 100, 4095):
            exchange(s, ks, n)


def test_unpadded_frames_fail_the_kernels_check(vcan_channel: str) -> None:
    a, rx, tx, _ = setup(M.Normal_11bits)
    flags = RX_PADDING | CHK_PAD_LEN
    with kernel(vcan_channel, rx, tx, flags=flags) as ks, isotp.CanStack(vcan_channel, a, params=BIG) as s:
        ks.settimeout(1.0 * TIMEOUT_SCALE)
        s.send(b"\x01\x02", send_timeout=T)
        with pytest.raises(OSError):  # EBADMSG (or nothing delivered)
            ks.recv(100)


@pytest.mark.parametrize("bs", [0, 1, 8])
def test_block_sizes_canx_to_kernel(vcan_channel: str, bs: int) -> None:
    """canx sends in the blocks the kernel receiver asks for (its FC's BS)."""
    a, rx, tx, _ = setup(M.Normal_11bits)
    with kernel(vcan_channel, rx, tx, bs=bs) as ks, isotp.CanStack(vcan_channel, a, params=BIG) as s:
        for n in (100, 4095):
            s.send(payload(n), send_timeout=T)
            assert ks.recv(70000) == payload(n)


@pytest.mark.parametrize("bs", [0, 1, 8])
def test_block_sizes_kernel_to_canx(vcan_channel: str, bs: int) -> None:
    """canx's receiver asks for blocks of `bs` and the kernel sender keeps to them."""
    a, rx, tx, _ = setup(M.Normal_11bits)
    with kernel(vcan_channel, rx, tx) as ks, isotp.CanStack(vcan_channel, a, params=dict(BIG, blocksize=bs)) as s:
        for n in (100, 4095):
            exchange(s, ks, n)


@contextlib.contextmanager
def rx_timestamps_at_arrival(ifc: str) -> Iterator[None]:
    """Holds a socket with SO_TIMESTAMP open and waits until the kernel
    stamps frames when they arrive. Linux switches arrival stamping on
    (`net_enable_timestamp`: the `netstamp_needed_key` static key) from a
    work item some time after the first SO_TIMESTAMP user appears, and
    stamps a frame that arrived before that when it is read
    (`__sock_recv_timestamp`: "Race occurred between timestamp enabling and
    packet receiving"), so until then candump's gaps are the gaps between
    its reads, not between the frames."""
    import time

    so_timestamp = getattr(socket, "SO_TIMESTAMP", 29)
    rx = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
    tx = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
    try:
        rx.setsockopt(socket.SOL_SOCKET, so_timestamp, 1)
        rx.setsockopt(socket.SOL_CAN_RAW, socket.CAN_RAW_FILTER, struct.pack("=II", 0x7FD, 0x7FF))
        rx.bind((ifc,))
        tx.bind((ifc,))
        rx.settimeout(T)
        deadline = time.monotonic() + 10 * TIMEOUT_SCALE
        while True:
            sent = time.time()
            tx.send(struct.pack("=IB3x8s", 0x7FD, 0, b""))
            _, anc, _, _ = rx.recvmsg(16, 64)
            stamps = [struct.unpack("=qq", d[:16]) for lvl, typ, d in anc if typ == so_timestamp]
            if stamps and stamps[0][0] + stamps[0][1] / 1e6 - sent < 0.05:
                break
            assert time.monotonic() < deadline, "the kernel never stamped frames at arrival"
        yield
    finally:
        rx.close()
        tx.close()


def test_linux_ignores_an_fc_that_beats_its_blocks_end(vcan_channel: str) -> None:
    """The kernel behaviour canx's block FC delay works around: a Linux
    sender waits for the block's FC only from its last CF's echo
    (`isotp_rcv_echo` sets ISOTP_WAIT_FC), and `isotp_rcv_fc` ignores an FC
    that finds it still sending. Raw receiver, BS 2, STmin 20 ms: an FC after
    the block's first CF is lost and the send fails with ECOMM after 1 s; the
    same FC after the block's last CF lets it finish."""
    import errno

    results = {}
    for early in (False, True):
        with kernel(vcan_channel, 0x7E0, 0x7E8, flags=WAIT_TX_DONE) as ks, socket.socket(
            socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW
        ) as r:
            r.setsockopt(socket.SOL_CAN_RAW, socket.CAN_RAW_FILTER, struct.pack("=II", 0x7E8, 0x7FF))
            r.bind((vcan_channel,))
            r.settimeout(T)
            t, out = kernel_send(ks, payload(30))
            fc = struct.pack("=IB3x8s", 0x7E0, 3, bytes([0x30, 2, 20]))
            cfs = 0
            with contextlib.suppress(socket.timeout):
                while cfs < 4:
                    d = r.recv(16)
                    if d[8] >> 4 == 1:
                        r.send(fc)
                    elif d[8] >> 4 == 2:
                        cfs += 1
                        if cfs == (1 if early else 2):
                            r.send(fc)
                    if early and cfs == 2:
                        r.settimeout(1.5 * TIMEOUT_SCALE)
            t.join(T)
            results[early] = (cfs, out)
    assert results[False] == (4, [30])
    assert results[True] == (2, [errno.ECOMM])


@pytest.mark.parametrize("fc_repeat_ms", [50, 0])
def test_a_lost_fc_is_sent_again_and_the_kernel_sender_goes_on(vcan_channel: str, fc_repeat_ms: int) -> None:
    """canx's FC.CTS after Linux's FF never reaches the kernel (a canx fault
    rule drops it, as the kernel drops an FC that beats its CF's echo). With
    fc_repeat_ms 50 canx sends it again and the kernel's send of 4,000 bytes
    completes; with 0 (no repeat) the kernel fails with ECOMM after its 1 s
    FC timeout (CAN_ISOTP_WAIT_TX_DONE: send() returns the outcome) and
    canx's reception with N_TIMEOUT_Cr."""
    import errno

    from canx.pytest_plugin import Faults

    a, rx, tx, _ = setup(M.Normal_11bits)
    with canx.CAN(channel=vcan_channel) as bus, kernel(vcan_channel, rx, tx, flags=WAIT_TX_DONE) as ks:
        faults = Faults(bus)
        rule = faults.drop(1, id=0x7E0, direction="tx")
        errors: List[Any] = []
        with isotp.CanStack(bus, a, params=dict(BIG, fc_repeat_ms=fc_repeat_ms), error_handler=errors.append) as s:
            t, out = kernel_send(ks, payload(4000))
            got = s.recv(block=True, timeout=3.0 * TIMEOUT_SCALE)
            t.join(T)
            stats = s.stats()
        taken = rule.taken
        faults.clear()
    assert taken == 1, "the FC after the FF was dropped"
    if fc_repeat_ms:
        assert got == payload(4000)
        assert out == [4000]
        assert stats["fc_repeated"] == 1, stats
    else:
        assert got is None
        assert out == [errno.ECOMM]
        assert stats["fc_repeated"] == 0, stats
        assert any("N_TIMEOUT_Cr" in str(e) for e in errors), errors


def test_block_fc_waits_after_a_local_senders_last_cf(vcan_channel: str, can_utils: Any) -> None:
    """canx's FC after each block of a kernel sender on this host leaves at
    least block_fc_delay_us (300) after the block's last CF (candump: kernel
    timestamps of both frames)."""
    a, rx, tx, _ = setup(M.Normal_11bits)
    with rx_timestamps_at_arrival(vcan_channel), can_utils.candump(vcan_channel) as cap:
        with kernel(vcan_channel, rx, tx) as ks, isotp.CanStack(vcan_channel, a, params=dict(BIG, blocksize=1)) as s:
            exchange_kernel_to_canx = threading.Thread(target=lambda: ks.send(payload(300)))
            exchange_kernel_to_canx.start()
            assert s.recv(block=True, timeout=T) == payload(300)
            exchange_kernel_to_canx.join(T)
        cap.wait(1 + 42 + 42, timeout=5)
    gaps = []
    prev: Optional[Tuple[float, str]] = None
    for line in cap.lines:
        m = _CANDUMP_LINE.match(line)
        if not m:
            continue
        frame, ts = m["frame"].upper(), float(m["ts"])
        if frame.startswith("7E0#30") and prev is not None and prev[1].startswith("7E8#2"):
            gaps.append(ts - prev[0])
        prev = (ts, frame)
    assert len(gaps) == 41, cap.lines[:6]
    assert min(gaps) >= 0.0003 - 0.00002, sorted(gaps)[:5]


def cf_stamps(lines: List[str], can_id: str) -> List[float]:
    out = []
    for line in lines:
        m = _CANDUMP_LINE.match(line)
        if m and m["frame"].startswith(can_id + "#") and m["frame"].split("#")[1][:1] == "2":
            out.append(float(m["ts"]))
    return out


@pytest.mark.parametrize("stmin,seconds", [(0, 0.0), (5, 0.005), (0xF1, 0.0001), (0xF3, 0.0003), (0xF9, 0.0009)])
def test_stmin_never_undershot(vcan_channel: str, can_utils: Any, stmin: int, seconds: float) -> None:
    """canx's CFs to a kernel receiver asking for `stmin`: every gap in
    `candump -L` (kernel arrival timestamps, once stamping at arrival is on:
    rx_timestamps_at_arrival) and in canx's own post-send clock readings is
    at least STmin."""
    a, rx, tx, _ = setup(M.Normal_11bits)
    with rx_timestamps_at_arrival(vcan_channel), can_utils.candump(vcan_channel) as cap:
        with kernel(vcan_channel, rx, tx, stmin=stmin) as ks, isotp.CanStack(vcan_channel, a, params=BIG) as s:
            s.send(payload(300), send_timeout=T)
            assert ks.recv(1000) == payload(300)
            own_gap = s.stats()["min_paced_gap_us"]
        n_cf = (300 - 6 + 6) // 7
        cap.wait(n_cf + 2, timeout=5)
    stamps = cf_stamps(cap.lines, "7E0")
    assert len(stamps) == n_cf
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    i = min(range(len(gaps)), key=gaps.__getitem__)
    # canx's own view (bus clock, after each send returned)
    assert own_gap is None or own_gap >= seconds * 1e6, own_gap
    # the kernel's arrival stamps, taken inside each CF's send; 20 us of slack for their jitter
    assert gaps[i] >= seconds - 0.00002, (i, gaps[max(0, i - 2) : i + 3], own_gap)


def test_can_fd_both_ways(vcan_channel: str) -> None:
    a, rx, tx, _ = setup(M.Normal_11bits)
    params = dict(BIG, can_fd=True, tx_data_length=64)
    with kernel(vcan_channel, rx, tx, fd=True) as ks, isotp.CanStack(vcan_channel, a, params=params) as s:
        for n in (1, 7, 8, 62, 63, 64, 4095, 4096, 10000, 66000):
            exchange(s, ks, n)


def test_no_flow_control_is_n_timeout_bs(vcan_channel: str) -> None:
    a = isotp.Address(M.Normal_11bits, txid=0x5E0, rxid=0x5E8)
    errors: List[isotp.IsoTpError] = []
    with isotp.CanStack(
        vcan_channel, a, error_handler=errors.append, params={"blocking_send": True, "rx_flowcontrol_timeout": 300}
    ) as s:
        with pytest.raises(isotp.BlockingSendFailure) as ei:
            s.send(payload(100), send_timeout=T)
    assert ei.value.n_result == "N_TIMEOUT_Bs"
    assert isinstance(ei.value.__cause__, isotp.FlowControlTimeoutError)


def test_kernel_sender_stalled_by_missing_cf_gives_n_timeout_cr(vcan_channel: str) -> None:
    """A raw FF with nobody sending the CFs: canx's receiver ends with N_TIMEOUT_Cr."""
    a, _, _, _ = setup(M.Normal_11bits)
    errors: List[isotp.IsoTpError] = []
    with canx.CAN(channel=vcan_channel) as raw, isotp.CanStack(
        vcan_channel, a, error_handler=errors.append, params={"rx_consecutive_frame_timeout": 200}
    ):
        raw.send(canx.Message(0x7E8, bytes([0x10, 20, 1, 2, 3, 4, 5, 6])))
        import time

        deadline = time.monotonic() + T
        while not errors and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [e.n_result for e in errors] == ["N_TIMEOUT_Cr"]


def test_wrong_sequence_number_from_the_bus(vcan_channel: str) -> None:
    a, _, _, _ = setup(M.Normal_11bits)
    errors: List[isotp.IsoTpError] = []
    with canx.CAN(channel=vcan_channel) as raw, isotp.CanStack(vcan_channel, a, error_handler=errors.append):
        listener = raw.listen(timeout=T)
        raw.send(canx.Message(0x7E8, bytes([0x10, 20, 1, 2, 3, 4, 5, 6])))
        fc: Optional[canx.Message] = None
        while fc is None or fc.id != 0x7E0:
            got = listener.receive()
            assert got is not None, "no FC"
            fc = got  # type: ignore[assignment]
        raw.send(canx.Message(0x7E8, bytes([0x23, 7, 8, 9, 10, 11, 12, 13])))
        import time

        deadline = time.monotonic() + T
        while not errors and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [type(e) for e in errors] == [isotp.WrongSequenceNumberError]


# ---------------------------------------------------------------- frame-for-frame against the kernel

SF_BROADCAST = 0x800


def n_frames(n: int, dl: int, bs: int) -> int:
    """Frames on the bus for an `n`-byte message, normal addressing, TX_DL
    `dl`, receiver BS `bs` (SF; or FF + CFs + FCs)."""
    if n <= (7 if dl == 8 else dl - 2):
        return 1
    ff = dl - (6 if n > 4095 else 2)
    cfs = -(-(n - ff) // (dl - 1))
    fcs = 1 + ((-(-cfs // bs) - 1) if bs else 0)
    return 1 + cfs + fcs


@contextlib.contextmanager
def recorder(ifc: str) -> Iterator[List[str]]:
    """Records every frame on `ifc` while the block runs, as `ID#DATA`
    (`ID##0DATA` for CAN FD), into the yielded list (filled at the end).
    A raw socket with a 16 MB receive buffer (SO_RCVBUFFORCE, root in the
    VM), so a burst of thousands of frames is not dropped as candump's
    default buffer would."""
    r = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
    out: List[str] = []
    try:
        r.setsockopt(socket.SOL_CAN_RAW, socket.CAN_RAW_FD_FRAMES, 1)
        r.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 16 << 20)
        r.bind((ifc,))
        yield out
        r.setblocking(False)
        while True:
            try:
                raw = r.recv(72)
            except BlockingIOError:
                break
            cid, n = struct.unpack_from("=IB", raw)
            data = raw[8 : 8 + n].hex().upper()
            fd = len(raw) == 72
            out.append(f"{cid & 0x7FF:03X}#" + (f"#0{data}" if fd else data))
    finally:
        r.close()


COMPARE = {
    # name: (kernel flags, canx params, kernel fd, sizes)
    "classic": (0, {}, False, (5, 7, 8, 100, 4095, 4096)),
    "classic-padded": (TX_PADDING, {"tx_padding": 0xCC}, False, (1, 7, 8, 100, 4095, 4096)),
    "fd-64": (0, {"can_fd": True, "tx_data_length": 64}, True, (5, 7, 8, 62, 63, 200, 4095, 4096)),
}


@pytest.mark.parametrize("name", list(COMPARE))
def test_canx_sends_the_kernels_frames(vcan_channel: str, name: str) -> None:
    """canx -> kernel and kernel -> kernel for the same configuration give
    the same frames on the bus (ids, DLCs, data, padding; the FCs from the
    same kernel receiver, BS 8), frame for frame, timestamps aside."""
    flags, params, fd, sizes = COMPARE[name]
    dl = 64 if fd else 8
    captured: Dict[str, List[str]] = {}
    for sender in ("kernel", "canx"):
        with recorder(vcan_channel) as frames:
            with kernel(vcan_channel, 0x7E0, 0x7E8, bs=8, fd=fd) as rx:
                if sender == "kernel":
                    tx_cm: Any = kernel(vcan_channel, 0x7E8, 0x7E0, flags=flags | WAIT_TX_DONE, fd=fd)
                else:
                    a = isotp.Address(M.Normal_11bits, txid=0x7E0, rxid=0x7E8)
                    tx_cm = isotp.CanStack(vcan_channel, a, params=dict(BIG, **params))
                with tx_cm as tx:
                    for n in sizes:
                        if sender == "kernel":
                            assert tx.send(payload(n)) == n
                        else:
                            tx.send(payload(n), send_timeout=T)
                        assert rx.recv(70000) == payload(n)
        captured[sender] = frames
        want = sum(n_frames(n, dl, 8) for n in sizes)
        assert len(frames) == want, (sender, len(frames), want)
    k, c = captured["kernel"], captured["canx"]
    diff = [(i, k[i], c[i]) for i in range(len(k)) if k[i] != c[i]]
    assert not diff, f"{len(diff)} of {len(k)} frames differ, first: {diff[:3]}"


@pytest.mark.parametrize("mode", [M.Normal_11bits, M.NormalFixed_29bits])
def test_functional_addressing_with_the_kernel(vcan_channel: str, mode: isotp.AddressingMode) -> None:
    """Functional (1 to n) requests, single frames only (isotp.md §5): a
    canx tester's reach a kernel ECU bound to the functional id (0x7DF,
    0x18DB33F1), whose physical answer comes back; a kernel tester's
    (CAN_ISOTP_SF_BROADCAST) reach a canx ECU marked functional; a kernel's
    functional FF is ignored by canx (Table 23: no FC, nothing delivered)."""
    if mode == M.Normal_11bits:
        tester = isotp.Address(mode, txid=0x7E0, rxid=0x7E8, functional_txid=0x7DF)
        ecu = isotp.Address(mode, txid=0x7E8, rxid=0x7E0, functional_rxid=0x7DF)
        func, phys_rx, phys_tx = 0x7DF, 0x7E0, 0x7E8
    else:
        tester = isotp.Address(mode, target_address=0x33, source_address=0xF1)
        ecu = isotp.Address(mode, target_address=0xF1, source_address=0x33)
        func, phys_rx, phys_tx = 0x18DB33F1 | EFF, 0x18DA33F1 | EFF, 0x18DAF133 | EFF
    F = isotp.TargetAddressType.Functional
    with kernel(vcan_channel, func, phys_tx) as kf, kernel(vcan_channel, phys_rx, phys_tx) as kp, isotp.CanStack(
        vcan_channel, tester, params=BIG
    ) as s:
        s.send(b"\x22\xF1\x90", target_address_type=F, send_timeout=T)
        assert kf.recv(100) == b"\x22\xF1\x90"
        kp.send(b"\x62\xF1\x90" + payload(17))
        assert s.recv(block=True, timeout=T) == b"\x62\xF1\x90" + payload(17)
        with pytest.raises(ValueError):
            s.send(payload(8), target_address_type=F)
    errors: List[isotp.IsoTpError] = []
    with kernel(vcan_channel, 0x7FF, func, flags=SF_BROADCAST) as kt, isotp.CanStack(
        vcan_channel, ecu, params=BIG, error_handler=errors.append
    ) as e:
        kt.send(b"\x3E\x00")
        ev = e._n.recv(T)
        assert ev is not None and bytes(ev.data) == b"\x3E\x00" and ev.functional
        # the kernel cannot send a functional FF with SF_BROADCAST (EINVAL)
        with pytest.raises(OSError):
            kt.send(payload(20))
    with kernel(vcan_channel, 0x7FE if mode == M.Normal_11bits else 0x7FE, func) as kff, isotp.CanStack(
        vcan_channel, ecu, params=BIG, error_handler=errors.append
    ) as e:
        kff.send(payload(20))  # an FF on the functional id; no FC will come
        assert e.recv(block=True, timeout=1.0 * TIMEOUT_SCALE) is None
        assert any(getattr(x, "pdu", None) == "FF" for x in errors), errors


# ---------------------------------------------------------------- canx isotp dump against isotpdump


def _send_raw(ifc: str, frames: List[Any]) -> None:
    s = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
    try:
        s.setsockopt(socket.SOL_CAN_RAW, socket.CAN_RAW_FD_FRAMES, 1)
        s.bind((ifc,))
        for cid, eff, fd, data in frames:
            cid |= EFF if eff else 0
            if fd:
                s.send(struct.pack("=IBBxx64s", cid, len(data), 0, data))
            else:
                s.send(struct.pack("=IB3x8s", cid, len(data), data))
    finally:
        s.close()


@pytest.mark.parametrize("case", ["classic-ascii", "extended", "29bit"])
def test_dump_prints_what_isotpdump_prints(vcan_channel: str, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`canx isotp dump` and can-utils' isotpdump, both running on the same
    frames (tests/isotpdump_cases.py), print the same lines."""
    import subprocess
    import sys
    import time

    from canx.cli import main
    from isotpdump_cases import CASES, shown

    opts, frames = CASES[case]
    want = len(shown(opts, frames))
    rc: List[int] = []
    t = threading.Thread(target=lambda: rc.append(main(["isotp", "dump", vcan_channel, *opts, "-n", str(want)])))
    t.start()
    ref = subprocess.Popen(["isotpdump", *opts, vcan_channel], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0 * TIMEOUT_SCALE)
        _send_raw(vcan_channel, frames)
        t.join(T)
        assert rc == [0]
        time.sleep(0.5 * TIMEOUT_SCALE)
    finally:
        ref.terminate()
    theirs = ref.communicate(timeout=T)[0].splitlines()
    ours = capsys.readouterr().out.splitlines()
    sys.stdout.write("\n".join(theirs))
    assert ours == theirs
