"""``canx plot``: signals of a log over time, decoded by a DBC, and bus load.

    canx plot run.log --dbc engine.dbc --signal EngineSpeed --signal EngineCoolantTemperature -o run.png
    canx plot run.asc --dbc engine.dbc --signal EEC1.EngineSpeed          # interactive window
    canx plot run.log --bus-load --bitrate 250000 -o load.png             # no DBC needed

Logs: candump ``.log`` (read by canx's own codec); other suffixes (``.asc``,
``.blf``, ``.csv``, ``.trc``, ...) through python-can's ``can.LogReader``.
``--signal`` takes a signal name or ``MESSAGE.SIGNAL``; a name several
messages use is plotted for each of them. Signals with the same unit share a
subplot; a J1939 signal heard from several source addresses gets one line
per SA. Value-table signals are plotted as their numbers; J1939 values in
the "not available" / "error" ranges (``Decoded.status``) are left out.
Frames too short for their DBC message contribute the signals they hold.
Time is seconds from the first frame of the log.

``--bus-load`` adds a subplot of bus load % per ``--interval`` s at
``--bitrate`` (and ``--data-bitrate`` for CAN FD with BRS), from each
frame's bits on the wire (:mod:`canx.busload`: ISO 11898-1 frame format,
intermission included; ``--stuffing worst`` (default: the true worst case),
``exact`` or ``none``). Error frames are not counted.

matplotlib is an optional dependency (``pip install canx[plot]``); with
``-o FILE`` it renders without a display (Agg), size ``--size WxH`` pixels.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from ..busload import LoadBins
from ._common import Fields, ToolError, load_dbc

if TYPE_CHECKING:
    from ..dbc import Database

#: One line of the plot: label -> (times s, values); grouped by unit.
Series = Dict[Tuple[str, str, Optional[int]], Tuple[List[float], List[float]]]


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("plot", help="plot DBC signals and bus load of a log file (matplotlib)",
                       description="Plot signals of a candump .log (or python-can log) over time, decoded by a "
                                   "DBC, and the bus load: as a PNG (-o) or in a window.")
    p.add_argument("file", metavar="LOG", help="candump .log (other suffixes through python-can's LogReader)")
    p.add_argument("--signal", "-s", action="append", default=[], metavar="NAME",
                   help="signal to plot: NAME or MESSAGE.NAME (repeatable); needs --dbc")
    p.add_argument("--dbc", metavar="FILE", help="DBC file that decodes the frames (pip install canx[dbc])")
    p.add_argument("-o", "--output", metavar="FILE", help="write an image (PNG, or .svg/.pdf) instead of a window")
    p.add_argument("--bus-load", action="store_true", help="add a plot of the bus load %% over time")
    p.add_argument("--bitrate", type=int, default=500_000, help="nominal bitrate for --bus-load (default 500000)")
    p.add_argument("--data-bitrate", type=int, help="CAN FD data phase bitrate for --bus-load (default: --bitrate)")
    p.add_argument("--interval", type=float, default=0.1, help="bus load interval in s (default 0.1)")
    p.add_argument("--stuffing", choices=["worst", "exact", "none"], default="worst",
                   help="stuff bits in --bus-load: worst case (default), exact, none")
    p.add_argument("--size", default="1200x800", metavar="WxH", help="image size in pixels (default 1200x800)")
    p.add_argument("--dpi", type=int, default=100, help="dots per inch of the image (default 100)")
    p.add_argument("--title", help="figure title (default: the log file name)")


def read_frames(path: Path) -> Iterator[Fields]:
    """The frames of a log file as field tuples (``Fields``), in file order.
    ToolError for an unreadable file or line."""
    from .replay import _read_log, _read_other

    if not path.exists():
        raise ToolError(f"cannot read {str(path)!r}: no such file")
    reader = _read_log if path.suffix.lower() == ".log" else _read_other
    for _ts, _channel, f in reader(path):
        yield f


def resolve_signals(db: "Database", names: Iterable[str]) -> Dict[str, Set[str]]:
    """``--signal`` names -> {message name: {signal names}}. ToolError naming
    an unknown signal, with close matches."""
    wanted: Dict[str, Set[str]] = {}
    every = {(m.name, s.name) for m in db.cantools.messages for s in m.signals}
    for name in names:
        msg, dot, sig = name.rpartition(".")
        hits = [(m, s) for m, s in every if s == sig and (not dot or m == msg)]
        if not hits:
            pool = sorted({s for _, s in every} | {f"{m}.{s}" for m, s in every})
            close = difflib.get_close_matches(name, pool, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ToolError(f"no signal {name!r} in {db.path}{hint}")
        for m, s in hits:
            wanted.setdefault(m, set()).add(s)
    return wanted


def collect(frames: Iterable[Fields], db: Optional["Database"], wanted: Dict[str, Set[str]],
            load: Optional[LoadBins] = None) -> Tuple[Series, Dict[str, str], Optional[float]]:
    """Decodes ``frames``: (series keyed (message, signal, SA or None) ->
    (times, values), signal unit per "message.signal", time of the first
    frame). Adds each non-error frame to ``load`` when given. Times are the
    frames' timestamps (s)."""
    from ..dbc import DecodeError

    series: Series = OrderedDict()
    units: Dict[str, str] = {}
    t0: Optional[float] = None
    for f in frames:
        can_id, ext, rtr, err, fd, brs, _esi, dlc, data, ts = f[:10]
        if err:
            continue
        if t0 is None:
            t0 = ts
        if load is not None:
            load.add(ts, can_id, ext, rtr, fd, brs, dlc, data)
        if db is None or rtr:
            continue
        m = db.message_for(can_id, ext)
        if m is None or m.name not in wanted:
            continue
        try:
            d = db.decode(can_id, data, ext, allow_truncated=True, decode_choices=False)
        except DecodeError:
            continue
        if d is None:
            continue
        for sig in wanted[m.name]:
            v = d.signals.get(sig)
            if isinstance(v, (int, float)) and sig not in d.status:
                key = (m.name, sig, d.source_address)
                xs, ys = series.setdefault(key, ([], []))
                xs.append(ts)
                ys.append(float(v))
                units[f"{m.name}.{sig}"] = d.units.get(sig, "")
    return series, units, t0


