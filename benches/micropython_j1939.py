"""canx's J1939 ECU on MicroPython vs a pure-MicroPython J1939 transport
(issue #15's benchmark; docs/benchmarks.md, docs/micropython.md):

    python3 benches/micropython_j1939.py                     # builds the unix port
    python3 benches/micropython_j1939.py --micropython BIN   # a built unix binary
    python3 benches/micropython_j1939.py --qemu mps2-an385 FIRMWARE.elf
    python3 benches/micropython_j1939.py --qemu microbit FIRMWARE.elf   # Cortex-M0

Sends benches/micropython/pure_j1939.py (the comparison, written for this
bench, not shipped) followed by benches/micropython/bench_j1939.py to the
interpreter: a file run by the unix binary, or the raw REPL of a qemu board
(``qemu-system-arm -machine M -nographic -monitor null -semihosting -serial
pty -kernel FIRMWARE``, through MicroPython's tools/pyboard.py ``execpty:``
as ports/qemu's ``make test`` does). It measures, in one run, interleaved,
medians of ``--reps`` repetitions by ``time.ticks_us``:

- frames/s one node handles: EEC1 single frames with an ``on_pgn``
  callback, and 1785-byte BAMs (TP.CM + 255 TP.DT) reassembled;
- wall time of one 1785-byte RTS/CTS transfer and one 1785-byte BAM between
  two nodes on an in-memory bus (bus timers on a simulated clock that jumps
  to the next deadline, so the time is processing, not waiting);

for canx's ``j1939.ECU`` (variants "full" and "small") and the pure one, and
prints the ratios pure/canx (above 1: canx is faster). Not a test: nothing
is asserted about speed. On a board firmware without canx only the pure
transport runs (its numbers are then the board's relative speed).
``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benches" / "micropython"


def script(reps: int, frames: int, bams: int) -> str:
    body = (HERE / "bench_j1939.py").read_text()
    return f"REPS = {reps}\nN_FRAMES = {frames}\nN_BAMS = {bams}\n" + (HERE / "pure_j1939.py").read_text() + body


def build_unix() -> str:
    out = subprocess.run([str(ROOT / "scripts" / "build-micropython"), "unix"], check=True, stdout=subprocess.PIPE, text=True)
    return out.stdout.strip().splitlines()[-1]


def run_unix(binary: str, src: str, timeout: float) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(src)
        path = f.name
    try:
        r = subprocess.run([binary, path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        raise SystemExit(f"micropython failed ({r.returncode}):\n{r.stdout}")
    return r.stdout


def pyboard_dir(explicit: str | None) -> Path:
    """tools/ of a MicroPython tree: --mpy-src, $CANX_MPY_SRC, or the tree
    scripts/build-micropython extracts into target/micropython/."""
    for cand in (explicit, os.environ.get("CANX_MPY_SRC")):
        if cand:
            return Path(cand) / "tools"
    found = sorted((ROOT / "target" / "micropython").glob("micropython-*/tools/pyboard.py"))
    if not found:
        raise SystemExit("no MicroPython tree with tools/pyboard.py: run scripts/build-micropython unix or pass --mpy-src")
    return found[-1].parent


def qemu_command(machine: str, firmware: str) -> str:
    # MICROBIT needs qemu's nRF51 flash and SRAM raised, as ports/qemu's
    # board file (and scripts/test-micropython) run it.
    extra = " -global nrf51-soc.flash-size=1048576 -global nrf51-soc.sram-size=262144" if machine == "microbit" else ""
    return (f"qemu-system-arm -machine {machine}{extra} -nographic -monitor null -semihosting -serial pty"
            f" -kernel {firmware}")


def run_qemu(machine: str, firmware: str, src: str, timeout: float, mpy_src: str | None) -> str:
    if not Path(firmware).is_file():
        raise SystemExit(f"no firmware at {firmware}")
    sys.path.insert(0, str(pyboard_dir(mpy_src)))
    import pyboard  # type: ignore[import-not-found]  # noqa: PLC0415 - MicroPython tools/pyboard.py, found at run time

    try:
        pyb = pyboard.Pyboard("execpty:" + qemu_command(machine, firmware))
    except ModuleNotFoundError as ex:
        raise SystemExit(f"--qemu needs pyserial (the bench extra: pip install pyserial): {ex}") from ex
    try:
        pyb.enter_raw_repl()
        out = pyb.exec_(src, timeout=timeout)
        pyb.exit_raw_repl()
    finally:
        pyb.close()
    return out.decode() if isinstance(out, bytes) else str(out)


Results = dict[tuple[str, str], tuple[int, int, int]]


def parse(out: str) -> tuple[Results, dict[tuple[str, str], int]]:
    res: Results = {}
    sim: dict[tuple[str, str], int] = {}
    for line in out.splitlines():
        p = line.split()
        if p[:1] == ["RESULT"]:
            res[(p[1], p[2])] = (int(p[3]), int(p[4]), int(p[5]))
        elif p[:1] == ["SIMTIME"]:
            sim[(p[1], p[2])] = int(p[3])
    if "DONE" not in out:
        raise SystemExit("bench did not finish:\n" + out)
    return res, sim


def report(res: Results, sim: dict[tuple[str, str], int], where: str) -> None:
    impls = sorted({k[1] for k in res}, key=lambda i: (i == "pure", i))
    tests = ["eec1_stream", "bam_stream", "rts_cts_1785", "bam_1785"]
    others = [i for i in impls if i != "pure"]
    print(f"J1939 on MicroPython ({where})")
    print("medians of ticks_us (ratios pure/canx: above 1, canx is faster; in brackets the ratio of minimums)")
    print(f"{'test':<14}" + "".join(f"{i:>20}" for i in impls) + "".join(f"{'pure/' + i:>24}" for i in others))
    for t in tests:
        cells = []
        for i in impls:
            if (t, i) in res:
                us, n, _ = res[(t, i)]
                cells.append(f"{n * 1e6 / us:,.0f} frames/s" if t.endswith("stream") else f"{us / 1000:.2f} ms")
        if not cells:
            continue
        ratios = []
        if (t, "pure") in res:
            p = res[(t, "pure")]
            for i in others:
                if (t, i) in res:
                    r = res[(t, i)]
                    ratios.append(f"{p[0] / r[0]:.2f} [{p[2] / max(r[2], 1):.2f}]")
        print(f"{t:<14}" + "".join(f"{c:>20}" for c in cells) + "".join(f"{r:>24}" for r in ratios))
    for (t, i), v in sorted(sim.items()):
        print(f"  simulated bus time {t} {i}: {v / 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--micropython", help="unix-port binary (default: scripts/build-micropython unix)")
    ap.add_argument("--qemu", nargs=2, metavar=("MACHINE", "FIRMWARE"), help="run on a qemu-system-arm board")
    ap.add_argument("--mpy-src", help="MicroPython tree for tools/pyboard.py (--qemu)")
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--frames", type=int, default=2000, help="EEC1 frames per stream run")
    ap.add_argument("--bams", type=int, default=8, help="1785-byte BAMs per stream run")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", help="also write the numbers to this file")
    a = ap.parse_args()
    src = script(a.reps, a.frames, a.bams)
    if a.qemu:
        where = f"qemu {a.qemu[0]} {a.qemu[1]}"
        out = run_qemu(a.qemu[0], a.qemu[1], src, a.timeout, a.mpy_src)
    else:
        binary = a.micropython or build_unix()
        where = f"unix port {binary}"
        out = run_unix(binary, src, a.timeout)
    res, sim = parse(out)
    report(res, sim, where)
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "where": where,
                    "median_us": {f"{t}/{i}": v[0] for (t, i), v in res.items()},
                    "min_us": {f"{t}/{i}": v[2] for (t, i), v in res.items()},
                    "units": {f"{t}/{i}": v[1] for (t, i), v in res.items()},
                    "simulated_us": {f"{t}/{i}": v for (t, i), v in sim.items()},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
