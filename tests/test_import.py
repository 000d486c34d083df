"""What ``import canx`` costs and what interpreter exit does (issue 11
part 7): the protocol modules load on first use, and exit waits for
threads in native waits only when there are some."""

from __future__ import annotations

import subprocess
import sys
import textwrap

LAZY = ["canx.j1939", "canx.megasquirt", "canx.reliable", "canx.canxproto", "canx._dispatch", "canx._aio"]


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


def test_import_canx_loads_no_protocol_module_nor_asyncio():
    r = run(
        """
        import sys
        import canx
        print(sorted(m for m in sys.modules if m.startswith("canx") or m in ("asyncio", "concurrent.futures")))
        """
    )
    assert r.returncode == 0, r.stderr
    loaded = eval(r.stdout)
    for m in LAZY + ["asyncio", "concurrent.futures"]:
        assert m not in loaded, f"import canx imported {m}"
    assert "canx._canx" in loaded and "canx.errors" in loaded


def test_import_time_shows_no_protocol_module():
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import canx"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert "canx" in imported
    assert not {"canx.j1939", "canx.megasquirt", "canx.reliable", "canx.canxproto", "asyncio"} & imported


def test_protocol_modules_still_reachable_lazily():
    r = run(
        """
        import canx
        from canx import j1939
        assert canx.j1939 is j1939
        import canx.megasquirt
        assert canx.reliable.Sender and canx.canxproto.Endpoint and canx.megasquirt.Node
        assert set(canx.__all__) <= set(dir(canx))
        from canx import *  # every name in __all__ resolves
        try:
            canx.no_such_thing
        except AttributeError as e:
            print("AE", e)
        """
    )
    assert r.returncode == 0, r.stderr
    assert "AE module 'canx' has no attribute 'no_such_thing'" in r.stdout


PATCH_SLEEP = """
import time
_real = time.sleep
def sleep(s):
    print("SLEPT", s, flush=True)
    _real(s)
time.sleep = sleep
"""


def test_exit_without_canx_objects_does_not_sleep():
    r = run(PATCH_SLEEP + "\nimport canx\nfrom canx import j1939, reliable\n")
    assert r.returncode == 0, r.stderr
    assert "SLEPT" not in r.stdout


def test_exit_with_a_closed_bus_does_not_sleep():
    r = run(
        PATCH_SLEEP
        + """
import canx
with canx.CAN(channel="virtual:exit-test", loopback=True) as can:
    listener = can.listen(timeout=0.5)
    can.send(canx.Message(1, b"x"))
    assert listener.receive() is not None
"""
    )
    assert r.returncode == 0, r.stderr
    assert "SLEPT" not in r.stdout


def test_exit_waits_for_a_thread_parked_in_a_native_wait():
    """A daemon thread blocked in ``receive()`` at exit: the atexit handler
    waits (in short sleeps) until it has left native code, and the process
    exits cleanly."""
    r = run(
        """
import atexit
import threading
atexit.register(lambda: print("LEFT", canx._canx._native_waits(), flush=True))  # LIFO: runs after canx's handler
import canx
can = canx.CAN(channel="virtual:exit-test-2")
listener = can.listen(timeout=60)
entered = threading.Event()
def wait():
    entered.set()
    listener.receive()
threading.Thread(target=wait, daemon=True).start()
entered.wait()
while canx._canx._native_waits() == 0:
    pass
"""
        + PATCH_SLEEP
    )
    assert r.returncode == 0, r.stderr
    assert "SLEPT" in r.stdout
    assert "LEFT 0" in r.stdout
