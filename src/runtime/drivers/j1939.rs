//! The SAE J1939 driver: `canx_core::j1939::Ecu` engines driven by a bus's
//! receive thread.
//!
//! One [`J1939Driver`] per ECU (controller application), attached to its bus
//! like any engine: the generic engine host ([`Hosted`]) around the core
//! [`Ecu`], with [`J1939Adapter`] as its protocol part. The receive thread feeds it every frame from the bus
//! (the socket's own loopback copies, [`Origin::Own`], are skipped: an engine
//! must never see its own frames), runs its timers and sends what it
//! produces. ECUs attached to one bus share one socket, so the kernel does
//! not loop their frames to each other: the runtime's local echo hands them
//! over ([`Origin::Sibling`]), as the bus would.
//!
//! CTS turnaround ([`CtsTurnaround::Auto`]): a reception waits
//! `cts_delay` when its RTS came from the bus ([`Origin::Bus`], never a
//! sibling engine) and the bus reports the kernel's J1939 stack active
//! ([`PeerHints::kernel_j1939_active`], asked of the backend at that moment).
//!
//! Events leave the engine at once, with their data: a reassembled TP/ETP
//! message is copied out of the session buffer (`received_data`, valid only
//! until the next `poll_event`) into [`J1939Event::Message`] and pushed to
//! the ECU's bounded [`EventQueue`] (full: dropped and counted).
//!
//! Requests for PGNs with a registered answer ([`J1939Driver::set_response`])
//! are answered here, natively, within J1939-21's Tr (200 ms) whatever the
//! application is doing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use canx_core::j1939::etp;
use canx_core::j1939::request::AckControl;
use canx_core::j1939::transport::{self, Direction};
use canx_core::j1939::{
    ClaimEvent, ClaimState, Ecu, EcuConfig, EcuError, EcuEvent, J1939Id, Pgn, RequestOutcome, Responder,
    TransportEvent, Turnaround,
};
use canx_core::{Frame, Instant};

use super::host::{Accept, Adapter, Hosted};
use crate::runtime::PeerHints;
use crate::runtime::{epoch_now, EventQueue, Origin, RxFrame};

/// TP sessions per ECU (each holds a 1785-byte buffer).
pub const TP_SESSIONS: usize = 16;
/// Registered PGNs and outstanding requests per ECU.
pub const REQUESTS: usize = 16;
/// ETP sessions per ECU (each over a driver-owned buffer).
pub const ETP_SESSIONS: usize = 2;

type CoreEcu = Ecu<'static, TP_SESSIONS, REQUESTS, ETP_SESSIONS>;

/// How a message arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Single,
    Tp,
    Etp,
}

/// What an ECU reports to the application, with its data.
#[derive(Clone, Debug, PartialEq)]
pub enum J1939Event {
    /// A message for this ECU (to its address or to all): one frame or a
    /// reassembled TP/ETP transfer. `timestamp`: seconds since the epoch of
    /// the frame that completed it.
    Message { pgn: u32, source: u8, destination: u8, priority: u8, data: Vec<u8>, timestamp: f64, via: Via },
    /// A request for a PGN the application answers (`register_request`).
    Request { pgn: u32, requester: u8, global: bool, timestamp: f64 },
    /// A request made with `request` ended. `outcome`: "answered" (with
    /// the answer's source and data), "ack" (acknowledgment code `code`),
    /// "aborted" (TP abort `code`), "timeout".
    RequestDone { pgn: u32, destination: u8, outcome: &'static str, code: u8, source: u8, data: Option<Vec<u8>> },
    /// The address is ours (after the 250 ms wait, J1939-81).
    Claimed { address: u8 },
    /// `address` was lost to a lower NAME.
    Lost { address: u8, winner: u64 },
    /// No address could be claimed.
    CannotClaim,
    /// A TP/ETP send completed.
    Sent { pgn: u32, destination: u8, size: u32 },
    /// A TP/ETP session ended without success. `transmit`: our send.
    Aborted { pgn: u32, source: u8, destination: u8, reason: u8, by_peer: bool, transmit: bool },
}

/// A subscription to an ECU's messages (`ECU.messages()` in Python): the
/// receive thread pushes every matching [`J1939Event::Message`] straight into
/// its bounded queue (full: dropped and counted), so a consumer waiting on it
/// is woken by the receive thread itself, with no callback thread between.
#[derive(Debug)]
pub struct MessageStream {
    /// Normalized PGN (PDU1 without its DA byte); `None`: every PGN.
    pgn: Option<u32>,
    /// `None`: any source address.
    source: Option<u8>,
    pub queue: EventQueue<J1939Event>,
    closed: AtomicBool,
}

impl MessageStream {
    /// Stops delivery; the driver forgets the stream at its next message.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// `pgn`: normalized.
    fn wants(&self, pgn: u32, source: u8) -> bool {
        self.pgn.is_none_or(|p| p == pgn) && self.source.is_none_or(|s| s == source)
    }
}

/// Driver-level errors of ECU operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum J1939Error {
    /// No such ECU (closed).
    Closed,
    /// The engine refused (no address, too long, invalid, full, ...).
    Ecu(EcuError),
}

