"""`canx run` and `canx demo` as a user runs them (subprocesses, virtual bus)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "circuitpython"


def canx(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "canx", *args], capture_output=True, text=True, timeout=timeout
    )


def test_demo_acknowledges_every_message() -> None:
    r = canx("demo", "--count", "5")
    assert r.returncode == 0, r.stderr
    assert "summary: 5/5 messages acknowledged" in r.stdout
    received = re.findall(r"listener: received count=(\d+)", r.stdout)
    assert [int(n) for n in received] == [0, 1, 2, 3, 4]


def test_guide_sender_ack_and_listener_ack_run_unchanged() -> None:
    r = canx("run", str(EXAMPLES / "listener_ack.py"), str(EXAMPLES / "sender_ack.py"), "--duration", "3")
    assert r.returncode == 0, r.stderr
    acked = r.stdout.count("[sender_ack] Received ACK")
    got = [int(n) for n in re.findall(r"\[listener_ack\] received message: count=(\d+)", r.stdout)]
    assert acked >= 3, r.stdout
    # The listener sees the counts in order (a resend repeats a count, never skips one).
    assert got == sorted(got) and set(got) == set(range(max(got) + 1))
    assert "[listener_ack] Bus state changed to canio.BusState.ERROR_ACTIVE" in r.stdout


def test_run_sender_with_listener() -> None:
    r = canx("run", str(EXAMPLES / "sender.py"), str(EXAMPLES / "listener.py"), "--duration", "1.8")
    assert r.returncode == 0, r.stderr
    sent = re.findall(r"\[sender\] Sending message: count=(\d+) now_ms=(\d+)", r.stdout)
    got = re.findall(r"\[listener\] received message: count=(\d+) now_ms=(\d+)", r.stdout)
    assert len(got) >= 2
    assert set(got) <= set(sent)


def test_run_single_script_stops_after_duration(tmp_path: Path) -> None:
    script = tmp_path / "code.py"
    script.write_text(
        "import board, canio\n"
        "can = canio.CAN(board.CAN_TX, board.CAN_RX, loopback=True)\n"
        "l = can.listen(timeout=0.5)\n"
        "can.send(canio.Message(0x123, b'\\x01\\x02'))\n"
        "m = l.receive()\n"
        "print('got', hex(m.id), m.data.hex())\n"
        "while True:\n"
        "    l.receive()\n"
    )
    r = canx("run", str(script), "--duration", "1")
    assert r.returncode == 0, r.stderr
    assert "got 0x123 0102" in r.stdout


def test_run_duration_without_sigalrm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where there is no SIGALRM/setitimer (Windows), --duration stops the
    script through a timer thread: exit 0, and Ctrl-C still means 130."""
    from canx import run

    monkeypatch.setattr(run, "_HAVE_SETITIMER", False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_script sets both
    monkeypatch.setattr(sys, "path", list(sys.path))
    script = tmp_path / "code.py"
    script.write_text("import time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.01)\n")
    t0 = time.monotonic()
    assert run.run_script(str(script), [], duration=0.5) == 0
    assert time.monotonic() - t0 < 30
    interrupted = tmp_path / "ctrl_c.py"
    interrupted.write_text("raise KeyboardInterrupt\n")
    assert run.run_script(str(interrupted), [], duration=30) == 130


def test_run_reports_script_errors(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("import canio\ncanio.CAN(None, None)\n")
    r = canx("run", str(script))
    assert r.returncode != 0
    assert "tx and rx cannot both be None" in r.stderr


def test_bad_input_is_one_line_exit_2() -> None:
    r = canx("run", "does-not-exist.py")
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = canx("demo", "--channel", "pcan:x", "--count", "1")
    assert r.returncode == 2 and "unknown interface" in r.stderr and "Traceback" not in r.stderr


def test_board_and_digitalio_standins() -> None:
    from canx.circuitpython import board, digitalio

    assert hasattr(board, "CAN_TX") and hasattr(board, "CAN_STANDBY")
    assert not hasattr(board, "NO_SUCH_PIN")
    pin = digitalio.DigitalInOut(board.CAN_STANDBY)
    pin.switch_to_output(True)
    assert pin.value is True
    pin.value = False
    assert pin.value is False
    pin.deinit()
    with pytest.raises(ValueError):
        pin.value


def test_daemon_thread_blocked_in_receive_does_not_crash_at_exit() -> None:
    """A daemon thread parked in a native receive when the program ends must
    not abort the interpreter (CPython kills threads that take the GIL back
    during finalization)."""
    code = (
        "import threading, time, canx\n"
        "can = canx.CAN(channel='virtual:exit-test')\n"
        "lis = can.listen(timeout=1000)\n"
        "for _ in range(4):\n"
        "    threading.Thread(target=lis.receive, daemon=True).start()\n"
        "time.sleep(0.3)\n"
        "print('bye')\n"
    )
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (r.returncode, r.stderr)
        assert r.stdout.strip() == "bye" and "FATAL" not in r.stderr
