#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets that have captures or test
vectors to start from (fuzz/target/seeds/<target>/); `scripts/fuzz --seed`
merges them into fuzz/corpus/<target> (minimized). Sources: the candump
captures in tests/data/*.log (log lines, the same frames as slcan lines and
gs_usb host frames), the slcan test vectors of canx-core's unit tests, and
the hand-written inputs of the engines' fuzzing entry points."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "target" / "seeds"
LINE = re.compile(r"^\((\d+\.\d+)\)\s+(\S+)\s+([0-9A-Fa-f]+)#(#?)([0-9A-Fa-f]?)([0-9A-Fa-f]*|R\d?)")
FD_DLC = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8, 12: 9, 16: 10, 20: 11, 24: 12, 32: 13, 48: 14, 64: 15}


def put(target: str, data: bytes) -> None:
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def frames():
    """(id, extended, remote, fd, flags, data) of every parseable capture line."""
    for p in sorted((ROOT / "tests" / "data").glob("*.log")):
        for line in p.read_text().splitlines():
            put("log_line", line.encode())
            m = LINE.match(line)
            if not m:
                continue
            _, _, ident, fd, flags, rest = m.groups()
            ext = len(ident) == 8
            raw = int(ident, 16)
            if rest.startswith("R"):
                yield raw, ext, True, False, 0, b""
            elif fd:
                yield raw, ext, False, True, int(flags or "0", 16), bytes.fromhex(rest)
            else:
                data = bytes.fromhex(flags + rest) if len(flags + rest) % 2 == 0 else b""
                yield raw, ext, False, False, 0, data


def slcan(raw: int, ext: bool, remote: bool, fd: bool, flags: int, data: bytes) -> bytes:
    ident = f"{raw:08X}" if ext else f"{raw & 0x7FF:03X}"
    if fd:
        kind = ("B" if flags & 1 else "D") if ext else ("b" if flags & 1 else "d")
        n = min(FD_DLC, key=lambda k: (k < len(data), k))
        body = data.ljust(n, bytes(1)).hex().upper()
        return f"{kind}{ident}{FD_DLC[n]:X}{body}\r".encode()
    kind = ("R" if ext else "r") if remote else ("T" if ext else "t")
    return f"{kind}{ident}{len(data)}{data.hex().upper()}\r".encode()


def gs_usb(raw: int, ext: bool, remote: bool, fd: bool, data: bytes, ts: bool) -> bytes:
    can_id = raw | (0x8000_0000 if ext else 0) | (0x4000_0000 if remote else 0)
    n = len(data)
    dlc = FD_DLC.get(n, 8) if fd else n
    body = data.ljust(64 if fd else 8, b"\0")
    out = struct.pack("<IIBBBB", 0xFFFF_FFFF, can_id, dlc, 0, 0x02 if fd else 0, 0) + body
    return out + (struct.pack("<I", 123456) if ts else b"")


def main() -> None:
    all_slcan = b""
    for f in frames():
        raw, ext, remote, fd, flags, data = f
        line = slcan(*f)
        put("slcan_line", line)
        all_slcan += line
        for ts in (False, True):
            put("gs_usb_host_frame", gs_usb(raw, ext, remote, fd, data, ts))
    put("slcan_line", all_slcan)
    # canx-core's slcan unit-test vectors (crates/canx-core/src/slcan.rs).
    for v in [b"t1230\rt4563112233\rT12ABCDEF2AA55\rr1230\r", b"t1231AAEA5F\r", b"r12380001\r",
              b"\r\x07z\rZ\rV1013\rN4242\rF00\rC\rS6\rO\rL\rF\r", b"t1230\r\nt1231AA\x07\0t12320102\n\r"]:
        put("slcan_line", v)
    # Hand-written inputs of the entry points' unit tests.
    put("isotp_channel", bytes([0x00, 0, 0, 3, 0x02, 0x3E, 0x00, 8, 0x10, 10, 1, 2, 3, 4, 5, 6, 5, 0x21, 7, 8, 9, 10]))
    put("j1939_transport", bytes([3, 255, 3, 255, 0x83, 255, 0x83, 255]))
    # candump filter lists of the CLI docs and tests.
    for v in ["123:7FF,#FFFFFFFF", "12345678:DFFFFFFF", "123~7FF,j", "0:0,#4"]:
        put("frame_filter", v.encode() + b"\0" * 8)
    print(f"seeds in {OUT}: " + ", ".join(f"{d.name} {len(list(d.iterdir()))}" for d in sorted(OUT.iterdir())))


if __name__ == "__main__":
    main()
