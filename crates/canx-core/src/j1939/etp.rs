//! The extended transport protocol (ETP, J1939-21 5.10.5): 1786 bytes up to
//! the size of caller-provided buffers (the protocol allows 117,440,505),
//! destination-specific only.
//!
//! ETP.CM is PGN 51200 (0xC800), ETP.DT PGN 50944 (0xC700). Control bytes:
//! RTS 0x14 (size u32 LE), CTS 0x15 (count, next packet u24 LE), DPO 0x16
//! (count, offset u24 LE), EoMA 0x17 (size u32 LE), Abort 0xFF (reason);
//! bytes 6-8 are always the PGN. Flow: RTS -> CTS -> DPO -> DTs numbered
//! 1..=count relative to the DPO offset -> CTS ... -> EoMA. Timeouts as TP
//! (T1, T2, T3, T4). ETP abort codes follow the kernel's `enum
//! j1939_xtp_abort` (net/can/j1939/transport.c): 9 unexpected DPO, 10 bad
//! DPO PGN, 11 DPO packets > CTS, 12 bad DPO offset, 14 unexpected CTS PGN,
//! 15 CTS asks beyond the message. A DT already received is ignored and
//! counted (kernel behaviour); a gap aborts with reason 7 (no ETP
//! retransmission), a sequence number 0 with reason 8.
//!
//! ## Memory
//! [`Etp`] holds `S` sessions, each bound to one buffer given to
//! [`Etp::new`] as a [`ManagedSlice`]: borrowed (`&'a mut [u8]`, no heap) or,
//! with the `alloc` feature, owned (`Box<[u8]>`). A send copies into a free
//! buffer large enough, an RTS is accepted into a free buffer large enough
//! (otherwise Abort reason 2). Events, handles and the lifetime of received
//! data work as in [`super::transport`] (data readable until the next
//! `poll_event`).

use core::fmt;

use super::id::{frame, J1939Id, Pgn, GLOBAL_ADDRESS, MAX_UNICAST_ADDRESS, NULL_ADDRESS};
use super::transport::{
    AbortReason, Direction, Received, SendError, SessionHandle, TransportEvent, TransportStats, Turnaround,
    BYTES_PER_PACKET, DEFAULT_CTS_DELAY, MAX_CTS_DELAY, MAX_TP_SIZE, T1, T2, T3, T4,
};
use super::Ring;
use crate::frame::{CanFrame, Frame};
use crate::managed::ManagedSlice;
use crate::time::{Duration, Instant};

/// Largest ETP message: 16,777,215 packets x 7 bytes.
pub const MAX_ETP_SIZE: u32 = 117_440_505;
/// Smallest ETP message (anything shorter goes by TP).
pub const MIN_ETP_SIZE: u32 = MAX_TP_SIZE as u32 + 1;

/// ETP.CM control bytes.
pub mod control {
    pub const RTS: u8 = 0x14;
    pub const CTS: u8 = 0x15;
    pub const DPO: u8 = 0x16;
    pub const END_OF_MSG_ACK: u8 = 0x17;
    pub const ABORT: u8 = 0xFF;
}

/// ETP abort codes (kernel `enum j1939_xtp_abort`).
pub mod abort {
    use super::AbortReason;
    /// Code 9, which TP uses for "message larger than 1785 bytes": one
    /// [`AbortReason`] value carries both meanings (its `Display` names both),
    /// so an abort decoded from the wire compares equal to this constant.
    pub const UNEXPECTED_DPO: AbortReason = AbortReason::TooLarge;
    pub const BAD_DPO_PGN: AbortReason = AbortReason::Other(10);
    pub const DPO_BEYOND_CTS: AbortReason = AbortReason::Other(11);
    pub const BAD_DPO_OFFSET: AbortReason = AbortReason::Other(12);
    pub const BAD_CTS_PGN: AbortReason = AbortReason::Other(14);
    pub const CTS_TOO_BIG: AbortReason = AbortReason::Other(15);
}

/// A decoded ETP.CM payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtpCm {
    Rts { size: u32, pgn: Pgn },
    Cts { count: u8, next: u32, pgn: Pgn },
    Dpo { count: u8, offset: u32, pgn: Pgn },
    EndOfMsgAck { size: u32, pgn: Pgn },
    Abort { reason: AbortReason, pgn: Pgn },
}

