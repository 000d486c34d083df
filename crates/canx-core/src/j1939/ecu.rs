//! [`Ecu`]: one J1939 controller application (one NAME) combining address
//! claim, requests/acknowledgments and the transport protocol. Several may
//! share one bus (each sees the others' frames).
//!
//! ## Requests (J1939-21 5.4.2)
//! Register the PGNs this CA answers with [`Ecu::register`]: either with
//! data the engine sends itself ([`Responder::Data`]) or as
//! [`Responder::Application`], in which case a request becomes
//! [`EcuEvent::Request`] and the application answers with [`Ecu::respond`]
//! within Tr = 200 ms. A reply up to 8 bytes is one frame; a longer one goes
//! by BAM after a global request and by RTS/CTS to the requester after a
//! destination-specific one. A destination-specific request for an
//! unregistered PGN is answered with NACK (if
//! [`EcuConfig::nack_unsupported`]); a global one never is. Requests for
//! Address Claimed are answered by the address claimer.
//!
//! [`Ecu::request`] sends a request and reports [`EcuEvent::RequestDone`]
//! when the answer (single frame or completed TP), an acknowledgment, a TP
//! abort or the timeout ([`EcuConfig::request_timeout`]) ends it. A reply
//! that starts by TP before the timeout is waited for until the TP ends:
//! each TP frame from the responder moves the deadline to
//! `request_timeout` + T2 (1250 ms) later, so a transfer that stops ends
//! the request after the transport's own timeout at the latest, and every
//! request ends in exactly one [`EcuEvent::RequestDone`] (several requests
//! for one PGN that one transfer answers: the first is `Answered`, the
//! others time out).
//!
//! ## Data of received TP messages
//! [`EcuEvent::Received`] carries a [`SessionHandle`]; the bytes are in
//! [`Ecu::received_data`] until the next call of [`Ecu::poll_event`].
//! [`EcuEvent::ReceivedExtended`] does the same for ETP messages
//! ([`Ecu::received_extended_data`]).
//!
//! ## ETP
//! `E` (default 0) ETP sessions over caller buffers given to
//! [`Ecu::with_etp_buffers`]: [`Ecu::send`] above 1785 bytes to one CA goes
//! by ETP, and RTS of ETP peers are accepted into a free buffer.
//!
//! ## Address
//! Nothing but the claim is sent before the 250 ms claim wait ends
//! ([`EcuError::NoAddress`]). Transport sessions answer RTS for the address
//! being claimed or held.

use core::fmt;

use crate::managed::ManagedSlice;

use super::address_claim::{
    AddressClaimer, AddressTable, ClaimConfig, ClaimConfigError, ClaimEvent, ClaimState, FULL_TABLE,
};
use super::etp::{Etp, EtpConfig};
use super::id::{frame, J1939Id, Pgn, GLOBAL_ADDRESS, MAX_UNICAST_ADDRESS, NULL_ADDRESS};
use super::name::Name;
use super::request::{AckControl, Acknowledgment, Request};
use super::transport::{
    self, AbortReason, ConfigError, Received, SendError, SessionHandle, TpCm, Transport, TransportConfig,
    TransportEvent, TransportStats, Turnaround, MAX_TP_SIZE,
};
use super::Ring;
use crate::frame::{CanFrame, Frame};
use crate::time::{Duration, Instant};

/// Settings of one [`Ecu`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcuConfig {
    pub claim: ClaimConfig,
    pub transport: TransportConfig,
    /// NACK destination-specific requests for unregistered PGNs (default true).
    pub nack_unsupported: bool,
    /// How long [`Ecu::request`] waits for the start of an answer (default
    /// 1250 ms, J1939-21 T3; responders must answer within Tr = 200 ms).
    pub request_timeout: Duration,
}

