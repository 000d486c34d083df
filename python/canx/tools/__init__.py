"""can-utils-style tools, run as subcommands of the ``canx`` command.

- ``canx dump CHANNEL[,FILTERS]...``  like candump (``-L`` log lines, ``-t a|A|d|z`` timestamps)
- ``canx send CHANNEL FRAME``         like cansend (``123#DEADBEEF``, ``123##1AABB`` FD, ``123#R`` remote)
- ``canx gen CHANNEL``                like cangen (gap, ids, lengths, data, count)
- ``canx log CHANNEL[,FILTERS]``      record to a candump ``.log`` (other formats through python-can)
- ``canx replay FILE``                replay a log with its original timing (or faster)
- ``canx isotp send|recv|dump``        like isotpsend, isotprecv, isotpsniffer (ISO-TP)
- ``canx list [--json]``              the channels that can be opened now, with a description
- ``canx plot LOG --signal NAME --dbc FILE [-o out.png] [--bus-load]``  signals and bus load over time
- ``canx monitor CHANNEL``            live full-screen view, one row per id (like cansniffer)
- ``canx bridge mqtt CHANNEL --broker HOST``  CAN <-> MQTT gateway (docs/mqtt.md)

Channels: ``vcan0``, ``can0`` (SocketCAN) or ``virtual:NAME``. Frames and
filters use can-utils syntax, parsed by canx's Rust core. Each tool module
has ``add_parser(subparsers)`` and ``run(args) -> exit status``; bad input
raises :class:`ToolError` (a one-line message; the CLI exits with status 2).
"""

from __future__ import annotations

from ._common import ToolError

__all__ = ["ToolError", "TOOLS"]

#: Subcommand name -> module name in this package.
TOOLS = {"dump": "dump", "send": "send", "gen": "gen", "log": "log", "replay": "replay", "isotp": "isotp",
         "list": "list_channels", "plot": "plot", "monitor": "monitor", "bridge": "bridge"}