impl std::fmt::Display for J1939Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            J1939Error::Closed => f.write_str("the ECU has been closed"),
            J1939Error::Ecu(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for J1939Error {}

/// When an ECU's TP/ETP receptions wait the CTS turnaround
/// ([`canx_core::j1939::TransportConfig::cts_delay`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CtsTurnaround {
    /// When the sender may be the kernel's J1939 stack: the RTS came from
    /// the bus ([`Origin::Bus`], not from another engine of this bus) and the
    /// backend reports the stack active at that moment
    /// ([`PeerHints::kernel_j1939_active`]; only SocketCAN has one).
    #[default]
    Auto,
    /// For every reception.
    Always,
    /// Never.
    Never,
}

/// Settings of one ECU in the driver.
#[derive(Clone, Copy, Debug)]
pub struct NodeConfig {
    pub config: EcuConfig,
    /// When the configured `cts_delay` applies.
    pub turnaround: CtsTurnaround,
    /// Bytes of each of the [`ETP_SESSIONS`] ETP buffers (caps received and
    /// sent ETP messages). Pages are only touched when used.
    pub etp_buffer: usize,
    /// Capacity of the event queue.
    pub queue: usize,
}

/// One J1939 ECU on a bus: the core [`Ecu`] hosted with [`J1939Adapter`]
/// (see the module doc). Closed (every operation [`J1939Error::Closed`])
/// after [`J1939Driver::close`].
pub type J1939Driver = Hosted<CoreEcu, J1939Adapter>;

/// What the driver keeps beside the engine: registered answers, message
/// streams, the turnaround policy and the request-answer pairing.
#[derive(Debug)]
pub struct J1939Adapter {
    /// For [`J1939Driver::close`], which swaps in an idle engine.
    config: EcuConfig,
    closed: bool,
    responses: HashMap<u32, Vec<u8>>,
    /// The last message delivered (pgn, source, data): the answer a
    /// following RequestDone(Answered) refers to.
    last: Option<(u32, u8, Vec<u8>)>,
    /// The address being claimed or held (kept after every round of events).
    local: Option<u8>,
    turnaround: CtsTurnaround,
    /// Asked whether the kernel's J1939 stack is active on the bus
    /// ([`CtsTurnaround::Auto`]); set by [`Bus::attach`](crate::runtime::Bus::attach).
    hints: PeerHints,
    /// Open [`MessageStream`]s (closed ones are dropped at the next message).
    streams: Vec<Arc<MessageStream>>,
    /// An event [`Adapter::settle`] finishes with the engine: a TP/ETP
    /// reception (its bytes) or a request with a registered answer.
    pending: Option<EcuEvent>,
    /// Registered answers that could not be queued (transmit queue full):
    /// reported with the engine's own in `failed_responses`.
    failed_responses: u64,
    /// When this ECU's recent TP/ETP RTS frames were handed to the bus:
    /// (source, destination, PGN, [`epoch_now`] seconds), newest last, at
    /// most [`RTS_KEPT`] ([`stale_tp_answer`]).
    rts_sent: VecDeque<(u8, u8, u32, f64)>,
    /// TP/ETP CTS, EoMA and aborts dropped as answers to an earlier RTS.
    stale_tp_frames: u64,
    /// [`PeerHints::host_timestamps`] of the bus, read once at attach (a
    /// backend's timestamp clock does not change; the hint's weak upgrade
    /// would otherwise run for every received frame).
    host_timestamps: bool,
}

/// RTS frames remembered for [`stale_tp_answer`] (one per concurrent
/// RTS/CTS session is enough; the core runs at most 32 TP + 4 ETP).
const RTS_KEPT: usize = 64;

