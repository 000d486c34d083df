"""canx's pytest plugin: fixtures and options for testing CAN applications.

Active wherever canx is installed (``pytest11`` entry point ``canx``;
``-p no:canx`` turns it off). Loading it costs the import of the ``canx``
package (its native module, ~15 ms; no thread, no bus); ``canx.testing``,
the protocol modules and python-can are imported only by the fixtures that
need them, and no bus is opened unless a test asks for a fixture.

Options (and environment)
    --can-channel=CH        the test channel (env CANX_TEST_CHANNEL). Default:
                            a fresh ``virtual:pytest-N`` per test, so tests never
                            see each other's frames. ``vcan``: a fresh vcanN per
                            test (the ``vcan`` fixture).
    --can-fallback-virtual  where no vcan can be made, ``vcan`` gives a virtual
                            channel instead of skipping (also the marker
                            ``@pytest.mark.can_fallback_virtual``).

Fixtures (function scope)
    can_channel      -> str            the test's channel (vcan's if the test uses vcan)
    vcan             -> str            a vcanN made for this test (root + vcan module), removed after
    can_bus          -> canx.CAN       on can_channel, closed after the test
    pycan_bus        -> can.BusABC     python-can Bus(interface="canx") on can_channel
    can_recorder     -> testing.Recorder  every frame of the test; candump log
                                       attached to the report on failure
    can_expect       -> Expect         expect_frame/no_frame/sequence/pgn bound to can_recorder
    j1939_ecu        -> factory(address, name=..., claim=True, **ECU kw) -> j1939.ECU
    megasquirt_node  -> factory(can_id, **Node kw) -> megasquirt.Node
    can_faults       -> Faults         drop(n, id=..)/delay(n, s, id=..) of frames can_bus receives
                                       or sends (every channel); bus_off()/error_passive()/
                                       recover()/jam_tx() (virtual only)
    vcan_link        -> VcanLink       down()/up() of the test's vcan interface
    replay           -> factory(path, speed=1.0, timing=True, channels={"can0": bus_a, ...})
                                       plays a candump .log into the test's bus(es)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator, List, Mapping, Optional

import pytest

if TYPE_CHECKING:
    from . import testing

_ENV_CHANNEL = "CANX_TEST_CHANNEL"
_counter = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("canx", "canx CAN bus testing")
    group.addoption("--can-channel", dest="can_channel", default=None, metavar="CHANNEL",
                    help=f"CAN channel of the canx fixtures (env {_ENV_CHANNEL}; default: a fresh virtual: "
                         "channel per test; 'vcan': a fresh vcanN per test)")
    group.addoption("--can-fallback-virtual", dest="can_fallback_virtual", action="store_true",
                    help="the vcan fixture falls back to a virtual: channel instead of skipping")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "can_fallback_virtual: the vcan fixture falls back to a virtual: "
                                       "channel where no vcan interface can be made")


# ------------------------------------------------------------------ channels

_VIRTUAL_KEY = pytest.StashKey[str]()


def _fresh_virtual(request: pytest.FixtureRequest) -> str:
    """The test's own virtual channel (one per test, shared by its fixtures)."""
    stash = request.node.stash
    if _VIRTUAL_KEY not in stash:
        stash[_VIRTUAL_KEY] = f"virtual:pytest-{os.getpid()}-{next(_counter)}"
    return str(stash[_VIRTUAL_KEY])