def _labels(series: Series) -> Dict[Tuple[str, str, Optional[int]], str]:
    """Short labels: the signal name, plus the message when two messages
    share it, plus the SA when one signal comes from several SAs."""
    by_sig: Dict[str, Set[str]] = {}
    by_msg_sig: Dict[Tuple[str, str], int] = {}
    for m, s, _sa in series:
        by_sig.setdefault(s, set()).add(m)
        by_msg_sig[(m, s)] = by_msg_sig.get((m, s), 0) + 1
    out = {}
    for m, s, sa in series:
        label = f"{m}.{s}" if len(by_sig[s]) > 1 else s
        if sa is not None and by_msg_sig[(m, s)] > 1:
            label += f" SA 0x{sa:02X}"
        out[(m, s, sa)] = label
    return out


def _size(text: str) -> Tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    try:
        width, height = int(w), int(h)
    except ValueError:
        raise ToolError(f"bad --size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1200x800") from None
    if not (sep and 100 <= width <= 20000 and 100 <= height <= 20000):
        raise ToolError(f"bad --size {text!r}: width and height must be 100..20000 pixels")
    return width, height


def draw(fig: Any, series: Series, units: Dict[str, str], t0: float, load: Optional[List[Tuple[float, float]]],
         title: str, bitrate: int, stuffing: str, interval: float = 0.1) -> None:
    """Fills a matplotlib Figure: one subplot per unit, then bus load."""
    labels = _labels(series)
    groups: Dict[str, List[Tuple[str, str, Optional[int]]]] = OrderedDict()
    for key in series:
        groups.setdefault(units.get(f"{key[0]}.{key[1]}", ""), []).append(key)
    rows = len(groups) + (1 if load is not None else 0)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax, (unit, keys) in zip(axes, groups.items()):
        for key in keys:
            xs, ys = series[key]
            ax.plot([x - t0 for x in xs], ys, label=labels[key], linewidth=1.2)
        ax.set_ylabel(unit or "value")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    if load:
        ax = axes[-1]
        # one step per interval, the last one drawn to its end
        xs = [t - t0 for t, _ in load] + [load[-1][0] - t0 + interval]
        ys = [v for _, v in load] + [load[-1][1]]
        ax.step(xs, ys, where="post", color="tab:red", linewidth=1.2,
                label=f"bus load at {bitrate} bit/s ({stuffing}-case stuffing)" if stuffing != "exact"
                else f"bus load at {bitrate} bit/s (exact stuffing)")
        ax.set_ylabel("bus load %")
        ax.set_ylim(0, max(100.0, max((v for _, v in load), default=0.0) * 1.05))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title)


def run(args: argparse.Namespace) -> int:
    if args.signal and not args.dbc:
        raise ToolError("--signal needs --dbc FILE (the DBC that decodes the frames)")
    if not args.signal and not args.bus_load:
        raise ToolError("nothing to plot: give --signal NAME (with --dbc) and/or --bus-load")
    if args.bitrate <= 0 or (args.data_bitrate is not None and args.data_bitrate <= 0):
        raise ToolError("--bitrate and --data-bitrate must be positive")
    if not (args.interval > 0 and math.isfinite(args.interval)):
        raise ToolError(f"--interval must be a positive number of seconds, not {args.interval}")
    width, height = _size(args.size)
    if not 10 <= args.dpi <= 1000:
        raise ToolError(f"--dpi must be 10..1000, not {args.dpi}")
    db = load_dbc(args.dbc) if args.dbc else None
    wanted = resolve_signals(db, args.signal) if db is not None else {}

    try:
        import matplotlib
    except ImportError:
        raise ToolError("canx plot needs matplotlib: pip install canx[plot]") from None

    path = Path(args.file)
    bins = LoadBins(bitrate=args.bitrate, data_bitrate=args.data_bitrate, interval=args.interval,
                    stuffing=args.stuffing) if args.bus_load else None
    series, units, t0 = collect(read_frames(path), db, wanted, bins)
    if t0 is None:
        raise ToolError(f"no frames in {str(path)!r}")
    if args.signal and not series:
        raise ToolError(f"none of the signals {', '.join(args.signal)} occur in {str(path)!r}")
    load = bins.result() if bins is not None else None
    title = args.title if args.title is not None else path.name
    size = (width / args.dpi, height / args.dpi)
    if args.output:
        from matplotlib.figure import Figure

        fig = Figure(figsize=size, dpi=args.dpi, layout="constrained")
        draw(fig, series, units, t0, load, title, args.bitrate, args.stuffing, args.interval)
        out = os.fspath(args.output)
        try:
            fig.savefig(out, dpi=args.dpi)
        except (OSError, ValueError) as e:
            raise ToolError(f"cannot write {out!r}: {e}") from None
        return 0
    import matplotlib.pyplot as plt

    if matplotlib.get_backend().lower() in ("agg", "pdf", "svg", "ps", "cairo", "template"):
        raise ToolError("no interactive display for matplotlib here: write an image with -o FILE.png")
    fig = plt.figure(figsize=size, dpi=args.dpi, layout="constrained")
    draw(fig, series, units, t0, load, title, args.bitrate, args.stuffing, args.interval)
    plt.show()
    return 0
