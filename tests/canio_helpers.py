"""Shared helpers of the canio test files: an isolated virtual channel per
test, a CAN factory that deinitializes what it made, and polling."""

from __future__ import annotations

import time
import uuid

import pytest

import canx

DEINIT_MSG = "Object has been deinitialized and can no longer be used. Create a new object."


@pytest.fixture
def channel(request):
    """A virtual channel name no other test uses."""
    name = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]
    return f"virtual:{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_can(channel):
    """Factory for CAN nodes on this test's channel; all are deinitialized at the end."""
    made = []

    def make(*args, **kwargs):
        kwargs.setdefault("channel", channel)
        can = canx.CAN(*args, **kwargs)
        made.append(can)
        return can

    yield make
    for can in made:
        can.deinit()


def wait_for(cond, timeout=3.0, interval=0.002):
    """Polls ``cond`` until true or ``timeout``; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)
