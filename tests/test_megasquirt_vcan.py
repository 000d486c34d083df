"""canx.megasquirt against the kernel's SocketCAN on vcan0 (run in the VM:
scripts/test-vm -q tests/test_megasquirt_vcan.py).

- the three examples run as separate processes on vcan0 while candump
  records the frames: the GPIO board's MSG_REQ / MSG_RSP with the ECU, the
  ECU's polls of the GPIO board, the dash broadcast;
- frames injected with cansend (MSG_REQ and OUTMSG_REQ from board 4) get the
  right MSG_RSP / OUTMSG_RSP, checked in candump's output;
- client operations between two nodes over vcan.

Protocol rules: docs/protocols/megasquirt.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from canx import megasquirt as ms

pytestmark = pytest.mark.vcan

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "megasquirt"


def ident(msg_type: int, from_id: int, to_id: int, blk: int, off: int) -> int:
    return off << 18 | msg_type << 15 | from_id << 11 | to_id << 7 | (blk & 0xF) << 3 | (blk & 0x10) >> 2


def parse(frame_text: str):
    """candump -L frame text "0040A038#030204" -> (id, data)."""
    i, d = frame_text.split("#", 1)
    return int(i, 16), bytes.fromhex(d)


def header(i: int):
    return {"off": i >> 18, "type": (i >> 15) & 7, "from": (i >> 11) & 0xF, "to": (i >> 7) & 0xF,
            "blk": ((i >> 3) & 0xF) | ((i << 2) & 0x10)}


def wait_frames(cap, pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [(i, d) for _, f in cap.frames for (i, d) in [parse(f)] if pred(i, d)]
        if hits:
            return hits
        time.sleep(0.05)
    return []


def test_cansend_requests_get_the_right_replies(vcan_channel, can_utils, timeout_scale):
    with ms.Node(channel=vcan_channel, can_id=0) as ecu:
        ecu.serve_table(7, bytes(range(64)))
        ecu.set_outmsg(0, [6, 7, 18, 19, 20, 21, 22, 23, 24, 25])
        with can_utils.candump(vcan_channel) as cap:
            # MSG_REQ from board 4: table 7 offset 16, reply to its table 3 offset 0x10, 4 bytes
            req = ident(ms.MSG_REQ, 4, 0, 7, 16)
            assert req == 0x40A038
            can_utils.cansend(vcan_channel, f"{req:08X}#030204")
            want = ident(ms.MSG_RSP, 0, 4, 3, 0x10)
            assert want == 0x410218
            hits = wait_frames(cap, lambda i, d: i == want, 3 * timeout_scale)
            assert hits == [(want, bytes([16, 17, 18, 19]))], cap.lines
            # OUTMSG_REQ 0 from board 4, reply target table 3 offset 100: 8 + 2 bytes
            can_utils.cansend(vcan_channel, f"{ident(ms.OUTMSG_REQ, 4, 0, 3, 100):08X}#00")
            a, b = ident(ms.OUTMSG_RSP, 0, 4, 3, 100), ident(ms.OUTMSG_RSP, 0, 4, 3, 108)
            assert wait_frames(cap, lambda i, d: i == b, 3 * timeout_scale), cap.lines
            got = {i: d for _, f in cap.frames for (i, d) in [parse(f)]}
            assert got[a] == bytes([6, 7, 18, 19, 20, 21, 22, 23]) and got[b] == bytes([24, 25])
            # a read-only table: MSG_CMD from board 4 is refused, no reply, table unchanged
            can_utils.cansend(vcan_channel, f"{ident(ms.MSG_CMD, 4, 0, 7, 0):08X}#FFFF")
            assert _wait(lambda: ecu.stats()["refused"] == 1, 3 * timeout_scale)
            assert ecu.table(7)[0:2] == b"\x00\x01"
    # every frame on the bus in order: requests, then replies from board 0 only
    senders = {header(parse(f)[0])["from"] for _, f in cap.frames}
    assert senders == {0, 4}


def _wait(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_client_operations_over_vcan(vcan_channel, timeout_scale):
    rt = 0.1 * timeout_scale
    with ms.Node(channel=vcan_channel, can_id=0, request_timeout=rt) as ecu, \
            ms.Node(channel=vcan_channel, can_id=3, request_timeout=rt) as dash:
        ecu.serve_table(7, bytes(range(256)))
        ecu.serve_table(20, 32, writable=True)
        ecu.serve_table(40, b"\x40" * 16)
        assert dash.read(0, 7, 0, 256) == bytes(range(256))
        assert dash.read(0, 40, 4, 4) == b"\x40" * 4
        dash.write(0, 20, 0, b"hello, ecu")
        assert dash.read(0, 20, 0, 10) == b"hello, ecu"
        with pytest.raises(TimeoutError):
            dash.read(0, 9, 0, 1)


def test_examples_against_each_other_over_vcan(vcan_channel, can_utils, timeout_scale):
    dur = 6.0 + 1.2 * timeout_scale  # python start-up under qemu takes seconds
    with can_utils.candump(vcan_channel) as cap:
        procs = {
            name: subprocess.Popen([sys.executable, str(EXAMPLES / f"{name}.py"), "--channel", vcan_channel,
                                    "--duration", str(dur)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
            for name in ("simulator", "gpio_fan", "dash")
        }
        # while they run: a MSG_REQ from board 4 for clt (outpc offset 22, 2 bytes) gets a MSG_RSP
        assert _wait(lambda: any(parse(f)[0] == 0x5E8 for _, f in cap.frames), dur), "the simulator broadcasts"
        can_utils.cansend(vcan_channel, f"{ident(ms.MSG_REQ, 4, 0, 7, 22):08X}#030002")
        clt_rsp = ident(ms.MSG_RSP, 0, 4, 3, 0)
        hits = wait_frames(cap, lambda i, d: i == clt_rsp, 3 * timeout_scale)
        outs = {}
        for name, p in procs.items():
            try:
                out, err = p.communicate(timeout=dur + 30 * timeout_scale)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            outs[name] = (p.returncode, out, err)
    for name, (rc, out, err) in outs.items():
        assert rc == 0, f"{name}: rc={rc}\n{out}\n{err}"
    assert hits, cap.lines[-20:]
    clt = int.from_bytes(hits[0][1], "big", signed=True) / 10
    assert len(hits[0][1]) == 2 and 60.0 <= clt <= 240.0
    sim, gpio, dash = (outs[n][1] for n in ("simulator", "gpio_fan", "dash"))
    assert "fan ON" in gpio, gpio
    assert "dash: rpm=" in dash, dash
    frames = [(header(i), i, d) for _, f in cap.frames for (i, d) in [parse(f)]]
    ext = [(h, d) for h, i, d in frames if i > 0x7FF]
    # the GPIO board (1) reads clt from the ECU (0): MSG_REQ table 7 offset 22, 2 bytes; MSG_RSP back
    assert any(h["type"] == ms.MSG_REQ and (h["from"], h["to"], h["blk"], h["off"]) == (1, 0, 7, 22)
               and d[2] & 0xF == 2 for h, d in ext)
    assert any(h["type"] == ms.MSG_RSP and (h["from"], h["to"]) == (0, 1) and len(d) == 2 for h, d in ext)
    # the ECU polls the GPIO board's fan output (table 2, byte 0) and gets a reply
    assert any(h["type"] == ms.MSG_REQ and (h["from"], h["to"], h["blk"]) == (0, 1, 2) for h, d in ext)
    assert any(h["type"] == ms.MSG_RSP and (h["from"], h["to"]) == (1, 0) for h, d in ext)
    # the fan output went on at least once as the ECU saw it
    assert any(h["type"] == ms.MSG_RSP and (h["from"], h["to"]) == (1, 0) and d == b"\x01" for h, d in ext)
    # the dash broadcast: 5 frames
    assert {i for _, i, _ in frames if 0x5E8 <= i <= 0x5EC} == set(range(0x5E8, 0x5ED))