/// The (source, destination, PGN, control) of a TP.CM / ETP.CM frame.
fn connection_management(frame: &Frame) -> Option<(u8, u8, u32, u8, bool)> {
    let (id, data) = J1939Id::from_frame(frame)?;
    let etp = match id.pgn {
        Pgn::TP_CM => false,
        Pgn::ETP_CM => true,
        _ => return None,
    };
    if data.len() < 8 {
        return None;
    }
    let pgn = u32::from_le_bytes([data[5], data[6], data[7], 0]);
    Some((id.source, id.destination, pgn, data[0], etp))
}

impl J1939Adapter {
    /// A CTS, EoMA or abort that our peer sent before our RTS of the same
    /// (source, destination, PGN) went out: it answers an earlier transfer
    /// (one this ECU gave up on, whose answer waited in the receive queue
    /// behind a flood), and taken for the current one it would end it as
    /// acknowledged although the receiver never got it (seen in the soak:
    /// `send_pgn` resolved, nothing delivered). J1939-21 5.10.3 carries no
    /// transfer identity, so the order is judged by receive time, and only
    /// where frame timestamps are this host's clock
    /// ([`PeerHints::host_timestamps`]: SocketCAN, virtual).
    fn stale_tp_answer(&self, rx: &RxFrame) -> bool {
        if self.rts_sent.is_empty() || !self.host_timestamps {
            return false;
        }
        let Some((sa, da, pgn, c, etp)) = connection_management(&rx.frame) else { return false };
        let answer = if etp {
            matches!(c, etp::control::CTS | etp::control::END_OF_MSG_ACK | etp::control::ABORT)
        } else {
            matches!(c, transport::control::CTS | transport::control::END_OF_MSG_ACK | transport::control::ABORT)
        };
        answer && self.rts_sent.iter().any(|&(s, d, p, t)| s == da && d == sa && p == pgn && rx.timestamp < t)
    }

    /// Pushes `e` to the ECU's queue and, a message, to the streams that want it.
    fn deliver(&mut self, e: J1939Event, out: &EventQueue<J1939Event>) {
        if let J1939Event::Message { pgn, source, .. } = e {
            self.streams.retain(|s| !s.is_closed());
            let pgn = Pgn::new(pgn).map_or(pgn, |p| p.normalized().raw());
            for s in self.streams.iter().filter(|s| s.wants(pgn, source)) {
                s.queue.push(e.clone());
            }
        }
        out.push(e);
    }

    /// The turnaround for a frame fed to this ECU: `opens` whether it may
    /// open a reception (see [`may_open_reception`]); `kernel_may_send`
    /// whether the kernel's J1939 stack may be its sender (asked only in
    /// [`CtsTurnaround::Auto`] for such a frame).
    fn turnaround_for(&self, opens: bool, kernel_may_send: impl FnOnce() -> bool) -> Turnaround {
        let apply = match self.turnaround {
            _ if !opens => true, // no reception opens: nothing to decide
            CtsTurnaround::Always => true,
            CtsTurnaround::Never => false,
            CtsTurnaround::Auto => kernel_may_send(),
        };
        if apply {
            Turnaround::Apply
        } else {
            Turnaround::Skip
        }
    }
}

impl Adapter<CoreEcu> for J1939Adapter {
    type Event = J1939Event;
    /// The ECUs of one bus take turns: each sends at most this many frames
    /// per receive round, so concurrent TP/ETP sessions all progress (a
    /// whole 255-DT window per ECU in turn kept the last sessions' first DT
    /// beyond the receivers' T2, 1.25 s, with 64 sessions in the qemu VM).
    const TX_PER_ROUND: usize = 16;

    /// An Address Claimed frame that could not be sent claims nothing
    /// (J1939-81 4.4.4.3: the 250 ms wait runs from its transmission): the
    /// engine sends it again and restarts the wait, so `claim_address`
    /// does not return an address nobody on the bus heard claimed.
    fn failed(&mut self, engine: &mut CoreEcu, frame: &Frame, now: Instant) {
        engine.frame_not_sent(now, frame);
    }

