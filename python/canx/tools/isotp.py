"""``canx isotp send|recv|dump``: ISO-TP tools in can-utils' style
(``isotpsend``, ``isotprecv``, ``isotpdump``), on canx's native ISO-TP.

    echo 22 F1 90 | canx isotp send vcan0 -s 7E0 -d 7E8
    canx isotp recv vcan0 -s 7E8 -d 7E0 -l          # prints "22 F1 90"
    canx isotp send vcan0 -s 7E0 -d 7E8 -D 4095     # isotpsend -D: byte i = (i % 0xFF) + 1
    canx isotp dump vcan0 -s 7E0 -d 7E8             # isotpdump: every frame explained
    canx isotp dump vcan0 -s 7E0 -d 7E8 -r          # both directions, reassembled

``dump`` prints what can-utils' ``isotpdump`` prints, line for line (its
options ``-s -d -x -X -c -a -t``; checked against isotpdump 2020.11 in
tests/test_isotp_kernel.py); ``-r`` instead reassembles each direction's
messages with two listen-only channels (like ``isotpsniffer``).

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
import time
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
    p = sub.add_parser("isotp", help="ISO-TP send/recv/dump (like isotpsend, isotprecv, isotpdump)")
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
    d = s2.add_parser("dump", help="explain every ISO-TP frame of an id pair (like isotpdump)")
    d.add_argument("channel", help="vcan0, can0 or virtual:NAME")
    d.add_argument("-s", dest="src", required=True, help="source CAN id (hex; 8 digits: 29-bit)")
    d.add_argument("-d", dest="dst", required=True, help="destination CAN id (hex; 8 digits: 29-bit)")
    d.add_argument("-x", dest="ext", help="extended addressing: the address byte of -s frames (hex), or 'any'")
    d.add_argument("-X", dest="rx_ext", help="extended addressing: the address byte of -d frames (hex), or 'any'")
    d.add_argument("-c", dest="color", action="store_true", help="color mode (-s frames red, -d frames blue)")
    d.add_argument("-a", dest="ascii", action="store_true", help="print the data also as ASCII")
    d.add_argument("-t", dest="ts", choices=list("adzA"),
                   help="timestamps: a absolute, d delta, z since the first frame, A absolute with date")
    d.add_argument("-r", dest="reassemble", action="store_true",
                   help="print reassembled messages of both directions instead (listen-only channels)")
    d.add_argument("-n", dest="count", type=int, help="stop after COUNT frames (or messages with -r)")
    d.add_argument("-L", dest="ll", help="with -r: link layer mtu:tx_dl:tx_flags (72:64:0 for CAN FD)")
    d.add_argument("-p", dest="pad", help=argparse.SUPPRESS)


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
    if not args.reassemble:
        return _isotpdump(args)
    # dump -r: two listen-only channels, one per direction.
    args.timeout = 5.0
    if args.ext and args.ext.lower() != "any":
        args.ext = args.ext + (":" + args.rx_ext if args.rx_ext and args.rx_ext.lower() != "any" else "")
    else:
        args.ext = None
    a1, p1 = _setup(args)
    a2, p2 = _setup(args, swap=True)
    p1.update(listen_mode=True, blocking_send=False)
    p2.update(listen_mode=True, blocking_send=False)
    s1, bus = _stack(args, a1, p1)
    s2: Optional[Any] = None
    n = 0
    try:
        s2 = isotp.CanStack(bus, a2, params=p2)
        while True:
            for who, s in ((args.dst, s1), (args.src, s2)):
                m = s.recv(block=True, timeout=0.05)
                if m is not None:
                    print(f"{who.upper():>8}  [{len(m)}]  {_hex(bytes(m))}", flush=True)
                    n += 1
                    if args.count and n >= args.count:
                        return 0
    finally:
        if s2 is not None:
            s2.stop()
        s1.stop()
        bus.deinit()


# ---------------------------------------------------------------- isotpdump

#: FlowStatus names as isotpdump prints them (ISO 15765-2:2016 §9.6.5.2; 3..F: "reserved").
_FC_INFO = ("CTS", "WT", "OVFLW", "reserved")
_FGRED, _FGBLUE, _ATTRESET = "\33[31m", "\33[34m", "\33[0m"


def _addr_byte(text: Optional[str]) -> Optional[int]:
    """-x/-X: None (any) or the byte."""
    if text is None or text.lower().startswith("any"):
        return None
    return parse_hex(text, "address", 0xFFFFFFFF) & 0xFF


def _stmin_text(v: int) -> str:
    """STmin byte as isotpdump words it (Table 20: ms, 100-900 us, else reserved)."""
    if v < 0x80:
        return f"{v} ms"
    if 0xF0 < v < 0xFA:
        return f"{(v & 0x0F) * 100} us"
    return "reserved"


def explain(can_id: int, extended: bool, fd: bool, data: bytes, channel: str, ext: bool = False,
            ascii_: bool = False) -> str:
    """One frame as isotpdump prints it (without timestamp and color):
    ``" vcan0  7E0  [8]  [FF] ln: 20   data: 01 02 03 04 05 06 "``. ``ext``:
    data byte 0 is an address byte (extended/mixed addressing), shown in
    braces; the N_PCI follows it (§9.6). Bytes a short frame lacks read as 0."""
    d = bytes(data) + bytes(max(0, 8 - len(data)))
    n = len(data)
    e = 1 if ext else 0
    out = f" {channel}  {can_id:8X}" if extended else f" {channel}  {can_id:3X}"
    if ext:
        out += f"{{{d[0]:02X}}}"
    out += f" [{n:02d}]  " if fd else f"  [{n}]  "
    pci = d[e]
    datidx = 0
    kind = pci & 0xF0
    if kind == 0x00:
        if pci & 0x0F:
            out += f"[SF] ln: {pci & 0x0F:<4d} data:"
            datidx = e + 1
        else:
            out += f"[SF] ln: {d[e + 1]:<4d} data:"
            datidx = e + 2
    elif kind == 0x10:
        fflen = ((pci & 0x0F) << 8) + d[e + 1]
        if fflen:
            datidx = e + 2
        else:
            fflen = int.from_bytes(d[e + 2 : e + 6], "big")
            datidx = e + 6
        out += f"[FF] ln: {fflen:<4d} data:"
    elif kind == 0x20:
        out += f"[CF] sn: {pci & 0x0F:X}    data:"
        datidx = e + 1
    elif kind == 0x30:
        fs = pci & 0x0F
        out += f"[FC] FC: {fs} = {_FC_INFO[min(fs, 3)]} # "
        out += f"BS: {d[e + 1]} {'' if d[e + 1] else '= off '}# "
        out += f"STmin: 0x{d[e + 2]:02X} = {_stmin_text(d[e + 2])}"
    else:
        out += "[??]"
    if datidx and n > datidx:
        body = d[datidx:n]
        out += " " + "".join(f"{b:02X} " for b in body)
        if ascii_:
            width = ((7 - e) - len(body)) * 3 + 5
            tag = "-  '"
            out += tag.rjust(width) if width >= 0 else tag.ljust(-width)
            out += "".join(chr(b) if 0x1F < b < 0x7F else "." for b in body) + "'"
    return out


def _isotpdump(args: argparse.Namespace) -> int:
    """isotpdump: every frame of the two ids, explained, until Ctrl-C (or -n)."""
    from ._common import open_bus

    src, src29 = parse_hex(args.src, "CAN id", 0x1FFFFFFF), len(args.src) > 7
    dst, dst29 = parse_hex(args.dst, "CAN id", 0x1FFFFFFF), len(args.dst) > 7
    if args.rx_ext is not None and args.ext is None:
        raise ToolError("-X needs -x (as isotpdump)")
    ext = args.ext is not None
    ext_addr, rx_ext_addr = _addr_byte(args.ext), _addr_byte(args.rx_ext)
    filters = [(src, 0x1FFFFFFF if src29 else 0x7FF, src29), (dst, 0x1FFFFFFF if dst29 else 0x7FF, dst29)]
    bus = open_bus(args.channel, fd=True, filters=filters)
    last: Optional[float] = None
    n = 0
    try:
        while True:
            f = bus.recv(0.5)
            if f is None:
                continue
            can_id, extended, remote, error, fd, data, ts = f[0], f[1], f[2], f[3], f[4], bytes(f[8]), f[9]
            if remote or error:
                continue
            is_src = can_id == src and extended == src29
            is_dst = can_id == dst and extended == dst29
            if is_src and ext and ext_addr is not None and data[:1] != bytes([ext_addr]):
                continue
            if is_dst and args.rx_ext is not None and rx_ext_addr is not None and data[:1] != bytes([rx_ext_addr]):
                continue
            prefix = ""
            if args.color:
                prefix += _FGRED if is_src else _FGBLUE
            if args.ts:
                us = int(round(ts * 1e6))
                if args.ts in "dz":
                    last = us if last is None else last
                    diff = max(0, us - int(last))
                    prefix += f"({diff // 1_000_000}.{diff % 1_000_000:06d}) "
                    if args.ts == "d":
                        last = us
                elif args.ts == "a":
                    prefix += f"({us // 1_000_000}.{us % 1_000_000:06d}) "
                else:
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us // 1_000_000))
                    prefix += f"({stamp}.{us % 1_000_000:06d}) "
            line = prefix + explain(can_id, extended, fd, data, args.channel, ext, args.ascii)
            print(line + (_ATTRESET if args.color else ""), flush=True)
            n += 1
            if args.count and n >= args.count:
                return 0
    finally:
        bus.shutdown()
