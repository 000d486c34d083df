//! The slcan backend: a Lawicel serial-line CAN adapter (CANable, CANtact,
//! USBtin, CAN232/CANUSB) or the Linux `slcan` line discipline on a serial
//! port, through the `serialport` crate (Linux, Windows, macOS; built
//! without libudev).
//!
//! The wire codec is `canx_core::slcan` (sans-IO, fuzzed). Here: a reader
//! thread (`canx-slcan-<port>`) makes large reads, splits and classifies the
//! lines and puts frames into a bounded queue that counts what it drops;
//! `recv_batch` takes from that queue. Sends write whole lines under a
//! lock, many frames per `write` in `send_many`. Malformed, partial and
//! unknown lines are counted ([`Backend::counters`]), never fatal; the next
//! good line is always read.
//!
//! Scheme `slcan`: `channel="slcan:PORT[@UART_BAUD][,OPTION=VALUE...]"`,
//! e.g. `"slcan:/dev/ttyACM0"`, `"slcan:COM3"`,
//! `"slcan:/dev/ttyUSB0@115200,dialect=lawicel"`. Options:
//! - `dialect=canable|lawicel|usbtin|kernel` (default `canable`): what the
//!   adapter answers and what `S7` means (`canx_core::slcan::Dialect`);
//! - `baud=N`: the UART rate (same as `@N`; default 115200, ignored by
//!   USB CDC adapters);
//! - `bitrate=N`: the CAN bit rate (default: the bus's `baudrate`/`bitrate`);
//! - `btr=HEX`: custom bit timing registers instead of `S<n>` (4 hex digits
//!   SJA1000 BTR0/BTR1 for `lawicel`/`kernel`, 6 MCP2515 CNF1-3 for `usbtin`);
//! - `data_bitrate=N`: CAN FD data bit rate (`canable`: `Y1/Y2/Y4/Y5`);
//! - `timestamps=0|1`: `Z0`/`Z1` millisecond receive timestamps
//!   (`lawicel`, `usbtin`), mapped to epoch seconds.
//!
//! Open: `C`, `S<n>` (or `s<regs>`), [`Y<n>`], [`Z<n>`], [`M0`/`M1`], `O` or
//! `L` (canio `silent`); no sleeps. Dialects that reply (`lawicel`,
//! `usbtin`) have each reply checked with a timeout, and their `\r`/`z`/`Z`
//! after frames limit the frames in flight ([`ACK_WINDOW`]). `loopback`
//! (own messages) is emulated: slcan adapters do not echo. A port that
//! disappears (unplugged, the pty's other side closed) makes sends fail
//! with `InterfaceDown`, the bus state BUS_OFF with the reason in
//! `link_down`, and the receive thread stop after its error limit.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use canx_core::slcan::{
    encode_frame, open_commands, Ack, Command, Decoder, DecoderStats, Dialect, EncodeError, Line, OpenConfig,
    TimestampUnwrapper, MAX_COMMAND, MAX_FRAME_LINE,
};
use canx_core::Frame;
use parking_lot::{Condvar, Mutex};
use serialport::SerialPort;

use super::{usb_description, AvailableChannel, Backend, BusConfig, Capabilities, Scheme};
use crate::runtime::queue::BoundedQueue;
use crate::runtime::{epoch_now, Error, Origin, Result, RxFrame};

/// The `slcan` entry of [`super::SCHEMES`].
pub(super) const SCHEME: Scheme = Scheme {
    name: "slcan",
    default: false,
    check: |name| Options::parse(name).map(|_| ()),
    open: |name, config| Ok(Arc::new(SlcanBackend::open(name, config)?)),
    available: usb_serial_ports,
};

/// Received frames the queue between the reader thread and the receive
/// thread holds before it drops (and counts) the newest.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Bytes asked of the port per read.
const READ_SIZE: usize = 64 * 1024;
/// Frames sent but not yet acknowledged, in dialects that acknowledge.
pub const ACK_WINDOW: u32 = 8;
/// Without an acknowledgement for this long, frames in flight are taken as
/// lost (counted in `slcan_ack_lost`): a wrong dialect never blocks sends.
const ACK_STALE: Duration = Duration::from_millis(250);
/// How long a reply to an open command may take (dialects that reply).
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest single wait of a read or write on the port. On Windows the
/// port's two handles share their timeouts and synchronous reads hold up
/// writes, so it is short there.
#[cfg(windows)]
const IO_SLICE: Duration = Duration::from_millis(5);
#[cfg(not(windows))]
const IO_SLICE: Duration = Duration::from_millis(20);
#[cfg(not(windows))]
const READ_SLICE: Duration = Duration::from_millis(100);
/// Extra time to finish a line already partly written when a send's
/// timeout ends, so that the adapter never sees half a line.
const LINE_GRACE: Duration = Duration::from_secs(1);
/// Default UART rate (python-can's `ttyBaudrate`).
pub const DEFAULT_UART_BAUD: u32 = 115_200;

/// A parsed `slcan:` channel name.
#[derive(Clone, Debug, PartialEq)]
struct Options {
    port: String,
    uart_baud: u32,
    dialect: Dialect,
    bitrate: Option<u32>,
    bit_timing: Option<([u8; 3], u8)>,
    data_bitrate: Option<u32>,
    timestamps: Option<bool>,
}

