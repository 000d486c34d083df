"""Frames and option sets for comparing ``canx isotp dump`` with can-utils'
``isotpdump`` (tests/test_isotp.py against a capture of isotpdump 2020.11,
tests/test_isotp_kernel.py live in the VM)."""

from __future__ import annotations

from typing import Dict, List, Tuple

# (CAN id, 29-bit, FD, data)
Frame = Tuple[int, bool, bool, bytes]


def _h(s: str) -> bytes:
    return bytes.fromhex(s)


CLASSIC: List[Frame] = [
    (0x7E0, False, False, _h("0322F190")),  # SF, unpadded
    (0x7E0, False, False, _h("0322F190CCCCCCCC")),  # SF, padded
    (0x7E8, False, False, _h("101462F190414243")),  # FF, 20 bytes
    (0x7E0, False, False, _h("300000")),  # FC CTS, BS off, STmin 0
    (0x7E8, False, False, _h("21444546474849 4A".replace(" ", ""))),  # CF 1
    (0x7E8, False, False, _h("224B4C4D4E4F5051")),  # CF 2
    (0x7E0, False, False, _h("3008F3CCCCCCCCCC")),  # FC CTS, BS 8, 300 us, padded
    (0x7E0, False, False, _h("310000")),  # FC WT
    (0x7E0, False, False, _h("320000")),  # FC OVFLW
    (0x7E0, False, False, _h("350280")),  # reserved FS, reserved STmin
    (0x7E0, False, False, _h("30027F")),  # 127 ms
    (0x7E0, False, False, _h("3000FA")),  # reserved STmin
    (0x7E8, False, False, _h("1000000100000102")),  # FF, 32-bit FF_DL 65536
    (0x7E8, False, False, _h("450102")),  # reserved N_PCI type
    (0x7E8, False, False, _h("2F01")),  # CF SN F, one byte
    (0x123, False, False, _h("0322F190")),  # another id: not shown
    (0x7E0, False, False, _h("0005010203040506")),  # SF_DL 0 in a classic frame
    (0x7E8, False, False, _h("23")),  # CF without data
]

FD: List[Frame] = [
    (0x7E0, False, True, _h("003C") + bytes(range(60)) + _h("CC CC".replace(" ", ""))),  # SF escape, 64 B frame
    (0x7E8, False, True, _h("10C8") + bytes(range(62))),  # FF 200, 64 B
    (0x7E0, False, False, _h("300000")),
    (0x7E8, False, True, _h("21") + bytes(range(63))),  # CF 64 B
    (0x7E0, False, True, _h("000A") + bytes(range(10))),  # SF escape, 12 B frame
]

EXTENDED: List[Frame] = [
    (0x6F1, False, False, _h("100322F190")),  # N_TA 0x10, SF
    (0x610, False, False, _h("F1056262F19041")),  # N_TA 0xF1, SF
    (0x6F1, False, False, _h("2003")),  # another N_TA: hidden with -x 10
    (0x610, False, False, _h("F1101462F19041")),  # FF
    (0x6F1, False, False, _h("10300000")),  # FC
    (0x610, False, False, _h("F1214243444546")),  # CF
]

EXTENDED_29: List[Frame] = [
    (0x18DA10F1, True, False, _h("0322F190")),
    (0x18DAF110, True, False, _h("101462F190414243")),
    (0x18DA10F1, True, False, _h("300000")),
    (0x18DAF110, True, False, _h("21444546474849")),
]

# name: (isotpdump options, frames)
CASES: Dict[str, Tuple[List[str], List[Frame]]] = {
    "classic": (["-s", "7E0", "-d", "7E8"], CLASSIC),
    "classic-ascii": (["-s", "7E0", "-d", "7E8", "-a"], CLASSIC),
    "fd-ascii": (["-s", "7E0", "-d", "7E8", "-a"], FD),
    "extended": (["-s", "6F1", "-d", "610", "-x", "10", "-a"], EXTENDED),
    "extended-any": (["-s", "6F1", "-d", "610", "-x", "any"], EXTENDED),
    "29bit": (["-s", "18DA10F1", "-d", "18DAF110", "-a"], EXTENDED_29),
}


def shown(opts: List[str], frames: List[Frame]) -> List[Frame]:
    """The frames isotpdump shows for `opts` (ids -s/-d; -x selects the -s frames' address byte)."""
    src = opts[opts.index("-s") + 1]
    dst = opts[opts.index("-d") + 1]
    ids = {(int(src, 16), len(src) > 7), (int(dst, 16), len(dst) > 7)}
    x = opts[opts.index("-x") + 1] if "-x" in opts else None
    out = []
    for f in frames:
        if (f[0], f[1]) not in ids:
            continue
        if x is not None and x != "any" and f[0] == int(src, 16) and f[3][:1] != bytes([int(x, 16)]):
            continue
        out.append(f)
    return out
