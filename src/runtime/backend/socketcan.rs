//! The SocketCAN backend (Linux raw CAN sockets).
//!
//! The `socketcan` crate opens and binds the socket and sets its options
//! (filters, error mask, own-message receive, FD frames, timestamps). The
//! receive hot path is ours: one `recvmmsg(2)` call takes up to
//! [`BATCH`] frames with their `SO_TIMESTAMPNS` receive times and the
//! kernel's `SO_RXQ_OVFL` drop counter, and a `ppoll(2)` on the socket plus an
//! eventfd lets `shutdown` wake the receive thread at once. `socketcan`'s
//! reader returns one frame per system call and has no drop counter, which is
//! why the batch path is written here (see ARCHITECTURE.md, "How a frame
//! flows from the socket to Python").
//!
//! Scheme `socketcan`: channels without a prefix (`"vcan0"`, `"can0"`), any
//! network interface name (shorter than `IFNAMSIZ`); listed from
//! `/sys/class/net` (interfaces of type `ARPHRD_CAN`). Periodic sends are
//! offloaded to the kernel's broadcast manager ([`super::bcm`]); the kernel's
//! J1939 stack may share the interface ([`kernel_j1939_active`]).

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use canx_core::frame::{make_id, EFF_FLAG, EFF_MASK, ERR_FLAG, RTR_FLAG, SFF_MASK};
use canx_core::{CanFrame, ErrorFrame, FdFrame, Filter, Frame};
use parking_lot::Mutex;
use socketcan::{CanFilter, CanSocket, Socket, SocketOptions};

use super::bcm::BcmTask;
use super::{AvailableChannel, Backend, BusConfig, Capabilities, KernelStacks, PeriodicOffload, Scheme};
use crate::runtime::{epoch_now, Error, Origin, Result, RxFrame};

/// The `socketcan` entry of [`super::SCHEMES`].
pub(super) const SCHEME: Scheme = Scheme {
    name: "socketcan",
    default: true,
    check: check_name,
    open: |name, config| Ok(std::sync::Arc::new(SocketCanBackend::open(name, config)?)),
    available: can_interfaces,
};

/// A network interface name: shorter than `IFNAMSIZ`, no `/`, no whitespace.
fn check_name(name: &str) -> Result<()> {
    if name.len() >= libc::IFNAMSIZ || name.contains('/') || name.contains(char::is_whitespace) {
        return Err(Error::BadChannel(format!("{name:?} is not a network interface name")));
    }
    Ok(())
}

/// `ARPHRD_CAN`: `/sys/class/net/*/type` of CAN interfaces (vcan, can, slcan, ...).
const ARPHRD_CAN: u32 = 280;

/// Names of the CAN network interfaces, sorted (none if sysfs is unreadable).
fn can_interfaces() -> Vec<AvailableChannel> {
    can_interface_names()
        .into_iter()
        .map(|n| {
            let sys = std::path::Path::new("/sys/class/net").join(&n);
            let state = std::fs::read_to_string(sys.join("operstate")).unwrap_or_default();
            let driver = std::fs::read_link(sys.join("device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
            let mut d = format!("SocketCAN interface, {}", state.trim());
            if let Some(driver) = driver {
                d.push_str(&format!(", driver {driver}"));
            }
            AvailableChannel::new(n, d)
        })
        .collect()
}

fn can_interface_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("type")).ok().and_then(|t| t.trim().parse::<u32>().ok())
                == Some(ARPHRD_CAN)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}

/// Frames taken per `recvmmsg` call.
pub const BATCH: usize = 64;
/// Receive buffer asked of the kernel, bytes (capped by `rmem_max` unless root).
pub const RCVBUF_BYTES: i32 = 4 << 20;

const CAN_MTU: usize = 16;
const CANFD_MTU: usize = 72;
const CANFD_BRS: u8 = 0x01;
const CANFD_ESI: u8 = 0x02;
const CANFD_FDF: u8 = 0x04;
const CAN_ERR_MASK: u32 = 0x1FFF_FFFF;

