"""asyncio on readiness: every ``async for`` and ``*_async`` wait of canx.

Each native queue (a canio ``Listener``, an engine's event queue, a J1939
``PgnStream``) has a readiness descriptor (``fileno()``: an eventfd the
bus's receive thread signals when the queue goes from empty to non-empty,
see ``runtime::Notify``). A waiting coroutine registers it with
``loop.add_reader`` and, once it is readable, takes one item with a
non-blocking native call in the loop's own thread. No executor thread is
involved, and nothing is ever taken off a queue by another thread, so a
cancelled ``await`` (``task.cancel()``, ``asyncio.wait_for``) loses no
item: it either returned the item or left it queued.

Readiness may be spurious (a blocking ``receive()`` elsewhere took the item,
a close woke the waiters): a waiter then finds nothing and waits again.
Several coroutines of one loop may wait on one descriptor: one reader
callback per (loop, descriptor) wakes them all.

A MegaSquirt node's operations wait the same way on the node's completion
descriptor (:func:`wait_signal`: signalled whenever one of its operations
ends, cleared by the loop's reader callback), then take their own outcome
with a non-blocking call.

Where there is no descriptor (``fileno()`` raises, e.g. the platform has no
eventfd, or the loop has no ``add_reader``, e.g. Windows' proactor loop), a
waiter polls the non-blocking take on the loop's timer with a backoff from
1 ms to 20 ms: still no threads and no lost items, at the cost of latency
and idle wake-ups.

A waiter also re-checks its queue every :data:`LIVENESS` seconds without a
signal, so that a queue whose bus was shut down from elsewhere (``CAN.deinit()``
under an attached engine, which signals nothing) raises within that time.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any, Callable, Dict, Optional, Set

#: Seconds a waiter waits for readiness before it looks at its queue anyway.
LIVENESS = 1.0
#: Polling backoff where there is no readiness descriptor (seconds).
POLL_MIN = 0.001
POLL_MAX = 0.02

_Waiters = Dict[int, Set["asyncio.Future[None]"]]
_registries: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waiters]" = weakref.WeakKeyDictionary()


_registries_lock = threading.Lock()  # loops of several threads share _registries


def _registry(loop: asyncio.AbstractEventLoop) -> _Waiters:
    reg = _registries.get(loop)
    if reg is None:
        with _registries_lock:
            reg = _registries.setdefault(loop, {})
    return reg


def _on_readable(loop: asyncio.AbstractEventLoop, fd: int, clear: Optional[Callable[[], None]]) -> None:
    # One-shot: wakes every waiter of fd in this loop; those that find
    # nothing register again. An edge-style descriptor is cleared here,
    # once, before any waiter looks: a signal after this is not lost.
    waiters = _registry(loop).pop(fd, set())
    loop.remove_reader(fd)
    if clear is not None:
        clear()
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)


def _wake(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


async def wait_readable(fd: int, timeout: Optional[float], clear: Optional[Callable[[], None]] = None) -> None:
    """Returns once ``fd`` is readable or ``timeout`` seconds passed (None:
    no limit). ``clear`` (one per descriptor) is called when it fires, before
    the waiters wake. Raises NotImplementedError when the loop has no
    ``add_reader``."""
    loop = asyncio.get_running_loop()
    reg = _registry(loop)
    fut: "asyncio.Future[None]" = loop.create_future()
    waiters = reg.get(fd)
    if waiters is None:
        loop.add_reader(fd, _on_readable, loop, fd, clear)
        waiters = reg[fd] = set()
    waiters.add(fut)
    timer = None if timeout is None else loop.call_later(max(0.0, timeout), _wake, fut)
    try:
        await fut
    finally:
        if timer is not None:
            timer.cancel()
        ws = reg.get(fd)
        if ws is not None:
            ws.discard(fut)
            if not ws:
                del reg[fd]
                loop.remove_reader(fd)


def _fileno(fileno: Optional[Callable[[], int]]) -> Optional[int]:
    if fileno is None:
        return None
    try:
        return int(fileno())
    except Exception:  # no descriptor here (UnsupportedError, OSError): poll instead
        return None


async def take(
    take_nowait: Callable[[], Any],
    fileno: Optional[Callable[[], int]],
    timeout: Optional[float],
    done: Optional[Callable[[], bool]] = None,
) -> Any:
    """The next item, or None after ``timeout`` seconds (None: no limit) or
    once ``done()`` is true with nothing queued.

    ``take_nowait()`` returns an item or None and never blocks (it raises
    when its object is closed: that error propagates); ``fileno()`` gives the
    queue's readiness descriptor (or raises: then the wait polls)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + max(0.0, timeout)
    fd = _fileno(fileno)
    pause = POLL_MIN
    while True:
        item = take_nowait()
        if item is not None:
            return item
        if done is not None and done():
            return None
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            return None
        if fd is not None:
            try:
                await wait_readable(fd, LIVENESS if left is None else min(left, LIVENESS))
                continue
            except NotImplementedError:  # a loop without add_reader
                fd = None
        await asyncio.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, POLL_MAX)


async def wait_signal(fileno: Callable[[], int], clear: Callable[[], None], timeout: Optional[float]) -> None:
    """Waits for an edge-style native signal (a descriptor that ``clear()``
    makes unreadable, e.g. a MegaSquirt node's completions), at most
    ``timeout`` seconds (None: no limit) and at most :data:`LIVENESS`; the
    caller then looks at what it waits for and calls again. Without a
    descriptor it sleeps :data:`POLL_MAX`. One loop clears the descriptor
    for all its waiters; a waiter of another loop on the same descriptor
    may then miss a signal and see it at its next LIVENESS check."""
    t = LIVENESS if timeout is None else max(0.0, min(timeout, LIVENESS))
    fd = _fileno(fileno)
    if fd is not None:
        try:
            await wait_readable(fd, t, clear)
            return
        except NotImplementedError:
            # A loop without add_reader (Windows' ProactorEventLoop): fall
            # through to the timed poll, which needs no thread.
            pass
    await asyncio.sleep(min(t, POLL_MAX))


class AsyncQueueIterator:
    """``async for`` over a native queue: yields what ``take_nowait`` takes;
    stops after ``timeout()`` seconds without an item (None: never) or when
    ``done()``. A cancelled ``__anext__`` leaves the iterator usable and
    loses nothing."""

    def __init__(
        self,
        take_nowait: Callable[[], Any],
        fileno: Optional[Callable[[], int]],
        timeout: Callable[[], Optional[float]],
        done: Optional[Callable[[], bool]] = None,
    ) -> None:
        self._take = take_nowait
        self._fileno = fileno
        self._timeout = timeout
        self._done = done

    def __aiter__(self) -> "AsyncQueueIterator":
        return self

    async def __anext__(self) -> Any:
        item = await take(self._take, self._fileno, self._timeout(), self._done)
        if item is None:
            raise StopAsyncIteration
        return item


class ListenerAsyncIterator(AsyncQueueIterator):
    """``async for msg in listener``: yields frames like iterating the
    listener; stops after ``listener.timeout`` seconds without a frame.
    Raises canio's ValueError once the listener is deinitialized."""

    def __init__(self, listener: Any) -> None:
        super().__init__(listener._receive_nowait, listener._fileno, lambda: listener.timeout)
