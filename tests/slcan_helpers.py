"""A fake slcan adapter for tests: the adapter's end of a pty pair, written
in Python. canx opens the other end (``path``) as its serial port."""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Callable, Optional


class FakeAdapter:
    """Records every byte canx writes (``received``) and writes lines back
    (``write``). Answers nothing by itself (the CANable and Linux dialects)
    unless ``answer`` is given: called with every line canx writes (without
    its ``\r``), its result is written back (a Lawicel/USBtin device)."""

    def __init__(self, scale: float = 1.0, answer: Optional[Callable[[bytes], bytes]] = None) -> None:
        self.scale = scale
        self.answer = answer
        self._line = bytearray()
        self.master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        self.received = bytearray()
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self._cond:
                self.received += data
                self._cond.notify_all()
            if self.answer is not None:
                for b in data:
                    if b == 0x0D:
                        reply = self.answer(bytes(self._line))
                        self._line.clear()
                        if reply:
                            os.write(self.master, reply)
                    else:
                        self._line.append(b)

    def wait_for(self, needle: bytes, timeout: float = 5.0, start: int = 0) -> bytes:
        """Waits until ``needle`` was received (after offset ``start``);
        returns everything received so far. AssertionError on timeout."""
        deadline = time.monotonic() + timeout * self.scale
        with self._cond:
            while needle not in self.received[start:]:
                left = deadline - time.monotonic()
                assert left > 0, f"adapter never got {needle!r}; got {bytes(self.received)!r}"
                self._cond.wait(min(left, 0.1))
            return bytes(self.received)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def hang_up(self) -> None:
        """The adapter disappears (unplugged): the pty's master side closes."""
        self._stop = True
        self._thread.join(timeout=2)
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        if self.master >= 0:
            self.hang_up()
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1


def wait_until(cond: Callable[[], object], timeout: float, what: str, scale: float = 1.0) -> None:
    deadline = time.monotonic() + timeout * scale
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def lines(data: bytes) -> list[bytes]:
    """``C\\rS6\\rO\\r`` -> [b"C", b"S6", b"O"]."""
    return [ln for ln in data.split(b"\r") if ln]

