"""``canx run``: run a CircuitPython CAN script on a PC, unchanged."""

from __future__ import annotations

import _thread
import os
import runpy
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, List, Optional

from .circuitpython import board, canio, digitalio

STANDINS = {"canio": canio, "board": board, "digitalio": digitalio}


class _Stop(BaseException):
    """Raised in the script when --duration runs out."""


#: SIGALRM + setitimer (unix): the timer interrupts even a blocking system
#: call at once. Elsewhere (Windows) a timer thread interrupts the main
#: thread as Ctrl-C would (``_thread.interrupt_main``).
_HAVE_SETITIMER = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")


def _arm_stop_timer(duration: float) -> Callable[[], bool]:
    """Makes the main thread stop the script after `duration` seconds.
    Returns ``disarm()``, which cancels the timer and says whether it fired
    (so a KeyboardInterrupt can be told apart from the end of --duration)."""
    if _HAVE_SETITIMER and threading.current_thread() is threading.main_thread():
        def _alarm(signum: int, frame: object) -> None:
            raise _Stop()

        old_handler = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, duration)

        def disarm_alarm() -> bool:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
            return False

        return disarm_alarm

    fired = threading.Event()

    def _expire() -> None:
        fired.set()
        _thread.interrupt_main()  # a KeyboardInterrupt in the main thread

    timer = threading.Timer(duration, _expire)
    timer.daemon = True
    timer.start()

    def disarm_timer() -> bool:
        timer.cancel()
        return fired.is_set()

    return disarm_timer


def run_script(path: str, argv: List[str], channel: Optional[str] = None, duration: Optional[float] = None) -> int:
    """Runs `path` as ``__main__`` with the stand-in modules installed.

    `channel`: where ``canio.CAN(...)`` goes (sets ``CANX_CHANNEL``).
    `duration`: seconds after which the script is stopped (exit status 0).
    Returns the exit status.
    """
    if not os.path.isfile(path):
        print(f"canx run: no such file: {path}", file=sys.stderr)
        return 2
    if channel:
        os.environ["CANX_CHANNEL"] = channel
    saved = {k: sys.modules.get(k) for k in STANDINS}
    sys.modules.update(STANDINS)
    sys.argv = [path, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    disarm = _arm_stop_timer(duration) if duration is not None else None
    try:
        runpy.run_path(path, run_name="__main__")
        return 0
    except _Stop:
        return 0
    except KeyboardInterrupt:
        # The timer thread's interrupt (no SIGALRM) ends --duration: exit 0.
        return 0 if disarm is not None and disarm() else 130
    except SystemExit as e:
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        if disarm is not None:
            disarm()
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _PrefixedStdout:
    """sys.stdout for several scripts at once: each line gets its script's name."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._local = threading.local()
        self._lock = threading.Lock()

    def set_prefix(self, prefix: str) -> None:
        self._local.prefix = prefix
        self._local.buf = ""

    def write(self, s: str) -> int:
        prefix = getattr(self._local, "prefix", "")
        if not prefix:
            return int(self._out.write(s))
        self._local.buf += s
        *lines, self._local.buf = self._local.buf.split("\n")
        with self._lock:
            for line in lines:
                self._out.write(f"{prefix}{line}\n")
            self._out.flush()
        return len(s)

    def flush(self) -> None:
        self._out.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)


def run_scripts(paths: List[str], channel: Optional[str] = None, duration: Optional[float] = None) -> int:
    """Runs several scripts at once, each in its own thread, like several
    boards on one bus (the virtual bus is shared inside this process). Each
    output line is prefixed with its script's name. Stops after `duration`
    seconds, or when every script has ended. Returns 0 unless a script raised.
    """
    for p in paths:
        if not os.path.isfile(p):
            print(f"canx run: no such file: {p}", file=sys.stderr)
            return 2
    if channel:
        os.environ["CANX_CHANNEL"] = channel
    sys.modules.update(STANDINS)
    out = _PrefixedStdout(sys.stdout)
    sys.stdout = out
    failures: List[str] = []

    def body(path: str) -> None:
        out.set_prefix(f"[{os.path.splitext(os.path.basename(path))[0]}] ")
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit:
            pass
        except BaseException:
            failures.append(path)
            traceback.print_exc()

    threads = [threading.Thread(target=body, args=(p,), daemon=True, name=p) for p in paths]
    for t in threads:
        t.start()
    end = None if duration is None else time.monotonic() + duration
    try:
        while any(t.is_alive() for t in threads):
            if end is not None and time.monotonic() >= end:
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout = out._out
    return 1 if failures else 0
