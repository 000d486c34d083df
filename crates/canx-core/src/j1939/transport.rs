//! The J1939-21 transport protocol (TP, 5.10): BAM and RTS/CTS (CMDT) for
//! 9..=1785 bytes, many sessions at once.
//!
//! [`Transport`] is a sans-IO engine: frames and time in, frames, deadlines
//! and events out. It holds `S` sessions, each with its own 1785-byte buffer;
//! a session is a transfer in one direction between one (SA, DA) pair, so any
//! number of pairs (up to `S`) run in parallel. A send to a pair that is busy
//! is *queued* in a free session slot and starts when the pair is idle (the
//! queue is bounded by `S`; refused sends are counted in [`TransportStats`]).
//!
//! ## Reassembled data without a heap
//! A completed reception is reported as [`TransportEvent::Received`] carrying
//! a [`SessionHandle`] and the metadata (PGN, SA, DA, priority, length). The
//! bytes stay in the session's buffer: read them with
//! [`Transport::received_data`] until the next call of
//! [`Transport::poll_event`] (or [`Transport::release`]), which frees the slot.
//! A completed session whose event has not been polled keeps its slot, so an
//! application that never polls events makes the engine refuse new transfers
//! (Abort reason 2) rather than grow or lose data silently.
//!
//! ## Rules and their sources
//! - Control bytes and timeouts: J1939-21 5.10.3 / 5.10.2.4 (Tr 200 ms,
//!   Th 500 ms, T1 750 ms, T2 1250 ms, T3 1250 ms, T4 1050 ms).
//! - Receiver: answers an RTS only for a *local* destination address (set with
//!   [`Transport::set_local_address`]), as the kernel answers only when a
//!   socket is bound to that DA. Each CTS asks for min(remaining, RTS byte 5,
//!   [`TransportConfig::packets_per_cts`]) packets, as the kernel does with
//!   255. The receiver never sends CTS(0) (hold): its buffer is reserved at
//!   RTS time, and the kernel as sender aborts (reason 8) on CTS(0) followed
//!   by CTS(n) with no DT in between. Th is therefore never needed as a timer.
//! - A second RTS on a pair with an active reception aborts that reception
//!   with reason 1 (already in a session), as the kernel does.
//! - DT checks: a sequence number lower than expected is a duplicate:
//!   ignored and counted by default, as the kernel receiver does (it only
//!   advances on the expected packet), or Abort(8) with
//!   [`TransportConfig::tolerate_duplicates`] off; one beyond the CTS window a bad sequence (reason 7). A gap
//!   inside the window (a lost DT) makes the receiver wait for the end of
//!   the window and send a CTS from the missing packet again (J1939-21
//!   retransmission), at most [`MAX_RETRANSMITS`] times, then Abort(5).
//!   The old window's remaining DTs are ignored meanwhile, and the new CTS
//!   follows DTs, so the kernel's "two CTS without DT" abort is not hit.
//!   BAM has no retransmission: a gap ends the reception (local event).
//!   RTS above 1785 bytes: reason 9; no free session: reason 2;
//!   inconsistent size/packets: 250.
//! - Sender: a CTS while a window is still being sent aborts with reason 4
//!   (J1939-21; the kernel uses 8 for the same case). CTS(0) holds the
//!   transfer (T4); a CTS after the last packet is a retransmit request.
//! - BAM is never aborted on the wire; a broken BAM reception ends with a
//!   local [`TransportEvent::Aborted`]. BAM DT gap: configurable 50..=200 ms,
//!   default 50 ms as the kernel.
//! - CTS turnaround: the receiver may send each CTS [`TransportConfig::cts_delay`]
//!   (default 2 ms) after the RTS or the window's last DT, not at once;
//!   J1939-21 only bounds the response (Tr = 200 ms). The Linux kernel as
//!   sender (net/can/j1939/transport.c) must have processed the loopback echo
//!   of its own RTS (or last DT) before the CTS arrives: a CTS that overtakes
//!   the echo makes it treat the late echo as a second RTS ("connection
//!   exists", Abort 1) or the CTS as a duplicate (Abort 8), and kernels
//!   without the CVE-2026-22997 fix leak the session, so closing the sending
//!   socket hangs. A peer on another machine never overtakes an echo, but a
//!   native receiver on the same vcan or CAN interface does (measured in the
//!   qemu guest: 3 of 90 transfers lost with no delay). Whoever feeds the
//!   RTS decides per reception with [`Turnaround`]: `handle_frame` applies
//!   it; the SocketCAN runtime applies it only while the kernel's J1939
//!   stack is active on the interface (a `CAN_J1939` socket bound there:
//!   its receiver is listed in /proc/net/can/rcvlist_fil), since the kernel
//!   marks none of its TP frames as locally sent (no `MSG_DONTROUTE` on a
//!   raw socket), so the frame itself cannot tell. DTs that arrive before
//!   the delayed CTS is sent are ignored and counted. The same holds in the
//!   other direction: a kernel receiver aborts with reason 5 when our first
//!   DT overtakes the echo of its own CTS, so a sender fed a CTS with
//!   [`Turnaround::Apply`] waits `cts_delay` before its DTs (ETP: its DPO).
//! - Frames of a sent session use the priority given to [`Transport::send`]
//!   (kernel behaviour); CTS/EoMA/Abort sent as a receiver use
//!   [`TransportConfig::priority`] (default 7, J1939-21).

use core::fmt;

use super::id::{frame, J1939Id, Pgn, GLOBAL_ADDRESS, MAX_UNICAST_ADDRESS, NULL_ADDRESS};
use super::Ring;
use crate::frame::{CanFrame, Frame};
use crate::time::{Duration, Instant};

/// Largest TP payload: 255 packets x 7 bytes.
pub const MAX_TP_SIZE: usize = 1785;
/// Smallest payload [`Transport::send`] accepts (8 bytes fit one frame).
pub const MIN_TP_SIZE: usize = 9;
/// Payload bytes per TP.DT packet.
pub const BYTES_PER_PACKET: usize = 7;

