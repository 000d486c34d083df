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


def test_stub_public_signatures_have_no_any() -> None:
    # The native boundary is typed: engines' events, results and arguments
    # all have real types in _canx.pyi (mypy --strict checks the package
    # against them in scripts/test).
    import re
    from pathlib import Path

    import canx

    stub = Path(canx.__file__).with_name("_canx.pyi").read_text()
    assert not re.search(r"\bAny\b", stub), [l for l in stub.splitlines() if re.search(r"\bAny\b", l)]


def test_canxproto_clearer_aliases() -> None:
    from canx import canxproto

    assert canxproto.CanxMessage is canxproto.Message
    assert canxproto.ErrorReport is canxproto.Error
    assert not issubclass(canxproto.ErrorReport, BaseException)
