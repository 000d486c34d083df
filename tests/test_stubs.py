"""The shipped type stubs match the native module (mypy.stubtest)."""

import shutil
import subprocess
import sys

import pytest


def test_stubs_match_native_module(tmp_path) -> None:
    pytest.importorskip("mypy")
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "canx._canx", "--ignore-missing-stub",
         "--mypy-config-file", "/dev/null", "--cache-dir", str(tmp_path / "mypy-cache")],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert shutil.which(sys.executable)