/// Response time for requests and TP answers, J1939-21 5.10.2.4.
pub const TR: Duration = Duration::from_millis(200);
/// Hold time: a receiver holding a transfer repeats CTS(0) at least this often.
pub const TH: Duration = Duration::from_millis(500);
/// Receiver: largest gap between two DT packets.
pub const T1: Duration = Duration::from_millis(750);
/// Receiver: CTS sent -> first DT.
pub const T2: Duration = Duration::from_millis(1250);
/// Sender: last DT of a window (or RTS) -> CTS or EoMA.
pub const T3: Duration = Duration::from_millis(1250);
/// Sender: CTS(0) -> next CTS.
pub const T4: Duration = Duration::from_millis(1050);
/// Receiver: retransmission requests per RTS/CTS session before Abort(5)
/// (an engine choice; J1939-21 leaves the limit to the implementation).
pub const MAX_RETRANSMITS: u8 = 2;
/// Default (kernel) and smallest BAM packet gap.
pub const BAM_GAP_MIN: Duration = Duration::from_millis(50);
/// Largest BAM packet gap, J1939-21.
pub const BAM_GAP_MAX: Duration = Duration::from_millis(200);
/// Default receiver turnaround before a CTS ([`TransportConfig::cts_delay`]).
pub const DEFAULT_CTS_DELAY: Duration = Duration::from_millis(2);
/// Largest [`TransportConfig::cts_delay`]: half of Tr, so a delayed CTS is
/// still a timely response (J1939-21 5.10.2.4).
pub const MAX_CTS_DELAY: Duration = Duration::from_millis(100);

/// Whether the CTS of a reception waits [`TransportConfig::cts_delay`],
/// decided per RTS by whoever feeds the frame (see the module doc, "CTS
/// turnaround"). [`Transport::handle_frame`] uses [`Turnaround::Apply`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Turnaround {
    /// The sender may be the Linux kernel's J1939 stack on this machine, or
    /// nothing is known of it: every CTS of the session waits `cts_delay`.
    #[default]
    Apply,
    /// The sender is known not to be (no kernel J1939 socket is bound to the
    /// interface, or it is another engine of this process): CTS at once.
    Skip,
}

/// TP.CM control byte values, J1939-21 5.10.3.
pub mod control {
    pub const RTS: u8 = 16;
    pub const CTS: u8 = 17;
    pub const END_OF_MSG_ACK: u8 = 19;
    pub const BAM: u8 = 32;
    pub const ABORT: u8 = 255;
}

/// Connection abort reasons, J1939-21 5.10.3.5 (codes 10-15 are ETP's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbortReason {
    /// 1: already in one or more connection managed sessions.
    AlreadyInSession,
    /// 2: system resources were needed for another task.
    Resources,
    /// 3: a timeout occurred.
    Timeout,
    /// 4: CTS received while a data transfer was in progress.
    CtsWhileTransfer,
    /// 5: maximum retransmit request limit reached.
    MaxRetransmit,
    /// 6: unexpected data transfer packet.
    UnexpectedDt,
    /// 7: bad sequence number.
    BadSequence,
    /// 8: duplicate sequence number.
    DuplicateSequence,
    /// 9: total message size above 1785 bytes (TP); unexpected DPO (ETP).
    TooLarge,
    /// Any other code (10-15 ETP, 250 "other", reserved values).
    Other(u8),
}

impl AbortReason {
    /// The code on the wire (byte 2 of TP.CM Abort).
    pub const fn code(self) -> u8 {
        match self {
            AbortReason::AlreadyInSession => 1,
            AbortReason::Resources => 2,
            AbortReason::Timeout => 3,
            AbortReason::CtsWhileTransfer => 4,
            AbortReason::MaxRetransmit => 5,
            AbortReason::UnexpectedDt => 6,
            AbortReason::BadSequence => 7,
            AbortReason::DuplicateSequence => 8,
            AbortReason::TooLarge => 9,
            AbortReason::Other(c) => c,
        }
    }
    pub const fn from_code(code: u8) -> Self {
        match code {
            1 => AbortReason::AlreadyInSession,
            2 => AbortReason::Resources,
            3 => AbortReason::Timeout,
            4 => AbortReason::CtsWhileTransfer,
            5 => AbortReason::MaxRetransmit,
            6 => AbortReason::UnexpectedDt,
            7 => AbortReason::BadSequence,
            8 => AbortReason::DuplicateSequence,
            9 => AbortReason::TooLarge,
            c => AbortReason::Other(c),
        }
    }
    /// Code 250, "any other reason".
    pub const OTHER: AbortReason = AbortReason::Other(250);
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortReason::AlreadyInSession => f.write_str("already in a session"),
            AbortReason::Resources => f.write_str("no resources"),
            AbortReason::Timeout => f.write_str("timeout"),
            AbortReason::CtsWhileTransfer => f.write_str("CTS during data transfer"),
            AbortReason::MaxRetransmit => f.write_str("retransmit limit reached"),
            AbortReason::UnexpectedDt => f.write_str("unexpected data packet"),
            AbortReason::BadSequence => f.write_str("bad sequence number"),
            AbortReason::DuplicateSequence => f.write_str("duplicate sequence number"),
            // One code, two meanings: the frame (TP.CM or ETP.CM) tells which.
            AbortReason::TooLarge => f.write_str("message larger than 1785 bytes (TP) or unexpected DPO (ETP)"),
            AbortReason::Other(c) => write!(f, "abort reason {c}"),
        }
    }
}

/// A decoded TP.CM payload (8 bytes; bytes 6-8 are always the PGN, LE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TpCm {
    /// Request to send: size in bytes, total packets, max packets per CTS
    /// (0xFF: no limit).
    Rts { size: u16, packets: u8, max_per_cts: u8, pgn: Pgn },
    /// Clear to send `count` packets (0 = hold) starting at `next`.
    Cts { count: u8, next: u8, pgn: Pgn },
    /// End of message acknowledgment.
    EndOfMsgAck { size: u16, packets: u8, pgn: Pgn },
    /// Broadcast announce message.
    Bam { size: u16, packets: u8, pgn: Pgn },
    /// Connection abort.
    Abort { reason: AbortReason, pgn: Pgn },
}

/// Why a TP.CM payload was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmError {
    /// Not 8 bytes.
    Length,
    /// Unknown control byte.
    Control(u8),
    /// PGN bytes above 18 bits.
    Pgn,
}