const SOL_CAN_RAW: i32 = 101;
const CAN_RAW_FD_FRAMES: i32 = 5;

struct RecvBufs {
    frames: [[u8; CANFD_MTU]; BATCH],
    control: [[u8; 64]; BATCH],
}

pub(crate) struct SocketCanBackend {
    ifname: String,
    sock: CanSocket,
    fd: RawFd,
    event: OwnedFd,
    fd_enabled: bool,
    kernel_drops: AtomicU64,
    link: Mutex<Option<String>>,
    bufs: Mutex<Box<RecvBufs>>,
}

fn os_err(context: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Os { context, source }
}

impl SocketCanBackend {
    pub fn open(ifname: &str, config: &BusConfig) -> Result<Self> {
        let sock = CanSocket::open(ifname).map_err(|e| explain_open_error(ifname, e))?;
        let o = &sock;
        let ctx = |what: &str| format!("setting {what} on {ifname}");
        if config.fd {
            o.set_socket_option_int(SOL_CAN_RAW, CAN_RAW_FD_FRAMES, 1).map_err(|e| Error::Os {
                context: format!("enabling CAN FD on {ifname} (is its MTU 72? ip link set {ifname} mtu 72)"),
                source: e,
            })?;
        }
        o.set_recv_own_msgs(config.receive_own).map_err(os_err(ctx("CAN_RAW_RECV_OWN_MSGS")))?;
        o.set_error_filter(CAN_ERR_MASK).map_err(os_err(ctx("CAN_RAW_ERR_FILTER")))?;
        o.set_recv_timestamp(true).map_err(os_err(ctx("SO_TIMESTAMPNS")))?;
        o.set_socket_option_int(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1).map_err(os_err(ctx("SO_RXQ_OVFL")))?;
        if o.set_socket_option_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF_BYTES).is_err() {
            // Not root: the kernel caps this at net.core.rmem_max.
            let _ = o.set_socket_option_int(libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF_BYTES);
        }
        let fd = sock.as_raw_fd();
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(Error::Os { context: "eventfd".into(), source: io::Error::last_os_error() });
        }
        // SAFETY: efd is a fresh descriptor owned by nobody else.
        let event = unsafe { OwnedFd::from_raw_fd(efd) };
        let backend = SocketCanBackend {
            ifname: ifname.to_string(),
            sock,
            fd,
            event,
            fd_enabled: config.fd,
            kernel_drops: AtomicU64::new(0),
            link: Mutex::new(None),
            // SAFETY: plain byte arrays; all-zero is a valid value.
            bufs: Mutex::new(Box::new(unsafe { zeroed() })),
        };
        if !backend.is_up() {
            *backend.link.lock() = Some(format!("{ifname} is down"));
        }
        Ok(backend)
    }

    /// `IFF_UP` of the interface, read with `SIOCGIFFLAGS`.
    fn is_up(&self) -> bool {
        // SAFETY: ifreq is plain data; the name is NUL-terminated (IFNAMSIZ checked at parse).
        unsafe {
            let mut req: libc::ifreq = zeroed();
            for (d, s) in req.ifr_name.iter_mut().zip(self.ifname.bytes()) {
                *d = s as libc::c_char;
            }
            if libc::ioctl(self.fd, libc::SIOCGIFFLAGS as _, &mut req) < 0 {
                return false;
            }
            (req.ifr_ifru.ifru_flags as i32 & libc::IFF_UP) != 0
        }
    }

    /// What a failed send means: `Ok` after a short sleep when the queue
    /// is full (or the call was interrupted) and `deadline` is not reached,
    /// else the error to report.
    fn send_error(&self, e: io::Error, deadline: Instant) -> Result<()> {
        match e.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => {
                if Instant::now() >= deadline {
                    return Err(Error::SendTimeout);
                }
                std::thread::sleep(Duration::from_micros(200));
                Ok(())
            }
            Some(libc::ENETDOWN) => {
                *self.link.lock() = Some(format!("{} is down", self.ifname));
                Err(Error::InterfaceDown(self.ifname.clone()))
            }
            Some(libc::ENODEV) | Some(libc::ENXIO) => Err(Error::InterfaceDown(format!("{} (removed)", self.ifname))),
            _ => Err(Error::Os { context: format!("sending on {}", self.ifname), source: e }),
        }
    }

    fn poll(&self, timeout: Duration) -> io::Result<(bool, bool)> {
        let mut fds = [
            libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.event.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // ppoll, not poll: engine deadlines (a 2 ms J1939 CTS turnaround)
        // need better than poll's whole milliseconds, which wake early and spin.
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: fds is a valid array of 2 pollfd, ts a valid timespec; no signal mask.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok((false, false));
            }
            return Err(e);
        }
        Ok((fds[0].revents != 0, fds[1].revents != 0))
    }
}