impl Options {
    fn parse(name: &str) -> Result<Options> {
        let bad = |what: String| Error::BadChannel(format!("slcan channel {name:?}: {what}"));
        let mut parts = name.split(',');
        let head = parts.next().unwrap_or("");
        let (port, baud) = match head.rsplit_once('@') {
            Some((p, b)) => (p, Some(b)),
            None => (head, None),
        };
        if port.trim().is_empty() {
            return Err(bad("no serial port (slcan:/dev/ttyACM0, slcan:COM3)".into()));
        }
        let number = |key: &str, v: &str| -> Result<u32> {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(format!("{key}={v:?} is not a positive integer")))
        };
        let mut o = Options {
            port: port.to_string(),
            uart_baud: DEFAULT_UART_BAUD,
            dialect: Dialect::CANABLE,
            bitrate: None,
            bit_timing: None,
            data_bitrate: None,
            timestamps: None,
        };
        if let Some(b) = baud {
            o.uart_baud = number("@", b)?;
        }
        for opt in parts {
            let (k, v) = opt.split_once('=').ok_or_else(|| bad(format!("option {opt:?} is not KEY=VALUE")))?;
            match k.trim() {
                "dialect" => {
                    o.dialect = Dialect::from_name(v.trim())
                        .ok_or_else(|| bad(format!("unknown dialect {v:?} (canable, lawicel, usbtin, kernel)")))?
                }
                "baud" => o.uart_baud = number(k, v)?,
                "bitrate" => o.bitrate = Some(number(k, v)?),
                "data_bitrate" => o.data_bitrate = Some(number(k, v)?),
                "timestamps" => {
                    o.timestamps = Some(match v.trim() {
                        "1" | "on" | "true" => true,
                        "0" | "off" | "false" => false,
                        _ => return Err(bad(format!("timestamps={v:?}: use 0 or 1"))),
                    })
                }
                "btr" => {
                    let v = v.trim();
                    let ok = (v.len() == 4 || v.len() == 6) && v.bytes().all(|c| c.is_ascii_hexdigit());
                    if !ok {
                        return Err(bad(format!("btr={v:?}: 4 hex digits (BTR0 BTR1) or 6 (CNF1 CNF2 CNF3)")));
                    }
                    let mut regs = [0u8; 3];
                    for (i, r) in regs.iter_mut().enumerate().take(v.len() / 2) {
                        *r = u8::from_str_radix(&v[2 * i..2 * i + 2], 16).unwrap_or(0);
                    }
                    o.bit_timing = Some((regs, (v.len() / 2) as u8));
                }
                other => {
                    return Err(bad(format!(
                        "unknown option {other:?} (dialect, baud, bitrate, btr, data_bitrate, timestamps)"
                    )))
                }
            }
        }
        Ok(o)
    }
}