impl fmt::Display for CmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmError::Length => f.write_str("TP.CM must be 8 bytes"),
            CmError::Control(c) => write!(f, "unknown TP.CM control byte {c}"),
            CmError::Pgn => f.write_str("PGN out of range"),
        }
    }
}

impl core::error::Error for CmError {}

impl TpCm {
    /// Parses untrusted bytes; never panics.
    pub fn parse(d: &[u8]) -> Result<TpCm, CmError> {
        let d: &[u8; 8] = d.try_into().map_err(|_| CmError::Length)?;
        let pgn = Pgn::from_le_bytes([d[5], d[6], d[7]]).ok_or(CmError::Pgn)?;
        let size = u16::from_le_bytes([d[1], d[2]]);
        Ok(match d[0] {
            control::RTS => TpCm::Rts { size, packets: d[3], max_per_cts: d[4], pgn },
            control::CTS => TpCm::Cts { count: d[1], next: d[2], pgn },
            control::END_OF_MSG_ACK => TpCm::EndOfMsgAck { size, packets: d[3], pgn },
            control::BAM => TpCm::Bam { size, packets: d[3], pgn },
            control::ABORT => TpCm::Abort { reason: AbortReason::from_code(d[1]), pgn },
            c => return Err(CmError::Control(c)),
        })
    }

    /// The 8 bytes on the wire (reserved bytes 0xFF).
    pub fn emit(&self) -> [u8; 8] {
        let (head, pgn): ([u8; 5], Pgn) = match *self {
            TpCm::Rts { size, packets, max_per_cts, pgn } => {
                let s = size.to_le_bytes();
                ([control::RTS, s[0], s[1], packets, max_per_cts], pgn)
            }
            TpCm::Cts { count, next, pgn } => ([control::CTS, count, next, 0xFF, 0xFF], pgn),
            TpCm::EndOfMsgAck { size, packets, pgn } => {
                let s = size.to_le_bytes();
                ([control::END_OF_MSG_ACK, s[0], s[1], packets, 0xFF], pgn)
            }
            TpCm::Bam { size, packets, pgn } => {
                let s = size.to_le_bytes();
                ([control::BAM, s[0], s[1], packets, 0xFF], pgn)
            }
            TpCm::Abort { reason, pgn } => ([control::ABORT, reason.code(), 0xFF, 0xFF, 0xFF], pgn),
        };
        let p = pgn.to_le_bytes();
        [head[0], head[1], head[2], head[3], head[4], p[0], p[1], p[2]]
    }

    pub fn pgn(&self) -> Pgn {
        match *self {
            TpCm::Rts { pgn, .. }
            | TpCm::Cts { pgn, .. }
            | TpCm::EndOfMsgAck { pgn, .. }
            | TpCm::Bam { pgn, .. }
            | TpCm::Abort { pgn, .. } => pgn,
        }
    }
}

/// Number of TP.DT packets for `size` bytes.
pub const fn packets_for(size: usize) -> usize {
    size.div_ceil(BYTES_PER_PACKET)
}

/// Engine settings. Build with `TransportConfig::default()` and adjust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Priority of CTS, EoMA and Abort frames sent as a receiver (0-7; default 7).
    pub priority: u8,
    /// Receiver: most packets asked for in one CTS (1-255; default 255, as the kernel).
    pub packets_per_cts: u8,
    /// Sender: RTS byte 5, most packets per CTS the sender accepts (1-255,
    /// 255 = no limit; default 255).
    pub max_packets_per_cts: u8,
    /// Sender: gap between BAM packets, 50..=200 ms (default 50 ms).
    pub bam_gap: Duration,
    /// Receive BAM transfers from any source (default `true`).
    pub receive_bam: bool,
    /// Receiver: ignore (and count) a DT whose sequence number was already
    /// received, as the kernel does, instead of Abort(8) (default `true`).
    pub tolerate_duplicates: bool,
    /// Receiver: turnaround before each CTS, 0..=[`MAX_CTS_DELAY`] (default
    /// [`DEFAULT_CTS_DELAY`]). See the module doc, "CTS turnaround".
    pub cts_delay: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            priority: 7,
            packets_per_cts: 255,
            max_packets_per_cts: 255,
            bam_gap: BAM_GAP_MIN,
            receive_bam: true,
            tolerate_duplicates: true,
            cts_delay: DEFAULT_CTS_DELAY,
        }
    }
}

/// An invalid [`TransportConfig`] field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    Priority,
    PacketsPerCts,
    BamGap,
    CtsDelay,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::Priority => "priority must be 0-7",
            ConfigError::PacketsPerCts => "packets per CTS must be 1-255",
            ConfigError::BamGap => "BAM gap must be 50-200 ms",
            ConfigError::CtsDelay => "CTS delay must be 0-100 ms",
        })
    }
}

impl core::error::Error for ConfigError {}

/// Why [`Transport::send`] refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Fewer than 9 bytes: send a single frame instead.
    TooShort,
    /// More than 1785 bytes (ETP territory).
    TooLong,
    /// Priority above 7.
    Priority,
    /// Source above 253, or destination 254.
    Address,
    /// Every session slot is in use (active or queued).
    NoSession,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::TooShort => "TP needs at least 9 bytes",
            SendError::TooLong => "TP carries at most 1785 bytes",
            SendError::Priority => "priority must be 0-7",
            SendError::Address => "source must be 0-253 and destination not 254",
            SendError::NoSession => "no free transport session",
        })
    }
}

impl core::error::Error for SendError {}

/// Names one session slot at one point of its life (stale handles are
/// recognized and refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionHandle {
    pub(super) index: u16,
    pub(super) generation: u16,
}

impl SessionHandle {
    /// The slot index, 0..S.
    pub fn index(&self) -> usize {
        self.index as usize
    }
}

/// Direction of a session as seen by this engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Transmit,
    Receive,
}

/// Metadata of a completed reception; the bytes are in
/// [`Transport::received_data`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Received {
    pub handle: SessionHandle,
    /// Priority of the RTS or BAM frame that opened the session.
    pub priority: u8,
    pub pgn: Pgn,
    pub source: u8,
    /// A local address, or 255 for BAM.
    pub destination: u8,
    /// Message size in bytes (9..=1785 for TP, up to the buffer size for ETP).
    pub len: u32,
}