    fn event(&mut self, ev: EcuEvent, at: f64, out: &EventQueue<J1939Event>) {
        let e = match ev {
            EcuEvent::Message { id, data, len } => {
                let d = data[..usize::from(len)].to_vec();
                self.last = Some((id.pgn.raw(), id.source, d.clone()));
                J1939Event::Message {
                    pgn: id.pgn.raw(),
                    source: id.source,
                    destination: id.destination,
                    priority: id.priority,
                    data: d,
                    timestamp: at,
                    via: Via::Single,
                }
            }
            // Their bytes (or the answer) need the engine: `settle`.
            EcuEvent::Received(_) | EcuEvent::ReceivedExtended(_) => {
                self.pending = Some(ev);
                return;
            }
            EcuEvent::Request { pgn, .. } if self.responses.contains_key(&pgn.raw()) => {
                self.pending = Some(ev);
                return;
            }
            EcuEvent::Request { pgn, requester, global } => {
                J1939Event::Request { pgn: pgn.raw(), requester, global, timestamp: at }
            }
            EcuEvent::RequestDone { pgn, destination, outcome } => {
                let (outcome, code, source, data) = match outcome {
                    RequestOutcome::Answered => match self.last.take() {
                        Some((p, s, d)) if p == pgn.raw() => ("answered", 0, s, Some(d)),
                        _ => ("answered", 0, destination, None),
                    },
                    RequestOutcome::Acknowledged(c) => ("ack", ack_code(c), destination, None),
                    RequestOutcome::TransportAborted(r) => ("aborted", r.code(), destination, None),
                    RequestOutcome::TimedOut => ("timeout", 0, destination, None),
                };
                J1939Event::RequestDone { pgn: pgn.raw(), destination, outcome, code, source, data }
            }
            EcuEvent::Address(ClaimEvent::Claimed { address }) => J1939Event::Claimed { address },
            EcuEvent::Address(ClaimEvent::Lost { address, winner }) => {
                J1939Event::Lost { address, winner: winner.to_u64() }
            }
            EcuEvent::Address(ClaimEvent::CannotClaim) => J1939Event::CannotClaim,
            EcuEvent::Address(ClaimEvent::Table(_)) => return,
            EcuEvent::Transport(TransportEvent::Sent { pgn, destination, size, .. }) => {
                J1939Event::Sent { pgn: pgn.raw(), destination, size }
            }
            EcuEvent::Transport(TransportEvent::Aborted {
                direction,
                pgn,
                source,
                destination,
                reason,
                by_peer,
                ..
            }) => J1939Event::Aborted {
                pgn: pgn.raw(),
                source,
                destination,
                reason: reason.code(),
                by_peer,
                transmit: direction == Direction::Transmit,
            },
            EcuEvent::Transport(TransportEvent::Received(_)) => return,
        };
        self.deliver(e, out);
    }

    /// Copies a reassembled TP/ETP message out of its session buffer (valid
    /// until the next `poll_event`); answers a request for a registered PGN
    /// natively, within J1939-21's Tr (200 ms), or says it cannot.
    fn settle(&mut self, ecu: &mut CoreEcu, at: f64, out: &EventQueue<J1939Event>) {
        match self.pending.take() {
            Some(ev @ (EcuEvent::Received(r) | EcuEvent::ReceivedExtended(r))) => {
                let etp = matches!(ev, EcuEvent::ReceivedExtended(_));
                let d = if etp { ecu.received_extended_data(r.handle) } else { ecu.received_data(r.handle) };
                let d = d.map(|d| d.to_vec()).unwrap_or_default();
                self.last = Some((r.pgn.raw(), r.source, d.clone()));
                let e = J1939Event::Message {
                    pgn: r.pgn.raw(),
                    source: r.source,
                    destination: r.destination,
                    priority: r.priority,
                    data: d,
                    timestamp: at,
                    via: if etp { Via::Etp } else { Via::Tp },
                };
                self.deliver(e, out);
            }
            Some(EcuEvent::Request { pgn, requester, global }) => {
                if let Some(data) = self.responses.get(&pgn.raw()) {
                    if ecu.respond(pgn, requester, global, data).is_err() {
                        self.failed_responses += 1;
                        let _ = ecu.acknowledge(AckControl::CannotRespond, pgn, requester);
                    }
                }
            }
            _ => {}
        }
    }

    fn accept(&mut self, rx: &RxFrame, _room: bool) -> Accept {
        if self.closed {
            return Accept::Ignore;
        }
        // Everything but a frame to one other CA: with many ECUs on one
        // socket, this keeps a TP.DT from being parsed by every ECU.
        match unicast_destination(&rx.frame) {
            Some(da) if self.local != Some(da) => Accept::Ignore,
            _ => Accept::Take,
        }
    }

    /// Remembers when an RTS (TP or ETP) went to the bus, for
    /// [`stale_tp_answer`].
    fn taken(&mut self, frame: &Frame) {
        if let Some((sa, da, pgn, c, etp)) = connection_management(frame) {
            if c == if etp { etp::control::RTS } else { transport::control::RTS } {
                self.rts_sent.retain(|r| (r.0, r.1, r.2) != (sa, da, pgn));
                if self.rts_sent.len() == RTS_KEPT {
                    self.rts_sent.pop_front();
                }
                self.rts_sent.push_back((sa, da, pgn, epoch_now()));
            }
        }
    }

