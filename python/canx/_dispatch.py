"""Running Python callbacks for native engine events.

Engines run in the bus's native receive thread and put finished events
(a reassembled message, an answered request, a delivery outcome) in a bounded
native queue. A :class:`CallbackPump` thread takes them out, with the GIL
released while it waits, and calls the Python callbacks. A callback that
raises is reported (logger ``canx``, ``callback_errors`` count,
``last_callback_error``) and the pump keeps running: one bad callback never
stops the bus.

The pump ends only when asked to (:meth:`CallbackPump.stop`) or when its
engine is closed: ``get`` raising canio's "deinitialized" ValueError, or the
``closed()`` predicate given to the pump returning True. Any other error
from ``get`` (a bug in event conversion, say) is logged on ``canx``, counted
in ``pump_errors`` (``last_pump_error``) and the pump carries on after a
short pause (:data:`POLL_SLICE`), so it never stops silently.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

from .errors import ClosedError

log = logging.getLogger("canx")

#: How long the pump waits for an event before it checks whether to stop (s);
#: also its pause after ``get`` raised an unexpected error.
POLL_SLICE = 0.1

#: canio's message for any use of a deinitialized object (src/py/errors.rs DEINIT_MSG).
DEINIT_MSG = "Object has been deinitialized and can no longer be used. Create a new object."


def is_closed_error(e: BaseException) -> bool:
    """True for the error a native object raises once it (or its bus) is
    closed: ``canx.errors.ClosedError`` (a ValueError with canio's message)."""
    return isinstance(e, ClosedError) or (type(e) is ValueError and str(e) == DEINIT_MSG)


class CallbackPump:
    """One thread that moves events from `get` to `dispatch`.

    get(timeout_s) -> event or None: a native method that blocks with the GIL
    released. dispatch(event): calls the callbacks for one event.
    closed() -> bool (optional): True once the engine is closed; the pump
    then ends quietly when ``get`` raises.
    """

    def __init__(
        self,
        name: str,
        get: Callable[[float], Any],
        dispatch: Callable[[Any], None],
        closed: Optional[Callable[[], bool]] = None,
    ) -> None:
        self._get = get
        self._dispatch = dispatch
        self._closed = closed
        self._stop = threading.Event()
        self.callback_errors = 0
        self.last_callback_error: Optional[BaseException] = None
        #: Unexpected errors raised by ``get`` (each logged; the pump kept running).
        self.pump_errors = 0
        self.last_pump_error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "CallbackPump":
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Whether the pump thread is alive."""
        return self._thread.is_alive()

    def _engine_closed(self, e: BaseException) -> bool:
        if is_closed_error(e):
            return True
        if self._closed is not None:
            try:
                return bool(self._closed())
            except Exception:
                return False
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ev = self._get(POLL_SLICE)
            except Exception as e:
                if self._stop.is_set() or self._engine_closed(e):
                    return  # the engine was closed under us: the normal end
                self.pump_errors += 1
                self.last_pump_error = e
                log.error("canx: taking an event for %s failed; the pump keeps running",
                          self._thread.name, exc_info=True)
                self._stop.wait(POLL_SLICE)  # no hot loop if the error repeats
                continue
            if ev is None:
                continue
            try:
                self._dispatch(ev)
            except Exception as e:
                self.callback_errors += 1
                self.last_callback_error = e
                log.error("canx: a callback raised while handling %r; the bus keeps running", ev, exc_info=True)

    def stop(self, timeout: float = 2.0) -> None:
        """Asks the pump to end and waits up to ``timeout`` seconds for it.

        The pump notices within one :data:`POLL_SLICE` (0.1 s) unless a
        callback is running: a callback is never interrupted, so a callback
        that takes longer than ``timeout`` keeps running on the (daemon)
        thread after ``stop`` returns and no further event is dispatched
        after it. Called from the pump thread itself (from a callback),
        it only asks and returns at once. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