/// USB serial ports that exist now (any of them may be an slcan adapter;
/// other serial ports are not listed).
fn usb_serial_ports() -> Vec<AvailableChannel> {
    let Ok(ports) = serialport::available_ports() else {
        return Vec::new();
    };
    let mut out: Vec<AvailableChannel> = ports
        .into_iter()
        .filter_map(|p| match p.port_type {
            serialport::SerialPortType::UsbPort(u) => {
                let desc = usb_description(
                    u.vid,
                    u.pid,
                    u.serial_number.as_deref(),
                    u.manufacturer.as_deref(),
                    u.product.as_deref(),
                );
                Some(AvailableChannel::new(p.port_name, format!("USB serial port (slcan?) {desc}")))
            }
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

enum Inbound {
    Frame(RxFrame),
    Wake,
}

/// Acknowledgement bookkeeping (dialects that acknowledge frames).
struct AckState {
    /// Frames written and not yet acknowledged.
    outstanding: u32,
    /// When the last acknowledgement came (or the window was last empty).
    last_progress: Instant,
    /// While opening: the replies (`true` OK, `false` refused) in order.
    replies: Option<VecDeque<bool>>,
}

/// What the reader thread and the senders share.
struct Shared {
    stop: AtomicBool,
    gone: Mutex<Option<String>>,
    drops: AtomicU64,
    decoder: Mutex<DecoderStats>,
    ack: Mutex<AckState>,
    ack_changed: Condvar,
    refused: AtomicU64,
    ack_lost: AtomicU64,
    /// CAN FD frames read on a bus opened without `fd` (dropped, as a
    /// classic SocketCAN socket never sees them).
    fd_ignored: AtomicU64,
}

pub(crate) struct SlcanBackend {
    port_name: String,
    dialect: Dialect,
    fd: bool,
    receive_own: bool,
    timestamps: bool,
    /// `None` once closed ([`Backend::close`]).
    writer: Mutex<Option<Box<dyn SerialPort>>>,
    inbox: Arc<BoundedQueue<Inbound>>,
    shared: Arc<Shared>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

fn open_error(port: &str, e: serialport::Error) -> Error {
    let source: io::Error = e.into();
    let hint = match source.kind() {
        io::ErrorKind::PermissionDenied => {
            " (permission denied: on Linux add yourself to the 'dialout' group, or a udev rule; see README, \"USB adapters: slcan\")"
        }
        io::ErrorKind::NotFound => " (no such serial port)",
        _ => "",
    };
    Error::Os { context: format!("opening serial port {port}{hint}"), source }
}

impl SlcanBackend {
    pub fn open(name: &str, config: &BusConfig) -> Result<SlcanBackend> {
        let o = Options::parse(name)?;
        let open_cfg = OpenConfig {
            bitrate: o.bitrate.unwrap_or(config.bitrate),
            bit_timing: o.bit_timing,
            data_bitrate: o.data_bitrate.or(config.data_bitrate.filter(|_| config.fd)),
            fd: config.fd,
            listen_only: config.silent,
            timestamps: o.timestamps,
        };
        let commands = open_commands(&o.dialect, &open_cfg).map_err(|e| {
            Error::Unsupported(format!(
                "slcan:{}: {e} (dialect {}; another dialect=, or btr= for custom bit timing)",
                o.port, o.dialect.name
            ))
        })?;
        let writer =
            serialport::new(&o.port, o.uart_baud).timeout(IO_SLICE).open().map_err(|e| open_error(&o.port, e))?;
        #[allow(unused_mut)]
        let mut reader = writer.try_clone().map_err(|e| open_error(&o.port, e))?;
        #[cfg(not(windows))]
        reader.set_timeout(READ_SLICE).map_err(|e| open_error(&o.port, e))?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            gone: Mutex::new(None),
            drops: AtomicU64::new(0),
            decoder: Mutex::new(DecoderStats::default()),
            ack: Mutex::new(AckState {
                outstanding: 0,
                last_progress: Instant::now(),
                replies: (o.dialect.ack != Ack::None).then(VecDeque::new),
            }),
            ack_changed: Condvar::new(),
            refused: AtomicU64::new(0),
            ack_lost: AtomicU64::new(0),
            fd_ignored: AtomicU64::new(0),
        });
        let inbox = Arc::new(BoundedQueue::new(QUEUE_CAPACITY));
        let thread = {
            let shared = shared.clone();
            let tx = inbox.clone();
            let timestamps = o.timestamps == Some(true);
            let fd = config.fd;
            std::thread::Builder::new()
                .name(format!("canx-slcan-{}", o.port.rsplit(['/', '\\']).next().unwrap_or("")))
                .spawn(move || read_loop(reader, &shared, &tx, timestamps, fd))
                .map_err(|e| Error::Os { context: "starting the slcan reader thread".into(), source: e })?
        };
        let backend = SlcanBackend {
            port_name: o.port.clone(),
            dialect: o.dialect,
            fd: config.fd,
            receive_own: config.receive_own,
            timestamps: o.timestamps == Some(true),
            writer: Mutex::new(Some(writer)),
            inbox,
            shared,
            reader: Mutex::new(Some(thread)),
        };
        // On error the backend is dropped, which stops the reader thread.
        backend.run_open_sequence(commands.as_slice())?;
        Ok(backend)
    }

    /// Writes the open commands. Dialects without replies: one write, no
    /// waits. Dialects with replies: one command at a time, each reply
    /// awaited for [`REPLY_TIMEOUT`] (the reply to `C` is not checked: a
    /// closed Lawicel channel refuses it).
    fn run_open_sequence(&self, commands: &[Command]) -> Result<()> {
        let text = |c: &Command| {
            let mut b = [0u8; MAX_COMMAND];
            let n = c.encode(&mut b);
            b[..n].to_vec()
        };
        if self.dialect.ack == Ack::None {
            let bytes: Vec<u8> = commands.iter().flat_map(text).collect();
            return self.write_bytes(&bytes, &[bytes.len()], Instant::now() + REPLY_TIMEOUT).1;
        }
        for (i, c) in commands.iter().enumerate() {
            let bytes = text(c);
            self.write_bytes(&bytes, &[bytes.len()], Instant::now() + REPLY_TIMEOUT).1?;
            let shown = String::from_utf8_lossy(&bytes[..bytes.len() - 1]).into_owned();
            match (self.wait_reply(Instant::now() + REPLY_TIMEOUT), i) {
                (_, 0) | (Some(true), _) => {}
                (Some(false), _) => {
                    return Err(Error::Unsupported(format!(
                        "slcan:{}: the adapter refused {shown:?} (BEL reply)",
                        self.port_name
                    )))
                }
                (None, _) => {
                    if let Some(reason) = self.gone() {
                        return Err(Error::InterfaceDown(reason));
                    }
                    return Err(Error::Unsupported(format!(
                        "slcan:{}: no reply to {shown:?} within {:?}; dialect {} expects replies \
                         (CANable firmware never replies: dialect=canable)",
                        self.port_name, REPLY_TIMEOUT, self.dialect.name
                    )));
                }
            }
        }
        // From now on replies are acknowledgements of frames.
        self.shared.ack.lock().replies = None;
        Ok(())
    }

    fn wait_reply(&self, deadline: Instant) -> Option<bool> {
        let mut ack = self.shared.ack.lock();
        loop {
            if let Some(r) = ack.replies.as_mut().and_then(VecDeque::pop_front) {
                return Some(r);
            }
            if self.shared.gone.lock().is_some() {
                return None;
            }
            if self.shared.ack_changed.wait_until(&mut ack, deadline).timed_out() {
                return ack.replies.as_mut().and_then(VecDeque::pop_front);
            }
        }
    }

    fn gone(&self) -> Option<String> {
        self.shared.gone.lock().as_ref().map(|why| format!("slcan:{} ({why})", self.port_name))
    }

    /// Waits until up to `want` frames may be written (dialects that
    /// acknowledge); returns how many (0 only at `deadline`).
    fn take_credit(&self, want: usize, deadline: Instant) -> usize {
        if self.dialect.ack == Ack::None {
            return want;
        }
        let mut ack = self.shared.ack.lock();
        loop {
            let free = ACK_WINDOW.saturating_sub(ack.outstanding) as usize;
            if free > 0 {
                if ack.outstanding == 0 {
                    // The staleness clock starts with the first frame in flight.
                    ack.last_progress = Instant::now();
                }
                let n = free.min(want);
                ack.outstanding += n as u32;
                return n;
            }
            if ack.last_progress.elapsed() >= ACK_STALE {
                // The adapter stopped acknowledging (or never does): count and go on.
                self.shared.ack_lost.fetch_add(u64::from(ack.outstanding), Ordering::Relaxed);
                ack.outstanding = 0;
                ack.last_progress = Instant::now();
                continue;
            }
            let until = deadline.min(ack.last_progress + ACK_STALE);
            if self.shared.ack_changed.wait_until(&mut ack, until).timed_out() && Instant::now() >= deadline {
                return 0;
            }
        }
    }

    /// Gives back credit for frames taken but not written.
    fn return_credit(&self, n: usize) {
        if self.dialect.ack != Ack::None && n > 0 {
            let mut ack = self.shared.ack.lock();
            ack.outstanding = ack.outstanding.saturating_sub(n as u32);
        }
    }

    /// Writes `bytes`, made of lines ending at the offsets `ends`. Returns
    /// how many lines were written whole and the outcome. A line begun when
    /// `deadline` passes is finished (up to [`LINE_GRACE`] more).
    fn write_bytes(&self, bytes: &[u8], ends: &[usize], deadline: Instant) -> (usize, Result<()>) {
        if let Some(reason) = self.gone() {
            return (0, Err(Error::InterfaceDown(reason)));
        }
        let mut guard = self.writer.lock();
        let Some(port) = guard.as_mut() else {
            return (0, Err(Error::Closed));
        };
        let mut off = 0;
        let lines_done = |off: usize| ends.iter().take_while(|&&e| e <= off).count();
        while off < bytes.len() {
            match port.write(&bytes[off..]) {
                Ok(n) => off += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    let why = format!("write failed: {e}");
                    self.set_gone(why);
                    return (lines_done(off), Err(Error::InterfaceDown(self.gone().unwrap_or_default())));
                }
            }
            if off < bytes.len() && Instant::now() >= deadline {
                let done = lines_done(off);
                if off == 0 || ends.contains(&off) {
                    return (done, Err(Error::SendTimeout));
                }
                let line_end = ends.get(done).copied().unwrap_or(bytes.len());
                return match self.finish_line(&mut **port, &bytes[off..line_end], Instant::now() + LINE_GRACE) {
                    Ok(()) => (done + 1, Err(Error::SendTimeout)),
                    Err(e) => (done, Err(e)),
                };
            }
        }
        (ends.len(), Ok(()))
    }

    fn finish_line(&self, port: &mut dyn SerialPort, mut rest: &[u8], deadline: Instant) -> Result<()> {
        while !rest.is_empty() {
            match port.write(rest) {
                Ok(n) => rest = &rest[n.min(rest.len())..],
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    self.set_gone(format!("write failed: {e}"));
                    return Err(Error::InterfaceDown(self.gone().unwrap_or_default()));
                }
            }
            if !rest.is_empty() && Instant::now() >= deadline {
                return Err(Error::SendTimeout);
            }
        }
        Ok(())
    }

    fn set_gone(&self, why: String) {
        let mut g = self.shared.gone.lock();
        if g.is_none() {
            *g = Some(why);
        }
        drop(g);
        let _ = self.inbox.try_push(Inbound::Wake);
        self.shared.ack_changed.notify_all();
    }

    fn encode(&self, frame: &Frame, out: &mut Vec<u8>) -> Result<()> {
        if matches!(frame, Frame::Fd(_)) && !self.fd {
            return Err(Error::Unsupported("CAN FD frame on a bus opened without fd=True".into()));
        }
        let mut line = [0u8; MAX_FRAME_LINE];
        let n = encode_frame(frame, &self.dialect, &mut line).map_err(|e| match e {
            EncodeError::ErrorFrame => Error::Unsupported("error frames cannot be sent".into()),
            EncodeError::NoFd => Error::Unsupported(format!(
                "CAN FD frame on slcan dialect {} (CANable 2.0 firmware: dialect=canable)",
                self.dialect.name
            )),
        })?;
        out.extend_from_slice(&line[..n]);
        Ok(())
    }

    /// `loopback`: slcan adapters do not echo, so the sent frame is
    /// delivered here as the bus's own message.
    fn echo_own(&self, frames: &[Frame]) {
        if !self.receive_own {
            return;
        }
        let timestamp = epoch_now();
        for f in frames {
            let rx = RxFrame { frame: *f, timestamp, origin: Origin::Own };
            if self.inbox.try_push(Inbound::Frame(rx)).is_err() {
                self.shared.drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl SlcanBackend {
    /// Closes the adapter's channel (`C`, best effort, as the kernel does on
    /// ifdown), stops the reader thread and closes the port. Idempotent.
    fn close_port(&self) {
        if self.gone().is_none()
            && self.write_bytes(b"C\r", &[2], Instant::now() + Duration::from_millis(100)).1.is_ok()
        {
            // tcdrain / FlushFileBuffers: the line leaves before the port closes.
            if let Some(p) = self.writer.lock().as_mut() {
                let _ = p.flush();
            }
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.reader.lock().take() {
            let _ = t.join();
        }
        self.writer.lock().take();
    }
}

impl Drop for SlcanBackend {
    fn drop(&mut self) {
        self.close_port();
    }
}

/// The reader thread: large reads, lines classified by the core decoder,
/// frames into the bounded queue, replies and acknowledgements to the
/// senders. Ends on `stop` or when the port fails (recorded in `gone`).
fn read_loop(mut port: Box<dyn SerialPort>, shared: &Shared, tx: &BoundedQueue<Inbound>, timestamps: bool, fd: bool) {
    let mut buf = vec![0u8; READ_SIZE];
    let mut decoder = Decoder::new();
    let mut clock = DeviceClock::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match port.read(&mut buf) {
            Ok(0) => {
                record_gone(shared, tx, "end of file: the port hung up".into());
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                record_gone(shared, tx, format!("read failed: {e}"));
                return;
            }
        };
        let now = epoch_now();
        let mut acks = 0u32;
        let mut replies: Vec<bool> = Vec::new();
        decoder.feed(&buf[..n], |line| {
            let frame = match line {
                Line::Frame { frame: Frame::Fd(_), .. } if !fd => {
                    shared.fd_ignored.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Line::Frame { frame, timestamp_ms } => {
                    let t = match (timestamps, timestamp_ms) {
                        (true, Some(ms)) => clock.map(ms, now),
                        _ => now,
                    };
                    Some((frame, t))
                }
                Line::Error(e) => Some((Frame::Error(e), now)),
                Line::Ok => {
                    replies.push(true);
                    None
                }
                Line::Refused => {
                    replies.push(false);
                    None
                }
                Line::Sent { .. } => {
                    acks += 1;
                    None
                }
                Line::Other(_) | Line::Malformed(_) => None,
            };
            if let Some((frame, timestamp)) = frame {
                let rx = RxFrame { frame, timestamp, origin: Origin::Bus };
                if tx.try_push(Inbound::Frame(rx)).is_err() {
                    shared.drops.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        *shared.decoder.lock() = decoder.stats();
        if acks > 0 || !replies.is_empty() {
            let mut ack = shared.ack.lock();
            match ack.replies.as_mut() {
                // Opening: every reply answers one command.
                Some(q) => q.extend(replies.iter().copied()),
                // Running: `\r` (Lawicel), `z`/`Z` (USBtin) acknowledge a frame; `\a` refuses one.
                None => {
                    let refused = replies.iter().filter(|ok| !**ok).count() as u64;
                    shared.refused.fetch_add(refused, Ordering::Relaxed);
                    let n = acks + replies.len() as u32;
                    ack.outstanding = ack.outstanding.saturating_sub(n);
                    ack.last_progress = Instant::now();
                }
            }
            drop(ack);
            shared.ack_changed.notify_all();
        }
    }
}

fn record_gone(shared: &Shared, tx: &BoundedQueue<Inbound>, why: String) {
    let mut g = shared.gone.lock();
    if g.is_none() {
        *g = Some(why);
    }
    drop(g);
    let _ = tx.try_push(Inbound::Wake);
    shared.ack_changed.notify_all();
}

/// Maps the adapter's millisecond timestamps (modulo 60000) to epoch
/// seconds: anchored at the host's clock on the first frame, re-anchored
/// when the mapping runs more than 100 ms ahead of the host (frames read in
/// one burst may be stamped up to that much ahead) or more than 1 s behind
/// it (a gap longer than one 60 s wrap, or clock drift).
#[derive(Default)]
struct DeviceClock {
    unwrap: TimestampUnwrapper,
    anchor: Option<(f64, u64)>,
}

impl DeviceClock {
    fn map(&mut self, ms: u16, host_now: f64) -> f64 {
        let dev = self.unwrap.unwrap(ms);
        if let Some((host, at)) = self.anchor {
            let t = host + (dev.saturating_sub(at)) as f64 / 1000.0;
            if t <= host_now + 0.1 && t >= host_now - 1.0 {
                return t;
            }
        }
        self.anchor = Some((host_now, dev));
        host_now
    }
}

impl Backend for SlcanBackend {
    fn recv_batch(&self, out: &mut Vec<RxFrame>, timeout: Duration) -> Result<()> {
        if let Some(reason) = self.gone() {
            // Deliver what was read before the port went away, then fail.
            let before = out.len();
            out.extend(std::iter::from_fn(|| self.inbox.try_pop()).filter_map(|m| match m {
                Inbound::Frame(f) => Some(f),
                Inbound::Wake => None,
            }));
            return if out.len() > before { Ok(()) } else { Err(Error::InterfaceDown(reason)) };
        }
        self.inbox.pop_batch(timeout, 256, |m| {
            if let Inbound::Frame(f) = m {
                out.push(f);
            }
            true
        });
        Ok(())
    }

    fn send(&self, frame: &Frame, timeout: Duration) -> Result<()> {
        let (n, r) = self.send_many(std::slice::from_ref(frame), timeout);
        debug_assert!(n <= 1);
        r
    }

    /// Many lines per `write`; in dialects that acknowledge, at most
    /// [`ACK_WINDOW`] frames in flight. `timeout` restarts whenever frames
    /// went out.
    fn send_many(&self, frames: &[Frame], timeout: Duration) -> (usize, Result<()>) {
        let mut done = 0;
        let mut bytes = Vec::with_capacity(frames.len().min(64) * 32);
        let mut ends = Vec::new();
        while done < frames.len() {
            let deadline = Instant::now() + timeout;
            let credit = self.take_credit(frames.len() - done, deadline);
            if credit == 0 {
                return (done, Err(Error::SendTimeout));
            }
            bytes.clear();
            ends.clear();
            let mut encode_err = None;
            for f in &frames[done..done + credit] {
                if let Err(e) = self.encode(f, &mut bytes) {
                    encode_err = Some(e);
                    break;
                }
                ends.push(bytes.len());
            }
            let (written, r) = if ends.is_empty() { (0, Ok(())) } else { self.write_bytes(&bytes, &ends, deadline) };
            self.return_credit(credit - written);
            self.echo_own(&frames[done..done + written]);
            done += written;
            if let Err(e) = r {
                return (done, Err(e));
            }
            if let Some(e) = encode_err {
                return (done, Err(e));
            }
        }
        (done, Ok(()))
    }

    fn wake(&self) {
        let _ = self.inbox.try_push(Inbound::Wake);
    }

    fn backend_drops(&self) -> u64 {
        self.shared.drops.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.close_port();
    }

    fn link_down(&self) -> Option<String> {
        self.gone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fd: self.dialect.fd,
            hardware_timestamps: self.timestamps,
            bitrate_control: true,
            ..Capabilities::default()
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let d = *self.shared.decoder.lock();
        vec![
            ("slcan_frame_lines", d.frames),
            ("slcan_status_lines", d.errors),
            ("slcan_malformed_lines", d.malformed),
            ("slcan_other_lines", d.other),
            ("slcan_ok_replies", d.ok),
            ("slcan_refused_replies", d.refused),
            ("slcan_tx_acks", d.sent),
            ("slcan_skipped_bytes", d.skipped_bytes),
            ("slcan_tx_refused", self.shared.refused.load(Ordering::Relaxed)),
            ("slcan_ack_lost", self.shared.ack_lost.load(Ordering::Relaxed)),
            ("slcan_fd_ignored", self.shared.fd_ignored.load(Ordering::Relaxed)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_options() {
        let o = Options::parse("/dev/ttyACM0").unwrap();
        assert_eq!((o.port.as_str(), o.uart_baud, o.dialect.name), ("/dev/ttyACM0", 115_200, "canable"));
        let o = Options::parse("COM3@921600,dialect=lawicel,btr=031C,timestamps=1").unwrap();
        assert_eq!((o.port.as_str(), o.uart_baud, o.dialect.name), ("COM3", 921_600, "lawicel"));
        assert_eq!(o.bit_timing, Some(([0x03, 0x1C, 0], 2)));
        assert_eq!(o.timestamps, Some(true));
        let o = Options::parse("/dev/ttyUSB0,dialect=usbtin,btr=01b501,bitrate=83333,data_bitrate=2000000").unwrap();
        assert_eq!((o.bit_timing, o.bitrate, o.data_bitrate), (Some(([1, 0xB5, 1], 3)), Some(83_333), Some(2_000_000)));
        for bad in
            ["", "@115200", "/dev/x@fast", "/dev/x,dialect=pcan", "/dev/x,btr=12", "/dev/x,color=red", "/dev/x,bitrate"]
        {
            assert!(matches!(Options::parse(bad), Err(Error::BadChannel(_))), "{bad}");
        }
    }

    #[test]
    fn device_clock_follows_the_adapter_and_reanchors() {
        let mut c = DeviceClock::default();
        assert_eq!(c.map(59_000, 1000.0), 1000.0);
        // 1.5 s of adapter time across the 60000 wrap, seen 1.6 s later on the host.
        let t = c.map(500, 1001.6);
        assert!((t - 1001.5).abs() < 1e-9, "{t}");
        // 70 s without frames: the wrap is invisible, the mapping falls behind, re-anchored.
        assert_eq!(c.map(1000, 1071.6), 1071.6);
    }

    #[cfg(unix)]
    mod pty {
        use super::*;
        use crate::runtime::{Bus, Channel};
        use canx_core::frame::make_id;
        use canx_core::CanFrame;
        use serialport::TTYPort;

        /// A pty pair: the fake adapter's end and the path canx opens.
        fn pair() -> (TTYPort, String) {
            let (master, slave) = TTYPort::pair().expect("pty pair");
            let path = slave.name().expect("slave path");
            drop(slave); // canx opens the path itself (exclusively)
            (master, path)
        }

        fn read_until(port: &mut TTYPort, want: &[u8], limit: Duration) -> Vec<u8> {
            let deadline = Instant::now() + limit;
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            port.set_timeout(Duration::from_millis(20)).unwrap();
            while Instant::now() < deadline && !got.windows(want.len()).any(|w| w == want) {
                if let Ok(n) = port.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            got
        }

        fn config(path: &str, extra: &str) -> BusConfig {
            let mut c = BusConfig::new(Channel::parse(&format!("slcan:{path}{extra}"), None).unwrap());
            c.bitrate = 500_000;
            c
        }

        fn recv(bus: &SlcanBackend, n: usize) -> Vec<RxFrame> {
            let mut out = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            while out.len() < n && Instant::now() < deadline {
                bus.recv_batch(&mut out, Duration::from_millis(50)).unwrap();
            }
            out
        }

        #[test]
        fn open_sequence_frames_both_ways_garbage_counted_and_hangup() {
            let (mut dev, path) = pair();
            let b = SlcanBackend::open(&path, &config(&path, "")).unwrap();
            let opened = read_until(&mut dev, b"O\r", Duration::from_secs(5));
            assert_eq!(opened, b"C\rS6\rM0\rO\r");

            let f = Frame::Can(CanFrame::new(make_id(0x1AB, false).unwrap(), &[1, 2, 3]).unwrap());
            let e = Frame::Can(CanFrame::new_remote(make_id(0x1234_5678, true).unwrap(), 2).unwrap());
            assert_eq!(b.send_many(&[f, e], Duration::from_secs(1)).0, 2);
            assert_eq!(read_until(&mut dev, b"R123456782\r", Duration::from_secs(5)), b"t1AB3010203\rR123456782\r");

            // Garbage, a partial line closed by CR, CRLF framing, an e line, then good frames.
            dev.write_all(b"t12\rxyz\r\nT1FFFFFFF1AA\r\0t7FF8\rb1231AA\rsp130140\rt0010\r").unwrap();
            let got = recv(&b, 3);
            assert_eq!(got.len(), 3, "{got:?}");
            assert_eq!(got[0].frame, Frame::Can(CanFrame::new(make_id(0x1FFF_FFFF, true).unwrap(), &[0xAA]).unwrap()));
            let Frame::Error(e) = got[1].frame else { panic!("{got:?}") };
            assert_eq!(
                (e.bus_state(), e.rx_error_count(), e.tx_error_count()),
                (Some(canx_core::BusState::ErrorPassive), Some(130), Some(140))
            );
            assert_eq!(got[2].frame, Frame::Can(CanFrame::new(make_id(0x001, false).unwrap(), &[]).unwrap()));
            // The reader adds a read's counts after queueing its frames: wait for them.
            let deadline = Instant::now() + Duration::from_secs(5);
            let counters = loop {
                let c: std::collections::HashMap<_, _> = b.counters().into_iter().collect();
                if c["slcan_frame_lines"] >= 3 || Instant::now() > deadline {
                    break c;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            assert_eq!(counters["slcan_malformed_lines"], 2, "{counters:?}"); // t12, t7FF8 (no data)
            assert_eq!(counters["slcan_other_lines"], 1); // xyz
            assert_eq!(counters["slcan_skipped_bytes"], 2);
            assert_eq!(counters["slcan_fd_ignored"], 1); // b1231AA on a classic bus

            // The adapter goes away: sends fail with InterfaceDown, receive errors, no hang.
            drop(dev);
            let deadline = Instant::now() + Duration::from_secs(5);
            while b.link_down().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(b.link_down().is_some());
            assert!(matches!(b.send(&f, Duration::from_millis(100)), Err(Error::InterfaceDown(_))));
            assert!(matches!(b.recv_batch(&mut Vec::new(), Duration::from_millis(10)), Err(Error::InterfaceDown(_))));
        }

        #[test]
        fn lawicel_replies_are_checked_and_acks_limit_frames_in_flight() {
            let (mut dev, path) = pair();
            let opener = std::thread::spawn(move || {
                // A Lawicel device: `\a` to C (closed), `\r` to the rest.
                let mut seen = Vec::new();
                for reply in [&b"\x07"[..], b"\r", b"\r"] {
                    let before = seen.len();
                    loop {
                        seen.extend(read_until(&mut dev, b"\r", Duration::from_millis(200)));
                        if seen[before..].contains(&b'\r') {
                            break;
                        }
                    }
                    dev.write_all(reply).unwrap();
                }
                (dev, seen)
            });
            let b = SlcanBackend::open(&format!("{path},dialect=lawicel"), &config(&path, ",dialect=lawicel")).unwrap();
            let (mut dev, seen) = opener.join().unwrap();
            assert_eq!(seen, b"C\rS6\rO\r");
            // Without acknowledgements only ACK_WINDOW frames go out, then the send times out...
            let f = Frame::Can(CanFrame::new(make_id(0x10, false).unwrap(), &[0xEE]).unwrap());
            let frames = vec![f; 20];
            let (n, r) = b.send_many(&frames, Duration::from_millis(100));
            assert_eq!((n, r.is_err()), (ACK_WINDOW as usize, true));
            // ...and acknowledgements let the rest through.
            dev.write_all(&b"\r".repeat(ACK_WINDOW as usize)).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let (n, r) = b.send_many(&frames[..4], Duration::from_millis(100));
            assert_eq!((n, r.is_ok()), (4, true));
            // A dead acknowledger is taken as lost after ACK_STALE, never forever.
            let (n, _) = b.send_many(&frames, Duration::from_secs(2));
            assert_eq!(n, 20);
            let counters: std::collections::HashMap<_, _> = b.counters().into_iter().collect();
            assert!(counters["slcan_ack_lost"] >= 4, "{counters:?}");
        }

        #[test]
        fn a_silent_reply_dialect_gives_a_clear_error() {
            let (_dev, path) = pair();
            let t = Instant::now();
            let r = SlcanBackend::open(&format!("{path},dialect=usbtin"), &config(&path, ",dialect=usbtin"));
            let Err(Error::Unsupported(m)) = r else { panic!("{:?}", r.err()) };
            assert!(m.contains("no reply to \"S6\""), "{m}");
            assert!(t.elapsed() < Duration::from_secs(5));
        }

        #[test]
        fn loopback_is_emulated_and_silent_opens_listen_only() {
            let (mut dev, path) = pair();
            let mut cfg = config(&path, ",dialect=kernel");
            cfg.receive_own = true;
            cfg.silent = true;
            let b = SlcanBackend::open(&format!("{path},dialect=kernel"), &cfg).unwrap();
            assert_eq!(read_until(&mut dev, b"L\r", Duration::from_secs(5)), b"C\rS6\rL\r");
            let f = Frame::Can(CanFrame::new(make_id(0x321, false).unwrap(), &[9; 8]).unwrap());
            b.send(&f, Duration::from_secs(1)).unwrap();
            assert!(read_until(&mut dev, b"\r", Duration::from_secs(5)).starts_with(b"t3218"));
            let got = recv(&b, 1);
            assert_eq!((got[0].frame, got[0].origin), (f, Origin::Own));
        }

        #[test]
        fn the_bus_config_data_bitrate_programs_y_unless_the_channel_option_does() {
            // BusConfig::data_bitrate (canx.CAN(data_bitrate=), python-can's) is used with fd.
            let (mut dev, path) = pair();
            let mut cfg = config(&path, "");
            cfg.fd = true;
            cfg.data_bitrate = Some(2_000_000);
            let b = SlcanBackend::open(&path, &cfg).unwrap();
            assert_eq!(read_until(&mut dev, b"O\r", Duration::from_secs(5)), b"C\rS6\rY2\rM0\rO\r");
            drop(b);
            // The channel option wins.
            let (mut dev, path) = pair();
            let b = SlcanBackend::open(&format!("{path},data_bitrate=5000000"), &cfg).unwrap();
            assert_eq!(read_until(&mut dev, b"O\r", Duration::from_secs(5)), b"C\rS6\rY5\rM0\rO\r");
            drop(b);
            // Without fd the data bit rate is not sent (python-can passes it regardless).
            let (mut dev, path) = pair();
            cfg.fd = false;
            let b = SlcanBackend::open(&path, &cfg).unwrap();
            assert_eq!(read_until(&mut dev, b"O\r", Duration::from_secs(5)), b"C\rS6\rM0\rO\r");
            drop(b);
            // A rate the dialect has no Y code for is a clear error naming it.
            let (_dev, path) = pair();
            cfg.fd = true;
            cfg.data_bitrate = Some(3_000_000);
            let Err(Error::Unsupported(msg)) = SlcanBackend::open(&path, &cfg) else { panic!("3 Mbit/s accepted") };
            assert!(msg.contains("3000000"), "{msg}");
        }

        #[test]
        fn a_bus_opens_on_the_scheme() {
            let (mut dev, path) = pair();
            let bus = Bus::open(config(&path, "")).unwrap();
            assert_eq!(read_until(&mut dev, b"O\r", Duration::from_secs(5)), b"C\rS6\rM0\rO\r");
            assert!(bus.capabilities().bitrate_control);
            drop(bus);
            // Closing the bus closes the adapter.
            // serialport reads nothing once the other side hung up (POLLIN|POLLHUP is
            // an error to it), so the rest is read from a plain dup of the descriptor.
            use std::os::fd::{AsRawFd, BorrowedFd};
            // SAFETY: `dev` owns this open descriptor and outlives the borrow (dup'ed at once).
            let fd = unsafe { BorrowedFd::borrow_raw(dev.as_raw_fd()) };
            let mut master = std::fs::File::from(fd.try_clone_to_owned().unwrap());
            let mut closed = Vec::new();
            let _ = master.read_to_end(&mut closed); // ends with EIO after the hang-up
            assert_eq!(closed, b"C\r");
        }
    }
}