def vcan_problem() -> Optional[str]:
    """None if this process can create vcan interfaces, else why not."""
    if not sys.platform.startswith("linux"):
        return f"vcan needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "creating a vcan interface needs root (run as root, or use a virtual: channel)"
    if shutil.which("ip") is None:
        return "creating a vcan interface needs the 'ip' tool (iproute2)"
    if not Path("/sys/module/vcan").exists():
        if shutil.which("modprobe"):
            subprocess.run(["modprobe", "vcan"], capture_output=True, timeout=30)
        if not Path("/sys/module/vcan").exists():
            return "the vcan kernel module is not loaded and cannot be loaded (modprobe vcan)"
    return None


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _make_vcan() -> tuple[Optional[str], str]:
    """(name, "") of a new vcanN that is up, or (None, reason)."""
    for n in range(10, 1000):
        name = f"vcan{n}"
        if Path(f"/sys/class/net/{name}").exists():
            continue
        r = _ip("link", "add", "dev", name, "type", "vcan")
        if r.returncode != 0:
            if "exists" in r.stderr:
                continue
            return None, f"ip link add {name} type vcan failed: {r.stderr.strip()}"
        _ip("link", "set", "dev", name, "mtu", "72")  # CAN FD; best effort
        r = _ip("link", "set", "dev", name, "up")
        if r.returncode != 0:
            _ip("link", "del", "dev", name)
            return None, f"ip link set {name} up failed: {r.stderr.strip()}"
        return name, ""
    return None, "no free vcanN name (vcan10..vcan999 all exist)"


def _wants_fallback(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("can_fallback_virtual")) or \
        request.node.get_closest_marker("can_fallback_virtual") is not None


@pytest.fixture
def vcan(request: pytest.FixtureRequest) -> Iterator[str]:
    """A vcanN interface made for this test (``ip link add vcanN type vcan``,
    up, MTU 72 where possible) and deleted after it. Needs Linux, root and the
    vcan module; otherwise skips with the reason, or, with
    ``--can-fallback-virtual`` or the ``can_fallback_virtual`` marker, gives a
    fresh ``virtual:`` channel (the test's, as ``can_channel`` gives)."""
    reason = vcan_problem()
    name: Optional[str] = None
    if reason is None:
        name, reason = _make_vcan()
    if name is None:
        if _wants_fallback(request):
            yield _fresh_virtual(request)
            return
        pytest.skip(f"no vcan: {reason}")
    try:
        yield name
    finally:
        _ip("link", "del", "dev", name)


@pytest.fixture
def can_channel(request: pytest.FixtureRequest) -> str:
    """The test's channel: the ``vcan`` fixture's interface if the test uses
    it, else ``--can-channel``, else ``$CANX_TEST_CHANNEL``, else a fresh
    ``virtual:pytest-<pid>-<n>``. The value ``vcan`` asks for the ``vcan`` fixture."""
    chosen = request.config.getoption("can_channel") or os.environ.get(_ENV_CHANNEL) or ""
    if chosen == "vcan" or "vcan" in request.fixturenames:
        return str(request.getfixturevalue("vcan"))
    if chosen in ("", "virtual"):
        return _fresh_virtual(request)
    return str(chosen)


# ------------------------------------------------------------------ buses

@pytest.fixture
def can_bus(can_channel: str) -> Iterator[Any]:
    """A ``canx.CAN`` on the test's channel (FD off), deinitialized after the test."""
    import canx

    bus = canx.CAN(channel=can_channel)
    try:
        yield bus
    finally:
        bus.deinit()


@pytest.fixture
def pycan_bus(can_channel: str) -> Iterator[Any]:
    """A python-can ``Bus(interface="canx", channel=can_channel)``, shut down
    after the test. Skips if python-can is not installed."""
    can = pytest.importorskip("can", reason="pycan_bus needs python-can (pip install python-can)")
    bus = can.Bus(interface="canx", channel=can_channel)
    try:
        yield bus
    finally:
        bus.shutdown()


_RECORDER_KEY = pytest.StashKey["testing.Recorder"]()