/// Why an ETP.CM payload was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtpCmError {
    Length,
    Control(u8),
    Pgn,
}

impl fmt::Display for EtpCmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtpCmError::Length => f.write_str("ETP.CM must be 8 bytes"),
            EtpCmError::Control(c) => write!(f, "unknown ETP.CM control byte {c}"),
            EtpCmError::Pgn => f.write_str("PGN out of range"),
        }
    }
}

impl core::error::Error for EtpCmError {}

fn u24(b: &[u8]) -> u32 {
    u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16
}

impl EtpCm {
    /// Parses untrusted bytes; never panics.
    pub fn parse(d: &[u8]) -> Result<EtpCm, EtpCmError> {
        let d: &[u8; 8] = d.try_into().map_err(|_| EtpCmError::Length)?;
        let pgn = Pgn::from_le_bytes([d[5], d[6], d[7]]).ok_or(EtpCmError::Pgn)?;
        let size = u32::from_le_bytes([d[1], d[2], d[3], d[4]]);
        Ok(match d[0] {
            control::RTS => EtpCm::Rts { size, pgn },
            control::CTS => EtpCm::Cts { count: d[1], next: u24(&d[2..5]), pgn },
            control::DPO => EtpCm::Dpo { count: d[1], offset: u24(&d[2..5]), pgn },
            control::END_OF_MSG_ACK => EtpCm::EndOfMsgAck { size, pgn },
            control::ABORT => EtpCm::Abort { reason: AbortReason::from_code(d[1]), pgn },
            c => return Err(EtpCmError::Control(c)),
        })
    }

    pub fn emit(&self) -> [u8; 8] {
        let mut d = [0xFF; 8];
        let pgn = match *self {
            EtpCm::Rts { size, pgn } | EtpCm::EndOfMsgAck { size, pgn } => {
                d[0] = if matches!(self, EtpCm::Rts { .. }) { control::RTS } else { control::END_OF_MSG_ACK };
                d[1..5].copy_from_slice(&size.to_le_bytes());
                pgn
            }
            EtpCm::Cts { count, next: v, pgn } | EtpCm::Dpo { count, offset: v, pgn } => {
                d[0] = if matches!(self, EtpCm::Cts { .. }) { control::CTS } else { control::DPO };
                d[1] = count;
                d[2..5].copy_from_slice(&v.to_le_bytes()[..3]);
                pgn
            }
            EtpCm::Abort { reason, pgn } => {
                d[0] = control::ABORT;
                d[1] = reason.code();
                pgn
            }
        };
        d[5..8].copy_from_slice(&pgn.to_le_bytes());
        d
    }
}

/// ETP settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtpConfig {
    /// Priority of CTS/EoMA/Abort frames sent as a receiver (default 7).
    pub priority: u8,
    /// Receiver: most packets asked for in one CTS (1-255; default 255).
    pub packets_per_cts: u8,
    /// Receiver: turnaround before each CTS (default 2 ms), as
    /// [`super::TransportConfig::cts_delay`]; values above
    /// [`MAX_CTS_DELAY`] are used as that maximum.
    pub cts_delay: Duration,
}

impl Default for EtpConfig {
    fn default() -> Self {
        EtpConfig { priority: 7, packets_per_cts: 255, cts_delay: DEFAULT_CTS_DELAY }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Queued,
    TxWaitCts,
    /// CTS received: DPO then DTs `next..=window_end`.
    TxSending,
    TxWaitEoma,
    /// CTS sent, waiting for the DPO (T2).
    RxWaitDpo,
    /// DPO received, receiving DTs (T1).
    RxData,
    Completed,
    Held,
}

const TIMEOUT: usize = 0;
/// Receiver: the delayed CTS is due.
const CTS_DUE: usize = 1;

struct Slot<'a> {
    state: State,
    priority: u8,
    pgn: Pgn,
    source: u8,
    destination: u8,
    size: u32,
    packets: u32,
    /// Next absolute packet number (1-based) to send or expect.
    next: u32,
    window_end: u32,
    /// Offset of the current DPO (packet number = offset + sequence).
    offset: u32,
    dpo_pending: bool,
    /// Receiver: turnaround before each CTS, fixed at the RTS.
    cts_delay: Duration,
    order: u32,
    generation: u16,
    timers: [Option<Instant>; 2],
    buf: ManagedSlice<'a, u8>,
}