/// What the engine reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportEvent {
    /// A message was reassembled.
    Received(Received),
    /// A send completed: EoMA received (CMDT) or last BAM packet handed out.
    Sent { handle: SessionHandle, pgn: Pgn, source: u8, destination: u8, size: u32 },
    /// A session (or a refused RTS/BAM, then `handle` is `None`) ended without
    /// success. `by_peer`: the peer sent the Abort; otherwise this engine
    /// aborted (and sent an Abort unless the session was a BAM).
    Aborted {
        handle: Option<SessionHandle>,
        direction: Direction,
        pgn: Pgn,
        source: u8,
        destination: u8,
        reason: AbortReason,
        by_peer: bool,
    },
}

/// Counters of things the engine refused or dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// `send` calls refused for lack of a session slot.
    pub rejected_sends: u32,
    /// `send` calls that had to wait for a busy (SA, DA) pair.
    pub queued_sends: u32,
    /// RTS or BAM refused for lack of a session slot.
    pub refused_sessions: u32,
    /// TP frames that matched no session or were malformed.
    pub ignored_frames: u32,
    /// Events dropped because the event queue was full.
    pub dropped_events: u32,
    /// Control frames dropped because the transmit queue was full.
    pub dropped_frames: u32,
    /// Duplicate DT packets ignored ([`TransportConfig::tolerate_duplicates`]).
    pub duplicate_packets: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    /// A send waiting for its (SA, DA) pair to become idle.
    Queued,
    /// Sending BAM DTs, the next at `Timer::Send`.
    TxBam,
    /// RTS sent, window done or CTS(0) held: waiting for CTS (T3 or T4).
    TxWaitCts,
    /// Sending DTs `next..=window_end` as fast as polled.
    TxSending,
    /// All packets sent, waiting for EoMA (T3).
    TxWaitEoma,
    RxBam,
    RxCmdt,
    /// Reception complete; its event is queued.
    Completed,
    /// Reception complete; its event was handed out, data readable.
    Held,
}

#[derive(Clone, Copy, Debug)]
enum Timer {
    /// Protocol timeout (T1..T4) of the current state.
    Timeout = 0,
    /// Next BAM packet (sender), or the delayed CTS (receiver).
    Send = 1,
}
const TIMERS: usize = 2;

struct Session {
    state: State,
    bam: bool,
    priority: u8,
    pgn: Pgn,
    source: u8,
    destination: u8,
    size: u16,
    packets: u16,
    /// Next sequence number to send or expect (1-based; may reach packets + 1).
    next: u16,
    /// Last sequence number of the current CTS window (inclusive).
    window_end: u16,
    /// RTS byte 5 (receiver side).
    max_per_cts: u8,
    /// Receiver: retransmission requests made so far.
    retransmits: u8,
    /// Receiver: a retransmission was asked for; DTs other than `next` are
    /// the rest of the old window and are ignored.
    resync: bool,
    /// Receiver: turnaround before each CTS, fixed at the RTS.
    cts_delay: Duration,
    order: u32,
    generation: u16,
    timers: [Option<Instant>; TIMERS],
    buf: [u8; MAX_TP_SIZE],
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("pgn", &self.pgn)
            .field("source", &self.source)
            .field("destination", &self.destination)
            .field("size", &self.size)
            .field("next", &self.next)
            .finish()
    }
}

impl Session {
    const fn new() -> Self {
        Session {
            state: State::Free,
            bam: false,
            priority: 7,
            pgn: Pgn::TP_DT,
            source: 0,
            destination: 0,
            size: 0,
            packets: 0,
            next: 1,
            window_end: 0,
            max_per_cts: 255,
            retransmits: 0,
            resync: false,
            cts_delay: Duration::ZERO,
            order: 0,
            generation: 0,
            timers: [None; TIMERS],
            buf: [0; MAX_TP_SIZE],
        }
    }
    fn is_tx_active(&self) -> bool {
        matches!(self.state, State::TxBam | State::TxWaitCts | State::TxSending | State::TxWaitEoma)
    }
    fn is_rx_active(&self) -> bool {
        matches!(self.state, State::RxBam | State::RxCmdt)
    }
    fn direction(&self) -> Direction {
        if self.is_rx_active() || matches!(self.state, State::Completed | State::Held) {
            Direction::Receive
        } else {
            Direction::Transmit
        }
    }
    fn data(&self) -> &[u8] {
        &self.buf[..usize::from(self.size).min(MAX_TP_SIZE)]
    }
}

/// The TP engine with `S` sessions and queues of `Q` control frames and `Q`
/// events. See the module doc for the rules and for how received data is read.
///
/// Driving it: after every `handle_frame`, `handle_timeout` or `send`, call
/// `poll_transmit(now)` until it returns `None` and `poll_event()` until it
/// returns `None`; then sleep until `poll_timeout()` (or the next frame).
pub struct Transport<const S: usize, const Q: usize = 32> {
    config: TransportConfig,
    sessions: [Session; S],
    ctrl: Ring<CanFrame, Q>,
    events: Ring<TransportEvent, Q>,
    local: [u32; 8],
    held: Option<usize>,
    order: u32,
    rr: usize,
    stats: TransportStats,
}

impl<const S: usize, const Q: usize> fmt::Debug for Transport<S, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("config", &self.config)
            .field("active", &self.sessions.iter().filter(|s| s.state != State::Free).count())
            .field("stats", &self.stats())
            .finish()
    }
}