impl EcuConfig {
    pub const fn new(name: Name, preferred_address: u8) -> Self {
        EcuConfig {
            claim: ClaimConfig::new(name, preferred_address),
            transport: TransportConfig {
                priority: 7,
                packets_per_cts: 255,
                max_packets_per_cts: 255,
                bam_gap: transport::BAM_GAP_MIN,
                receive_bam: true,
                tolerate_duplicates: true,
                cts_delay: transport::DEFAULT_CTS_DELAY,
            },
            nack_unsupported: true,
            request_timeout: transport::T3,
        }
    }
}

/// Caller errors of [`Ecu`] methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcuError {
    /// No claimed address yet (or it was lost).
    NoAddress,
    /// More than 1785 bytes to global, or more than the ETP maximum.
    TooLong,
    /// Priority above 7, or a destination of 254.
    Invalid,
    /// The responder or pending-request table is full.
    Full,
    /// The transport refused the message.
    Transport(SendError),
    /// An invalid claim configuration.
    Claim(ClaimConfigError),
    /// An invalid transport configuration.
    Config(ConfigError),
}

impl fmt::Display for EcuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EcuError::NoAddress => f.write_str("no claimed address"),
            EcuError::TooLong => f.write_str("message too long (1785 bytes to global, ETP maximum to one CA)"),
            EcuError::Invalid => f.write_str("invalid priority or destination"),
            EcuError::Full => f.write_str("table full"),
            EcuError::Transport(e) => write!(f, "transport: {e}"),
            EcuError::Claim(e) => write!(f, "address claim: {e}"),
            EcuError::Config(e) => write!(f, "transport config: {e}"),
        }
    }
}

impl core::error::Error for EcuError {}

impl From<SendError> for EcuError {
    fn from(e: SendError) -> Self {
        EcuError::Transport(e)
    }
}

/// How the engine answers a request for a registered PGN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Responder<'a> {
    /// Send these bytes (1..=1785).
    Data(&'a [u8]),
    /// Report [`EcuEvent::Request`]; the application calls [`Ecu::respond`].
    Application,
}

/// How a request made with [`Ecu::request`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// The PGN arrived (as a `Message` or `Received` event).
    Answered,
    /// An Acknowledgment answered instead (NACK, Access Denied, ...).
    Acknowledged(AckControl),
    /// The TP transfer of the answer was aborted.
    TransportAborted(AbortReason),
    /// Nothing arrived in time.
    TimedOut,
}

/// What an [`Ecu`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EcuEvent {
    /// Address claim progress and bus table changes.
    Address(ClaimEvent),
    /// A request for a PGN registered as [`Responder::Application`].
    Request { pgn: Pgn, requester: u8, global: bool },
    /// A single-frame message to this CA or to all (not TP, claim, request
    /// or acknowledgment frames).
    Message { id: J1939Id, data: [u8; 8], len: u8 },
    /// A TP message to this CA or to all; bytes in [`Ecu::received_data`].
    Received(Received),
    /// An ETP message to this CA; bytes in [`Ecu::received_extended_data`].
    ReceivedExtended(Received),
    /// A TP send ended (`Sent`) or failed (`Aborted`), or a reception was
    /// aborted.
    Transport(TransportEvent),
    /// A request made with [`Ecu::request`] ended.
    RequestDone { pgn: Pgn, destination: u8, outcome: RequestOutcome },
}