    fn feed(&mut self, ecu: &mut CoreEcu, now: Instant, rx: &RxFrame) {
        if self.stale_tp_answer(rx) {
            self.stale_tp_frames += 1;
            return;
        }
        // Only a frame from the bus (or from another socket on this host,
        // which the kernel's stack is) may come from the kernel's stack;
        // another ECU of this bus (the runtime's local echo) is a canx engine.
        let hints = &self.hints;
        let from_bus = matches!(rx.origin, Origin::Bus | Origin::Host);
        let t = self.turnaround_for(may_open_reception(&rx.frame), || from_bus && hints.kernel_j1939_active());
        ecu.handle_frame_from(now, &rx.frame, t);
    }

    /// Keeps the claimed address for [`Adapter::accept`].
    fn refill(&mut self, ecu: &mut CoreEcu, _out: &EventQueue<J1939Event>) {
        self.local = match ecu.claim_state() {
            ClaimState::Claiming { address, .. } | ClaimState::Claimed { address } => Some(address),
            _ => None,
        };
    }

    fn attached(&mut self, hints: PeerHints) {
        self.host_timestamps = hints.host_timestamps();
        self.hints = hints;
    }
}

/// The unicast DA of a PDU1 frame to one CA (`None`: to all, PDU2, or not
/// J1939).
fn unicast_destination(frame: &Frame) -> Option<u8> {
    let (id, _) = J1939Id::from_frame(frame)?;
    (id.pgn.is_pdu1() && id.destination <= 253).then_some(id.destination)
}

/// Whether `frame` is a TP.CM or ETP.CM RTS or CTS (J1939-21 5.10.3, control
/// bytes 16/17 and 20/21): the frames after which this ECU may send a CTS,
/// so the only ones whose turnaround ([`CtsTurnaround`]) matters.
fn may_open_reception(frame: &Frame) -> bool {
    let Some((id, data)) = J1939Id::from_frame(frame) else { return false };
    match id.pgn {
        Pgn::TP_CM => matches!(data.first(), Some(&transport::control::RTS | &transport::control::CTS)),
        Pgn::ETP_CM => matches!(data.first(), Some(&etp::control::RTS | &etp::control::CTS)),
        _ => false,
    }
}

fn ack_code(c: AckControl) -> u8 {
    match c {
        AckControl::Ack => 0,
        AckControl::Nack => 1,
        AckControl::AccessDenied => 2,
        AckControl::CannotRespond => 3,
        AckControl::Other(c) => c,
    }
}

fn idle_ecu(config: EcuConfig, etp_buffer: usize) -> Result<CoreEcu, EcuError> {
    let bufs: [Box<[u8]>; ETP_SESSIONS] = core::array::from_fn(|_| vec![0u8; etp_buffer].into_boxed_slice());
    CoreEcu::with_etp_buffers(config, bufs)
}

impl J1939Driver {
    /// An ECU (not started: silent until [`J1939Driver::start`]) and its
    /// event queue. Errors: the engine's config errors.
    pub fn new(cfg: NodeConfig) -> Result<(Self, Arc<EventQueue<J1939Event>>), J1939Error> {
        let ecu = idle_ecu(cfg.config, cfg.etp_buffer).map_err(J1939Error::Ecu)?;
        let adapter = J1939Adapter {
            config: cfg.config,
            closed: false,
            responses: HashMap::new(),
            last: None,
            local: None,
            turnaround: cfg.turnaround,
            hints: PeerHints::none(),
            streams: Vec::new(),
            pending: None,
            failed_responses: 0,
            rts_sent: VecDeque::new(),
            stale_tp_frames: 0,
            host_timestamps: false,
        };
        let d = Hosted::host(Box::new(ecu), adapter, cfg.queue);
        let q = d.events();
        Ok((d, q))
    }

    /// Closes the ECU: its pending frames are not sent, its timers stop, its
    /// ETP buffers are freed (an idle engine without buffers takes its
    /// place) and frames are ignored. Idempotent.
    pub fn close(&mut self) {
        if self.adapter.closed {
            return;
        }
        self.adapter.closed = true;
        self.adapter.streams.clear();
        // Built from a config the ECU was created with; cannot fail.
        if let Ok(idle) = idle_ecu(self.adapter.config, 0) {
            *self.engine = idle;
        }
    }