impl<const S: usize, const Q: usize> Transport<S, Q> {
    /// A new engine with no local address. Errors: the first invalid
    /// [`TransportConfig`] field.
    pub fn new(config: TransportConfig) -> Result<Self, ConfigError> {
        if config.priority > 7 {
            return Err(ConfigError::Priority);
        }
        if config.packets_per_cts == 0 || config.max_packets_per_cts == 0 {
            return Err(ConfigError::PacketsPerCts);
        }
        if config.bam_gap < BAM_GAP_MIN || config.bam_gap > BAM_GAP_MAX {
            return Err(ConfigError::BamGap);
        }
        if config.cts_delay > MAX_CTS_DELAY {
            return Err(ConfigError::CtsDelay);
        }
        Ok(Transport {
            config,
            sessions: core::array::from_fn(|_| Session::new()),
            ctrl: Ring::new(),
            events: Ring::new(),
            local: [0; 8],
            held: None,
            order: 0,
            rr: 0,
            stats: TransportStats::default(),
        })
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Marks `address` as one of ours (or not): an RTS (and its DTs) is
    /// answered only when its DA is local. Sends need no local address.
    /// 254 and 255 are never local.
    pub fn set_local_address(&mut self, address: u8, local: bool) {
        if address > MAX_UNICAST_ADDRESS {
            return;
        }
        let (w, b) = (usize::from(address / 32), address % 32);
        if local {
            self.local[w] |= 1 << b;
        } else {
            self.local[w] &= !(1 << b);
        }
    }

    pub fn is_local_address(&self, address: u8) -> bool {
        address <= MAX_UNICAST_ADDRESS && self.local[usize::from(address / 32)] & (1 << (address % 32)) != 0
    }

    /// Counters of refused and dropped items.
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            dropped_events: self.stats.dropped_events + self.events.dropped(),
            dropped_frames: self.stats.dropped_frames + self.ctrl.dropped(),
            ..self.stats
        }
    }

    /// Number of session slots in use (active, queued or holding data).
    pub fn sessions_in_use(&self) -> usize {
        self.sessions.iter().filter(|s| s.state != State::Free).count()
    }

    /// Queues `data` (9..=1785 bytes) for `destination`: BAM if it is 255,
    /// RTS/CTS otherwise. The transfer starts at the next `poll_transmit`
    /// once no other send of the same (SA, DA) pair is active; the returned
    /// handle appears in the `Sent`/`Aborted` event. Errors: [`SendError`].
    pub fn send(
        &mut self,
        priority: u8,
        pgn: Pgn,
        source: u8,
        destination: u8,
        data: &[u8],
    ) -> Result<SessionHandle, SendError> {
        if data.len() < MIN_TP_SIZE {
            return Err(SendError::TooShort);
        }
        if data.len() > MAX_TP_SIZE {
            return Err(SendError::TooLong);
        }
        if priority > 7 {
            return Err(SendError::Priority);
        }
        if source > MAX_UNICAST_ADDRESS || destination == NULL_ADDRESS {
            return Err(SendError::Address);
        }
        let Some(i) = self.free_slot() else {
            self.stats.rejected_sends = self.stats.rejected_sends.saturating_add(1);
            return Err(SendError::NoSession);
        };
        let busy = self.sessions.iter().any(|o| {
            (o.is_tx_active() || o.state == State::Queued) && o.source == source && o.destination == destination
        });
        if busy {
            self.stats.queued_sends = self.stats.queued_sends.saturating_add(1);
        }
        self.order = self.order.wrapping_add(1);
        let order = self.order;
        let s = &mut self.sessions[i];
        s.state = State::Queued;
        s.bam = destination == GLOBAL_ADDRESS;
        s.priority = priority;
        s.pgn = pgn;
        s.source = source;
        s.destination = destination;
        s.size = data.len() as u16;
        s.packets = packets_for(data.len()) as u16;
        s.next = 1;
        s.window_end = 0;
        s.order = order;
        s.timers = [None; TIMERS];
        s.buf[..data.len()].copy_from_slice(data);
        Ok(SessionHandle { index: i as u16, generation: s.generation })
    }

    /// Feeds one received frame. Only TP.CM and TP.DT frames are looked at;
    /// others are ignored, so every bus frame may be passed in.
    pub fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        if let Some((id, data)) = J1939Id::from_frame(frame) {
            self.handle_j1939(now, &id, data, Turnaround::Apply);
        }
    }

    /// As [`Transport::handle_frame`] for an already decoded J1939 message;
    /// `turnaround` applies if it is an RTS that opens a reception.
    pub fn handle_j1939(&mut self, now: Instant, id: &J1939Id, data: &[u8], turnaround: Turnaround) {
        if id.source > MAX_UNICAST_ADDRESS {
            if id.pgn == Pgn::TP_CM || id.pgn == Pgn::TP_DT {
                self.ignored();
            }
            return;
        }
        if id.pgn == Pgn::TP_CM {
            match TpCm::parse(data) {
                Ok(cm) => self.on_cm(now, id, cm, turnaround),
                Err(_) => self.ignored(),
            }
        } else if id.pgn == Pgn::TP_DT {
            self.on_dt(now, id, data);
        }
    }

    /// Runs the timers that expired at `now`. Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..S {
            let s = &mut self.sessions[i];
            if s.state == State::RxCmdt && s.timers[Timer::Send as usize].is_some_and(|t| t <= now) {
                s.timers[Timer::Send as usize] = None;
                self.emit_window_cts(i);
            }
            let s = &self.sessions[i];
            let Some(t) = s.timers[Timer::Timeout as usize] else { continue };
            if t > now {
                continue;
            }
            match s.state {
                State::RxBam => self.abort(i, AbortReason::Timeout, false),
                State::RxCmdt | State::TxWaitCts | State::TxWaitEoma => self.abort(i, AbortReason::Timeout, true),
                _ => self.sessions[i].timers[Timer::Timeout as usize] = None,
            }
        }
    }

    /// The next frame to send at `now`, if any: queued control frames first,
    /// then the RTS/BAM of sends whose pair became idle, then DT packets
    /// (round robin over sessions; BAM packets only once their gap elapsed).
    /// Changes after `send`, `handle_frame`, `handle_timeout` and with `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        if let Some(f) = self.ctrl.pop() {
            return Some(f);
        }
        self.start_queued(now);
        if let Some(f) = self.ctrl.pop() {
            return Some(f);
        }
        for k in 0..S {
            let i = (self.rr + k) % S;
            if let Some(f) = self.next_dt(now, i) {
                self.rr = (i + 1) % S;
                return Some(f);
            }
        }
        None
    }

    /// The next event. A `Received` event's data stays readable through
    /// [`Transport::received_data`] until the next call of this method.
    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        if let Some(i) = self.held.take() {
            if self.sessions[i].state == State::Held {
                self.free(i);
            }
        }
        let ev = self.events.pop()?;
        if let TransportEvent::Received(r) = ev {
            let i = r.handle.index();
            if let Some(s) = self.sessions.get_mut(i) {
                if s.generation == r.handle.generation && s.state == State::Completed {
                    s.state = State::Held;
                    self.held = Some(i);
                }
            }
        }
        Some(ev)
    }

    /// The earliest deadline (protocol timeout or next BAM packet), or
    /// `None` when nothing is timed. Changes after every other method.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions.iter().flat_map(|s| s.timers.iter().flatten()).min().copied()
    }

    /// The bytes of a completed reception, while its slot still holds them
    /// (see the module doc); `None` for a stale handle.
    pub fn received_data(&self, handle: SessionHandle) -> Option<&[u8]> {
        let s = self.sessions.get(handle.index())?;
        (s.generation == handle.generation && matches!(s.state, State::Completed | State::Held)).then(|| s.data())
    }

    /// Frees a completed reception's slot early. Harmless for stale handles.
    pub fn release(&mut self, handle: SessionHandle) {
        if let Some(s) = self.sessions.get(handle.index()) {
            if s.generation == handle.generation && matches!(s.state, State::Completed | State::Held) {
                self.free(handle.index());
            }
        }
    }

    /// Aborts every session with `peer`, sending Abort(reason) for CMDT ones.
    /// For the application (e.g. when a local address is lost).
    pub fn abort_peer(&mut self, peer: u8, reason: AbortReason) {
        for i in 0..S {
            let s = &self.sessions[i];
            let involved = (s.is_tx_active() && s.destination == peer) || (s.is_rx_active() && s.source == peer);
            if involved {
                let bam = s.bam;
                self.abort(i, reason, !bam);
            }
        }
    }

    // ---- receive side ----

    fn on_cm(&mut self, now: Instant, id: &J1939Id, cm: TpCm, turnaround: Turnaround) {
        // CTS, EoMA and Abort only ever match sessions this engine opened,
        // so they need no local-address check (a send may use any SA).
        let specific = !id.is_global();
        match cm {
            TpCm::Bam { size, packets, pgn } if id.is_global() && self.config.receive_bam => {
                self.on_bam(now, id, size, packets, pgn)
            }
            TpCm::Rts { size, packets, max_per_cts, pgn } if specific && self.is_local_address(id.destination) => {
                self.on_rts(now, id, size, packets, max_per_cts, pgn, turnaround)
            }
            TpCm::Cts { count, next, pgn } if specific => self.on_cts(now, id, count, next, pgn, turnaround),
            TpCm::EndOfMsgAck { pgn, .. } if specific => self.on_eoma(id, pgn),
            TpCm::Abort { reason, pgn } if specific => self.on_abort(id, reason, pgn),
            _ => {}
        }
    }

    fn on_bam(&mut self, now: Instant, id: &J1939Id, size: u16, packets: u8, pgn: Pgn) {
        // A new BAM from a source replaces its unfinished one.
        if let Some(i) = self.find(|s| s.state == State::RxBam && s.source == id.source) {
            self.abort(i, AbortReason::AlreadyInSession, false);
        }
        let size_us = usize::from(size);
        if size_us == 0 || size_us > MAX_TP_SIZE || usize::from(packets) != packets_for(size_us) {
            let reason = if size_us > MAX_TP_SIZE { AbortReason::TooLarge } else { AbortReason::OTHER };
            self.refused(Direction::Receive, pgn, id.source, GLOBAL_ADDRESS, reason);
            return;
        }
        let Some(i) = self.free_slot() else {
            self.stats.refused_sessions = self.stats.refused_sessions.saturating_add(1);
            self.refused(Direction::Receive, pgn, id.source, GLOBAL_ADDRESS, AbortReason::Resources);
            return;
        };
        self.open_rx(i, id, true, size, pgn, 255);
        self.sessions[i].timers[Timer::Timeout as usize] = Some(now + T1);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_rts(
        &mut self,
        now: Instant,
        id: &J1939Id,
        size: u16,
        packets: u8,
        max_per_cts: u8,
        pgn: Pgn,
        turnaround: Turnaround,
    ) {
        let (peer, me) = (id.source, id.destination);
        if let Some(i) = self.find(|s| s.state == State::RxCmdt && s.source == peer && s.destination == me) {
            // Kernel (transport.c, j1939_xtp_rx_rts_session_active): a second
            // RTS on an active pair cancels the session with reason 1.
            self.abort(i, AbortReason::AlreadyInSession, true);
            return;
        }
        let size_us = usize::from(size);
        let reason = if size_us > MAX_TP_SIZE {
            Some(AbortReason::TooLarge)
        } else if size_us == 0 || usize::from(packets) != packets_for(size_us) || max_per_cts == 0 {
            Some(AbortReason::OTHER)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.send_cm(me, peer, TpCm::Abort { reason, pgn });
            self.refused(Direction::Receive, pgn, peer, me, reason);
            return;
        }
        let Some(i) = self.free_slot() else {
            self.stats.refused_sessions = self.stats.refused_sessions.saturating_add(1);
            self.send_cm(me, peer, TpCm::Abort { reason: AbortReason::Resources, pgn });
            self.refused(Direction::Receive, pgn, peer, me, AbortReason::Resources);
            return;
        };
        self.open_rx(i, id, false, size, pgn, max_per_cts);
        self.sessions[i].cts_delay = match turnaround {
            Turnaround::Apply => self.config.cts_delay,
            Turnaround::Skip => Duration::ZERO,
        };
        self.send_window_cts(now, i);
    }

    fn open_rx(&mut self, i: usize, id: &J1939Id, bam: bool, size: u16, pgn: Pgn, max_per_cts: u8) {
        let s = &mut self.sessions[i];
        s.state = if bam { State::RxBam } else { State::RxCmdt };
        s.bam = bam;
        s.priority = id.priority;
        s.pgn = pgn;
        s.source = id.source;
        s.destination = id.destination;
        s.size = size;
        s.packets = packets_for(usize::from(size)) as u16;
        s.next = 1;
        s.window_end = 0;
        s.max_per_cts = max_per_cts;
        s.retransmits = 0;
        s.resync = false;
        s.timers = [None; TIMERS];
        // Unused tail bytes of the last packet are not kept.
        s.buf[..usize::from(size)].fill(0xFF);
    }

    /// Opens the next window of receive session `i`, arms T2 and queues its
    /// CTS, at once or after the session's turnaround.
    fn send_window_cts(&mut self, now: Instant, i: usize) {
        let s = &mut self.sessions[i];
        let delay = s.cts_delay;
        let remaining = s.packets + 1 - s.next;
        let count = remaining.min(u16::from(s.max_per_cts)).min(u16::from(self.config.packets_per_cts)).max(1);
        s.window_end = s.next + count - 1;
        s.timers[Timer::Timeout as usize] = Some(now + delay + T2);
        if delay == Duration::ZERO {
            self.emit_window_cts(i);
        } else {
            s.timers[Timer::Send as usize] = Some(now + delay);
        }
    }

    fn emit_window_cts(&mut self, i: usize) {
        let s = &self.sessions[i];
        let (me, peer, pgn) = (s.destination, s.source, s.pgn);
        let (count, next) = ((s.window_end + 1 - s.next) as u8, s.next as u8);
        self.send_cm(me, peer, TpCm::Cts { count, next, pgn });
    }

    fn on_dt(&mut self, now: Instant, id: &J1939Id, data: &[u8]) {
        let found = if id.is_global() {
            self.find(|s| s.state == State::RxBam && s.source == id.source)
        } else {
            self.find(|s| s.state == State::RxCmdt && s.source == id.source && s.destination == id.destination)
        };
        let Some(i) = found else {
            self.ignored();
            return;
        };
        let Some((&seq, payload)) = data.split_first() else {
            self.ignored();
            return;
        };
        let s = &mut self.sessions[i];
        if s.timers[Timer::Send as usize].is_some() {
            // Our CTS is not out yet: the peer cannot have been asked for this.
            self.ignored();
            return;
        }
        let seq = u16::from(seq);
        if seq < s.next && self.config.tolerate_duplicates {
            self.stats.duplicate_packets = self.stats.duplicate_packets.saturating_add(1);
            return;
        }
        if seq != s.next {
            let in_window = seq > s.next && seq <= s.window_end;
            if !s.bam && (s.resync || in_window) {
                // A gap in an RTS/CTS window: let the sender finish the
                // window, then ask again from the missing packet.
                if !s.resync {
                    if s.retransmits >= MAX_RETRANSMITS {
                        self.abort(i, AbortReason::MaxRetransmit, true);
                        return;
                    }
                    s.retransmits += 1;
                    s.resync = true;
                }
                if seq == s.window_end {
                    // The old window is over: what follows the new CTS is new.
                    s.resync = false;
                    self.send_window_cts(now, i);
                } else {
                    s.timers[Timer::Timeout as usize] = Some(now + T1);
                }
                return;
            }
            let reason = if seq < s.next { AbortReason::DuplicateSequence } else { AbortReason::BadSequence };
            let bam = s.bam;
            self.abort(i, reason, !bam);
            return;
        }
        s.resync = false;
        let start = usize::from(seq - 1) * BYTES_PER_PACKET;
        let end = (start + BYTES_PER_PACKET).min(usize::from(s.size));
        let n = payload.len().min(end.saturating_sub(start));
        s.buf[start..start + n].copy_from_slice(&payload[..n]);
        s.next += 1;
        if s.next > s.packets {
            self.complete_rx(i);
        } else if !s.bam && s.next > s.window_end {
            self.send_window_cts(now, i);
        } else {
            s.timers[Timer::Timeout as usize] = Some(now + T1);
        }
    }

    fn complete_rx(&mut self, i: usize) {
        if self.events.is_full() {
            // Nowhere to report the data: tell the sender instead of
            // acknowledging a message nobody will see.
            self.stats.dropped_events = self.stats.dropped_events.saturating_add(1);
            let bam = self.sessions[i].bam;
            self.abort(i, AbortReason::Resources, !bam);
            return;
        }
        let s = &mut self.sessions[i];
        s.state = State::Completed;
        s.timers = [None; TIMERS];
        let r = Received {
            handle: SessionHandle { index: i as u16, generation: s.generation },
            priority: s.priority,
            pgn: s.pgn,
            source: s.source,
            destination: s.destination,
            len: u32::from(s.size),
        };
        if !s.bam {
            let (me, peer, size, packets, pgn) = (s.destination, s.source, s.size, s.packets as u8, s.pgn);
            self.send_cm(me, peer, TpCm::EndOfMsgAck { size, packets, pgn });
        }
        self.events.push_counted(TransportEvent::Received(r));
    }

    // ---- transmit side ----

    fn on_cts(&mut self, now: Instant, id: &J1939Id, count: u8, next: u8, pgn: Pgn, turnaround: Turnaround) {
        let Some(i) = self.find(|s| {
            !s.bam
                && matches!(s.state, State::TxWaitCts | State::TxSending | State::TxWaitEoma)
                && s.source == id.destination
                && s.destination == id.source
        }) else {
            self.ignored();
            return;
        };
        let s = &mut self.sessions[i];
        if s.pgn != pgn {
            self.ignored();
            return;
        }
        if s.state == State::TxSending {
            self.abort(i, AbortReason::CtsWhileTransfer, true);
            return;
        }
        if count == 0 {
            s.state = State::TxWaitCts;
            s.timers[Timer::Timeout as usize] = Some(now + T4);
            return;
        }
        let next = u16::from(next);
        if next == 0 || next > s.packets {
            self.abort(i, AbortReason::BadSequence, true);
            return;
        }
        s.next = next;
        s.window_end = (next + u16::from(count) - 1).min(s.packets);
        s.state = State::TxSending;
        s.timers[Timer::Timeout as usize] = None;
        // The mirror of the receiver's turnaround: a kernel receiver must
        // have handled the echo of its own CTS before our first DT arrives,
        // else it aborts with reason 5 (transport.c, j1939_xtp_rx_dat_one:
        // a DT while its last command is not CTS).
        s.timers[Timer::Send as usize] = match turnaround {
            Turnaround::Apply if self.config.cts_delay > Duration::ZERO => Some(now + self.config.cts_delay),
            _ => None,
        };
    }

    fn on_eoma(&mut self, id: &J1939Id, pgn: Pgn) {
        let Some(i) = self.find(|s| {
            s.state == State::TxWaitEoma && s.source == id.destination && s.destination == id.source && s.pgn == pgn
        }) else {
            self.ignored();
            return;
        };
        let s = &self.sessions[i];
        let ev = TransportEvent::Sent {
            handle: SessionHandle { index: i as u16, generation: s.generation },
            pgn: s.pgn,
            source: s.source,
            destination: s.destination,
            size: u32::from(s.size),
        };
        self.events.push_counted(ev);
        self.free(i);
    }

    fn on_abort(&mut self, id: &J1939Id, reason: AbortReason, pgn: Pgn) {
        let (peer, me) = (id.source, id.destination);
        let mut matched = false;
        for i in 0..S {
            let s = &self.sessions[i];
            let hit = !s.bam
                && s.pgn == pgn
                && ((s.is_tx_active() && s.source == me && s.destination == peer)
                    || (s.state == State::RxCmdt && s.source == peer && s.destination == me));
            if hit {
                matched = true;
                self.push_aborted(i, reason, true);
                self.free(i);
            }
        }
        if !matched {
            self.ignored();
        }
    }

    fn start_queued(&mut self, now: Instant) {
        loop {
            // The oldest queued send whose pair is idle.
            let mut best: Option<usize> = None;
            for i in 0..S {
                let s = &self.sessions[i];
                if s.state != State::Queued {
                    continue;
                }
                let busy = self
                    .sessions
                    .iter()
                    .any(|o| o.is_tx_active() && o.source == s.source && o.destination == s.destination);
                let older = best.is_none_or(|b| s.order.wrapping_sub(self.sessions[b].order) as i32 <= 0);
                if !busy && older {
                    best = Some(i);
                }
            }
            let Some(i) = best else { return };
            if self.ctrl.is_full() {
                return;
            }
            let s = &mut self.sessions[i];
            let cm = if s.bam {
                s.state = State::TxBam;
                s.timers[Timer::Send as usize] = Some(now + self.config.bam_gap);
                TpCm::Bam { size: s.size, packets: s.packets as u8, pgn: s.pgn }
            } else {
                s.state = State::TxWaitCts;
                s.timers[Timer::Timeout as usize] = Some(now + T3);
                TpCm::Rts {
                    size: s.size,
                    packets: s.packets as u8,
                    max_per_cts: self.config.max_packets_per_cts,
                    pgn: s.pgn,
                }
            };
            let f = frame(s.priority, Pgn::TP_CM, s.source, s.destination, &cm.emit());
            self.ctrl.push_counted(f);
        }
    }

    fn next_dt(&mut self, now: Instant, i: usize) -> Option<CanFrame> {
        let gap = self.config.bam_gap;
        let s = &mut self.sessions[i];
        match s.state {
            State::TxSending => match s.timers[Timer::Send as usize] {
                Some(t) if t > now => return None,
                Some(_) => s.timers[Timer::Send as usize] = None,
                None => {}
            },
            State::TxBam if s.timers[Timer::Send as usize].is_some_and(|t| t <= now) => {}
            _ => return None,
        }
        let seq = s.next;
        let start = usize::from(seq.saturating_sub(1)) * BYTES_PER_PACKET;
        let end = (start + BYTES_PER_PACKET).min(usize::from(s.size));
        let mut d = [0xFF; 8];
        d[0] = seq as u8;
        if start < end {
            d[1..1 + end - start].copy_from_slice(&s.buf[start..end]);
        }
        let f = frame(s.priority, Pgn::TP_DT, s.source, s.destination, &d);
        s.next += 1;
        if s.bam {
            if s.next > s.packets {
                let ev = TransportEvent::Sent {
                    handle: SessionHandle { index: i as u16, generation: s.generation },
                    pgn: s.pgn,
                    source: s.source,
                    destination: s.destination,
                    size: u32::from(s.size),
                };
                self.events.push_counted(ev);
                self.free(i);
            } else {
                s.timers[Timer::Send as usize] = Some(now + gap);
            }
        } else if s.next > s.window_end {
            s.state = if s.next > s.packets { State::TxWaitEoma } else { State::TxWaitCts };
            s.timers[Timer::Timeout as usize] = Some(now + T3);
        }
        Some(f)
    }

    // ---- helpers ----

    fn find(&self, pred: impl Fn(&Session) -> bool) -> Option<usize> {
        self.sessions.iter().position(pred)
    }

    fn free_slot(&self) -> Option<usize> {
        self.find(|s| s.state == State::Free)
    }

    fn free(&mut self, i: usize) {
        let s = &mut self.sessions[i];
        s.state = State::Free;
        s.timers = [None; TIMERS];
        s.generation = s.generation.wrapping_add(1);
        if self.held == Some(i) {
            self.held = None;
        }
    }

    fn ignored(&mut self) {
        self.stats.ignored_frames = self.stats.ignored_frames.saturating_add(1);
    }

    fn send_cm(&mut self, source: u8, destination: u8, cm: TpCm) {
        let f = frame(self.config.priority, Pgn::TP_CM, source, destination, &cm.emit());
        self.ctrl.push_counted(f);
    }

    fn push_aborted(&mut self, i: usize, reason: AbortReason, by_peer: bool) {
        let s = &self.sessions[i];
        let ev = TransportEvent::Aborted {
            handle: Some(SessionHandle { index: i as u16, generation: s.generation }),
            direction: s.direction(),
            pgn: s.pgn,
            source: s.source,
            destination: s.destination,
            reason,
            by_peer,
        };
        self.events.push_counted(ev);
    }

    fn refused(&mut self, direction: Direction, pgn: Pgn, source: u8, destination: u8, reason: AbortReason) {
        self.events.push_counted(TransportEvent::Aborted {
            handle: None,
            direction,
            pgn,
            source,
            destination,
            reason,
            by_peer: false,
        });
    }

    /// Ends session `i` locally: event, Abort frame to the peer if
    /// `notify`, slot freed.
    fn abort(&mut self, i: usize, reason: AbortReason, notify: bool) {
        self.push_aborted(i, reason, false);
        let s = &self.sessions[i];
        if notify && !s.bam {
            let (me, peer) =
                if s.direction() == Direction::Receive { (s.destination, s.source) } else { (s.source, s.destination) };
            let pgn = s.pgn;
            self.send_cm(me, peer, TpCm::Abort { reason, pgn });
        }
        self.free(i);
    }
}

impl<const S: usize, const Q: usize> crate::driver::Events for Transport<S, Q> {
    type Event<'a> = TransportEvent;
    fn poll_event(&mut self) -> Option<TransportEvent> {
        Transport::poll_event(self)
    }
}

#[cfg(test)]
mod tests;