@pytest.fixture
def can_recorder(request: pytest.FixtureRequest, can_channel: str) -> Iterator["testing.Recorder"]:
    """A :class:`canx.testing.Recorder` on the test's channel, started before
    the test body. If the test fails, its frames are added to the report as
    the section "canx candump log" and written to a ``.log`` file whose path
    is in ``user_properties`` as ``canx_candump_log`` (shown in JUnit XML)."""
    from .testing import Recorder

    rec = Recorder(can_channel)
    request.node.stash[_RECORDER_KEY] = rec
    try:
        yield rec
    finally:
        rec.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    rec = item.stash.get(_RECORDER_KEY, None)
    if rec is None:
        return
    report: pytest.TestReport = outcome.get_result()
    if not report.failed:
        return
    text = rec.log_text()
    note = f"{len(rec.frames)} frames on {rec.channel}" + (f", {rec.dropped} dropped" if rec.dropped else "")
    path = _log_path(item)
    try:
        path.write_text(text)
        report.user_properties.append(("canx_candump_log", str(path)))
        item.user_properties.append(("canx_candump_log", str(path)))
        note += f"; written to {path}"
    except OSError as e:
        note += f"; not written to {path}: {e.strerror}"
    report.sections.append(("canx candump log", f"# {note}\n{text}"))


def _log_path(item: pytest.Item) -> Path:
    factory = getattr(item.config, "_tmp_path_factory", None)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.name)[:80]
    base = factory.getbasetemp() if factory is not None else Path.cwd()
    return Path(base) / f"canx-{safe}.log"


class Expect:
    """The :mod:`canx.testing` expectations bound to the test's recorder."""

    def __init__(self, recorder: "testing.Recorder") -> None:
        from . import testing

        self.recorder = recorder
        self._t = testing

    def frame(self, **kw: Any) -> "testing.Frame":
        """:func:`canx.testing.expect_frame` on the test's recorder."""
        return self._t.expect_frame(self.recorder, **kw)

    def no_frame(self, **kw: Any) -> None:
        """:func:`canx.testing.expect_no_frame` on the test's recorder."""
        self._t.expect_no_frame(self.recorder, **kw)

    def sequence(self, frames: Any, **kw: Any) -> List["testing.Frame"]:
        """:func:`canx.testing.expect_sequence` on the test's recorder."""
        return self._t.expect_sequence(self.recorder, frames, **kw)

    def pgn(self, pgn: int, **kw: Any) -> "testing.Frame":
        """:func:`canx.testing.expect_pgn` on the test's recorder."""
        return self._t.expect_pgn(self.recorder, pgn, **kw)


@pytest.fixture
def can_expect(can_recorder: "testing.Recorder") -> Expect:
    """``can_expect.frame(id=...)``, ``.no_frame``, ``.sequence``, ``.pgn`` on ``can_recorder``."""
    return Expect(can_recorder)


# ------------------------------------------------------------------ protocol nodes

@pytest.fixture
def j1939_ecu(can_channel: str) -> Iterator[Callable[..., Any]]:
    """Factory: ``j1939_ecu(address, name=None, claim=True, **kw)`` ->
    a claimed :class:`canx.j1939.ECU` on the test's channel (its own bus),
    closed after the test. ``name``: Name or int; default a NAME with a
    unique identity number. ``kw``: the other ECU arguments."""
    from . import j1939

    made: List[Any] = []
    numbers = itertools.count(0x1000)

    def make(address: int, name: Any = None, claim: bool = True, claim_timeout: float = 2.0, **kw: Any) -> Any:
        from .testing import timeout_scale

        ecu = j1939.ECU(channel=can_channel, name=name if name is not None else
                        j1939.Name(identity_number=next(numbers)), address=address, **kw)
        made.append(ecu)
        if claim:
            ecu.claim_address(timeout=claim_timeout * timeout_scale())
        return ecu

    try:
        yield make
    finally:
        for ecu in reversed(made):
            ecu.close()


@pytest.fixture
def megasquirt_node(can_channel: str) -> Iterator[Callable[..., Any]]:
    """Factory: ``megasquirt_node(can_id, **kw)`` -> a
    :class:`canx.megasquirt.Node` on the test's channel (its own bus), closed
    after the test. ``kw``: the other Node arguments."""
    from . import megasquirt

    made: List[Any] = []

    def make(can_id: int, **kw: Any) -> Any:
        node = megasquirt.Node(channel=can_channel, can_id=can_id, **kw)
        made.append(node)
        return node

    try:
        yield make
    finally:
        for node in reversed(made):
            node.close()


# ------------------------------------------------------------------ faults and replay