impl EcuEvent {
    /// The payload of a `Message` event.
    pub fn message_data(&self) -> Option<&[u8]> {
        match self {
            EcuEvent::Message { data, len, .. } => data.get(..usize::from(*len)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    pgn: Pgn,
    destination: u8,
    /// Request timeout; while the answer arrives by TP, moved on by each
    /// TP frame of the responder (see [`Ecu::wait_for_tp`]).
    deadline: Instant,
    /// The answer started by TP or ETP (RTS or BAM seen).
    by_tp: bool,
}

/// Counters of an [`Ecu`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EcuStats {
    pub transport: TransportStats,
    pub etp: TransportStats,
    /// Frames dropped because the transmit queue (16) was full.
    pub dropped_frames: u32,
    /// Events dropped because the event queue (32) was full.
    pub dropped_events: u32,
    /// Automatic answers (registered data) the transport refused.
    pub failed_responses: u32,
}

/// One controller application: `S` TP sessions (1785-byte buffers inside),
/// `R` registered PGNs and `R` outstanding requests, `E` ETP sessions over
/// caller buffers (default 0). Drive it like every engine: after each
/// `handle_*` or API call, drain `poll_transmit(now)` and `poll_event()`,
/// then wait until `poll_timeout()` or the next frame.
pub struct Ecu<'a, const S: usize, const R: usize = 8, const E: usize = 0, const T: usize = FULL_TABLE> {
    config: EcuConfig,
    claimer: AddressClaimer<T>,
    transport: Transport<S, 32>,
    etp: Etp<'a, E, 8>,
    responders: [Option<(Pgn, Responder<'a>)>; R],
    pending: [Option<Pending>; R],
    tx: Ring<CanFrame, 16>,
    events: Ring<EcuEvent, 32>,
    local: Option<u8>,
    now: Instant,
    failed_responses: u32,
}

impl<const S: usize, const R: usize, const E: usize, const T: usize> fmt::Debug for Ecu<'_, S, R, E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ecu")
            .field("name", &self.claimer.name())
            .field("state", &self.claimer.state())
            .field("transport", &self.transport)
            .finish()
    }
}

impl<'a, const S: usize, const R: usize, const E: usize, const T: usize> Ecu<'a, S, R, E, T> {
    /// An ECU whose `E` ETP sessions have empty buffers (so ETP is refused;
    /// see [`Ecu::with_etp_buffers`]). Errors: [`EcuError::Claim`],
    /// [`EcuError::Config`].
    pub fn new(config: EcuConfig) -> Result<Self, EcuError> {
        Self::with_etp_buffers(config, core::array::from_fn(|_| -> &'a mut [u8] { &mut [] }))
    }

    /// An ECU with one ETP session per buffer (each buffer's length caps the
    /// ETP messages it carries): borrowed `&'a mut [u8]` or, with the `alloc`
    /// feature, owned `Box<[u8]>`/`Vec<u8>` (see [`ManagedSlice`]). Errors:
    /// as [`Ecu::new`].
    pub fn with_etp_buffers<B: Into<ManagedSlice<'a, u8>>>(
        config: EcuConfig,
        buffers: [B; E],
    ) -> Result<Self, EcuError> {
        let etp_config = EtpConfig {
            priority: config.transport.priority,
            packets_per_cts: config.transport.packets_per_cts,
            cts_delay: config.transport.cts_delay,
        };
        Ok(Ecu {
            config,
            claimer: AddressClaimer::with_capacity(config.claim).map_err(EcuError::Claim)?,
            transport: Transport::new(config.transport).map_err(EcuError::Config)?,
            etp: Etp::new(etp_config, buffers),
            responders: [None; R],
            pending: [None; R],
            tx: Ring::new(),
            events: Ring::new(),
            local: None,
            now: Instant::ZERO,
            failed_responses: 0,
        })
    }

    /// Starts the address claim (J1939-81): the address is usable 250 ms later.
    pub fn start(&mut self, now: Instant) {
        self.now = now;
        self.claimer.start(now);
        self.sync_address();
    }

    /// The driver could not send `frame`, one of this ECU's frames: if it
    /// was the Address Claimed frame, the claim is sent again and its
    /// 250 ms wait restarts ([`AddressClaimer::claim_not_sent`]).
    pub fn frame_not_sent(&mut self, now: Instant, frame: &Frame) {
        self.now = now;
        if self.claimer.claim_not_sent(now, frame) {
            self.sync_address();
        }
    }

    pub fn name(&self) -> Name {
        self.claimer.name()
    }
    /// The claimed address, once usable.
    pub fn address(&self) -> Option<u8> {
        self.claimer.address()
    }
    pub fn claim_state(&self) -> ClaimState {
        self.claimer.state()
    }
    /// The live NAME <-> address table of the bus.
    pub fn table(&self) -> &AddressTable<T> {
        self.claimer.table()
    }
    pub fn transport(&self) -> &Transport<S, 32> {
        &self.transport
    }
    pub fn stats(&self) -> EcuStats {
        EcuStats {
            transport: self.transport.stats(),
            etp: self.etp.stats(),
            dropped_frames: self.tx.dropped(),
            dropped_events: self.events.dropped() + self.claimer.dropped_events(),
            failed_responses: self.failed_responses,
        }
    }

    /// Registers (or replaces) how requests for `pgn` are answered.
    /// Data above 1785 bytes can only answer destination-specific requests
    /// (by ETP). Errors: [`EcuError::Full`], [`EcuError::TooLong`] above the
    /// ETP maximum.
    pub fn register(&mut self, pgn: Pgn, responder: Responder<'a>) -> Result<(), EcuError> {
        if let Responder::Data(d) = responder {
            if d.len() > super::etp::MAX_ETP_SIZE as usize {
                return Err(EcuError::TooLong);
            }
        }
        let pgn = pgn.normalized();
        let slot = match self.responders.iter().position(|r| r.is_some_and(|(p, _)| p == pgn)) {
            Some(i) => i,
            None => self.responders.iter().position(|r| r.is_none()).ok_or(EcuError::Full)?,
        };
        self.responders[slot] = Some((pgn, responder));
        Ok(())
    }

    pub fn unregister(&mut self, pgn: Pgn) {
        for r in self.responders.iter_mut() {
            if r.is_some_and(|(p, _)| p == pgn.normalized()) {
                *r = None;
            }
        }
    }

    /// Sends `data` as `pgn` to `destination` (255 = all): one frame up to 8
    /// bytes, BAM above 8 to global, RTS/CTS from 9 to 1785 bytes to one CA,
    /// ETP above 1785 bytes to one CA (needs an ETP buffer large enough).
    /// Sends to a busy pair queue. Errors: [`EcuError`] (`TooLong` above 1785
    /// bytes to global).
    pub fn send(&mut self, priority: u8, pgn: Pgn, destination: u8, data: &[u8]) -> Result<(), EcuError> {
        let me = self.address().ok_or(EcuError::NoAddress)?;
        if priority > 7 || destination == NULL_ADDRESS {
            return Err(EcuError::Invalid);
        }
        if data.len() > MAX_TP_SIZE {
            if destination == GLOBAL_ADDRESS {
                return Err(EcuError::TooLong);
            }
            self.etp.send(priority, pgn, me, destination, data)?;
            return Ok(());
        }
        if data.len() <= 8 {
            if !self.tx.push_counted(frame(priority, pgn, me, destination, data)) {
                return Err(EcuError::Full);
            }
        } else {
            self.transport.send(priority, pgn, me, destination, data)?;
        }
        Ok(())
    }

    /// Requests `pgn` from `destination` (255 = all); the end is reported
    /// as [`EcuEvent::RequestDone`]. Errors: [`EcuError::NoAddress`],
    /// [`EcuError::Full`] (R requests outstanding or transmit queue full).
    pub fn request(&mut self, now: Instant, pgn: Pgn, destination: u8) -> Result<(), EcuError> {
        self.now = now;
        let me = self.address().ok_or(EcuError::NoAddress)?;
        if destination == NULL_ADDRESS {
            return Err(EcuError::Invalid);
        }
        let slot = self.pending.iter().position(|p| p.is_none()).ok_or(EcuError::Full)?;
        if !self.tx.push_counted(Request { pgn }.frame(me, destination)) {
            return Err(EcuError::Full);
        }
        self.pending[slot] = Some(Pending {
            pgn: pgn.normalized(),
            destination,
            deadline: now + self.config.request_timeout,
            by_tp: false,
        });
        Ok(())
    }

    /// Answers a request reported by [`EcuEvent::Request`] (or any request):
    /// one frame up to 8 bytes (to the requester for a PDU1 PGN after a
    /// specific request), BAM above 8 after a global request, RTS/CTS to
    /// the requester after a specific one. Errors: as [`Ecu::send`].
    pub fn respond(&mut self, pgn: Pgn, requester: u8, global: bool, data: &[u8]) -> Result<(), EcuError> {
        let to = if global || requester > MAX_UNICAST_ADDRESS { GLOBAL_ADDRESS } else { requester };
        self.send(super::id::DEFAULT_PRIORITY, pgn, to, data)
    }

    /// Sends an Acknowledgment (to global) for `pgn` about `requester`.
    pub fn acknowledge(&mut self, control: AckControl, pgn: Pgn, requester: u8) -> Result<(), EcuError> {
        let me = self.address().ok_or(EcuError::NoAddress)?;
        let ack = Acknowledgment { control, group_function: 0xFF, address: requester, pgn };
        if self.tx.push_counted(ack.frame(me)) {
            Ok(())
        } else {
            Err(EcuError::Full)
        }
    }

    /// Commands the CA named `target` to move to `new_address` (Commanded
    /// Address, PGN 65240, 9 bytes by TP: BAM when `destination` is 255).
    pub fn command_address(&mut self, target: Name, new_address: u8, destination: u8) -> Result<(), EcuError> {
        let payload = super::address_claim::commanded_address_payload(target, new_address);
        self.send(super::id::DEFAULT_PRIORITY, Pgn::COMMANDED_ADDRESS, destination, &payload)
    }

    /// Feeds one bus frame. A TP or ETP reception it opens waits the
    /// configured turnaround before each CTS ([`Turnaround::Apply`]); see
    /// [`Ecu::handle_frame_from`].
    pub fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        self.handle_frame_from(now, frame, Turnaround::Apply);
    }

