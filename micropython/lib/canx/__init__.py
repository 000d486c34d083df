"""canx on MicroPython: `from canx import j1939` and `canx.bus` (issue #15)."""