impl fmt::Debug for Slot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("state", &self.state).field("size", &self.size).field("next", &self.next).finish()
    }
}

impl Slot<'_> {
    fn is_tx_active(&self) -> bool {
        matches!(self.state, State::TxWaitCts | State::TxSending | State::TxWaitEoma)
    }
    fn is_rx_active(&self) -> bool {
        matches!(self.state, State::RxWaitDpo | State::RxData)
    }
    fn handle(&self, i: usize) -> SessionHandle {
        SessionHandle { index: i as u16, generation: self.generation }
    }
}

/// The ETP engine: `S` sessions over caller buffers, queues of `Q`. Driven
/// like [`super::Transport`]; see the module doc.
pub struct Etp<'a, const S: usize, const Q: usize = 16> {
    config: EtpConfig,
    slots: [Slot<'a>; S],
    ctrl: Ring<CanFrame, Q>,
    events: Ring<TransportEvent, Q>,
    local: [u32; 8],
    held: Option<usize>,
    order: u32,
    rr: usize,
    stats: TransportStats,
}

impl<const S: usize, const Q: usize> fmt::Debug for Etp<'_, S, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etp").field("config", &self.config).field("slots", &self.slots).finish()
    }
}

impl<'a, const S: usize, const Q: usize> Etp<'a, S, Q> {
    /// One session per buffer; a buffer's length caps the messages it can
    /// carry. Invalid config values are clamped (priority to 7,
    /// packets per CTS to at least 1).
    pub fn new<B: Into<ManagedSlice<'a, u8>>>(config: EtpConfig, buffers: [B; S]) -> Self {
        let config = EtpConfig {
            priority: config.priority.min(7),
            packets_per_cts: config.packets_per_cts.max(1),
            cts_delay: config.cts_delay.min(MAX_CTS_DELAY),
        };
        Etp {
            config,
            slots: buffers.map(|buf| Slot {
                state: State::Free,
                priority: 7,
                pgn: Pgn::ETP_DT,
                source: 0,
                destination: 0,
                size: 0,
                packets: 0,
                next: 1,
                window_end: 0,
                offset: 0,
                dpo_pending: false,
                cts_delay: Duration::ZERO,
                order: 0,
                generation: 0,
                timers: [None; 2],
                buf: buf.into(),
            }),
            ctrl: Ring::new(),
            events: Ring::new(),
            local: [0; 8],
            held: None,
            order: 0,
            rr: 0,
            stats: TransportStats::default(),
        }
    }

    /// As [`super::Transport::set_local_address`].
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

    fn is_local(&self, a: u8) -> bool {
        a <= MAX_UNICAST_ADDRESS && self.local[usize::from(a / 32)] & (1 << (a % 32)) != 0
    }

    pub fn stats(&self) -> TransportStats {
        TransportStats {
            dropped_events: self.stats.dropped_events + self.events.dropped(),
            dropped_frames: self.stats.dropped_frames + self.ctrl.dropped(),
            ..self.stats
        }
    }

    pub fn sessions_in_use(&self) -> usize {
        self.slots.iter().filter(|s| s.state != State::Free).count()
    }

    /// Queues `data` (1786..=117,440,505 bytes) for one destination. The
    /// data is copied into the smallest free buffer that holds it. Errors:
    /// [`SendError::TooShort`], [`SendError::TooLong`], [`SendError::Address`]
    /// (ETP has no broadcast), [`SendError::NoSession`] (no free buffer
    /// large enough).
    pub fn send(
        &mut self,
        priority: u8,
        pgn: Pgn,
        source: u8,
        destination: u8,
        data: &[u8],
    ) -> Result<SessionHandle, SendError> {
        if data.len() < MIN_ETP_SIZE as usize {
            return Err(SendError::TooShort);
        }
        if data.len() > MAX_ETP_SIZE as usize {
            return Err(SendError::TooLong);
        }
        if priority > 7 {
            return Err(SendError::Priority);
        }
        if source > MAX_UNICAST_ADDRESS || destination >= NULL_ADDRESS {
            return Err(SendError::Address);
        }
        let Some(i) = self.free_slot(data.len()) else {
            self.stats.rejected_sends = self.stats.rejected_sends.saturating_add(1);
            return Err(SendError::NoSession);
        };
        self.order = self.order.wrapping_add(1);
        let order = self.order;
        let s = &mut self.slots[i];
        s.state = State::Queued;
        s.priority = priority;
        s.pgn = pgn;
        s.source = source;
        s.destination = destination;
        s.size = data.len() as u32;
        s.packets = (data.len() as u32).div_ceil(BYTES_PER_PACKET as u32);
        s.next = 1;
        s.window_end = 0;
        s.order = order;
        s.timers = [None; 2];
        s.buf[..data.len()].copy_from_slice(data);
        Ok(s.handle(i))
    }

    pub fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        if let Some((id, data)) = J1939Id::from_frame(frame) {
            self.handle_j1939(now, &id, data, Turnaround::Apply);
        }
    }

    /// Looks only at ETP.CM / ETP.DT frames to a local address; `turnaround`
    /// applies if it is an RTS that opens a reception.
    pub fn handle_j1939(&mut self, now: Instant, id: &J1939Id, data: &[u8], turnaround: Turnaround) {
        if id.pgn != Pgn::ETP_CM && id.pgn != Pgn::ETP_DT {
            return;
        }
        // Only RTS needs a local DA: every other frame must match a session.
        if id.source > MAX_UNICAST_ADDRESS || id.destination == GLOBAL_ADDRESS {
            self.ignored();
            return;
        }
        if id.pgn == Pgn::ETP_DT {
            self.on_dt(now, id, data);
            return;
        }
        let Ok(cm) = EtpCm::parse(data) else {
            self.ignored();
            return;
        };
        let (peer, me) = (id.source, id.destination);
        match cm {
            EtpCm::Rts { size, pgn } if self.is_local(id.destination) => self.on_rts(now, id, size, pgn, turnaround),
            EtpCm::Rts { .. } => {}
            EtpCm::Cts { count, next, pgn } => self.on_cts(now, peer, me, count, next, pgn, turnaround),
            EtpCm::Dpo { count, offset, pgn } => self.on_dpo(now, peer, me, count, offset, pgn),
            EtpCm::EndOfMsgAck { pgn, .. } => {
                match self
                    .find(|s| s.state == State::TxWaitEoma && s.source == me && s.destination == peer && s.pgn == pgn)
                {
                    Some(i) => {
                        let s = &self.slots[i];
                        let ev = TransportEvent::Sent {
                            handle: s.handle(i),
                            pgn: s.pgn,
                            source: s.source,
                            destination: s.destination,
                            size: s.size,
                        };
                        self.events.push_counted(ev);
                        self.free(i);
                    }
                    None => self.ignored(),
                }
            }
            EtpCm::Abort { reason, pgn } => {
                let hit = |s: &Slot<'_>| {
                    s.pgn == pgn
                        && ((s.is_tx_active() && s.source == me && s.destination == peer)
                            || (s.is_rx_active() && s.source == peer && s.destination == me))
                };
                match self.find(hit) {
                    Some(i) => {
                        self.push_aborted(i, reason, true);
                        self.free(i);
                    }
                    None => self.ignored(),
                }
            }
        }
    }

    /// Runs expired timeouts (T1..T4). Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..S {
            let s = &mut self.slots[i];
            if s.state == State::RxWaitDpo && s.timers[CTS_DUE].is_some_and(|t| t <= now) {
                s.timers[CTS_DUE] = None;
                self.emit_window_cts(i);
            }
            if self.slots[i].timers[TIMEOUT].is_some_and(|t| t <= now) {
                match self.slots[i].state {
                    State::TxWaitCts | State::TxWaitEoma | State::RxWaitDpo | State::RxData => {
                        self.abort(i, AbortReason::Timeout)
                    }
                    _ => self.slots[i].timers[TIMEOUT] = None,
                }
            }
        }
    }

    /// Control frames, then the RTS of queued sends whose pair is idle,
    /// then DPO + DT packets (round robin).
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
            if let Some(f) = self.next_packet(now, i) {
                self.rr = (i + 1) % S;
                return Some(f);
            }
        }
        None
    }

    /// As [`super::Transport::poll_event`].
    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        if let Some(i) = self.held.take() {
            if self.slots[i].state == State::Held {
                self.free(i);
            }
        }
        let ev = self.events.pop()?;
        if let TransportEvent::Received(r) = ev {
            let i = r.handle.index();
            if let Some(s) = self.slots.get_mut(i) {
                if s.generation == r.handle.generation && s.state == State::Completed {
                    s.state = State::Held;
                    self.held = Some(i);
                }
            }
        }
        Some(ev)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots.iter().flat_map(|s| s.timers.iter().flatten()).min().copied()
    }

    /// As [`super::Transport::received_data`].
    pub fn received_data(&self, handle: SessionHandle) -> Option<&[u8]> {
        let s = self.slots.get(handle.index())?;
        (s.generation == handle.generation && matches!(s.state, State::Completed | State::Held))
            .then(|| &s.buf[..s.size as usize])
    }

    fn on_rts(&mut self, now: Instant, id: &J1939Id, size: u32, pgn: Pgn, turnaround: Turnaround) {
        let (peer, me) = (id.source, id.destination);
        if let Some(i) = self.find(|s| s.is_rx_active() && s.source == peer && s.destination == me) {
            self.abort(i, AbortReason::AlreadyInSession);
            return;
        }
        let reason = if !(MIN_ETP_SIZE..=MAX_ETP_SIZE).contains(&size) {
            Some(AbortReason::OTHER)
        } else if self.free_slot(size as usize).is_none() {
            self.stats.refused_sessions = self.stats.refused_sessions.saturating_add(1);
            Some(AbortReason::Resources)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.send_cm(me, peer, EtpCm::Abort { reason, pgn });
            self.events.push_counted(TransportEvent::Aborted {
                handle: None,
                direction: Direction::Receive,
                pgn,
                source: peer,
                destination: me,
                reason,
                by_peer: false,
            });
            return;
        }
        let Some(i) = self.free_slot(size as usize) else { return };
        let s = &mut self.slots[i];
        s.state = State::RxWaitDpo;
        s.priority = id.priority;
        s.pgn = pgn;
        s.source = peer;
        s.destination = me;
        s.size = size;
        s.packets = size.div_ceil(BYTES_PER_PACKET as u32);
        s.next = 1;
        s.cts_delay = match turnaround {
            Turnaround::Apply => self.config.cts_delay,
            Turnaround::Skip => Duration::ZERO,
        };
        self.send_window_cts(now, i);
    }

    /// Opens the next window of receive slot `i`, arms T2 and queues its
    /// CTS, at once or after the configured turnaround.
    fn send_window_cts(&mut self, now: Instant, i: usize) {
        let s = &mut self.slots[i];
        let delay = s.cts_delay;
        let remaining = s.packets + 1 - s.next;
        let count = remaining.min(u32::from(self.config.packets_per_cts));
        s.window_end = s.next + count - 1;
        s.state = State::RxWaitDpo;
        s.timers[TIMEOUT] = Some(now + delay + T2);
        if delay == Duration::ZERO {
            self.emit_window_cts(i);
        } else {
            s.timers[CTS_DUE] = Some(now + delay);
        }
    }

    fn emit_window_cts(&mut self, i: usize) {
        let s = &self.slots[i];
        let (me, peer, next, pgn) = (s.destination, s.source, s.next, s.pgn);
        let count = (s.window_end + 1 - s.next) as u8;
        self.send_cm(me, peer, EtpCm::Cts { count, next, pgn });
    }

    fn on_dpo(&mut self, now: Instant, peer: u8, me: u8, count: u8, offset: u32, pgn: Pgn) {
        let Some(i) = self.find(|s| s.is_rx_active() && s.source == peer && s.destination == me) else {
            self.ignored();
            return;
        };
        let s = &mut self.slots[i];
        if s.timers[CTS_DUE].is_some() {
            // Our CTS is not out yet: the peer cannot have been asked for this.
            self.ignored();
            return;
        }
        let reason = if s.state != State::RxWaitDpo {
            Some(abort::UNEXPECTED_DPO)
        } else if pgn != s.pgn {
            Some(abort::BAD_DPO_PGN)
        } else if offset + 1 != s.next {
            Some(abort::BAD_DPO_OFFSET)
        } else if count == 0 || offset + u32::from(count) > s.window_end {
            Some(abort::DPO_BEYOND_CTS)
        } else {
            None
        };
        if let Some(r) = reason {
            self.abort(i, r);
            return;
        }
        s.offset = offset;
        // The sender may send fewer packets than the CTS allowed.
        s.window_end = offset + u32::from(count);
        s.state = State::RxData;
        s.timers[TIMEOUT] = Some(now + T1);
    }

    fn on_dt(&mut self, now: Instant, id: &J1939Id, data: &[u8]) {
        let Some(i) = self.find(|s| s.is_rx_active() && s.source == id.source && s.destination == id.destination)
        else {
            self.ignored();
            return;
        };
        let Some((&seq, payload)) = data.split_first() else {
            self.ignored();
            return;
        };
        let s = &mut self.slots[i];
        if s.state != State::RxData {
            self.abort(i, AbortReason::UnexpectedDt);
            return;
        }
        let packet = s.offset + u32::from(seq);
        if packet < s.next && seq != 0 {
            // Already received: ignored and counted, as the kernel does.
            self.stats.duplicate_packets = self.stats.duplicate_packets.saturating_add(1);
            return;
        }
        if packet != s.next {
            let r = if packet < s.next { AbortReason::DuplicateSequence } else { AbortReason::BadSequence };
            self.abort(i, r);
            return;
        }
        let start = (packet as usize - 1) * BYTES_PER_PACKET;
        let end = (start + BYTES_PER_PACKET).min(s.size as usize);
        let n = payload.len().min(end.saturating_sub(start));
        s.buf[start..start + n].copy_from_slice(&payload[..n]);
        s.next += 1;
        if s.next > s.packets {
            if self.events.is_full() {
                self.stats.dropped_events = self.stats.dropped_events.saturating_add(1);
                self.abort(i, AbortReason::Resources);
                return;
            }
            let s = &mut self.slots[i];
            s.state = State::Completed;
            s.timers = [None; 2];
            let r = Received {
                handle: s.handle(i),
                priority: s.priority,
                pgn: s.pgn,
                source: s.source,
                destination: s.destination,
                len: s.size,
            };
            let (me, peer, size, pgn) = (s.destination, s.source, s.size, s.pgn);
            self.send_cm(me, peer, EtpCm::EndOfMsgAck { size, pgn });
            self.events.push_counted(TransportEvent::Received(r));
        } else if s.next > s.window_end {
            self.send_window_cts(now, i);
        } else {
            s.timers[TIMEOUT] = Some(now + T1);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_cts(&mut self, now: Instant, peer: u8, me: u8, count: u8, next: u32, pgn: Pgn, turnaround: Turnaround) {
        let Some(i) = self.find(|s| s.is_tx_active() && s.source == me && s.destination == peer) else {
            self.ignored();
            return;
        };
        let s = &mut self.slots[i];
        let reason = if pgn != s.pgn {
            Some(abort::BAD_CTS_PGN)
        } else if s.state == State::TxSending {
            Some(AbortReason::CtsWhileTransfer)
        } else if count > 0 && (next == 0 || next > s.packets) {
            Some(abort::CTS_TOO_BIG)
        } else {
            None
        };
        if let Some(r) = reason {
            self.abort(i, r);
            return;
        }
        if count == 0 {
            s.state = State::TxWaitCts;
            s.timers[TIMEOUT] = Some(now + T4);
            return;
        }
        s.next = next;
        s.window_end = (next + u32::from(count) - 1).min(s.packets);
        s.offset = next - 1;
        s.dpo_pending = true;
        s.state = State::TxSending;
        s.timers[TIMEOUT] = None;
        // Sender turnaround before the DPO (see Transport's on_cts).
        s.timers[CTS_DUE] = match turnaround {
            Turnaround::Apply if self.config.cts_delay > Duration::ZERO => Some(now + self.config.cts_delay),
            _ => None,
        };
    }

    fn start_queued(&mut self, now: Instant) {
        loop {
            let mut best: Option<usize> = None;
            for i in 0..S {
                let s = &self.slots[i];
                if s.state != State::Queued {
                    continue;
                }
                let busy = self
                    .slots
                    .iter()
                    .any(|o| o.is_tx_active() && o.source == s.source && o.destination == s.destination);
                let older = best.is_none_or(|b| s.order.wrapping_sub(self.slots[b].order) as i32 <= 0);
                if !busy && older {
                    best = Some(i);
                }
            }
            let Some(i) = best else { return };
            if self.ctrl.is_full() {
                return;
            }
            let s = &mut self.slots[i];
            s.state = State::TxWaitCts;
            s.timers[TIMEOUT] = Some(now + T3);
            let f = frame(
                s.priority,
                Pgn::ETP_CM,
                s.source,
                s.destination,
                &EtpCm::Rts { size: s.size, pgn: s.pgn }.emit(),
            );
            self.ctrl.push_counted(f);
        }
    }

    fn next_packet(&mut self, now: Instant, i: usize) -> Option<CanFrame> {
        let s = &mut self.slots[i];
        if s.state != State::TxSending {
            return None;
        }
        match s.timers[CTS_DUE] {
            Some(t) if t > now => return None,
            Some(_) => s.timers[CTS_DUE] = None,
            None => {}
        }
        if s.dpo_pending {
            s.dpo_pending = false;
            let count = (s.window_end - s.offset) as u8;
            let cm = EtpCm::Dpo { count, offset: s.offset, pgn: s.pgn };
            return Some(frame(s.priority, Pgn::ETP_CM, s.source, s.destination, &cm.emit()));
        }
        let packet = s.next;
        let start = (packet as usize - 1) * BYTES_PER_PACKET;
        let end = (start + BYTES_PER_PACKET).min(s.size as usize);
        let mut d = [0xFF; 8];
        d[0] = (packet - s.offset) as u8;
        d[1..1 + end - start].copy_from_slice(&s.buf[start..end]);
        let f = frame(s.priority, Pgn::ETP_DT, s.source, s.destination, &d);
        s.next += 1;
        if s.next > s.window_end {
            s.state = if s.next > s.packets { State::TxWaitEoma } else { State::TxWaitCts };
            s.timers[TIMEOUT] = Some(now + T3);
        }
        Some(f)
    }

    fn find(&self, pred: impl Fn(&Slot<'a>) -> bool) -> Option<usize> {
        self.slots.iter().position(pred)
    }

    /// The smallest free buffer that holds `len` bytes.
    fn free_slot(&self, len: usize) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == State::Free && s.buf.len() >= len)
            .min_by_key(|(_, s)| s.buf.len())
            .map(|(i, _)| i)
    }

    fn free(&mut self, i: usize) {
        let s = &mut self.slots[i];
        s.state = State::Free;
        s.timers = [None; 2];
        s.dpo_pending = false;
        s.generation = s.generation.wrapping_add(1);
        if self.held == Some(i) {
            self.held = None;
        }
    }

    fn ignored(&mut self) {
        self.stats.ignored_frames = self.stats.ignored_frames.saturating_add(1);
    }

    fn send_cm(&mut self, source: u8, destination: u8, cm: EtpCm) {
        let f = frame(self.config.priority, Pgn::ETP_CM, source, destination, &cm.emit());
        self.ctrl.push_counted(f);
    }

    fn push_aborted(&mut self, i: usize, reason: AbortReason, by_peer: bool) {
        let s = &self.slots[i];
        let direction = if s.is_rx_active() { Direction::Receive } else { Direction::Transmit };
        let ev = TransportEvent::Aborted {
            handle: Some(s.handle(i)),
            direction,
            pgn: s.pgn,
            source: s.source,
            destination: s.destination,
            reason,
            by_peer,
        };
        self.events.push_counted(ev);
    }

    /// Ends slot `i` locally: event, Abort frame to the peer, slot freed.
    fn abort(&mut self, i: usize, reason: AbortReason) {
        self.push_aborted(i, reason, false);
        let s = &self.slots[i];
        let (me, peer) = if s.is_rx_active() { (s.destination, s.source) } else { (s.source, s.destination) };
        let pgn = s.pgn;
        self.send_cm(me, peer, EtpCm::Abort { reason, pgn });
        self.free(i);
    }
}

impl<const S: usize, const Q: usize> crate::driver::Events for Etp<'_, S, Q> {
    type Event<'b>
        = TransportEvent
    where
        Self: 'b;
    fn poll_event(&mut self) -> Option<TransportEvent> {
        Etp::poll_event(self)
    }
}

#[cfg(test)]
mod tests;