    /// Runs `op` on the ECU, then moves its events out.
    pub fn with_ecu<R>(
        &mut self,
        op: impl FnOnce(&mut CoreEcu, &mut HashMap<u32, Vec<u8>>) -> R,
    ) -> Result<R, J1939Error> {
        if self.adapter.closed {
            return Err(J1939Error::Closed);
        }
        Ok(self.with(|e, a, _| op(e, &mut a.responses)))
    }

    /// Starts the address claim (J1939-81).
    pub fn start(&mut self) -> Result<(), J1939Error> {
        let now = self.adapter.hints.now();
        self.with_ecu(|e, _| e.start(now))
    }

    /// The claim state: (state name, address being claimed or held).
    pub fn state(&mut self) -> Result<(&'static str, Option<u8>), J1939Error> {
        self.with_ecu(|e, _| match e.claim_state() {
            ClaimState::Idle => ("idle", None),
            ClaimState::Claiming { address, .. } => ("claiming", Some(address)),
            ClaimState::Claimed { address } => ("claimed", Some(address)),
            ClaimState::CannotClaim => ("cannot_claim", None),
        })
    }

    /// Sends `data` as `pgn` (the engine picks single frame, BAM, RTS/CTS or ETP).
    pub fn send(&mut self, priority: u8, pgn: Pgn, destination: u8, data: &[u8]) -> Result<(), J1939Error> {
        self.with_ecu(|e, _| e.send(priority, pgn, destination, data))?.map_err(J1939Error::Ecu)
    }

    /// Requests `pgn`; the end comes as [`J1939Event::RequestDone`].
    pub fn request(&mut self, pgn: Pgn, destination: u8) -> Result<(), J1939Error> {
        let now = self.adapter.hints.now();
        self.with_ecu(|e, _| e.request(now, pgn, destination))?.map_err(J1939Error::Ecu)
    }

    /// Registers the answer to requests for `pgn` (None: unregister;
    /// `Some(empty)`: the application answers through events).
    pub fn set_response(&mut self, pgn: Pgn, data: Option<Vec<u8>>) -> Result<(), J1939Error> {
        self.with_ecu(|e, responses| match data {
            Some(d) => {
                e.register(pgn, Responder::Application)?;
                if d.is_empty() {
                    responses.remove(&pgn.raw());
                } else {
                    responses.insert(pgn.raw(), d);
                }
                Ok(())
            }
            None => {
                e.unregister(pgn);
                responses.remove(&pgn.raw());
                Ok(())
            }
        })?
        .map_err(J1939Error::Ecu)
    }

    /// Opens a [`MessageStream`] of the ECU's messages of `pgn` (any PDU1
    /// destination byte; `None`: all) from `source` (`None`: any), holding at
    /// most `capacity` messages.
    pub fn subscribe(
        &mut self,
        pgn: Option<Pgn>,
        source: Option<u8>,
        capacity: usize,
    ) -> Result<Arc<MessageStream>, J1939Error> {
        if self.adapter.closed {
            return Err(J1939Error::Closed);
        }
        let s = Arc::new(MessageStream {
            pgn: pgn.map(|p| p.normalized().raw()),
            source,
            queue: EventQueue::new(capacity),
            closed: AtomicBool::new(false),
        });
        let streams = &mut self.adapter.streams;
        streams.retain(|s| !s.is_closed());
        streams.push(s.clone());
        Ok(s)
    }

    /// The NAME <-> address table this ECU keeps from observed claims.
    pub fn table(&mut self) -> Result<Vec<(u8, u64)>, J1939Error> {
        self.with_ecu(|e, _| e.table().iter().map(|(a, n)| (a, n.to_u64())).collect())
    }