fn explain_open_error(ifname: &str, e: io::Error) -> Error {
    let context = match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) => format!(
            "opening {ifname}: this kernel has no SocketCAN support (load the 'can' and 'can_raw' modules, \
             or use a virtual channel such as \"virtual:test\")"
        ),
        Some(libc::ENODEV) => format!(
            "opening {ifname}: no such CAN interface (create one with: ip link add {ifname} type vcan && ip link set up {ifname})"
        ),
        _ => format!("opening {ifname}"),
    };
    // socketcan reports a missing interface as an error without errno; say the same thing.
    if e.raw_os_error().is_none() && e.to_string().to_lowercase().contains("no such device") {
        return Error::Os { context: format!("opening {ifname}: no such CAN interface"), source: e };
    }
    Error::Os { context, source: e }
}

/// Decodes one frame as the kernel wrote it (`struct can_frame` or `struct canfd_frame`).
pub(crate) fn decode(buf: &[u8]) -> Option<Frame> {
    if buf.len() != CAN_MTU && buf.len() != CANFD_MTU {
        return None;
    }
    let can_id = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = buf[4] as usize;
    let data = &buf[8..];
    if can_id & ERR_FLAG != 0 {
        let mut d = [0u8; 8];
        d.copy_from_slice(&data[..8]);
        return Some(Frame::Error(ErrorFrame::new(can_id & EFF_MASK, d)));
    }
    let extended = can_id & EFF_FLAG != 0;
    let raw = can_id & if extended { EFF_MASK } else { SFF_MASK };
    let id = make_id(raw, extended).ok()?;
    if buf.len() == CANFD_MTU {
        let flags = buf[5];
        let payload = data.get(..len)?;
        return FdFrame::new(id, payload, flags & CANFD_BRS != 0, flags & CANFD_ESI != 0).ok().map(Frame::Fd);
    }
    if can_id & RTR_FLAG != 0 {
        return CanFrame::new_remote(id, len.min(8)).ok().map(Frame::Can);
    }
    CanFrame::new(id, data.get(..len)?).ok().map(Frame::Can)
}

/// Encodes a frame as the kernel reads it; returns the length used.
pub(crate) fn encode(frame: &Frame, out: &mut [u8; CANFD_MTU]) -> Option<usize> {
    *out = [0; CANFD_MTU];
    let (key, data, n) = match frame {
        Frame::Can(f) => {
            out[4] = f.dlc();
            (f.key(), f.data(), CAN_MTU)
        }
        Frame::Fd(f) => {
            out[4] = f.data().len() as u8;
            out[5] = CANFD_FDF | if f.brs() { CANFD_BRS } else { 0 } | if f.esi() { CANFD_ESI } else { 0 };
            (f.key(), f.data(), CANFD_MTU)
        }
        Frame::Error(_) => return None,
    };
    out[..4].copy_from_slice(&key.to_ne_bytes());
    out[8..8 + data.len()].copy_from_slice(data);
    Some(n)
}