    /// Feeds one bus frame whose sender the caller knows something of:
    /// `turnaround` says whether a TP/ETP reception it opens (an RTS) waits
    /// [`super::TransportConfig::cts_delay`] before each CTS (see
    /// `transport`, "CTS turnaround").
    pub fn handle_frame_from(&mut self, now: Instant, frame: &Frame, turnaround: Turnaround) {
        self.now = now;
        let Some((id, data)) = J1939Id::from_frame(frame) else { return };
        self.claimer.handle_j1939(now, &id, data);
        self.sync_address();
        self.transport.handle_j1939(now, &id, data, turnaround);
        self.etp.handle_j1939(now, &id, data, turnaround);
        let me = self.address();
        let for_us = id.is_global() || Some(id.destination) == me;
        match id.pgn {
            Pgn::ADDRESS_CLAIMED => {}
            Pgn::TP_DT | Pgn::ETP_DT => self.wait_for_tp(now, id.source, None),
            Pgn::ETP_CM => match (super::etp::EtpCm::parse(data), for_us) {
                (Ok(super::etp::EtpCm::Rts { pgn, .. }), true) => self.wait_for_tp(now, id.source, Some(pgn)),
                _ => self.wait_for_tp(now, id.source, None),
            },
            Pgn::TP_CM => match (TpCm::parse(data), for_us) {
                // An answer to a pending request starting by TP: wait for it.
                (Ok(TpCm::Rts { pgn, .. } | TpCm::Bam { pgn, .. }), true) => {
                    self.wait_for_tp(now, id.source, Some(pgn))
                }
                _ => self.wait_for_tp(now, id.source, None),
            },
            Pgn::REQUEST => {
                if let (Ok(req), true, Some(_)) = (Request::parse(data), for_us, me) {
                    if req.pgn != Pgn::ADDRESS_CLAIMED {
                        self.on_request(req.pgn, id.source, id.is_global());
                    }
                }
            }
            Pgn::ACKNOWLEDGMENT => {
                if let (Ok(ack), Some(me)) = (Acknowledgment::parse(data), me) {
                    if ack.address == me {
                        self.finish_pending(ack.pgn, id.source, RequestOutcome::Acknowledged(ack.control));
                    }
                }
            }
            _ if for_us => {
                let mut d = [0xFF; 8];
                let n = data.len().min(8);
                d[..n].copy_from_slice(&data[..n]);
                self.events.push_counted(EcuEvent::Message { id, data: d, len: n as u8 });
                self.finish_pending(id.pgn, id.source, RequestOutcome::Answered);
            }
            _ => {}
        }
    }

