"""``digitalio`` for ``canx run``: pins keep their direction and value and
drive nothing (a transceiver's standby pin or a boost enable has no PC
counterpart)."""

from __future__ import annotations

import enum
from typing import Any, Optional


class Direction(enum.Enum):
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"


class Pull(enum.Enum):
    UP = "UP"
    DOWN = "DOWN"


class DriveMode(enum.Enum):
    PUSH_PULL = "PUSH_PULL"
    OPEN_DRAIN = "OPEN_DRAIN"


class DigitalInOut:
    def __init__(self, pin: Any) -> None:
        self.pin = pin
        self.direction = Direction.INPUT
        self.pull: Optional[Pull] = None
        self.drive_mode = DriveMode.PUSH_PULL
        self._value = False
        self._deinited = False

    def switch_to_output(self, value: bool = False, drive_mode: DriveMode = DriveMode.PUSH_PULL) -> None:
        self._check()
        self.direction = Direction.OUTPUT
        self.drive_mode = drive_mode
        self._value = bool(value)

    def switch_to_input(self, pull: Optional[Pull] = None) -> None:
        self._check()
        self.direction = Direction.INPUT
        self.pull = pull

    @property
    def value(self) -> bool:
        self._check()
        if self.direction is Direction.INPUT:
            return self.pull is Pull.UP
        return self._value

    @value.setter
    def value(self, v: bool) -> None:
        self._check()
        if self.direction is not Direction.OUTPUT:
            raise AttributeError("Cannot set value when direction is input.")
        self._value = bool(v)

    def deinit(self) -> None:
        self._deinited = True

    def _check(self) -> None:
        if self._deinited:
            raise ValueError("Object has been deinitialized and can no longer be used. Create a new object.")

    def __enter__(self) -> "DigitalInOut":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.deinit()
