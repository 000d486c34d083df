"""asyncio support: ``async for msg in listener``.

The native receive blocks with the GIL released; here it runs in the
event loop's default executor in short slices, so the loop stays free and
cancellation takes effect within one slice (0.1 s).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

_SLICE = 0.1


class ListenerAsyncIterator:
    """Yields frames like iterating the listener; stops after ``listener.timeout``
    seconds without a frame."""

    def __init__(self, listener: Any) -> None:
        self._listener = listener

    def __aiter__(self) -> "ListenerAsyncIterator":
        return self

    async def __anext__(self) -> Any:
        listener = self._listener
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + listener.timeout
        while True:
            if listener.in_waiting():
                got = listener.receive_many(1, 0.0)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StopAsyncIteration
                got = await loop.run_in_executor(None, listener.receive_many, 1, min(_SLICE, remaining))
            if got:
                return got[0]
