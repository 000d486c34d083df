"""``canx isotp send|recv|dump``: ISO-TP tools in can-utils' style
(``isotpsend``, ``isotprecv``, ``isotpsniffer``), on canx's native ISO-TP.

    echo 22 F1 90 | canx isotp send vcan0 -s 7E0 -d 7E8
    canx isotp recv vcan0 -s 7E8 -d 7E0 -l          # prints "22 F1 90"
    canx isotp send vcan0 -s 7E0 -d 7E8 -D 4095     # isotpsend -D: byte i = (i % 0xFF) + 1
    canx isotp dump vcan0 -s 7E0 -d 7E8             # both directions, reassembled

Options as can-utils': ``-s`` the id this end sends on, ``-d`` the id it
receives on (hex; more than 3 digits: 29-bit), ``-x addr[:rxaddr]``
extended addressing (data byte 0), ``-p [tx]:[rx]`` padding bytes (hex;
rx: checked, with the length, as ``-P a``), ``-L mtu:tx_dl:tx_flags``
(72 for CAN FD), ``-b``/``-m``/``-w`` (recv: BS, STmin, N_WFTmax, hex),
``-l`` (recv: loop). A send returns once the message is sent (``-b`` of
isotpsend always on) and fails with the N_Result.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Optional, Tuple

from ._common import ToolError, parse_hex


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("channel", help="vcan0, can0 or virtual:NAME")
    p.add_argument("-s", dest="src", required=True, help="CAN id this end sends on (hex)")
    p.add_argument("-d", dest="dst", required=True, help="CAN id this end receives on (hex)")
    p.add_argument("-x", dest="ext", help="extended addressing: addr[:rxaddr] (hex)")
    p.add_argument("-p", dest="pad", help="padding: [tx]:[rx] bytes (hex)")
    p.add_argument("-L", dest="ll", help="link layer mtu:tx_dl:tx_flags (72:64:0 for CAN FD)")
    p.add_argument("-t", dest="timeout", type=float, default=5.0, help="seconds to wait (default 5)")


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("isotp", help="ISO-TP send/recv/dump (like isotpsend, isotprecv, isotpsniffer)")
    s2 = p.add_subparsers(dest="isotp_command", metavar="ACTION", required=True)
    s = s2.add_parser("send", help="send one message (hex bytes on stdin, or -D LEN)")
    _common(s)
    s.add_argument("-D", dest="length", type=int, help="send LEN bytes of (i %% 0xFF) + 1 instead of stdin")
    r = s2.add_parser("recv", help="receive messages and print them as hex")
    _common(r)
    r.add_argument("-b", dest="bs", default="0", help="block size of the FCs (hex, default 0)")
    r.add_argument("-m", dest="stmin", default="0", help="STmin byte of the FCs (hex, default 0)")
    r.add_argument("-w", dest="wftmax", default="0", help="accepted, unused (canx's receiver does not send WAIT)")
    r.add_argument("-l", dest="loop", action="store_true", help="keep receiving")
    d = s2.add_parser("dump", help="print the messages of both directions, reassembled (listen only)")
    _common(d)


def _id(text: str) -> Tuple[int, bool]:
    return parse_hex(text, "CAN id", 0x1FFFFFFF), len(text) > 3


def _setup(args: argparse.Namespace, swap: bool = False) -> Tuple[Any, Dict[str, Any]]:
    from .. import isotp

    tx, tx29 = _id(args.dst if swap else args.src)
    rx, rx29 = _id(args.src if swap else args.dst)
    if tx29 != rx29:
        raise ToolError("-s and -d must both be 11-bit (up to 3 hex digits) or both 29-bit")
    params: Dict[str, Any] = {"max_frame_size": 66000, "blocking_send": True}
    if args.ext:
        a, _, b = args.ext.partition(":")
        ta = parse_hex(a, "address", 0xFF)
        sa = parse_hex(b, "address", 0xFF) if b else ta
        if swap:
            ta, sa = sa, ta
        mode = isotp.AddressingMode.Extended_29bits if tx29 else isotp.AddressingMode.Extended_11bits
        addr = isotp.Address(mode, txid=tx, rxid=rx, target_address=ta, source_address=sa)
    else:
        mode = isotp.AddressingMode.Normal_29bits if tx29 else isotp.AddressingMode.Normal_11bits
        addr = isotp.Address(mode, txid=tx, rxid=rx)
    if args.pad:
        t, _, r = args.pad.partition(":")
        if t:
            params["tx_padding"] = parse_hex(t, "padding byte", 0xFF)
        if r:
            params["rx_padding_byte"] = parse_hex(r, "padding byte", 0xFF)
            params["rx_check_padding_len"] = True
    if args.ll:
        parts = args.ll.split(":")
        if len(parts) != 3:
            raise ToolError("-L wants mtu:tx_dl:tx_flags")
        mtu, tx_dl, flags = (int(x) for x in parts)
        params.update(can_fd=mtu == 72, tx_data_length=tx_dl, bitrate_switch=bool(flags & 1))
    return addr, params


def _stack(args: argparse.Namespace, addr: Any, params: Dict[str, Any]) -> Any:
    from .. import isotp
    from .._canx import CAN

    try:
        bus = CAN(channel=args.channel, fd=bool(params.get("can_fd")))
        return isotp.CanStack(bus, addr, params=params), bus
    except ValueError as e:
        raise ToolError(str(e)) from None


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02X}" for b in data)


def run(args: argparse.Namespace) -> int:
    from .. import isotp

    if args.isotp_command == "send":
        if args.length is not None:
            data = bytes((i % 0xFF) + 1 for i in range(args.length))
        else:
            try:
                data = bytes.fromhex(sys.stdin.read())
            except ValueError:
                raise ToolError("stdin must be hex bytes, e.g. '22 F1 90'") from None
        if not data:
            raise ToolError("nothing to send")
        addr, params = _setup(args)
        stack, bus = _stack(args, addr, params)
        try:
            stack.send(data, send_timeout=args.timeout)
        except isotp.BlockingSendFailure as e:
            raise ToolError(f"send failed: {e.n_result or e}") from None
        finally:
            stack.stop()
            bus.deinit()
        return 0
    if args.isotp_command == "recv":
        addr, params = _setup(args)
        params.update(blocksize=parse_hex(args.bs, "block size", 0xFF), stmin=parse_hex(args.stmin, "STmin", 0xFF))
        stack, bus = _stack(args, addr, params)
        try:
            while True:
                m = stack.recv(block=True, timeout=None if args.loop else args.timeout)
                if m is None:
                    return 1
                print(_hex(bytes(m)), flush=True)
                if not args.loop:
                    return 0
        finally:
            stack.stop()
            bus.deinit()
    # dump: two listen-only channels, one per direction.
    a1, p1 = _setup(args)
    a2, p2 = _setup(args, swap=True)
    p1.update(listen_mode=True, blocking_send=False)
    p2.update(listen_mode=True, blocking_send=False)
    s1, bus = _stack(args, a1, p1)
    s2: Optional[Any] = None
    try:
        s2 = isotp.CanStack(bus, a2, params=p2)
        while True:
            for who, s in ((args.dst, s1), (args.src, s2)):
                m = s.recv(block=True, timeout=0.05)
                if m is not None:
                    print(f"{who.upper():>8}  [{len(m)}]  {_hex(bytes(m))}", flush=True)
    finally:
        if s2 is not None:
            s2.stop()
        s1.stop()
        bus.deinit()