impl Backend for SocketCanBackend {
    fn recv_batch(&self, out: &mut Vec<RxFrame>, timeout: Duration) -> Result<()> {
        if self.link.lock().is_some() {
            if self.is_up() {
                *self.link.lock() = None;
            } else {
                let (_, woke) = self.poll(timeout.min(Duration::from_millis(100))).unwrap_or((false, false));
                if woke {
                    self.drain_event();
                }
                return Ok(());
            }
        }
        let (readable, woke) = self.poll(timeout).map_err(os_err(format!("poll on {}", self.ifname)))?;
        if woke {
            self.drain_event();
        }
        if !readable {
            return Ok(());
        }
        let mut bufs = self.bufs.lock();
        let bufs = &mut **bufs;
        // SAFETY: all-zero is valid for these C structs; every pointer set
        // below points into `bufs`, which outlives the recvmmsg call.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iov[i].iov_base = bufs.frames[i].as_mut_ptr().cast();
            iov[i].iov_len = CANFD_MTU;
            let h = &mut msgs[i].msg_hdr;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
            h.msg_control = bufs.control[i].as_mut_ptr().cast();
            h.msg_controllen = bufs.control[i].len();
        }
        // SAFETY: msgs/iov/bufs are valid for BATCH entries as set up above.
        let n = unsafe {
            libc::recvmmsg(self.fd, msgs.as_mut_ptr(), BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(()),
                Some(libc::ENETDOWN) => {
                    *self.link.lock() = Some(format!("{} is down", self.ifname));
                    Ok(())
                }
                Some(libc::ENODEV) => {
                    *self.link.lock() = Some(format!("{} was removed", self.ifname));
                    Ok(())
                }
                _ => Err(Error::Os { context: format!("receiving on {}", self.ifname), source: e }),
            };
        }
        // Read the clock only for a frame without a kernel timestamp (each
        // read is a syscall where the clocksource has no vDSO, e.g. HPET in a VM).
        let mut fallback_ts = None;
        for (m, buf) in msgs.iter().zip(bufs.frames.iter()).take(n as usize) {
            let len = m.msg_len as usize;
            let Some(frame) = decode(&buf[..len.min(CANFD_MTU)]) else {
                continue;
            };
            let (ts, drops) = read_cmsgs(&m.msg_hdr);
            if let Some(d) = drops {
                self.kernel_drops.store(u64::from(d), Ordering::Relaxed);
            }
            out.push(RxFrame {
                frame,
                timestamp: ts.unwrap_or_else(|| *fallback_ts.get_or_insert_with(epoch_now)),
                // raw_rcv: MSG_CONFIRM this socket sent it, MSG_DONTROUTE another local one
                origin: if m.msg_hdr.msg_flags & libc::MSG_CONFIRM != 0 {
                    Origin::Own
                } else if m.msg_hdr.msg_flags & libc::MSG_DONTROUTE != 0 {
                    Origin::Host
                } else {
                    Origin::Bus
                },
            });
        }
        Ok(())
    }

    fn send(&self, frame: &Frame, timeout: Duration) -> Result<()> {
        if matches!(frame, Frame::Fd(_)) && !self.fd_enabled {
            return Err(Error::Unsupported("CAN FD frame on a socket opened without fd=True".into()));
        }
        let mut buf = [0u8; CANFD_MTU];
        let n = encode(frame, &mut buf).ok_or_else(|| Error::Unsupported("error frames cannot be sent".into()))?;
        let deadline = Instant::now() + timeout;
        loop {
            // SAFETY: buf is valid for n bytes.
            let r = unsafe { libc::send(self.fd, buf.as_ptr().cast(), n, libc::MSG_DONTWAIT) };
            if r == n as isize {
                return Ok(());
            }
            self.send_error(io::Error::last_os_error(), deadline)?;
        }
    }

    /// One `sendmmsg(2)` per up to [`BATCH`] frames. The `timeout` is for a
    /// full transmit queue and restarts whenever frames went out.
    fn send_many(&self, frames: &[Frame], timeout: Duration) -> (usize, Result<()>) {
        let mut done = 0;
        let mut deadline = Instant::now() + timeout;
        while done < frames.len() {
            let mut bufs = [[0u8; CANFD_MTU]; BATCH];
            // SAFETY: iovec and mmsghdr are plain C structs; all-zero is valid.
            let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            let mut k = 0;
            for (f, buf) in frames[done..].iter().zip(bufs.iter_mut()) {
                if matches!(f, Frame::Fd(_)) && !self.fd_enabled {
                    break;
                }
                let Some(n) = encode(f, buf) else { break };
                iovs[k] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: n };
                k += 1;
            }
            if k == 0 {
                // The next frame cannot be sent at all: `send` says why.
                match self.send(&frames[done], timeout) {
                    Ok(()) => {
                        done += 1;
                        continue;
                    }
                    Err(e) => return (done, Err(e)),
                }
            }
            for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()).take(k) {
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: msgs[..k] point at iovs[..k], which point into bufs;
            // all outlive the call.
            let r = unsafe { libc::sendmmsg(self.fd, msgs.as_mut_ptr(), k as u32, libc::MSG_DONTWAIT) };
            if r > 0 {
                done += r as usize;
                deadline = Instant::now() + timeout;
                continue;
            }
            let e = if r == 0 { io::Error::from_raw_os_error(libc::EAGAIN) } else { io::Error::last_os_error() };
            if let Err(e) = self.send_error(e, deadline) {
                return (done, Err(e));
            }
        }
        (done, Ok(()))
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to our eventfd.
        unsafe {
            libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    fn set_prefilter(&self, filters: Option<&[Filter]>) {
        let o = &self.sock;
        let _ = match filters {
            None => o.set_filter_accept_all(),
            Some([]) => o.set_filter_drop_all(),
            Some(fs) => {
                let kf: Vec<CanFilter> =
                    fs.iter()
                        .map(|f| {
                            if f.inverted {
                                CanFilter::new_inverted(f.id, f.mask)
                            } else {
                                CanFilter::new(f.id, f.mask)
                            }
                        })
                        .collect();
                o.set_filters(&kf)
            }
        };
    }

    fn backend_drops(&self) -> u64 {
        self.kernel_drops.load(Ordering::Relaxed)
    }

    fn link_down(&self) -> Option<String> {
        self.link.lock().clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fd: true,
            // SO_TIMESTAMPNS: the kernel's receive time, not the controller's.
            hardware_timestamps: false,
            // The rate is set with `ip link ... bitrate` (netlink, root).
            bitrate_control: false,
            periodic_offload: true,
            state_injection: false,
            kernel_stacks: KernelStacks { j1939: true, isotp: true },
        }
    }

    fn periodic(&self, frames: &[Frame], period: Duration) -> Option<Result<Box<dyn PeriodicOffload>>> {
        Some(BcmTask::open(&self.ifname, frames.to_vec(), period).map(|t| Box::new(t) as Box<dyn PeriodicOffload>))
    }

    fn kernel_j1939_active(&self) -> bool {
        kernel_j1939_active(&self.ifname)
    }

    fn host_timestamps(&self) -> bool {
        true // SO_TIMESTAMPNS, or epoch_now() at reception without it
    }
}

impl SocketCanBackend {
    fn drain_event(&self) {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a valid u64 from our non-blocking eventfd.
        unsafe {
            libc::read(self.event.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
        }
    }
}

/// Reads `SCM_TIMESTAMPNS` (epoch seconds) and `SO_RXQ_OVFL` (cumulative drops).
fn read_cmsgs(h: &libc::msghdr) -> (Option<f64>, Option<u32>) {
    let mut ts = None;
    let mut drops = None;
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_* walk within it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let hdr = &*c;
            if hdr.cmsg_level == libc::SOL_SOCKET {
                if hdr.cmsg_type == libc::SCM_TIMESTAMPNS
                    && hdr.cmsg_len as usize >= libc::CMSG_LEN(size_of::<libc::timespec>() as u32) as usize
                {
                    let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    ts = Some(t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9);
                } else if hdr.cmsg_type == libc::SO_RXQ_OVFL && hdr.cmsg_len as usize >= libc::CMSG_LEN(4) as usize {
                    drops = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
                }
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    (ts, drops)
}

/// Where the kernel lists its CAN receivers; the J1939 stack's entry
/// (mask/value `80000000/c0000000`, ident `j1939`) is in the filter list.
const RCVLIST_FIL: &str = "/proc/net/can/rcvlist_fil";

/// Whether the Linux kernel's J1939 stack (net/can/j1939) is active on
/// `ifname`: it registers one receiver per interface while any `CAN_J1939`
/// socket is bound there (j1939_netdev_start), and only then can it send
/// TP/ETP frames on it. Unknown (procfs unreadable): `true`, the safe answer
/// for the CTS turnaround (canx_core::j1939::transport, "CTS turnaround").
pub fn kernel_j1939_active(ifname: &str) -> bool {
    match std::fs::read_to_string(RCVLIST_FIL) {
        Ok(text) => rcvlist_has(&text, ifname, "j1939"),
        Err(_) => true,
    }
}

/// Whether a `/proc/net/can/rcvlist_*` listing has a receiver of `ident` on
/// `ifname` (rows: device, can_id, can_mask, function, userdata, matches, ident).
fn rcvlist_has(text: &str, ifname: &str, ident: &str) -> bool {
    text.lines().any(|line| {
        let mut cols = line.split_whitespace();
        cols.next() == Some(ifname) && cols.next_back() == Some(ident)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use canx_core::frame::make_id;

    #[test]
    fn rcvlist_parsing() {
        // As printed by a Debian 6.1 kernel with a CAN_J1939 socket bound to
        // vcan0 (net/can/proc.c, can_print_rcvlist).
        let text = "\nreceive list 'rx_fil':\n  (any: no entry)\n  device   can_id   can_mask      function          userdata       matches  ident\n   vcan0  80000000  c0000000  000000001fa65897  00000000439d53b4         0  j1939\n  (vcan1: no entry)\n";
        assert!(rcvlist_has(text, "vcan0", "j1939"));
        assert!(!rcvlist_has(text, "vcan1", "j1939"));
        assert!(!rcvlist_has(text, "vcan", "j1939"));
        assert!(!rcvlist_has(text, "vcan0", "raw"));
    }

    #[test]
    fn encode_decode_roundtrip() {
        let frames = [
            Frame::Can(CanFrame::new(make_id(0x123, false).unwrap(), &[1, 2, 3]).unwrap()),
            Frame::Can(CanFrame::new(make_id(0x1234_5678, true).unwrap(), &[0xFF; 8]).unwrap()),
            Frame::Can(CanFrame::new_remote(make_id(0x7FF, false).unwrap(), 4).unwrap()),
            Frame::Fd(FdFrame::new(make_id(0x1, true).unwrap(), &[9; 64], true, false).unwrap()),
            Frame::Fd(FdFrame::new(make_id(0x2, false).unwrap(), &[9; 12], false, true).unwrap()),
        ];
        for f in frames {
            let mut buf = [0u8; CANFD_MTU];
            let n = encode(&f, &mut buf).unwrap();
            assert_eq!(decode(&buf[..n]), Some(f));
        }
        assert_eq!(decode(&[0u8; 10]), None);
        let mut bad = [0u8; CAN_MTU];
        bad[4] = 9; // len > 8 from a broken driver
        assert_eq!(decode(&bad), None);
    }

    /// Whatever a driver hands up, decoding never panics and never yields an invalid frame.
    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            let mut buf = [0u8; CANFD_MTU];
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let len = if x & 1 == 0 { CAN_MTU } else { CANFD_MTU };
            if let Some(f) = decode(&buf[..len]) {
                let mut out = [0u8; CANFD_MTU];
                if let Some(n) = encode(&f, &mut out) {
                    assert_eq!(decode(&out[..n]), Some(f));
                }
            }
        }
    }
}
