"""``board`` for ``canx run``: the pin names of CAN-capable CircuitPython
boards (Feather M4 CAN, Feather STM32F405, RP2040 CAN Feather). On a PC a pin
is only a name; ``canio.CAN(tx=board.CAN_TX, rx=board.CAN_RX)`` opens the
channel given to ``canx run --channel`` (default: the virtual bus)."""

from __future__ import annotations


class Pin:
    """A board pin: a name and nothing else on a PC."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"board.{self._name}"


board_id = "canx_pc"

_NAMES = (
    ["CAN_RX", "CAN_TX", "CAN_STANDBY", "BOOST_ENABLE", "LED", "NEOPIXEL", "NEOPIXEL_POWER", "BUTTON"]
    + ["SCL", "SDA", "SCK", "MOSI", "MISO", "TX", "RX", "CAN_INTERRUPT", "CAN_CS", "CAN_RESET"]
    + [f"D{i}" for i in range(26)]
    + [f"A{i}" for i in range(6)]
)
for _n in _NAMES:
    globals()[_n] = Pin(_n)
del _n


def __getattr__(name: str) -> Pin:
    # Scripts probe optional pins with hasattr(board, "X"): unknown names stay absent.
    raise AttributeError(f"board has no pin {name!r} (canx stand-in; known: {', '.join(_NAMES)})")
