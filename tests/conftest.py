"""Shared pytest configuration for canx.

Markers
    vcan  -- needs a real SocketCAN interface (vcan0, vcan1, kernel J1939/ISO-TP).
             Such tests skip where the kernel has no CAN support (the build
             machines); ``scripts/test-vm`` runs them in a qemu guest.
    slow  -- the long tier: skipped unless selected with ``-m slow`` (or a
             marker expression naming it), so CI's default run
             (``-m "not vcan"``) leaves them out (docs/reliability.md).

Fixtures
    vcan_channel -> "vcan0"                 (session)
    vcan_pair    -> ("vcan0", "vcan1")      (session)
    can_utils    -> CanUtils                (function; kills what it started)
    timeout_scale -> float                  (10.0 in the VM, else 1.0)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import pytest

IN_VM = os.environ.get("CANX_VM") == "1"
#: Factor for every timeout: code runs ~10x slower under qemu's TCG.
TIMEOUT_SCALE = float(os.environ.get("CANX_TIMEOUT_SCALE") or (10.0 if IN_VM else 1.0))

_SKIP_HINT = "run scripts/test-vm"


def rts_to_cts(channel: str, claim_timeout: float = 5.0, **receiver_kw) -> float:
    """Seconds between the RTS of a 20-byte RTS/CTS transfer from a canx ECU
    (0x10) to another (0x20, made with `receiver_kw`; each on a bus of its
    own on `channel`) and the receiver's CTS, from bus_monitor timestamps."""
    from canx import j1939

    def claimed(ident: int, address: int, **kw) -> j1939.ECU:
        e = j1939.ECU(channel=channel, name=j1939.Name(identity_number=ident), address=address, **kw)
        assert e.claim_address(timeout=claim_timeout) == address
        return e

    with j1939.bus_monitor(channel, timeout=max(0.5, claim_timeout / 10)) as mon:
        with claimed(1, 0x10) as a, claimed(2, 0x20, **receiver_kw):
            a.send_pgn(0xEF00, bytes(range(20)), destination=0x20).result(claim_timeout)
        frames = [f for f in mon if f.kind == "tp_cm"]
    rts = next(f for f in frames if f.data[0] == 16)
    cts = next(f for f in frames if f.data[0] == 17)
    assert (cts.source, cts.destination) == (0x20, 0x10)
    return cts.timestamp - rts.timestamp


# Kernel misbehaviour the tests worked around (not canx failures), printed in
# the terminal summary: see test_j1939_kernel.close_kernel_socket.
KERNEL_NOTES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if KERNEL_NOTES:
        terminalreporter.section("kernel notes")
        for line in KERNEL_NOTES:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="long tier: run with -m slow (docs/reliability.md)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "vcan: needs a real SocketCAN interface (vcan0/vcan1); skipped without one, "
        "run them with scripts/test-vm",
    )
    config.addinivalue_line("markers", "slow: slow test (especially under emulation)")


# --------------------------------------------------------------------------- vcan


