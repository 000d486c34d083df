"""A gs_usb (candleLight) USB device emulated in user space, for the test VM.

The device is a configfs USB gadget with one FunctionFS function, bound to the
``dummy_hcd`` UDC, so the same machine sees it as a USB device 1d50:606f and
the kernel's ``gs_usb`` driver (or canx's own user-space driver) binds to it.
Each CAN channel of the device is a SocketCAN interface of the VM (a vcan):
frames the host sends go out on it, frames on it come to the host.

Protocol facts and sources: /work/shared/docs/research/usb-adapters.md §1
(kernel 6.1 ``drivers/net/can/usb/gs_usb.c``, candleLight_fw ``include/gs_usb.h``);
the gadget recipe is §4a (``Documentation/usb/gadget_configfs.rst``,
``functionfs.rst``, ``include/uapi/linux/usb/functionfs.h``).

Stdlib only, test-only code: every control request is answered (or stalled,
the way candleLight stalls), TX frames are echoed with their echo_id, with a
32-bit µs hardware timestamp when the host turned HW_TIMESTAMP on.

Use in a test (as root, modules libcomposite, dummy_hcd, usb_f_fs loaded)::

    emu = GsUsbEmulator(buses=["vcan0"], profile=PROFILES["mcan80"])
    emu.start()            # gadget made and bound; the kernel's gs_usb binds
    emu.netdevs()          # -> ["can0"] once the kernel made them
    emu.inject(0, can_id=0x20000004, data=bytes(8))   # an error frame to the host
    emu.stop()             # unbound and removed

or standalone: ``python3 tests/vm/gs_usb_emulator.py --bus vcan0 --profile mcan80``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import platform
import errno
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

# ----------------------------------------------------------------- gs_usb protocol
# Vendor requests (research §1.2; kernel gs_usb.c enum gs_usb_breq).
HOST_FORMAT = 0
BITTIMING = 1
MODE = 2
BERR = 3
BT_CONST = 4
DEVICE_CONFIG = 5
TIMESTAMP = 6
IDENTIFY = 7
GET_USER_ID = 8
SET_USER_ID = 9
DATA_BITTIMING = 10
BT_CONST_EXT = 11
SET_TERMINATION = 12
GET_TERMINATION = 13
GET_STATE = 14

REQUEST_NAMES = {
    0: "HOST_FORMAT", 1: "BITTIMING", 2: "MODE", 3: "BERR", 4: "BT_CONST",
    5: "DEVICE_CONFIG", 6: "TIMESTAMP", 7: "IDENTIFY", 8: "GET_USER_ID",
    9: "SET_USER_ID", 10: "DATA_BITTIMING", 11: "BT_CONST_EXT",
    12: "SET_TERMINATION", 13: "GET_TERMINATION", 14: "GET_STATE",
}

# Feature bits of BT_CONST.feature = mode flags of MODE.flags (research §1.4).
F_LISTEN_ONLY = 1 << 0
F_LOOP_BACK = 1 << 1
F_TRIPLE_SAMPLE = 1 << 2
F_ONE_SHOT = 1 << 3
F_HW_TIMESTAMP = 1 << 4
F_IDENTIFY = 1 << 5
F_USER_ID = 1 << 6
F_PAD_PKTS = 1 << 7
F_FD = 1 << 8
F_REQ_USB_QUIRK_LPC546XX = 1 << 9
F_BT_CONST_EXT = 1 << 10
F_TERMINATION = 1 << 11

# Host frame flags (research §1.5).
HF_OVERFLOW = 1 << 0
HF_FD = 1 << 1
HF_BRS = 1 << 2
HF_ESI = 1 << 3
ECHO_ID_RX = 0xFFFF_FFFF
HF_HEADER = struct.Struct("<IIBBBB")  # echo_id, can_id, can_dlc, channel, flags, reserved

FD_LENS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)


def dlc_to_len(dlc: int) -> int:
    return FD_LENS[dlc & 0x0F]


def len_to_dlc(n: int) -> int:
    for dlc, ln in enumerate(FD_LENS):
        if ln >= n:
            return dlc
    raise ValueError(f"CAN FD length {n} > 64")


@dataclasses.dataclass(frozen=True)
class Profile:
    """What the emulated device advertises (BT_CONST, BT_CONST_EXT, DEVICE_CONFIG)."""

    name: str
    feature: int
    fclk_can: int
    # tseg1_min, tseg1_max, tseg2_min, tseg2_max, sjw_max, brp_min, brp_max, brp_inc
    nominal: tuple[int, int, int, int, int, int, int, int]
    data: tuple[int, int, int, int, int, int, int, int] | None = None
    sw_version: int = 2
    hw_version: int = 1

    def bt_const(self) -> bytes:
        return struct.pack("<10I", self.feature, self.fclk_can, *self.nominal)

    def bt_const_ext(self) -> bytes:
        assert self.data is not None
        return struct.pack("<18I", self.feature, self.fclk_can, *self.nominal, *self.data)


_COMMON = F_LISTEN_ONLY | F_LOOP_BACK | F_ONE_SHOT | F_HW_TIMESTAMP | F_IDENTIFY
PROFILES = {
    # candleLight_fw src/can/bxcan.c (STM32F0/F4 at 48 MHz), classic CAN only.
    "bxcan48": Profile("bxcan48", _COMMON, 48_000_000, (1, 16, 1, 8, 4, 1, 1024, 1)),
    # candleLight_fw src/can/m_can.c (STM32G0/H7 FDCAN), here at 80 MHz, with CAN FD.
    "mcan80": Profile(
        "mcan80", _COMMON | F_FD | F_BT_CONST_EXT, 80_000_000,
        (1, 256, 1, 128, 128, 1, 512, 1), (1, 32, 1, 16, 16, 1, 32, 1),
    ),
}

# ----------------------------------------------------------------- FunctionFS
# include/uapi/linux/usb/functionfs.h
FUNCTIONFS_DESCRIPTORS_MAGIC_V2 = 3
FUNCTIONFS_STRINGS_MAGIC = 2
FUNCTIONFS_HAS_FS_DESC = 1
FUNCTIONFS_HAS_HS_DESC = 2
EV_BIND, EV_UNBIND, EV_ENABLE, EV_DISABLE, EV_SETUP, EV_SUSPEND, EV_RESUME = range(7)
EVENT = struct.Struct("<BBHHHB3x")  # usb_ctrlrequest (8) + type + pad = 12 bytes
USB_DIR_IN = 0x80


def _descriptors() -> bytes:
    def speed(mps: int) -> bytes:
        intf = bytes([9, 4, 0, 0, 2, 0xFF, 0xFF, 0xFF, 1])  # if0, 2 EPs, vendor class, iInterface 1
        ep_in = struct.pack("<BBBBHB", 7, 5, 0x81, 2, mps, 0)  # bulk IN (ep1 file)
        ep_out = struct.pack("<BBBBHB", 7, 5, 0x02, 2, mps, 0)  # bulk OUT (ep2 file)
        return intf + ep_in + ep_out

    body = struct.pack("<II", 3, 3) + speed(64) + speed(512)
    head = struct.pack("<III", FUNCTIONFS_DESCRIPTORS_MAGIC_V2, 12 + len(body),
                       FUNCTIONFS_HAS_FS_DESC | FUNCTIONFS_HAS_HS_DESC)
    return head + body


def _strings() -> bytes:
    body = struct.pack("<H", 0x0409) + b"gs_usb\0"
    return struct.pack("<IIII", FUNCTIONFS_STRINGS_MAGIC, 16 + len(body), 1, 1) + body



# ----------------------------------------------------------------- native AIO
# FunctionFS queues one USB request per AIO iocb (f_fs.c ffs_epfile_io, the
# `io_data->aio` path), so several IN transfers wait on the endpoint at once,
# as in a real device's FIFO. A blocking os.write() has one in flight, and
# dummy_hcd (Linux 6.1) moves data only on its timer tick (1 ms rounded up
# to a jiffy, 4 ms at HZ=250): one frame per tick. Syscalls from
# include/uapi/asm-generic/unistd.h / arch/x86/entry/syscalls/syscall_64.tbl,
# structs from include/uapi/linux/aio_abi.h (little-endian layout).
_AIO_NR = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}  # setup, destroy, getevents, submit
IOCB_CMD_PWRITE = 1


class _Iocb(ctypes.Structure):
    _fields_ = [("aio_data", ctypes.c_uint64), ("aio_key", ctypes.c_uint32), ("aio_rw_flags", ctypes.c_int32),
                ("aio_lio_opcode", ctypes.c_uint16), ("aio_reqprio", ctypes.c_int16),
                ("aio_fildes", ctypes.c_uint32), ("aio_buf", ctypes.c_uint64), ("aio_nbytes", ctypes.c_uint64),
                ("aio_offset", ctypes.c_int64), ("aio_reserved2", ctypes.c_uint64), ("aio_flags", ctypes.c_uint32),
                ("aio_resfd", ctypes.c_uint32)]


class _IoEvent(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64), ("res", ctypes.c_int64),
                ("res2", ctypes.c_int64)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class AioWriter:
    """Up to ``depth`` writes of ``size`` bytes in flight on ``fd`` (Linux native AIO)."""

    def __init__(self, fd: int, depth: int, size: int) -> None:
        nrs = _AIO_NR.get(platform.machine())
        if nrs is None:
            raise OSError(errno.ENOSYS, f"no AIO syscall numbers for {platform.machine()}")
        self._setup, self._destroy, self._getevents, self._submit = nrs
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self.fd, self.depth, self.size = fd, depth, size
        self._ctx = ctypes.c_ulong(0)
        self._call(self._setup, ctypes.c_long(depth), ctypes.byref(self._ctx))
        self.bufs = [ctypes.create_string_buffer(size) for _ in range(depth)]
        self._iocbs = [_Iocb() for _ in range(depth)]
        self._events = (_IoEvent * depth)()
        self.free = list(range(depth))

    def _call(self, nr: int, *args: object) -> int:
        r = self._libc.syscall(ctypes.c_long(nr), *args)
        if r < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return int(r)

    def submit(self, slots: list[int], lengths: list[int]) -> None:
        """Queues writes of ``bufs[slot][:length]``."""
        ptrs = (ctypes.POINTER(_Iocb) * len(slots))()
        for k, (i, n) in enumerate(zip(slots, lengths)):
            cb = self._iocbs[i]
            ctypes.memset(ctypes.byref(cb), 0, ctypes.sizeof(cb))
            cb.aio_data = i
            cb.aio_lio_opcode = IOCB_CMD_PWRITE
            cb.aio_fildes = self.fd
            cb.aio_buf = ctypes.addressof(self.bufs[i])
            cb.aio_nbytes = n
            ptrs[k] = ctypes.pointer(cb)
        done = 0
        while done < len(slots):
            done += self._call(self._submit, self._ctx, ctypes.c_long(len(slots) - done),
                               ctypes.byref(ptrs, done * ctypes.sizeof(ctypes.c_void_p)))

    def reap(self, timeout: float) -> list[tuple[int, int]]:
        """(slot, result) of the writes done, waiting up to ``timeout`` s for the first."""
        ts = _Timespec(int(timeout), int((timeout % 1) * 1e9))
        n = self._call(self._getevents, self._ctx, ctypes.c_long(1), ctypes.c_long(self.depth),
                       self._events, ctypes.byref(ts))
        out = [(int(self._events[k].data), int(self._events[k].res)) for k in range(n)]
        self.free.extend(i for i, _ in out)
        return out

    def close(self) -> None:
        """Cancels what is still in flight (FunctionFS cancels AIO) and frees the context."""
        if self._ctx.value:
            with contextlib.suppress(OSError):
                self._call(self._destroy, self._ctx)
            self._ctx = ctypes.c_ulong(0)

# ----------------------------------------------------------------- SocketCAN bus
CAN_FRAME = struct.Struct("=IB3x8s")
CANFD_FRAME = struct.Struct("=IBBxx64s")
CANFD_BRS = 0x01
CANFD_ESI = 0x02


def _open_bus(name: str) -> socket.socket:
    s = socket.socket(socket.PF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
    s.setsockopt(socket.SOL_CAN_RAW, socket.CAN_RAW_FD_FRAMES, 1)
    s.bind((name,))
    return s


@dataclasses.dataclass
class Channel:
    index: int
    bus: str
    sock: socket.socket | None = None
    started: bool = False
    flags: int = 0
    bittiming: tuple[int, ...] | None = None
    data_bittiming: tuple[int, ...] | None = None
    identify: int = 0


class GsUsbEmulator:
    """A gs_usb device on dummy_hcd; each channel's CAN bus is a vcan interface.

    Attributes a test may read: ``requests`` (every control request seen, as
    (name, wValue, payload bytes) tuples), ``channels[i].bittiming`` (the last
    BITTIMING, (prop_seg, phase_seg1, phase_seg2, sjw, brp)), ``.data_bittiming``,
    ``.flags`` (MODE flags of the last START), ``tx_frames`` (host frames
    received on the OUT endpoint), ``errors`` (exceptions of the worker threads).
    Knobs: ``drop_echoes`` (True: TX frames get no echo), ``unplug()`` /
    ``replug()`` (unbind / bind the UDC: the host sees the device go and
    come back). ``lost_to_host`` counts frames the host was gone for.
    """

    GADGET_ROOT = Path("/sys/kernel/config/usb_gadget")

    def __init__(self, buses: list[str], profile: Profile, name: str = "canxgs",
                 serial: str = "CANXEMU0001", vid_pid: tuple[int, int] = (0x1D50, 0x606F)) -> None:
        if not 1 <= len(buses) <= 3:
            raise ValueError("1 to 3 channels")
        self.profile = profile
        self.name = name
        self.serial = serial
        self.vid_pid = vid_pid
        self.channels = [Channel(i, b) for i, b in enumerate(buses)]
        self.gadget = self.GADGET_ROOT / name
        self.ffs_dir = Path(f"/tmp/ffs-{name}")
        self.requests: list[tuple[str, int, bytes]] = []
        self.tx_frames: list[bytes] = []
        self.errors: list[BaseException] = []
        self.events: list[int] = []
        self.drop_echoes = False
        self.lost_to_host = 0
        self._ep0 = self._ep_in = self._ep_out = -1
        self._in_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = time.monotonic()
        self.udc = ""

    # -- lifecycle
    def start(self) -> None:
        """Make the gadget, write the descriptors, serve, bind the UDC."""
        for ch in self.channels:
            ch.sock = _open_bus(ch.bus)
        mod = Path("/sys/kernel/config")
        if not (mod / "usb_gadget").exists():
            subprocess.run(["mount", "-t", "configfs", "none", str(mod)], check=False)
        g = self.gadget
        g.mkdir()
        (g / "idVendor").write_text(f"0x{self.vid_pid[0]:04x}")
        (g / "idProduct").write_text(f"0x{self.vid_pid[1]:04x}")
        (g / "bcdUSB").write_text("0x0200")
        (g / "bcdDevice").write_text("0x0100")
        (g / "strings/0x409").mkdir()
        (g / "strings/0x409/manufacturer").write_text("canx")
        (g / "strings/0x409/product").write_text("gs_usb emulator")
        (g / "strings/0x409/serialnumber").write_text(self.serial)
        (g / "configs/c.1").mkdir()
        (g / "configs/c.1/MaxPower").write_text("100")
        (g / "functions/ffs.gs").mkdir()
        (g / "configs/c.1/ffs.gs").symlink_to(g / "functions/ffs.gs")
        self.ffs_dir.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "functionfs", "gs", str(self.ffs_dir)], check=True)
        self._ep0 = os.open(self.ffs_dir / "ep0", os.O_RDWR)
        os.write(self._ep0, _descriptors())
        os.write(self._ep0, _strings())
        self._ep_in = os.open(self.ffs_dir / "ep1", os.O_RDWR)
        self._ep_out = os.open(self.ffs_dir / "ep2", os.O_RDWR)
        for target, nm in [(self._serve_ep0, "ep0"), (self._serve_out, "out")] + [
            (lambda ch=ch: self._serve_bus(ch), f"bus{ch.index}") for ch in self.channels
        ]:
            t = threading.Thread(target=self._guard(target), name=f"gsemu-{nm}", daemon=True)
            t.start()
            self._threads.append(t)
        udcs = sorted(os.listdir("/sys/class/udc"))
        if not udcs:
            raise RuntimeError("no UDC in /sys/class/udc (modprobe dummy_hcd)")
        self.udc = udcs[0]
        (g / "UDC").write_text(self.udc)

    def stop(self) -> None:
        """Unbind the UDC, stop the threads, remove the gadget (best effort, idempotent)."""
        self._stop.set()
        g = self.gadget
        with contextlib.suppress(OSError):
            (g / "UDC").write_text("\n")
        for fd in (self._ep_in, self._ep_out, self._ep0):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._ep0 = self._ep_in = self._ep_out = -1
        for ch in self.channels:
            if ch.sock is not None:
                with contextlib.suppress(OSError):
                    ch.sock.shutdown(socket.SHUT_RDWR)
                ch.sock.close()
                ch.sock = None
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        subprocess.run(["umount", str(self.ffs_dir)], check=False, capture_output=True)
        for p in (g / "configs/c.1/ffs.gs",):
            with contextlib.suppress(OSError):
                p.unlink()
        for d in (g / "configs/c.1", g / "functions/ffs.gs", g / "strings/0x409", g):
            with contextlib.suppress(OSError):
                d.rmdir()

    def unplug(self) -> None:
        """Unbind the gadget from the UDC: the device disappears from the host."""
        (self.gadget / "UDC").write_text("\n")

    def replug(self) -> None:
        """Bind it again: the host enumerates the device anew."""
        (self.gadget / "UDC").write_text(self.udc)

    def __enter__(self) -> GsUsbEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the host made of it
    def usb_device_dir(self) -> Path | None:
        """The host-side sysfs directory of the emulated device, once enumerated."""
        for d in Path("/sys/bus/usb/devices").iterdir():
            try:
                if (d / "serial").read_text().strip() == self.serial:
                    return d
            except OSError:
                continue
        return None

    def netdevs(self) -> list[str]:
        """Network interfaces the kernel's gs_usb made for this device (sorted)."""
        dev = self.usb_device_dir()
        if dev is None:
            return []
        return sorted(p.name for p in dev.glob("*:1.0/net/*"))

    def wait_netdevs(self, count: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.raise_errors()
            names = self.netdevs()
            if len(names) >= count:
                return names
            time.sleep(0.05)
        raise TimeoutError(f"kernel made {self.netdevs()} for the emulated gs_usb device in {timeout} s;"
                           f" requests seen: {[r[0] for r in self.requests]}")

    def raise_errors(self) -> None:
        if self.errors:
            raise RuntimeError(f"emulator thread failed: {self.errors[0]!r}") from self.errors[0]

    # -- frames
    def timestamp_us(self) -> int:
        return int((time.monotonic() - self._t0) * 1e6) & 0xFFFF_FFFF

    def encode(self, ch: Channel, echo_id: int, can_id: int, data: bytes, flags: int = 0,
               dlc: int | None = None) -> bytes:
        fd = bool(flags & HF_FD)
        size = 64 if fd else 8
        if dlc is None:
            dlc = len_to_dlc(len(data)) if fd else len(data)
        out = HF_HEADER.pack(echo_id, can_id, dlc, ch.index, flags, 0) + data.ljust(size, b"\0")[:size]
        if ch.flags & F_HW_TIMESTAMP:
            out += struct.pack("<I", self.timestamp_us())
        return out

    def to_host(self, frame: bytes) -> None:
        with self._in_lock:
            if self._ep_in < 0:
                return
            try:
                os.write(self._ep_in, frame)
            except OSError as e:  # host gone (UDC unbound): counted, not fatal
                if e.errno in (errno.EBADF,):
                    raise
                self.lost_to_host += 1

    def inject(self, channel: int, can_id: int, data: bytes = b"", flags: int = 0) -> None:
        """Send an RX frame (echo_id 0xFFFFFFFF) to the host, e.g. an error frame."""
        ch = self.channels[channel]
        self.to_host(self.encode(ch, ECHO_ID_RX, can_id, data, flags))


    def flood(self, channel: int, count: int, can_id: int = 0x123, depth: int = 64,
              stall_s: float = 30.0) -> tuple[int, float]:
        """Sends ``count`` classic 8-byte RX frames to the host as fast as it
        takes them: ``depth`` IN transfers queued at once (native AIO), the
        first 4 data bytes a little-endian sequence number. Returns (frames
        the host took, seconds from the first submit to the last
        completion). Stops early (and says so in the count) when the host
        takes nothing for ``stall_s`` seconds."""
        ch = self.channels[channel]
        size = len(self.encode(ch, ECHO_ID_RX, can_id, bytes(8)))
        with self._in_lock:
            aio = AioWriter(self._ep_in, depth, size)
            sent = done = 0
            t0 = time.monotonic()
            last_progress = t0
            try:
                while done < count:
                    slots: list[int] = []
                    while aio.free and sent < count:
                        i = aio.free.pop()
                        frame = self.encode(ch, ECHO_ID_RX, can_id, struct.pack("<II", sent, 0))
                        ctypes.memmove(aio.bufs[i], frame, len(frame))
                        slots.append(i)
                        sent += 1
                    if slots:
                        aio.submit(slots, [size] * len(slots))
                    got = aio.reap(1.0)
                    now = time.monotonic()
                    for _, res in got:
                        if res == size:
                            done += 1
                        else:
                            self.lost_to_host += 1
                    if got:
                        last_progress = now
                    elif now - last_progress > stall_s:
                        break
                    if any(res < 0 for _, res in got):
                        break  # host gone
                elapsed = time.monotonic() - t0
            finally:
                aio.close()
        return done, elapsed

    # -- workers
    def _guard(self, fn):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported through .errors
                if not self._stop.is_set():
                    self.errors.append(e)
        return run

    def _serve_ep0(self) -> None:
        while not self._stop.is_set():
            try:
                buf = os.read(self._ep0, EVENT.size * 4)
            except OSError as e:
                if self._stop.is_set() or e.errno in (errno.EBADF,):
                    return
                if e.errno in (errno.EINTR, errno.EAGAIN, errno.EIDRM):
                    continue
                raise
            for off in range(0, len(buf) - EVENT.size + 1, EVENT.size):
                rt, req, value, index, length, etype = EVENT.unpack_from(buf, off)
                self.events.append(etype)
                if etype == EV_SETUP:
                    self._setup(rt, req, value, index, length)
                elif etype in (EV_DISABLE, EV_UNBIND):
                    for ch in self.channels:
                        ch.started = False

    def _stall(self, rt: int) -> None:
        # The wrong-direction operation stalls ep0 (f_fs.c ffs_ep0_read/write; research §4a.6).
        try:
            if rt & USB_DIR_IN:
                os.read(self._ep0, 0)
            else:
                os.write(self._ep0, b"")
        except OSError:
            pass

    def _setup(self, rt: int, req: int, value: int, index: int, length: int) -> None:
        name = REQUEST_NAMES.get(req, f"REQ{req}")
        if (rt & 0x60) != 0x40:  # not a vendor request
            self.requests.append((f"NONVENDOR{req}", value, b""))
            self._stall(rt)
            return
        if rt & USB_DIR_IN:
            reply = self._answer_in(req, value)
            self.requests.append((name, value, b""))
            if reply is None:
                self._stall(rt)
            else:
                os.write(self._ep0, reply[:length])
            return
        payload = os.read(self._ep0, length) if length else os.read(self._ep0, 0)
        self.requests.append((name, value, payload))
        # candleLight stalls invalid OUT requests; FunctionFS has already
        # acknowledged the data stage by now, so a bad request is only recorded.
        self._apply_out(req, value, payload)

    def _channel(self, value: int) -> Channel | None:
        return self.channels[value] if value < len(self.channels) else None

    def _answer_in(self, req: int, value: int) -> bytes | None:
        p = self.profile
        ch = self._channel(value)
        if req == DEVICE_CONFIG:
            return struct.pack("<3xBII", len(self.channels) - 1, p.sw_version, p.hw_version)
        if req == BT_CONST and ch is not None:
            return p.bt_const()
        if req == BT_CONST_EXT and ch is not None and p.data is not None:
            return p.bt_const_ext()
        if req == TIMESTAMP:
            return struct.pack("<I", self.timestamp_us())
        return None

    def _apply_out(self, req: int, value: int, payload: bytes) -> None:
        ch = self._channel(value)
        if req == HOST_FORMAT:
            return
        if ch is None:
            return
        if req == BITTIMING and len(payload) >= 20:
            ch.bittiming = struct.unpack_from("<5I", payload)
        elif req == DATA_BITTIMING and len(payload) >= 20:
            ch.data_bittiming = struct.unpack_from("<5I", payload)
        elif req == MODE and len(payload) >= 8:
            mode, flags = struct.unpack_from("<II", payload)
            ch.started = mode == 1
            if ch.started:
                ch.flags = flags & self.profile.feature
        elif req == IDENTIFY and len(payload) >= 4:
            ch.identify = struct.unpack_from("<I", payload)[0]

    def _serve_out(self) -> None:
        while not self._stop.is_set():
            try:
                buf = os.read(self._ep_out, 1024)
            except OSError as e:
                if self._stop.is_set() or e.errno == errno.EBADF:
                    return
                # Host gone or endpoint disabled (UDC unbound): wait for it to come back.
                time.sleep(0.01)
                continue
            self.tx_frames.append(buf)
            if len(buf) < HF_HEADER.size:
                continue
            echo_id, can_id, dlc, chan, flags, _ = HF_HEADER.unpack_from(buf)
            ch = self._channel(chan)
            if ch is None or not ch.started:
                continue
            fd = bool(flags & HF_FD)
            n = dlc_to_len(dlc) if fd else min(dlc, 8)
            data = buf[12:12 + n]
            if not self.drop_echoes:
                self.to_host(self.encode(ch, echo_id, can_id, data, flags & (HF_FD | HF_BRS | HF_ESI), dlc))
            if ch.flags & F_LOOP_BACK:
                self.to_host(self.encode(ch, ECHO_ID_RX, can_id, data, flags & (HF_FD | HF_BRS | HF_ESI), dlc))
            elif not ch.flags & F_LISTEN_ONLY and ch.sock is not None:
                if fd:
                    cf = (CANFD_BRS if flags & HF_BRS else 0) | (CANFD_ESI if flags & HF_ESI else 0)
                    ch.sock.send(CANFD_FRAME.pack(can_id, n, cf | 0x04, data.ljust(64, b"\0")))
                else:
                    ch.sock.send(CAN_FRAME.pack(can_id, n, data.ljust(8, b"\0")))

    def _serve_bus(self, ch: Channel) -> None:
        sock = ch.sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                raw = sock.recv(CANFD_FRAME.size)
            except OSError:
                if self._stop.is_set():
                    return
                raise
            if not raw or not ch.started or ch.flags & F_LOOP_BACK:
                continue
            if len(raw) == CANFD_FRAME.size:
                can_id, n, cf, data = CANFD_FRAME.unpack(raw)
                if not ch.flags & F_FD:
                    continue  # a classic-only controller cannot receive FD frames
                flags = HF_FD | (HF_BRS if cf & CANFD_BRS else 0) | (HF_ESI if cf & CANFD_ESI else 0)
                self.to_host(self.encode(ch, ECHO_ID_RX, can_id, data[:n], flags))
            else:
                can_id, n, data = CAN_FRAME.unpack(raw)
                self.to_host(self.encode(ch, ECHO_ID_RX, can_id, data[:min(n, 8)], 0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bus", action="append", default=[], help="vcan per channel (repeat), default vcan0")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="mcan80")
    args = ap.parse_args()
    emu = GsUsbEmulator(args.bus or ["vcan0"], PROFILES[args.profile])
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    emu.start()
    print(f"gs_usb emulator on {emu.udc}, profile {args.profile}", flush=True)
    try:
        while not done.wait(0.5):
            if emu.errors:
                print(f"error: {emu.errors[0]!r}", file=sys.stderr)
                return 1
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
