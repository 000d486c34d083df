"""Running Python callbacks for native engine events.

Engines run in the bus's native receive thread and put finished events
(a reassembled message, an answered request, a delivery outcome) in a bounded
native queue. A :class:`CallbackPump` thread takes them out, with the GIL
released while it waits, and calls the Python callbacks. A callback that
raises is reported (logger ``canx``, ``callback_errors`` count,
``last_callback_error``) and the pump keeps running: one bad callback never
stops the bus.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

log = logging.getLogger("canx")

#: How long the pump waits for an event before it checks whether to stop (s).
POLL_SLICE = 0.1


class CallbackPump:
    """One thread that moves events from `get` to `dispatch`.

    get(timeout_s) -> event or None: a native method that blocks with the GIL
    released. dispatch(event): calls the callbacks for one event.
    """

    def __init__(self, name: str, get: Callable[[float], Any], dispatch: Callable[[Any], None]) -> None:
        self._get = get
        self._dispatch = dispatch
        self._stop = threading.Event()
        self.callback_errors = 0
        self.last_callback_error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "CallbackPump":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ev = self._get(POLL_SLICE)
            except Exception:  # the engine was closed under us
                return
            if ev is None:
                continue
            try:
                self._dispatch(ev)
            except Exception as e:
                self.callback_errors += 1
                self.last_callback_error = e
                log.error("canx: a callback raised while handling %r; the bus keeps running", ev, exc_info=True)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
