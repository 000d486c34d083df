"""The ``canx`` command.

Subcommands:
  canx demo [--channel CH] [--count N]      a sender and a listener exchanging ACKed messages
  canx run SCRIPT... [--channel CH] [--duration S]
                                            run CircuitPython CAN scripts on this PC
  canx dump CHANNEL[,FILTERS]... [-L] [-t a|A|d|z]   print frames (candump)
  canx send CHANNEL FRAME...                send frames in cansend syntax (123#DEADBEEF)
  canx gen CHANNEL [-g MS] [-n N] [-I ID] [-L LEN] [-D DATA]   generate frames (cangen)
  canx log CHANNEL[,FILTERS]... [-f FILE]   record to a candump .log (python-can formats too)
  canx replay FILE [--channel CH] [--speed X]   replay a log with its timing
  canx isotp send|recv|dump CHANNEL -s ID -d ID   ISO-TP like isotpsend/isotprecv/isotpdump
  canx plot LOG --signal NAME --dbc FILE [-o out.png] [--bus-load]   signals and bus load over time

Bad input gives a one-line error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional


#: What a channel argument may be: the schemes of the native backend registry
#: (runtime::backend::SCHEMES); SocketCAN interfaces exist on Linux only.
CHANNEL_HELP = ("vcan0, can0 (SocketCAN, Linux), virtual:NAME, udp_multicast:[GROUP] (shared between processes), "
                "slcan:PORT (serial adapter) or gs_usb:INDEX|SERIAL (USB adapter)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="canx", description="CAN bus toolkit (canx)")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="run a sender and a listener that exchange ACKed messages")
    d.add_argument("--channel", default="virtual:demo", help=f"{CHANNEL_HELP} (default: virtual:demo)")
    d.add_argument("--count", type=int, default=10, help="messages to send (default 10)")

    r = sub.add_parser("run", help="run a CircuitPython CAN script (canio, board, digitalio stand-ins)")
    r.add_argument("scripts", nargs="+", metavar="SCRIPT",
                   help="the script (code.py); several scripts run at once as boards on one bus")
    r.add_argument("--channel", help=f"where canio.CAN goes: {CHANNEL_HELP} (default: virtual:default)")
    r.add_argument("--duration", type=float, help="stop the script after this many seconds (exit 0)")

    import importlib

    from .tools import TOOLS

    for name in TOOLS.values():
        importlib.import_module(f".tools.{name}", __package__).add_parser(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    import canx

    from .tools import TOOLS, ToolError

    if args.version:
        print(f"canx {canx.__version__}")
        return 0
    try:
        if args.command == "demo":
            from .demo import run_demo

            if args.count < 1:
                print("canx demo: --count must be at least 1", file=sys.stderr)
                return 2
            return run_demo(args.channel, args.count)
        if args.command == "run":
            from .run import run_script, run_scripts

            if len(args.scripts) == 1:
                rc = run_script(args.scripts[0], [], channel=args.channel, duration=args.duration)
            else:
                rc = run_scripts(args.scripts, channel=args.channel, duration=args.duration)
            # Scripts may leave threads blocked in native receives (the multi-script
            # runner always does); interpreter finalization would kill them inside
            # native code. The scripts are done: flush and leave without finalizing.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
        if args.command in TOOLS:
            import importlib

            return int(importlib.import_module(f".tools.{TOOLS[args.command]}", __package__).run(args))
    except (canx.CanxError, ToolError) as e:
        print(f"canx {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    _parser().print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
