"""The shipped type stubs match the native module (mypy.stubtest): every
native name has a stub, and every stub has the runtime's signature."""

import subprocess
import sys

import pytest


def test_stubs_match_native_module(tmp_path) -> None:
    pytest.importorskip("mypy")
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "canx._canx", "--mypy-config-file", "/dev/null"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout
