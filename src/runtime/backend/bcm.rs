//! Periodic transmission by the kernel's broadcast manager (`CAN_BCM`,
//! `Documentation/networking/can.rst`, "Broadcast Manager protocol sockets").
//!
//! On SocketCAN, python-can's `send_periodic` is handed to the kernel: one
//! BCM socket per task, a `TX_SETUP` with the frames and the interval, and the
//! kernel's hrtimer sends them in turn with no user-space thread involved (the
//! lowest jitter Linux offers). `duration` becomes a frame count (`ival1` x
//! `count`, then stop); `modify` re-sends `TX_SETUP` with the new frames;
//! `stop` is `TX_DELETE`. This is the SocketCAN backend's
//! [`Backend::periodic`](super::Backend::periodic) offload; backends without
//! one use the runtime's native timer (`drivers::periodic`) instead.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use canx_core::Frame;

use super::socketcan::encode;
use super::PeriodicOffload;
use crate::runtime::{Error, Result};

const TX_SETUP: u32 = 1;
const TX_DELETE: u32 = 2;
const SETTIMER: u32 = 0x0001;
const STARTTIMER: u32 = 0x0002;
const CAN_FD_FRAME: u32 = 0x0800;
const CAN_BCM: i32 = 2;
/// The kernel's limit of frames in one BCM TX op (`MAX_NFRAMES`).
pub const MAX_FRAMES: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct BcmTimeval {
    tv_sec: libc::c_long,
    tv_usec: libc::c_long,
}

/// `struct bcm_msg_head` (`linux/can/bcm.h`); the frames follow it.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct BcmMsgHead {
    opcode: u32,
    flags: u32,
    count: u32,
    ival1: BcmTimeval,
    ival2: BcmTimeval,
    can_id: u32,
    nframes: u32,
}

impl BcmMsgHead {
    /// The header as the kernel reads it: each field written with
    /// `to_ne_bytes` at its `offset_of!`, the padding after `count` (and
    /// any other gap) left zero. Copying the struct's own bytes would read
    /// that padding uninitialised.
    fn to_bytes(self) -> [u8; size_of::<BcmMsgHead>()] {
        fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
            out[at..at + bytes.len()].copy_from_slice(bytes);
        }
        let mut out = [0u8; size_of::<BcmMsgHead>()];
        put(&mut out, offset_of!(BcmMsgHead, opcode), &self.opcode.to_ne_bytes());
        put(&mut out, offset_of!(BcmMsgHead, flags), &self.flags.to_ne_bytes());
        put(&mut out, offset_of!(BcmMsgHead, count), &self.count.to_ne_bytes());
        for (at, t) in [(offset_of!(BcmMsgHead, ival1), self.ival1), (offset_of!(BcmMsgHead, ival2), self.ival2)] {
            put(&mut out, at + offset_of!(BcmTimeval, tv_sec), &t.tv_sec.to_ne_bytes());
            put(&mut out, at + offset_of!(BcmTimeval, tv_usec), &t.tv_usec.to_ne_bytes());
        }
        put(&mut out, offset_of!(BcmMsgHead, can_id), &self.can_id.to_ne_bytes());
        put(&mut out, offset_of!(BcmMsgHead, nframes), &self.nframes.to_ne_bytes());
        out
    }
}

fn timeval(d: Duration) -> BcmTimeval {
    BcmTimeval { tv_sec: d.as_secs() as libc::c_long, tv_usec: d.subsec_micros() as libc::c_long }
}

/// One periodic transmission owned by the kernel.
pub struct BcmTask {
    fd: OwnedFd,
    ifname: String,
    frames: Vec<Frame>,
    period: Duration,
    /// When the timer was last (re)started and how many frames it may send (None: no limit).
    started: Option<(Instant, Option<u64>)>,
}

impl std::fmt::Debug for BcmTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BcmTask").field("ifname", &self.ifname).field("period", &self.period).finish()
    }
}

impl BcmTask {
    /// Opens a BCM socket on `ifname` for sending `frames` in turn, one
    /// every `period`; nothing is sent until [`BcmTask::restart`].
    /// Errors: [`Error::Os`] (no BCM in the kernel: `modprobe can-bcm`; no
    /// such interface), [`Error::Unsupported`] (no frames, more than 256,
    /// error frames, mixed classic and FD frames).
    pub fn open(ifname: &str, frames: Vec<Frame>, period: Duration) -> Result<BcmTask> {
        check_frames(&frames)?;
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::PF_CAN, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, CAN_BCM) };
        if raw < 0 {
            return Err(Error::Os {
                context: format!("opening a CAN_BCM socket for {ifname} (is the can-bcm module loaded?)"),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: raw is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let cname = std::ffi::CString::new(ifname).map_err(|_| Error::BadChannel(format!("{ifname:?}")))?;
        // SAFETY: cname is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(Error::Os {
                context: format!("BCM: no interface {ifname}"),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: sockaddr_can is plain data; all-zero is valid before the fields are set.
        let mut addr: libc::sockaddr_can = unsafe { std::mem::zeroed() };
        addr.can_family = libc::AF_CAN as libc::sa_family_t;
        addr.can_ifindex = ifindex as libc::c_int;
        // SAFETY: addr is a valid sockaddr_can of the size given.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_can).cast(),
                size_of::<libc::sockaddr_can>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(Error::Os {
                context: format!("connecting a BCM socket to {ifname}"),
                source: io::Error::last_os_error(),
            });
        }
        Ok(BcmTask { fd, ifname: ifname.to_string(), frames, period, started: None })
    }

    fn write_op(&self, opcode: u32, flags: u32, count: u32, ival1: Duration, ival2: Duration) -> Result<()> {
        let fd_frames = matches!(self.frames.first(), Some(Frame::Fd(_)));
        let frame_size = if fd_frames { 72 } else { 16 };
        let nframes = if opcode == TX_SETUP { self.frames.len() } else { 0 };
        let head = BcmMsgHead {
            opcode,
            flags: flags | if fd_frames { CAN_FD_FRAME } else { 0 },
            count,
            ival1: timeval(ival1),
            ival2: timeval(ival2),
            can_id: self.frames.first().map(|f| f.key()).unwrap_or(0),
            nframes: nframes as u32,
        };
        let mut buf = vec![0u8; size_of::<BcmMsgHead>() + nframes * frame_size];
        buf[..size_of::<BcmMsgHead>()].copy_from_slice(&head.to_bytes());
        for (i, f) in self.frames.iter().take(nframes).enumerate() {
            let mut one = [0u8; 72];
            encode(f, &mut one).ok_or_else(|| Error::Unsupported("error frames cannot be sent".into()))?;
            let at = size_of::<BcmMsgHead>() + i * frame_size;
            buf[at..at + frame_size].copy_from_slice(&one[..frame_size]);
        }
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(Error::Os { context: format!("BCM on {}", self.ifname), source: io::Error::last_os_error() });
        }
        Ok(())
    }

    /// (Re)starts the timer: the first frame goes out now.
    pub fn restart(&mut self, duration: Option<Duration>) -> Result<()> {
        let (count, ival1, ival2) = match duration {
            Some(d) => {
                let n = (d.as_secs_f64() / self.period.as_secs_f64()).round().max(1.0).min(u32::MAX as f64) as u32;
                (n, self.period, Duration::ZERO)
            }
            None => (0, Duration::ZERO, self.period),
        };
        self.write_op(TX_SETUP, SETTIMER | STARTTIMER, count, ival1, ival2)?;
        self.started = Some((Instant::now(), (count > 0).then_some(u64::from(count))));
        Ok(())
    }

    /// Replaces the frames; the kernel sends them from its next interval on.
    pub fn set_frames(&mut self, frames: Vec<Frame>) -> Result<()> {
        check_frames(&frames)?;
        let restart = self.started.is_some();
        // The op is keyed by can_id and sized at setup: delete and set up again.
        if restart {
            let _ = self.write_op(TX_DELETE, 0, 0, Duration::ZERO, Duration::ZERO);
        }
        self.frames = frames;
        if let Some((since, limit)) = self.started {
            let left = limit.map(|l| l.saturating_sub(self.sent_since(since)));
            match left {
                Some(0) => self.started = None,
                Some(n) => self.restart(Some(self.period.mul_f64(n as f64)))?,
                None => self.restart(None)?,
            }
        }
        Ok(())
    }

    /// Stops sending (`TX_DELETE`). Idempotent.
    pub fn stop(&mut self) {
        if self.started.take().is_some() {
            let _ = self.write_op(TX_DELETE, 0, 0, Duration::ZERO, Duration::ZERO);
        }
    }

    fn sent_since(&self, since: Instant) -> u64 {
        (since.elapsed().as_secs_f64() / self.period.as_secs_f64()) as u64 + 1
    }

    /// Frames sent so far by the current run, estimated from the clock (the
    /// kernel does not report it).
    pub fn sent_estimate(&self) -> u64 {
        match self.started {
            Some((since, limit)) => {
                let n = self.sent_since(since);
                limit.map_or(n, |l| n.min(l))
            }
            None => 0,
        }
    }

    /// Whether the kernel is (probably) still sending: started, and any count not used up.
    pub fn is_running(&self) -> bool {
        match self.started {
            Some((since, Some(limit))) => self.sent_since(since) < limit,
            Some((_, None)) => true,
            None => false,
        }
    }
}

impl PeriodicOffload for BcmTask {
    fn start(&mut self, duration: Option<Duration>) -> Result<()> {
        self.restart(duration)
    }
    fn set_frames(&mut self, frames: Vec<Frame>) -> Result<()> {
        BcmTask::set_frames(self, frames)
    }
    fn stop(&mut self) {
        BcmTask::stop(self)
    }
    fn sent(&self) -> u64 {
        self.sent_estimate()
    }
    fn is_running(&self) -> bool {
        BcmTask::is_running(self)
    }
    fn mechanism(&self) -> &'static str {
        "bcm"
    }
}

impl Drop for BcmTask {
    fn drop(&mut self) {
        self.stop();
    }
}

fn check_frames(frames: &[Frame]) -> Result<()> {
    if frames.is_empty() || frames.len() > MAX_FRAMES {
        return Err(Error::Unsupported(format!("BCM sends 1 to {MAX_FRAMES} frames, not {}", frames.len())));
    }
    let fd = frames.iter().filter(|f| matches!(f, Frame::Fd(_))).count();
    if fd != 0 && fd != frames.len() {
        return Err(Error::Unsupported("a periodic task cannot mix classic and CAN FD frames".into()));
    }
    if frames.iter().any(Frame::is_error) {
        return Err(Error::Unsupported("error frames cannot be sent".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_layout_matches_the_kernel() {
        // linux/can/bcm.h on LP64: 3 x u32, padding, 2 x (2 x long), can_id, nframes = 56 bytes,
        // and the frames start 8-byte aligned right after it.
        assert_eq!(size_of::<BcmMsgHead>(), 56);
        assert_eq!(std::mem::offset_of!(BcmMsgHead, ival1), 16);
        assert_eq!(std::mem::offset_of!(BcmMsgHead, can_id), 48);
    }

    /// Fills a stretch of stack with 0xA5 so that uninitialised bytes of a
    /// later frame show up as 0xA5 rather than as zeros.
    #[inline(never)]
    fn dirty_stack() -> u8 {
        let junk = std::hint::black_box([0xA5u8; 4096]);
        junk[std::hint::black_box(7)]
    }

    #[inline(never)]
    fn head_for_test(opcode: u32) -> [u8; size_of::<BcmMsgHead>()] {
        let head = BcmMsgHead {
            opcode,
            flags: SETTIMER | STARTTIMER,
            count: 3,
            ival1: timeval(Duration::from_micros(1_500_000)),
            ival2: timeval(Duration::from_millis(20)),
            can_id: 0x8000_0123,
            nframes: 2,
        };
        std::hint::black_box(head).to_bytes()
    }

    /// B2: the header is written field by field at the kernel's offsets and
    /// the padding after `count` is zero (it was copied from the struct's
    /// uninitialised padding before).
    #[test]
    fn head_bytes_are_fields_and_zero_padding() {
        dirty_stack();
        let b = head_for_test(TX_SETUP);
        let u32_at = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        let i64_at = |at: usize| i64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
        assert_eq!(u32_at(0), TX_SETUP);
        assert_eq!(u32_at(4), SETTIMER | STARTTIMER);
        assert_eq!(u32_at(8), 3);
        assert_eq!(&b[12..16], &[0, 0, 0, 0], "padding must be zero, not stack garbage");
        assert_eq!((i64_at(16), i64_at(24)), (1, 500_000));
        assert_eq!((i64_at(32), i64_at(40)), (0, 20_000));
        assert_eq!(u32_at(48), 0x8000_0123);
        assert_eq!(u32_at(52), 2);
    }

    #[test]
    fn frame_sets_are_checked() {
        use canx_core::frame::make_id;
        use canx_core::{CanFrame, FdFrame};
        let c = Frame::Can(CanFrame::new(make_id(1, false).unwrap(), &[1]).unwrap());
        let f = Frame::Fd(FdFrame::new(make_id(1, false).unwrap(), &[1; 12], false, false).unwrap());
        assert!(check_frames(&[c, c]).is_ok());
        assert!(check_frames(&[]).is_err());
        assert!(check_frames(&[c, f]).is_err());
        assert!(check_frames(&vec![c; MAX_FRAMES + 1]).is_err());
    }
}
