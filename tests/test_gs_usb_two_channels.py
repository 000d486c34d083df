"""canx's gs_usb driver on a two-channel device: ``gs_usb:SERIAL:0`` and
``gs_usb:SERIAL:1`` open at once on one emulated device (one USB interface,
one receive pump shared by both buses), each channel's frames reach only its
own bus, both ways.

The emulator (tests/vm/gs_usb_emulator.py) gives channel i the vcan interface
``buses[i]`` as its CAN bus: channel 0 is vcan0, channel 1 is vcan1. The
kernel's gs_usb driver first proves the device: it makes two canN for it.

Its own file: dummy_hcd has one UDC, so this device cannot exist while the
one-channel emulator of tests/test_gs_usb_emulator.py is bound.
``scripts/test-vm -q tests/test_gs_usb_two_channels.py``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "vm"))
from gs_usb_emulator import PROFILES, GsUsbEmulator  # noqa: E402
from test_gs_usb_emulator import _need_usb_gadget, _ref_timing, wait_for  # noqa: E402

pytestmark = pytest.mark.vcan

BUSES = ["vcan0", "vcan1"]
SERIAL = "CANXEMU2CH01"


@pytest.fixture
def emu2(vcan_pair, timeout_scale: float) -> Iterator[GsUsbEmulator]:
    _need_usb_gadget()
    e = GsUsbEmulator(BUSES, PROFILES["bxcan48"], name="canxgs2", serial=SERIAL)
    e.start()
    try:
        devs = e.wait_netdevs(2, 10 * timeout_scale)
        assert len(devs) == 2, devs          # the kernel's driver sees both channels
        udev = e.usb_device_dir()
        assert udev is not None
        intf = f"{udev.name}:1.0"
        if Path(f"/sys/bus/usb/devices/{intf}/driver").exists():
            Path("/sys/bus/usb/drivers/gs_usb/unbind").write_text(intf)
        wait_for(lambda: not Path(f"/sys/bus/usb/devices/{intf}/driver").exists(),
                 5 * timeout_scale, "gs_usb unbound")
        yield e
    finally:
        e.stop()
    assert not e.errors, e.errors


def test_two_channels_of_one_device_at_once(emu2: GsUsbEmulator, can_utils, timeout_scale: float) -> None:
    import canx

    with canx.CAN(channel=f"gs_usb:{SERIAL}:0", baudrate=500000) as ch0, \
            canx.CAN(channel=f"gs_usb:{SERIAL}:1", baudrate=250000) as ch1, \
            can_utils.candump(BUSES[0]) as dump0, can_utils.candump(BUSES[1]) as dump1:
        wait_for(lambda: all(c.started for c in emu2.channels), 5 * timeout_scale, "both channels started")
        # Each channel got its own bit timing, the kernel's for its bitrate.
        assert emu2.channels[0].bittiming == _ref_timing("bxcan48", "nominal", 500000)
        assert emu2.channels[1].bittiming == _ref_timing("bxcan48", "nominal", 250000)

        l0 = ch0.listen(timeout=10 * timeout_scale)
        l1 = ch1.listen(timeout=10 * timeout_scale)
        # Host -> device: each bus's frames leave on its own channel only.
        ch0.send(canx.Message(0x100, b"\x00"))
        ch1.send(canx.Message(0x101, b"\x01"))
        assert dump0.wait(1) and dump1.wait(1)
        time.sleep(0.3 * timeout_scale)
        assert [f[1] for f in dump0.frames] == ["100#00"], dump0.frames
        assert [f[1] for f in dump1.frames] == ["101#01"], dump1.frames
        # Device -> host: interleaved frames on both vcans, each to its own bus, in order.
        for i in range(20):
            can_utils.cansend(BUSES[i % 2], f"{0x200 + i:03X}#{i:02X}")
        got0 = [l0.receive() for _ in range(10)]
        got1 = [l1.receive() for _ in range(10)]
        assert [m.id for m in got0] == [0x200 + i for i in range(0, 20, 2)], got0
        assert [m.id for m in got1] == [0x200 + i for i in range(1, 20, 2)], got1
        # Nothing else arrived on either bus (no frame crossed channels).
        assert l0.in_waiting() == 0 and l1.in_waiting() == 0
    wait_for(lambda: not any(c.started for c in emu2.channels), 5 * timeout_scale, "MODE RESET on close")
