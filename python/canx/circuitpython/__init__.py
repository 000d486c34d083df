"""Stand-ins for the CircuitPython modules a CAN script imports, so it runs
unchanged on a PC under ``canx run``: ``canio`` (canx itself), ``board``
(pin names that mean nothing on a PC) and ``digitalio`` (pins that remember
their value and do nothing else)."""