class FaultRule:
    """One drop/delay rule (see :meth:`Faults.drop`): ``taken`` frames so far,
    ``remaining`` still to take, ``wait(timeout)`` until it has taken all."""

    def __init__(self, bus: Any, rule: int, count: int, what: str) -> None:
        self.bus = bus
        self.rule = rule
        self.count = count
        self.what = what

    def _status(self) -> tuple[int, int]:
        st = self.bus._fault_status(self.rule)
        return (self.count, 0) if st is None else (int(st[0]), int(st[1]))

    @property
    def taken(self) -> int:
        """Frames the rule has dropped or delayed so far."""
        return self._status()[0]

    @property
    def remaining(self) -> int:
        """Frames it will still take (0: done)."""
        return self._status()[1]

    def wait(self, timeout: float = 1.0) -> None:
        """Blocks until the rule has taken all its frames; raises
        AssertionError after ``timeout`` seconds (scaled by
        ``CANX_TIMEOUT_SCALE``) saying how many it took."""
        from .testing import timeout_scale

        end = time.monotonic() + timeout * timeout_scale()
        while True:
            taken, remaining = self._status()
            if remaining == 0:
                return
            if time.monotonic() >= end:
                raise AssertionError(f"{self.what}: took {taken} of {self.count} frames within {timeout} s")
            time.sleep(0.005)

    def __repr__(self) -> str:
        taken, remaining = self._status()
        return f"<FaultRule {self.what}: {taken} taken, {remaining} remaining>"