def _kernel_can_problem() -> str | None:
    """None if this kernel can open a CAN_RAW socket, else the reason."""
    if not hasattr(socket, "PF_CAN") or not hasattr(socket, "CAN_RAW"):
        return "this Python/platform has no socket.PF_CAN"
    try:
        s = socket.socket(socket.PF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
    except OSError as e:
        if e.errno == errno.EAFNOSUPPORT:
            # The kernel may just not have loaded the module yet.
            if os.geteuid() == 0 and shutil.which("modprobe"):
                subprocess.run(["modprobe", "can-raw"], capture_output=True, timeout=30)
                try:
                    socket.socket(socket.PF_CAN, socket.SOCK_RAW, socket.CAN_RAW).close()
                    return None
                except OSError:
                    pass
            return f"kernel has no SocketCAN (errno {e.errno}: {e.strerror})"
        return f"cannot open a CAN_RAW socket: {e}"
    s.close()
    return None


def _iface_up(name: str) -> bool:
    try:
        flags = int(Path(f"/sys/class/net/{name}/flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & 0x1)  # IFF_UP


def _ensure_vcan(name: str) -> str | None:
    """Make sure vcan interface `name` exists and is up. None on success, else why not."""
    exists = Path(f"/sys/class/net/{name}").exists()
    if exists and _iface_up(name):
        return None
    if os.geteuid() != 0 or not shutil.which("ip"):
        what = "is down" if exists else "does not exist"
        return f"{name} {what} and no rights to set it up: {_SKIP_HINT}"

    def ip(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)

    if not exists:
        if shutil.which("modprobe"):
            subprocess.run(["modprobe", "vcan"], capture_output=True, timeout=30)
        r = ip("link", "add", "dev", name, "type", "vcan")
        if r.returncode != 0:
            return f"no vcan interface and no rights to create one ({r.stderr.strip()}): {_SKIP_HINT}"
        ip("link", "set", "dev", name, "mtu", "72")  # CAN FD; best effort
    r = ip("link", "set", "dev", name, "up")
    if r.returncode != 0:
        return f"cannot bring {name} up ({r.stderr.strip()}): {_SKIP_HINT}"
    return None


_vcan_cache: dict[str, str | None] = {}


def vcan_problem(*names: str) -> str | None:
    """None if all interfaces are usable, else a skip reason. Cached per session."""
    for name in ("<kernel>", *names):
        if name not in _vcan_cache:
            _vcan_cache[name] = _kernel_can_problem() if name == "<kernel>" else _ensure_vcan(name)
        if _vcan_cache[name] is not None:
            reason = _vcan_cache[name]
            if name == "<kernel>":
                reason = f"{reason}; no vcan interface and no rights to create one: {_SKIP_HINT}"
            return reason
    return None


def _skip_or_fail(reason: str) -> None:
    # In the test VM, SocketCAN must work: a skip there would hide a broken
    # harness behind a green run, so it is an error.
    if IN_VM:
        pytest.fail(f"CANX_VM=1 but SocketCAN is not usable: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Every test marked vcan skips cleanly without SocketCAN, even one that
    # does not use the fixtures below.
    if item.get_closest_marker("vcan") is not None:
        reason = vcan_problem("vcan0")
        if reason:
            _skip_or_fail(reason)


@pytest.fixture(scope="session")
def vcan_channel() -> str:
    """Name of a usable (existing or freshly created) vcan interface: "vcan0"."""
    reason = vcan_problem("vcan0")
    if reason:
        _skip_or_fail(reason)
    return "vcan0"


@pytest.fixture(scope="session")
def vcan_pair() -> tuple[str, str]:
    """Two usable vcan interfaces: ("vcan0", "vcan1")."""
    reason = vcan_problem("vcan0", "vcan1")
    if reason:
        _skip_or_fail(reason)
    return ("vcan0", "vcan1")


@pytest.fixture(scope="session")
def timeout_scale() -> float:
    """Multiply every timeout by this (10 in the emulated VM, 1 elsewhere)."""
    return TIMEOUT_SCALE


# --------------------------------------------------------------------------- can-utils

_CANDUMP_LINE = re.compile(r"^\((?P<ts>[0-9.]+)\)\s+(?P<channel>\S+)\s+(?P<frame>\S+)(?:\s+(?P<dir>[RT]))?$")


class CanUtilsError(AssertionError):
    pass


class Capture:
    """Lines printed by a running ``candump -L``; filled by a reader thread."""

    def __init__(self, proc: subprocess.Popen, scale: float) -> None:
        self.proc = proc
        self.scale = scale
        self.lines: list[str] = []
        self.stderr = ""
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            if line:
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        """Collect candump's stderr once it has exited."""
        if self.proc.poll() is not None and self.proc.stderr and not self.proc.stderr.closed:
            with contextlib.suppress(OSError, ValueError):
                self.stderr += self.proc.stderr.read()

    @property
    def frames(self) -> list[tuple[str, str]]:
        """(channel, frame text) of every captured line, e.g. ("vcan0", "123#1122")."""
        out = []
        for line in list(self.lines):
            m = _CANDUMP_LINE.match(line)
            if m:
                out.append((m["channel"], m["frame"]))
        return out

    def wait(self, count: int = 1, timeout: float = 2.0) -> list[str]:
        """Wait until at least `count` lines were captured (timeout is scaled).

        Returns the lines; raises CanUtilsError on timeout.
        """
        deadline = time.monotonic() + timeout * self.scale
        with self._cond:
            while len(self.lines) < count:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._thread.is_alive()):
                    self._read_stderr()
                    raise CanUtilsError(
                        f"candump: wanted {count} line(s), got {len(self.lines)}: {self.lines!r}"
                        f" (candump rc={self.proc.poll()}, stderr={self.stderr!r})"
                    )
                self._cond.wait(min(left, 0.1))
            return list(self.lines)


def _wait_until_listening(proc: subprocess.Popen, timeout: float) -> None:
    """Wait until a freshly started can-utils process sits in its poll loop.

    There is no ready message, so look at /proc: it has opened a socket and is
    sleeping in select/poll.  Falls back to a plain delay where /proc/<pid>/wchan
    tells nothing.
    """
    deadline = time.monotonic() + timeout
    pid = proc.pid
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return  # caller reports the exit
        try:
            has_socket = any(
                os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
                for fd in os.listdir(f"/proc/{pid}/fd")
            )
            wchan = Path(f"/proc/{pid}/wchan").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            has_socket, wchan, state = False, "", ""
        if has_socket and state == "S" and any(w in wchan for w in ("select", "poll", "recv", "wait")):
            time.sleep(0.02 * TIMEOUT_SCALE)
            return
        if has_socket and state == "S" and wchan in ("", "0"):  # wchan hidden: give it time
            time.sleep(0.1 * TIMEOUT_SCALE)
            return
        time.sleep(0.01)
    # Could not prove readiness; carry on, the test's own wait will tell.


class CanUtils:
    """Runs the can-utils command line tools, with timeouts; kills leftovers."""

    def __init__(self, scale: float = TIMEOUT_SCALE) -> None:
        self.scale = scale
        self._procs: list[subprocess.Popen] = []

    # -- helpers
    @staticmethod
    def _tool(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            _skip_or_fail(f"can-utils tool {name!r} not installed (apt-get install can-utils)")
        return path

    def run(self, tool: str, *args: str, timeout: float = 5.0, check: bool = True,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run a can-utils tool to completion (timeout is scaled). Returns CompletedProcess (bytes)."""
        argv = [self._tool(tool), *map(str, args)]
        try:
            r = subprocess.run(argv, capture_output=True, timeout=timeout * self.scale, input=input)
        except subprocess.TimeoutExpired as e:
            raise CanUtilsError(f"{' '.join(argv)}: timed out after {timeout * self.scale:.1f}s") from e
        if check and r.returncode != 0:
            raise CanUtilsError(
                f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}"
            )
        return r

    def _kill(self, proc: subprocess.Popen, close: bool = True) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2 * self.scale)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not close:
            return
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream:
                with contextlib.suppress(OSError):
                    stream.close()

    @contextlib.contextmanager
    def spawn(self, tool: str, *args: str, ready: bool = True, text: bool = False,
              stdin: int | None = subprocess.DEVNULL) -> Iterator[subprocess.Popen]:
        """Start a tool in the background; it is killed when the block ends.

        With ready=True, waits until it sits in its receive loop (see
        _wait_until_listening), so frames sent afterwards are not missed.
        """
        argv = [self._tool(tool), *map(str, args)]
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=text)
        self._procs.append(proc)
        try:
            if ready:
                _wait_until_listening(proc, 3.0 * self.scale)
                if proc.poll() is not None:
                    err = proc.stderr.read() if proc.stderr else ""
                    raise CanUtilsError(f"{' '.join(argv)} exited at start (rc {proc.returncode}): {err!r}")
            yield proc
        finally:
            self._kill(proc)

    # -- the common tools
    def cansend(self, channel: str, frame_text: str, timeout: float = 5.0) -> None:
        """``cansend channel frame_text``, e.g. cansend("vcan0", "123#1122")."""
        self.run("cansend", channel, frame_text, timeout=timeout)

    @contextlib.contextmanager
    def candump(self, channel: str, *args: str) -> Iterator[Capture]:
        """``candump -L [args] channel`` in the background, ready when the block starts.

        Yields a Capture: .lines, .frames, .wait(count, timeout).  `channel` may
        carry candump filters ("vcan0,123:7FF") or be "any".
        """
        with self.spawn("candump", "-L", *args, channel, text=True) as proc:
            cap = Capture(proc, self.scale)
            try:
                yield cap
            finally:
                self._kill(proc, close=False)
                cap._thread.join(timeout=2 * self.scale)
                cap._read_stderr()

    def cangen(self, channel: str, *args: str, count: int = 10, gap_ms: float = 0,
               timeout: float = 10.0) -> subprocess.CompletedProcess:
        """``cangen channel -n count -g gap_ms [args]`` to completion."""
        return self.run("cangen", channel, "-n", str(count), "-g", str(gap_ms), *args, timeout=timeout)

    def close(self) -> None:
        for proc in self._procs:
            self._kill(proc)
        self._procs.clear()


@pytest.fixture
def can_utils() -> Iterator[CanUtils]:
    """can-utils wrappers: cansend, candump (context manager), cangen, run, spawn."""
    utils = CanUtils()
    try:
        yield utils
    finally:
        utils.close()