    /// Runs expired timers (claim wait, Cannot Claim delay, TP timeouts,
    /// request timeouts). Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.claimer.handle_timeout(now);
        self.sync_address();
        self.transport.handle_timeout(now);
        self.etp.handle_timeout(now);
        for slot in self.pending.iter_mut() {
            if let Some(p) = slot {
                if p.deadline <= now {
                    self.events.push_counted(EcuEvent::RequestDone {
                        pgn: p.pgn,
                        destination: p.destination,
                        outcome: RequestOutcome::TimedOut,
                    });
                    *slot = None;
                }
            }
        }
    }

    /// The next frame: address claim frames first, then requests, ACKs and
    /// single frames, then TP frames, then ETP frames.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.now = now;
        if let Some(f) = self.claimer.poll_transmit(now) {
            return Some(f);
        }
        if let Some(f) = self.tx.pop() {
            return Some(f);
        }
        if let Some(f) = self.transport.poll_transmit(now) {
            return Some(f);
        }
        self.etp.poll_transmit(now)
    }

    /// The next event. A `Received` event's bytes stay readable through
    /// [`Ecu::received_data`] until the next call of this method.
    pub fn poll_event(&mut self) -> Option<EcuEvent> {
        loop {
            if let Some(e) = self.events.pop() {
                return Some(e);
            }
            if let Some(e) = self.claimer.poll_event() {
                return Some(EcuEvent::Address(e));
            }
            let Some(ev) = self.transport.poll_event() else {
                let ev = self.etp.poll_event()?;
                return Some(match ev {
                    TransportEvent::Received(r) => {
                        self.finish_pending(r.pgn, r.source, RequestOutcome::Answered);
                        EcuEvent::ReceivedExtended(r)
                    }
                    TransportEvent::Aborted {
                        direction: transport::Direction::Receive, pgn, source, reason, ..
                    } => {
                        self.finish_pending(pgn, source, RequestOutcome::TransportAborted(reason));
                        EcuEvent::Transport(ev)
                    }
                    _ => EcuEvent::Transport(ev),
                });
            };
            match ev {
                TransportEvent::Received(r) => {
                    let to_us = r.destination == GLOBAL_ADDRESS || Some(r.destination) == self.local;
                    if r.pgn == Pgn::COMMANDED_ADDRESS {
                        if let Some(d) = self.transport.received_data(r.handle) {
                            let now = self.now;
                            if self.claimer.handle_commanded_address(now, d) {
                                self.sync_address();
                                continue;
                            }
                        }
                    }
                    if to_us {
                        self.finish_pending(r.pgn, r.source, RequestOutcome::Answered);
                    }
                    return Some(EcuEvent::Received(r));
                }
                TransportEvent::Aborted { direction: transport::Direction::Receive, pgn, source, reason, .. } => {
                    self.finish_pending(pgn, source, RequestOutcome::TransportAborted(reason));
                    return Some(EcuEvent::Transport(ev));
                }
                _ => return Some(EcuEvent::Transport(ev)),
            }
        }
    }

    /// The earliest deadline of claim, transport and requests.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let req = self.pending.iter().flatten().map(|p| p.deadline).min();
        crate::time::earliest(
            crate::time::earliest(self.claimer.poll_timeout(), self.transport.poll_timeout()),
            crate::time::earliest(req, self.etp.poll_timeout()),
        )
    }

    /// Bytes of a `Received` event (see the module doc).
    pub fn received_data(&self, handle: SessionHandle) -> Option<&[u8]> {
        self.transport.received_data(handle)
    }

    /// Bytes of a `ReceivedExtended` event (until the next `poll_event`).
    pub fn received_extended_data(&self, handle: SessionHandle) -> Option<&[u8]> {
        self.etp.received_data(handle)
    }

    /// Sends a Request for Address Claimed to all (J1939-81 4.5.1), from our
    /// address or from 254 before we have one: every CA answers, which
    /// refreshes [`Ecu::table`].
    pub fn request_address_claims(&mut self) -> Result<(), EcuError> {
        let from = self.claimer.claiming_address().unwrap_or(NULL_ADDRESS);
        let f = super::address_claim::request_for_address_claim(from, GLOBAL_ADDRESS);
        if self.tx.push_counted(f) {
            Ok(())
        } else {
            Err(EcuError::Full)
        }
    }

    fn on_request(&mut self, pgn: Pgn, requester: u8, global: bool) {
        let found = self.responders.iter().flatten().find(|(p, _)| *p == pgn.normalized()).map(|(_, r)| *r);
        match found {
            Some(Responder::Data(d)) if self.respond(pgn, requester, global, d).is_err() => {
                self.failed_responses = self.failed_responses.saturating_add(1);
            }
            Some(Responder::Data(_)) => {}
            Some(Responder::Application) => {
                self.events.push_counted(EcuEvent::Request { pgn, requester, global });
            }
            None if !global && self.config.nack_unsupported => {
                let _ = self.acknowledge(AckControl::Nack, pgn, requester);
            }
            None => {}
        }
    }

    /// A TP/ETP frame from `source`: an RTS or BAM of `start` marks the
    /// requests for that PGN as answered by TP; every frame of the
    /// responder moves their deadline to `request_timeout` + T2 from now.
    /// (Before, an RTS cleared the deadline: a transfer that never ended,
    /// or one answering two requests at once, left a request without
    /// `RequestDone` and its slot taken for good; found by the `j1939_ecu`
    /// fuzz target.)
    fn wait_for_tp(&mut self, now: Instant, source: u8, start: Option<Pgn>) {
        let wait = self.config.request_timeout + transport::T2;
        for p in self.pending.iter_mut().flatten() {
            if !matches_source(p.destination, source) {
                continue;
            }
            if start.is_some_and(|pgn| p.pgn == pgn.normalized()) {
                p.by_tp = true;
            }
            if p.by_tp {
                p.deadline = p.deadline.max(now + wait);
            }
        }
    }

    fn finish_pending(&mut self, pgn: Pgn, source: u8, outcome: RequestOutcome) {
        for slot in self.pending.iter_mut() {
            if let Some(p) = slot {
                if p.pgn == pgn.normalized() && matches_source(p.destination, source) {
                    self.events.push_counted(EcuEvent::RequestDone { pgn: p.pgn, destination: p.destination, outcome });
                    *slot = None;
                    return;
                }
            }
        }
    }

    /// Keeps the transport's local address equal to the claimed one.
    fn sync_address(&mut self) {
        let now = self.claimer.claiming_address();
        if now != self.local {
            if let Some(old) = self.local {
                self.transport.set_local_address(old, false);
                self.etp.set_local_address(old, false);
            }
            if let Some(new) = now {
                self.transport.set_local_address(new, true);
                self.etp.set_local_address(new, true);
            }
            self.local = now;
        }
    }
}

fn matches_source(requested_from: u8, source: u8) -> bool {
    requested_from == GLOBAL_ADDRESS || requested_from == source
}

impl<const S: usize, const R: usize, const E: usize, const T: usize> crate::driver::Events for Ecu<'_, S, R, E, T> {
    type Event<'b>
        = EcuEvent
    where
        Self: 'b;
    fn poll_event(&mut self) -> Option<EcuEvent> {
        Ecu::poll_event(self)
    }
}

#[cfg(test)]
mod tests;