class Faults:
    """Faults on a ``canx.CAN`` (by default the test's ``can_bus``).

    On every backend: :meth:`drop` / :meth:`delay` of the next N frames
    matching a filter, received by this bus (``direction="rx"``, the
    default: its listeners and the engines sharing it never see them, or see
    them late) or sent by it (``"tx"``: other nodes on the channel never see
    them, or see them late; the sender sees success). Only that one
    ``canx.CAN`` is affected: to fault what an ECU, a MegaSquirt node or a
    reliable sender receives or sends, give it this bus (``bus=can_bus`` /
    ``can_bus`` as its ``can``) or use :meth:`on` with its bus. Rules are
    counted (:class:`FaultRule`), at most 64 per bus, held frames at most
    4,096 per bus, delays at most 60 s; all are removed after the test.

    Virtual bus only: :meth:`bus_off`, :meth:`error_passive`,
    :meth:`error_warning`, :meth:`recover`, :meth:`jam_tx` (the runtime's
    test hooks ``CAN.inject_error_state`` and ``CAN._jam_tx``); they skip the
    test on another channel."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self._others: List[Any] = []

    def on(self, bus: Any) -> "Faults":
        """The same faults on another ``canx.CAN`` (its rules are removed after the test too)."""
        f = Faults(bus)
        self._others.append(f)
        return f

    def _add(self, count: int, delay: Optional[float], id: Optional[int], mask: Optional[int],
             extended: Optional[bool], direction: str) -> FaultRule:
        if mask is None:
            mask = 0 if id is None else 0x1FFFFFFF
        rule = self.bus._add_fault(direction, count, id=id or 0, mask=mask, extended=extended, delay=delay)
        what = ("drop" if delay is None else f"delay {delay} s") + f" {direction} x{count}"
        if id is not None:
            what += f" id {id:X}/{mask:X}"
        return FaultRule(self.bus, rule, count, what)

    def drop(self, n: int = 1, *, id: Optional[int] = None, mask: Optional[int] = None,
             extended: Optional[bool] = None, direction: str = "rx") -> FaultRule:
        """Drops the next ``n`` frames with ``(frame.id & mask) == (id & mask)``
        (``mask`` defaults to all 29 bits when ``id`` is given; no ``id``:
        any frame) and of the identifier kind ``extended`` (None: either).
        ``direction``: "rx" (frames this bus receives) or "tx" (frames it
        sends). Raises ValueError for n < 1 or a bad direction."""
        return self._add(n, None, id, mask, extended, direction)

    def delay(self, n: int, seconds: float, *, id: Optional[int] = None, mask: Optional[int] = None,
              extended: Optional[bool] = None, direction: str = "rx") -> FaultRule:
        """Delays the next ``n`` matching frames (as :meth:`drop`) by
        ``seconds`` (0..60, on the bus clock; frames that arrive meanwhile
        overtake them). Raises ValueError for a bad n, delay or direction."""
        return self._add(n, float(seconds), id, mask, extended, direction)

    def clear(self, flush: bool = True) -> None:
        """Removes every drop/delay rule; held frames go out now (``flush``) or are discarded."""
        self.bus._clear_faults(flush)
        for f in self._others:
            f.clear(flush)

    @property
    def counts(self) -> dict[str, int]:
        """``{"dropped", "delayed", "held_overflow", "late_send_failed"}`` of the bus."""
        return dict(self.bus._fault_counts())

    def _need_virtual(self) -> None:
        channel = str(getattr(self.bus, "channel", ""))
        if not channel.startswith("virtual:"):
            pytest.skip(f"error states and jam_tx need a virtual: channel (the test channel is {channel})")

    def _inject(self, state: str, tec: Optional[int], rec: Optional[int]) -> None:
        import canx

        self._need_virtual()
        self.bus.inject_error_state(getattr(canx.BusState, state), tec=tec, rec=rec)

    def bus_off(self, tec: Optional[int] = None) -> None:
        """The bus goes BUS_OFF (TEC 256 unless given)."""
        self._inject("BUS_OFF", tec, None)

    def error_passive(self, tec: Optional[int] = None, rec: Optional[int] = None) -> None:
        """The bus goes ERROR_PASSIVE (a counter above 127)."""
        self._inject("ERROR_PASSIVE", tec, rec)

    def error_warning(self, tec: Optional[int] = None, rec: Optional[int] = None) -> None:
        """The bus goes ERROR_WARNING (a counter above 96)."""
        self._inject("ERROR_WARNING", tec, rec)

    def recover(self) -> None:
        """Back to ERROR_ACTIVE with low counters."""
        self._inject("ERROR_ACTIVE", None, None)

    @contextlib.contextmanager
    def jam_tx(self) -> Iterator[None]:
        """While the block runs, no frame ``can_bus`` sends is accepted (sends time out)."""
        self._need_virtual()
        self.bus._jam_tx(True)
        try:
            yield
        finally:
            self.bus._jam_tx(False)


@pytest.fixture
def can_faults(request: pytest.FixtureRequest, can_channel: str) -> Iterator[Faults]:
    """:class:`Faults` on ``can_bus``: drop/delay on every channel; error
    states and ``jam_tx`` on virtual channels (they skip otherwise). Every
    rule is removed after the test."""
    f = Faults(request.getfixturevalue("can_bus"))
    try:
        yield f
    finally:
        with contextlib.suppress(Exception):
            f.clear(flush=False)


class VcanLink:
    """``down()`` / ``up()`` of the test's vcan interface (``ip link set``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _set(self, state: str) -> None:
        r = _ip("link", "set", "dev", self.name, state)
        if r.returncode != 0:
            raise OSError(f"ip link set {self.name} {state} failed: {r.stderr.strip()}")

    def down(self) -> None:
        """Takes the interface down (sends then fail; receivers get nothing)."""
        self._set("down")

    def up(self) -> None:
        """Brings it up again."""
        self._set("up")


@pytest.fixture
def vcan_link(vcan: str) -> Iterator[VcanLink]:
    """:class:`VcanLink` for the test's ``vcan`` interface (skips like
    ``vcan``; skips too when ``vcan`` fell back to a virtual channel). The
    interface is up again after the test (then deleted by ``vcan``)."""
    if not vcan.startswith("vcan"):
        pytest.skip(f"vcan_link needs a vcan interface (the test channel is {vcan})")
    link = VcanLink(vcan)
    try:
        yield link
    finally:
        with contextlib.suppress(OSError):
            link.up()