    /// Counters: (tp dropped events, engine dropped frames, queue drops, ...).
    pub fn stats(&mut self) -> Result<Vec<(&'static str, u64)>, J1939Error> {
        if self.adapter.closed {
            return Err(J1939Error::Closed);
        }
        let s = self.engine.stats();
        Ok(vec![
            ("event_queue_dropped", self.events().dropped()),
            ("engine_dropped_events", u64::from(s.dropped_events)),
            ("engine_dropped_frames", u64::from(s.dropped_frames)),
            ("failed_responses", u64::from(s.failed_responses) + self.adapter.failed_responses),
            ("tp_refused_sessions", u64::from(s.transport.refused_sessions)),
            ("tp_rejected_sends", u64::from(s.transport.rejected_sends)),
            ("tp_queued_sends", u64::from(s.transport.queued_sends)),
            ("tp_ignored_frames", u64::from(s.transport.ignored_frames)),
            ("etp_refused_sessions", u64::from(s.etp.refused_sessions)),
            ("stale_tp_frames", self.adapter.stale_tp_frames),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::engine::Driven;
    use crate::runtime::{Bus, BusConfig};
    use canx_core::j1939::Name;
    use parking_lot::Mutex;
    use std::time::Duration;

    fn cfg(name: u64, addr: u8) -> NodeConfig {
        NodeConfig {
            config: EcuConfig::new(Name::from_u64(name), addr),
            turnaround: CtsTurnaround::Auto,
            etp_buffer: 200_000,
            queue: 1024,
        }
    }

    fn wait_event(q: &EventQueue<J1939Event>, pred: impl Fn(&J1939Event) -> bool) -> J1939Event {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Some(e) = q.recv_timeout(Duration::from_millis(50)) {
                if pred(&e) {
                    return e;
                }
            }
        }
        panic!("no matching event in 10 s");
    }

    fn claimed(q: &EventQueue<J1939Event>) {
        wait_event(q, |e| matches!(e, J1939Event::Claimed { .. }));
    }

    type Attached = (Arc<Mutex<J1939Driver>>, crate::runtime::EngineHandle, Arc<EventQueue<J1939Event>>);

    /// An ECU attached to `bus`, claim started.
    fn ecu(bus: &Bus, name: u64, addr: u8) -> Attached {
        let (d, q) = J1939Driver::new(cfg(name, addr)).unwrap();
        let d = Arc::new(Mutex::new(d));
        let h = bus.attach(d.clone());
        h.with(|_| ());
        d.lock().start().unwrap();
        h.kick();
        (d, h, q)
    }

    /// Two buses (two nodes of a virtual channel), one ECU each: every size
    /// class of `send` arrives whole (single, RTS/CTS, ETP; BAM to all).
    #[test]
    fn sizes_cross_two_buses() {
        let a = Bus::open(BusConfig::virtual_bus("j1939-drv-sizes")).unwrap();
        let b = Bus::open(BusConfig::virtual_bus("j1939-drv-sizes")).unwrap();
        let (da, ha, qa) = ecu(&a, 1, 0x10);
        let (_db, _hb, qb) = ecu(&b, 2, 0x20);
        claimed(&qa);
        claimed(&qb);
        for (size, dest) in [(8usize, 0x20u8), (9, 0x20), (1785, 0x20), (1786, 0x20), (100_000, 0x20), (100, 0xFF)] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 + size) as u8).collect();
            {
                da.lock().send(6, Pgn::PROPRIETARY_A, dest, &data).unwrap();
            }
            ha.kick();
            let e = wait_event(&qb, |e| matches!(e, J1939Event::Message { .. }));
            match e {
                J1939Event::Message { data: got, source, .. } => {
                    assert_eq!(source, 0x10);
                    assert_eq!(got.len(), size);
                    assert_eq!(got, data);
                }
                _ => unreachable!(),
            }
        }
    }

    /// A BAM's `Sent` is raised when its last TP.DT is taken out (in
    /// `poll_transmit`, no timer left): it reaches the application in that
    /// round, also on a bus where nothing else happens.
    #[test]
    fn bam_sent_arrives_on_a_quiet_bus() {
        let a = Bus::open(BusConfig::virtual_bus("j1939-drv-bam-alone")).unwrap();
        let (d, h, q) = ecu(&a, 1, 0x10);
        claimed(&q);
        let data: Vec<u8> = (0..100u8).collect();
        {
            d.lock().send(6, Pgn::PROPRIETARY_A, 0xFF, &data).unwrap();
        }
        h.kick();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let mut sent = None;
        while sent.is_none() && std::time::Instant::now() < deadline {
            sent = q.recv_timeout(Duration::from_millis(50)).filter(|e| matches!(e, J1939Event::Sent { .. }));
        }
        assert_eq!(sent, Some(J1939Event::Sent { pgn: Pgn::PROPRIETARY_A.raw(), destination: 0xFF, size: 100 }));
    }

    /// Two ECUs attached to one bus see each other through the runtime's
    /// local echo (no loopback, no driver-level cross feed), TP and ETP too.
    #[test]
    fn ecus_of_one_bus_talk() {
        let a = Bus::open(BusConfig::virtual_bus("j1939-drv-shared")).unwrap();
        let (d1, h1, q1) = ecu(&a, 1, 0x10);
        let (d2, h2, q2) = ecu(&a, 2, 0x20);
        claimed(&q1);
        claimed(&q2);
        {
            d2.lock().set_response(Pgn::VEHICLE_IDENTIFICATION, Some(b"VIN12345678*".to_vec())).unwrap();
        }
        h2.kick();
        {
            d1.lock().request(Pgn::VEHICLE_IDENTIFICATION, 0x20).unwrap();
        }
        h1.kick();
        let e = wait_event(&q1, |e| matches!(e, J1939Event::RequestDone { .. }));
        assert_eq!(
            e,
            J1939Event::RequestDone {
                pgn: 65260,
                destination: 0x20,
                outcome: "answered",
                code: 0,
                source: 0x20,
                data: Some(b"VIN12345678*".to_vec())
            }
        );
        // An unregistered PGN asked of one CA: NACK (J1939-21 5.4.4).
        {
            d1.lock().request(Pgn::new(65259).unwrap(), 0x20).unwrap();
        }
        h1.kick();
        let e = wait_event(&q1, |e| matches!(e, J1939Event::RequestDone { .. }));
        assert!(matches!(e, J1939Event::RequestDone { outcome: "ack", code: 1, .. }), "{e:?}");
        for size in [1000usize, 5000] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
            {
                d1.lock().send(6, Pgn::PROPRIETARY_A, 0x20, &data).unwrap();
            }
            h1.kick();
            let e = wait_event(&q2, |e| matches!(e, J1939Event::Message { .. }));
            assert!(matches!(e, J1939Event::Message { data: ref got, source: 0x10, .. } if *got == data), "{size}");
        }
        d2.lock().close();
        assert!(matches!(d2.lock().state(), Err(J1939Error::Closed)));
    }

    /// A backend that only answers the kernel-stack question.
    struct KernelHere(bool);

    impl crate::runtime::Backend for KernelHere {
        fn capabilities(&self) -> crate::runtime::Capabilities {
            crate::runtime::Capabilities::default()
        }
        fn recv_batch(&self, _out: &mut Vec<RxFrame>, _timeout: Duration) -> crate::runtime::Result<()> {
            Ok(())
        }
        fn send(&self, _frame: &Frame, _timeout: Duration) -> crate::runtime::Result<()> {
            Ok(())
        }
        fn wake(&self) {}
        fn backend_drops(&self) -> u64 {
            0
        }
        fn kernel_j1939_active(&self) -> bool {
            self.0
        }
    }

    /// In `CtsTurnaround::Auto` the CTS to an RTS waits `cts_delay` exactly
    /// when the RTS came from the bus and the backend reports the kernel's
    /// J1939 stack active; an RTS from a sibling engine never waits.
    #[test]
    fn cts_turnaround_reads_origin_and_backend_hint() {
        let delay = canx_core::Duration::from_millis(2);
        for (kernel, origin, waits) in [
            (true, Origin::Bus, true),
            (true, Origin::Sibling, false),
            (false, Origin::Bus, false),
            (false, Origin::Sibling, false),
        ] {
            let mut c = cfg(2, 0x20);
            c.config.transport.cts_delay = delay;
            let (mut d, _q) = J1939Driver::new(c).unwrap();
            let backend: Arc<dyn crate::runtime::Backend> = Arc::new(KernelHere(kernel));
            d.attached(PeerHints::new(&backend));
            let t0 = Instant::ZERO;
            d.with_ecu(|e, _| e.start(t0)).unwrap();
            let claimed_at = t0 + canx_core::Duration::from_millis(300);
            d.handle_timeout(claimed_at);
            while d.poll_transmit(claimed_at).is_some() {}
            assert_eq!(d.state().unwrap(), ("claimed", Some(0x20)));
            // TP.CM RTS from 0x10: 20 bytes, 3 packets, PGN 0xEF00.
            let id = J1939Id::new(7, Pgn::TP_CM, 0x10, 0x20).unwrap();
            let rts = id.frame(&[transport::control::RTS, 20, 0, 3, 0xFF, 0x00, 0xEF, 0x00]).unwrap();
            d.handle_frame(claimed_at, &RxFrame { frame: Frame::Can(rts), timestamp: 0.0, origin });
            let first = d.poll_transmit(claimed_at);
            let case = format!("kernel={kernel} origin={origin:?}");
            if waits {
                assert!(first.is_none(), "{case}: the CTS waits the turnaround");
                assert_eq!(d.poll_timeout(), Some(claimed_at + delay), "{case}");
                d.handle_timeout(claimed_at + delay);
                let cts = d.poll_transmit(claimed_at + delay).expect("CTS after the turnaround");
                assert_eq!(cts.data()[0], transport::control::CTS, "{case}");
            } else {
                let cts = first.expect("CTS at once");
                assert_eq!(cts.data()[0], transport::control::CTS, "{case}");
            }
        }
    }
}