class Replay:
    """A running or finished replay: ``wait(timeout)``, ``sent`` (frames
    sent), ``skipped`` (lines of an interface not in ``channels``),
    ``per_channel`` ({log interface: frames sent}), ``error``."""

    def __init__(self) -> None:
        self.sent = 0
        self.skipped = 0
        self.per_channel: dict[str, int] = {}
        self.error: Optional[BaseException] = None
        self.done = threading.Event()
        self.stop = threading.Event()

    def wait(self, timeout: Optional[float] = None) -> int:
        """Blocks until the replay ends; returns the frames sent; re-raises its error."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"replay still running after {timeout} s ({self.sent} frames sent)")
        if self.error is not None:
            raise self.error
        return self.sent


def _target_channel(name: str, target: Any) -> str:
    if isinstance(target, str):
        return target
    channel = getattr(target, "channel", None)
    if isinstance(channel, str):
        return channel
    raise TypeError(f"replay channels[{name!r}]: a channel name or a canx.CAN, not {type(target).__name__}")


@pytest.fixture
def replay(can_channel: str) -> Iterator[Callable[..., Replay]]:
    """Factory: ``replay(path, speed=1.0, timing=True, background=False,
    channels=None)`` sends the frames of a candump ``.log`` with their
    original gaps divided by ``speed`` (``timing=False``: as fast as
    possible). Without ``channels`` every line goes to the test's channel
    (whatever interface it names). ``channels`` maps the log's interface
    names to where their lines go: a channel name or an open ``canx.CAN``
    (its channel: the replay sends from a node of its own, so the bus
    receives the frames as from another node), e.g. ``{"can0": bus_a,
    "can1": bus_b}``; lines of other interfaces are skipped (counted in
    ``Replay.skipped``). One timeline for all channels: the order of the
    file is kept across them. Error frames are skipped. With
    ``background=True`` it returns at once; the replay is stopped after the
    test. Returns a :class:`Replay`. Raises ``canx.tools._common.ToolError``
    for an unreadable file or channel and TypeError for a bad ``channels``
    value (before anything is sent)."""
    from .tools._common import open_bus, send_fields
    from .tools.replay import _read_log

    running: List[tuple[Replay, threading.Thread]] = []

    def play(path: "os.PathLike[str] | str", speed: float = 1.0, timing: bool = True,
             background: bool = False, channels: Optional[Mapping[str, Any]] = None) -> Replay:
        if not speed > 0:
            raise ValueError(f"speed must be positive, not {speed}")
        targets = None if channels is None else {k: _target_channel(k, v) for k, v in channels.items()}
        r = Replay()
        lines = []
        for ts, iface, f in _read_log(Path(path)):  # all read (and checked) first
            if f[3]:
                continue
            if targets is not None and iface not in targets:
                r.skipped += 1
                continue
            lines.append((ts, iface, f))
        buses: dict[str, Any] = {}
        try:
            for ch in sorted(set(targets.values())) if targets else [can_channel]:
                buses[ch] = open_bus(ch, fd=True)
        except BaseException:
            for b in buses.values():
                b.shutdown()
            raise

        def run() -> None:
            try:
                t0 = time.perf_counter()
                for ts, iface, f in lines:
                    if r.stop.is_set():
                        return
                    if timing:
                        delay = t0 + (ts - lines[0][0]) / speed - time.perf_counter()
                        if delay > 0 and r.stop.wait(delay):
                            return
                    send_fields(buses[targets[iface] if targets else can_channel], f)
                    r.sent += 1
                    r.per_channel[iface] = r.per_channel.get(iface, 0) + 1
            except BaseException as e:  # reported by wait()
                r.error = e
            finally:
                for b in buses.values():
                    b.shutdown()
                r.done.set()

        if not background:
            run()
            r.wait()
            return r
        t = threading.Thread(target=run, name="canx-replay", daemon=True)
        running.append((r, t))
        t.start()
        return r

    try:
        yield play
    finally:
        for r, t in running:
            r.stop.set()
            t.join(timeout=5.0)
