//! ISO-TP (`canx_core::isotp`, ISO 15765-2:2016) driven by a bus's receive
//! thread: the first engine added the `Hosted` way (see ARCHITECTURE.md
//! "Adding an engine").
//!
//! [`IsoTpDriver`] hosts one core [`Channel`] (one N_AI) over buffers it owns
//! (`rx_size` bounds the messages it receives: an FF announcing more is
//! answered with FC.OVFLW; `tx_size` the messages it sends). Around it:
//!
//! - Sending: [`IsoTpDriver::send`] queues a message (owned bytes) under a
//!   *ticket*; the adapter moves one message at a time into the channel and
//!   the next once the channel reported the end of the previous one
//!   (`SendComplete` or `TxError`). [`TxStatus`] tells a waiting caller
//!   how its ticket ended, so a blocking send needs no event.
//! - Receiving: every complete message is copied out of the channel's
//!   receive buffer into the application's bounded queue (full: dropped and
//!   counted), so the channel's buffer is free again at once.
//! - Errors (N_Result of a failed send or reception, ignored N_PDUs) go to
//!   a second bounded queue, [`IsoTpDriver::reports`], so reading messages
//!   never has to step over them.
//! - CAN FD frames leave through `Engine::poll_transmit_frame` (host.rs).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use canx_core::driver::Engine;
use canx_core::filter::Filter;
use canx_core::frame::{id_is_extended, id_raw};
use canx_core::isotp::pci::stmin_micros;
use canx_core::isotp::{
    AddressingMode, Channel, Config, ConfigError, Event, NResult, PduKind, SendError, Stats, TargetAddressType,
};
use canx_core::{Frame, Instant};
use parking_lot::{Condvar, Mutex};

use super::host::{Adapter, Hosted};
use crate::runtime::{epoch_now, EventQueue, Origin, PeerHints, RxFrame};

/// Frames sent per receive-thread round before received frames are handled
/// again (a 66000-byte message at STmin 0 is 9429 CFs).
pub const FRAMES_PER_ROUND: usize = 64;
/// Largest receive or transmit buffer: ISO-TP's FF_DL is 32 bits (§9.6.3).
pub const MAX_SIZE: usize = u32::MAX as usize;

/// A message received, for the application.
#[derive(Clone, Debug, PartialEq)]
pub struct IsoTpMessage {
    pub data: Vec<u8>,
    pub ta_type: TargetAddressType,
    /// Epoch seconds of the frame that completed it.
    pub timestamp: f64,
}

/// An error report (`IsoTpDriver::reports`).
#[derive(Clone, Debug, PartialEq)]
pub enum IsoTpReport {
    /// The message with `ticket` was not sent (N_USData.confirm with `result`).
    TxError { ticket: u64, result: NResult, timestamp: f64 },
    /// A reception failed (N_USData.indication with `result`). `interrupted_by`:
    /// for N_UNEXP_PDU, the SF or FF that ended it (Table 23).
    RxError { result: NResult, interrupted_by: Option<PduKind>, timestamp: f64 },
    /// An N_PDU that Table 23 says to ignore (a CF or FC nobody waits for, a
    /// functional FF, ...).
    Unexpected { kind: PduKind, ta_type: TargetAddressType, timestamp: f64 },
}

/// Parameters of an [`IsoTpDriver`].
#[derive(Clone, Copy, Debug)]
pub struct IsoTpConfig {
    pub channel: Config,
    /// Receive buffer, bytes (python-can-isotp's `max_frame_size`), 1..=[`MAX_SIZE`].
    pub rx_size: usize,
    /// Transmit buffer, bytes: the longest message `send` takes, 1..=[`MAX_SIZE`].
    pub tx_size: usize,
    /// Messages received and not yet read, at most.
    pub queue_size: usize,
    /// Messages waiting to be sent (beyond the one in the channel), at most.
    pub max_waiting: usize,
}

/// Why [`IsoTpDriver::send`] refused a message (nothing was queued).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsoTpRefused {
    /// A caller error: empty, too long, functional and longer than one SF,
    /// a listen-only channel.
    Invalid(SendError),
    /// `max_waiting` messages wait already.
    Full,
}

impl std::fmt::Display for IsoTpRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IsoTpRefused::Invalid(e) => write!(f, "{e}"),
            IsoTpRefused::Full => f.write_str("the ISO-TP transmit queue is full (max_waiting messages wait)"),
        }
    }
}

/// How the tickets of a driver ended, shared with the application so that a
/// blocking send can wait for its own ticket without an event queue.
#[derive(Debug, Default)]
pub struct TxStatus {
    state: Mutex<TxState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct TxState {
    /// Every ticket up to this one has ended (tickets end in order).
    ended_upto: u64,
    /// Results of watched tickets that ended, until taken.
    results: HashMap<u64, NResult>,
    /// Tickets someone waits for.
    watched: HashMap<u64, ()>,
}

impl TxStatus {
    /// Keeps the result of `ticket` for [`TxStatus::take`].
    pub fn watch(&self, ticket: u64) {
        self.state.lock().watched.insert(ticket, ());
    }

    /// The result of a watched ticket once it ended (taken: forgotten).
    pub fn take(&self, ticket: u64) -> Option<NResult> {
        let mut s = self.state.lock();
        let r = s.results.remove(&ticket);
        if r.is_some() {
            s.watched.remove(&ticket);
        }
        r
    }

    /// Waits up to `t` for [`TxStatus::take`] of `ticket`.
    pub fn wait(&self, ticket: u64, t: std::time::Duration) -> Option<NResult> {
        let mut s = self.state.lock();
        if !s.results.contains_key(&ticket) {
            self.changed.wait_for(&mut s, t);
        }
        let r = s.results.remove(&ticket);
        if r.is_some() {
            s.watched.remove(&ticket);
        }
        r
    }

    /// Whether every ticket up to `ticket` ended.
    pub fn ended(&self, ticket: u64) -> bool {
        self.state.lock().ended_upto >= ticket
    }

    /// Stops keeping the result of `ticket`.
    pub fn forget(&self, ticket: u64) {
        let mut s = self.state.lock();
        s.watched.remove(&ticket);
        s.results.remove(&ticket);
    }

    fn end(&self, ticket: u64, r: NResult) {
        let mut s = self.state.lock();
        s.ended_upto = s.ended_upto.max(ticket);
        if s.watched.contains_key(&ticket) {
            s.results.insert(ticket, r);
        }
        drop(s);
        self.changed.notify_all();
    }
}

#[derive(Debug)]
struct TxMsg {
    ticket: u64,
    data: Vec<u8>,
    ta_type: TargetAddressType,
}

/// An ISO-TP channel driven by the receive thread: the core channel hosted
/// with [`IsoTpAdapter`].
pub type IsoTpDriver = Hosted<Channel<'static>, IsoTpAdapter>;

/// The per-protocol part: the send FIFO with tickets, owned messages out,
/// error reports, kernel filters.
#[derive(Debug)]
pub struct IsoTpAdapter {
    config: IsoTpConfig,
    backlog: VecDeque<TxMsg>,
    /// The ticket of the message in the channel, if any.
    inflight: Option<u64>,
    next_ticket: u64,
    hints: PeerHints,
    reports: Arc<EventQueue<IsoTpReport>>,
    status: Arc<TxStatus>,
    /// An N_UNEXP_PDU whose interrupting N_PDU (the next event tells) is not known yet.
    interrupted: bool,
    first_frames: u64,
    /// STmin of the send in progress (the last FC.CTS, or the override).
    stmin: canx_core::Duration,
    /// When the backend last took a frame of this channel.
    last_sent: Option<Instant>,
    /// Smallest gap (µs, bus clock) between two sends while STmin applied.
    min_paced_gap: Option<u64>,
    /// A frame was taken while STmin applied and the backend has not taken it yet.
    unsent: bool,
}

impl IsoTpAdapter {
    fn report_interrupt(&mut self, by: PduKind, at: f64) {
        if std::mem::take(&mut self.interrupted) {
            self.reports.push(IsoTpReport::RxError {
                result: NResult::NUnexpPdu,
                interrupted_by: Some(by),
                timestamp: at,
            });
        }
    }

    fn end(&mut self, r: NResult, at: f64) {
        self.stmin = canx_core::Duration::ZERO;
        if let Some(ticket) = self.inflight.take() {
            self.status.end(ticket, r);
            if r != NResult::NOk {
                self.reports.push(IsoTpReport::TxError { ticket, result: r, timestamp: at });
            }
        }
    }
}

impl Adapter<Channel<'static>> for IsoTpAdapter {
    type Event = IsoTpMessage;
    const TX_PER_ROUND: usize = FRAMES_PER_ROUND;

    fn event(&mut self, ev: Event<'_>, at: f64, out: &EventQueue<IsoTpMessage>) {
        // The core reports N_UNEXP_PDU before it handles the SF/FF that
        // caused it (ISO 15765-2:2016 Table 23): an FF is followed by its
        // FirstFrameReceived (or by FC.OVFLW's N_BUFFER_OVFLW), an SF by its message.
        match ev {
            Event::FirstFrameReceived { .. } | Event::RxError(NResult::NBufferOvflw) => {
                self.report_interrupt(PduKind::FirstFrame, at)
            }
            Event::RxError(NResult::NUnexpPdu) => {}
            _ => self.report_interrupt(PduKind::SingleFrame, at),
        }
        match ev {
            Event::Received(data, ta_type) => {
                out.push(IsoTpMessage { data: data.to_vec(), ta_type, timestamp: at });
            }
            Event::FirstFrameReceived { .. } => self.first_frames += 1,
            Event::SendComplete => self.end(NResult::NOk, at),
            Event::TxError(r) => self.end(r, at),
            Event::RxError(NResult::NUnexpPdu) => self.interrupted = true,
            Event::RxError(result) => {
                self.reports.push(IsoTpReport::RxError { result, interrupted_by: None, timestamp: at })
            }
            Event::UnexpectedPdu { kind, ta_type } => {
                self.reports.push(IsoTpReport::Unexpected { kind, ta_type, timestamp: at })
            }
        }
    }

    /// Moves the next waiting message into the channel once the previous
    /// one has ended. Takes the channel's events first: a single frame
    /// completes as it is handed out, and its `SendComplete` must be seen
    /// before the next message goes in (or the channel's 8-event ring could
    /// overflow within one send batch).
    fn refill(&mut self, channel: &mut Channel<'static>, out: &EventQueue<IsoTpMessage>) {
        while let Some(ev) = channel.poll_event() {
            self.event(ev, epoch_now(), out);
        }
        if self.inflight.is_some() || channel.transmitting() {
            return;
        }
        let Some(m) = self.backlog.pop_front() else { return };
        match channel.send(self.hints.now(), &m.data, m.ta_type) {
            Ok(()) => self.inflight = Some(m.ticket),
            Err(_) => {
                // Checked in `IsoTpDriver::send`; should the channel still
                // refuse, the ticket ends with N_ERROR rather than stall.
                self.inflight = Some(m.ticket);
                self.end(NResult::NError, epoch_now());
            }
        }
    }

    fn pending(&self, channel: &Channel<'static>) -> bool {
        !self.backlog.is_empty() && self.inflight.is_none() && !channel.transmitting()
    }

    /// STmin is measured from the time each CF is handed out (the core's
    /// `poll_transmit`): read the bus clock then, not at the round's start
    /// (only while sending: an FC goes by the round's time, and the clock
    /// read is a syscall where the clocksource has no vDSO).
    fn tx_time(&self, now: Instant) -> Instant {
        if self.inflight.is_none() {
            return now;
        }
        self.hints.now().max(now)
    }

    /// Reads the STmin of each FC.CTS for this channel (ISO 15765-2:2016
    /// §9.6.5.4, Table 20; reserved values as 127 ms), then feeds the frame
    /// with its age.
    fn feed(&mut self, channel: &mut Channel<'static>, now: Instant, rx: &RxFrame) {
        let (id, data) = match &rx.frame {
            Frame::Can(f) => (Some(f.id()), f.data()),
            Frame::Fd(f) => (Some(f.id()), f.data()),
            _ => (None, &[][..]),
        };
        let a = self.config.channel.address;
        if let Some(id) = id {
            let ae = a.address_len();
            if self.inflight.is_some() && data.get(ae) == Some(&0x30) && a.classify(id, data).is_some() {
                self.stmin = self.config.channel.stmin_override.unwrap_or_else(|| {
                    canx_core::Duration::from_micros(stmin_micros(data.get(ae + 2).copied().unwrap_or(0x7F)))
                });
            }
        }
        // The FC after a block waits `block_fc_delay` from the CF's arrival
        // (its receive timestamp), and only for a CF another socket on this
        // host sent (Origin::Host, e.g. Linux's can-isotp on vcan): only
        // such a sender can see the FC before its own CF's echo (see
        // `Config::block_fc_delay`). A remote node's CF: no wait.
        let c = &self.config.channel;
        let age = if c.bs == 0 || c.block_fc_delay.total_micros() == 0 {
            canx_core::Duration::ZERO
        } else if rx.origin == Origin::Host {
            canx_core::Duration::from_micros(((epoch_now() - rx.timestamp).clamp(0.0, 1.0) * 1e6) as u64)
        } else {
            c.block_fc_delay
        };
        channel.handle_frame_aged(now, age, &rx.frame);
    }

    /// A frame went out of `poll_transmit`: while STmin applies, nothing
    /// more until the backend took it ([`IsoTpAdapter::hold`]), so two CFs
    /// never share one send batch. (A thread descheduled between taking
    /// two CFs let the core's clock pass STmin and put both into one
    /// `sendmmsg`: 94 µs apart on the bus at STmin 900 µs, in the VM.)
    fn taken(&mut self, _frame: &Frame) {
        if self.stmin.total_micros() > 0 && self.inflight.is_some() {
            self.unsent = true;
        }
    }

    fn failed(&mut self, _engine: &mut Channel<'static>, _frame: &Frame, _now: Instant) {
        self.unsent = false;
    }

    /// The backend took a frame: the next CF waits STmin from now.
    fn sent(&mut self, at: Instant) {
        self.unsent = false;
        if let (Some(prev), true) = (self.last_sent, self.hold().is_some()) {
            let gap = at.saturating_duration_since(prev).total_micros();
            self.min_paced_gap = Some(self.min_paced_gap.map_or(gap, |g| g.min(gap)));
        }
        self.last_sent = Some(at);
    }

    /// STmin from the moment the previous frame was actually sent, not
    /// from when the core handed it out: a descheduled thread or a slow
    /// send between the two would otherwise shorten the gap on the bus
    /// (the kernel paces from each CF's echo for the same reason).
    fn hold(&self) -> Option<Instant> {
        if self.stmin.total_micros() == 0 || self.inflight.is_none() {
            return None;
        }
        if self.unsent {
            return Some(Instant::from_micros(u64::MAX));
        }
        self.last_sent.and_then(|t| t.checked_add(self.stmin))
    }

    fn attached(&mut self, hints: PeerHints) {
        self.hints = hints;
    }

    /// The physical and functional receive identifiers (the fixed formats
    /// ignore the priority bits, §10.3.3).
    fn filters(&self) -> Option<Vec<Filter>> {
        let a = self.config.channel.address;
        let mask = match a.mode() {
            AddressingMode::NormalFixed29 | AddressingMode::Mixed29 => Some(0x03FF_FFFF),
            _ => None,
        };
        let ids = std::iter::once(a.rx_id()).chain(a.rx_functional_id());
        Some(ids.filter_map(|id| Filter::canio_match(id_raw(id), mask, id_is_extended(id)).ok()).collect())
    }
}

/// Counters of the driver beyond the channel's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IsoTpDriverStats {
    /// Frames the bus refused to send.
    pub send_failed: u64,
    /// Messages waiting to be sent (not counting the one in the channel).
    pub waiting: usize,
    /// First frames received (receptions started).
    pub first_frames: u64,
    /// Smallest gap between two frames handed to the backend while an
    /// STmin above 0 applied, µs on the bus clock (None: no such pair yet).
    pub min_paced_gap_us: Option<u64>,
}

impl IsoTpDriver {
    /// A driver for `config`. Errors: the channel's [`ConfigError`].
    pub fn new(config: IsoTpConfig) -> Result<Self, ConfigError> {
        let rx = vec![0u8; config.rx_size.clamp(1, MAX_SIZE)];
        let tx = vec![0u8; config.tx_size.clamp(1, MAX_SIZE)];
        let channel = Channel::new(config.channel, rx, tx)?;
        let adapter = IsoTpAdapter {
            config,
            backlog: VecDeque::new(),
            inflight: None,
            next_ticket: 1,
            hints: PeerHints::none(),
            reports: Arc::new(EventQueue::new(config.queue_size.max(1))),
            status: Arc::new(TxStatus::default()),
            interrupted: false,
            first_frames: 0,
            stmin: canx_core::Duration::ZERO,
            last_sent: None,
            min_paced_gap: None,
            unsent: false,
        };
        Ok(Hosted::host(Box::new(channel), adapter, config.queue_size))
    }

    pub fn config(&self) -> IsoTpConfig {
        self.adapter.config
    }

    /// The error reports' queue.
    pub fn reports(&self) -> Arc<EventQueue<IsoTpReport>> {
        self.adapter.reports.clone()
    }

    /// How tickets ended.
    pub fn status(&self) -> Arc<TxStatus> {
        self.adapter.status.clone()
    }

    /// Queues `data` for sending; returns its ticket (tickets grow by one
    /// per message and end in order). Errors: [`IsoTpRefused`].
    pub fn send(&mut self, data: &[u8], ta_type: TargetAddressType) -> Result<u64, IsoTpRefused> {
        let cfg = self.adapter.config;
        let max_sf = self.engine.max_single_frame();
        if cfg.channel.listen_only {
            return Err(IsoTpRefused::Invalid(SendError::ListenOnly));
        }
        if data.is_empty() {
            return Err(IsoTpRefused::Invalid(SendError::Empty));
        }
        if ta_type == TargetAddressType::Functional && data.len() > max_sf {
            return Err(IsoTpRefused::Invalid(SendError::FunctionalTooLong { len: data.len(), max: max_sf }));
        }
        let max = cfg.tx_size.max(max_sf);
        if data.len() > max {
            return Err(IsoTpRefused::Invalid(SendError::TooLong { len: data.len(), max }));
        }
        if self.adapter.backlog.len() >= cfg.max_waiting.max(1) {
            return Err(IsoTpRefused::Full);
        }
        let ticket = self.adapter.next_ticket;
        self.adapter.next_ticket += 1;
        let m = TxMsg { ticket, data: data.to_vec(), ta_type };
        self.with(|ch, a, out| {
            a.backlog.push_back(m);
            a.refill(ch, out);
        });
        Ok(ticket)
    }

    /// Abandons the message being sent and every waiting one (each ends
    /// with N_ERROR; the peer's receiver times out). Returns how many.
    pub fn stop_sending(&mut self) -> usize {
        self.with(|ch, a, _| {
            let mut n = 0;
            if ch.abort_send() {
                n += 1;
            }
            if let Some(t) = a.inflight.take() {
                a.status.end(t, NResult::NError);
            }
            for m in a.backlog.drain(..) {
                a.status.end(m.ticket, NResult::NError);
                n += 1;
            }
            n
        })
    }

    /// A send is in progress or waiting (python-can-isotp's `transmitting()`).
    pub fn transmitting(&self) -> bool {
        self.engine.transmitting() || self.adapter.inflight.is_some() || !self.adapter.backlog.is_empty()
    }

    /// Largest message one SF carries (functional sends are limited to it).
    pub fn max_single_frame(&self) -> usize {
        self.engine.max_single_frame()
    }

    /// A segmented reception is in progress.
    pub fn receiving(&self) -> bool {
        self.engine.receiving()
    }

    pub fn stats(&self) -> (Stats, IsoTpDriverStats) {
        let h = self.host_stats();
        (
            self.engine.stats(),
            IsoTpDriverStats {
                send_failed: h.send_failed,
                waiting: self.adapter.backlog.len(),
                first_frames: self.adapter.first_frames,
                min_paced_gap_us: self.adapter.min_paced_gap,
            },
        )
    }

    /// The channel's next deadline (tests).
    pub fn next_deadline(&self) -> Option<canx_core::Instant> {
        Engine::poll_timeout(&*self.engine)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use canx_core::isotp::Address;
    use parking_lot::Mutex;

    use super::*;
    use crate::runtime::{Bus, BusConfig};

    fn open(name: &str, fd: bool) -> Bus {
        let mut c = BusConfig::virtual_bus(name);
        c.fd = fd;
        Bus::open(c).unwrap()
    }

    fn config(address: Address, fd: bool) -> IsoTpConfig {
        let mut channel = Config::new(address);
        if fd {
            channel.fd = true;
            channel.tx_dl = 64;
        }
        channel.bs = 8;
        IsoTpConfig { channel, rx_size: 70_000, tx_size: 70_000, queue_size: 64, max_waiting: 64 }
    }

    fn pair(name: &str, fd: bool) -> (Bus, Bus, Arc<Mutex<IsoTpDriver>>, Arc<Mutex<IsoTpDriver>>) {
        let a = open(name, fd);
        let b = open(name, fd);
        let tester =
            Arc::new(Mutex::new(IsoTpDriver::new(config(Address::normal_11(0x7E0, 0x7E8).unwrap(), fd)).unwrap()));
        let ecu =
            Arc::new(Mutex::new(IsoTpDriver::new(config(Address::normal_11(0x7E8, 0x7E0).unwrap(), fd)).unwrap()));
        (a, b, tester, ecu)
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 0xFF) as u8 + 1).collect()
    }

    #[test]
    fn messages_of_every_size_cross_the_bus_in_order() {
        for fd in [false, true] {
            let (a, b, tester, ecu) = pair(if fd { "drv-isotp-fd" } else { "drv-isotp" }, fd);
            let ha = a.attach(tester.clone());
            let _hb = b.attach(ecu.clone());
            let got = ecu.lock().events();
            let status = tester.lock().status();
            let sizes = [1usize, 6, 7, 8, 62, 63, 64, 4095, 4096, 10_000, 66_000];
            let mut last = 0;
            for &n in &sizes {
                last = tester.lock().send(&payload(n), TargetAddressType::Physical).unwrap();
                status.watch(last);
            }
            ha.kick();
            for &n in &sizes {
                let m = got.recv_timeout(StdDuration::from_secs(10)).expect("message");
                assert_eq!(m.data.len(), n, "fd={fd}");
                assert_eq!(m.data, payload(n));
                assert_eq!(m.ta_type, TargetAddressType::Physical);
            }
            assert_eq!(status.wait(last, StdDuration::from_secs(5)), Some(NResult::NOk));
            assert!(!tester.lock().transmitting());
            let (s, _) = tester.lock().stats();
            assert_eq!(s.tx_messages as usize, sizes.len());
        }
    }

    #[test]
    fn no_flow_control_ends_the_ticket_with_n_timeout_bs() {
        let a = open("drv-isotp-nofc", false);
        let _b = open("drv-isotp-nofc", false);
        let mut cfg = config(Address::normal_11(0x7E0, 0x7E8).unwrap(), false);
        cfg.channel.n_bs = canx_core::Duration::from_millis(50);
        let tester = Arc::new(Mutex::new(IsoTpDriver::new(cfg).unwrap()));
        let reports = tester.lock().reports();
        let status = tester.lock().status();
        let h = a.attach(tester.clone());
        let t = tester.lock().send(&payload(100), TargetAddressType::Physical).unwrap();
        status.watch(t);
        h.kick();
        assert_eq!(status.wait(t, StdDuration::from_secs(5)), Some(NResult::NTimeoutBs));
        match reports.recv_timeout(StdDuration::from_secs(1)) {
            Some(IsoTpReport::TxError { ticket, result: NResult::NTimeoutBs, .. }) => assert_eq!(ticket, t),
            r => panic!("unexpected {r:?}"),
        }
    }

    #[test]
    fn two_cfs_never_share_a_send_batch_while_stmin_applies() {
        use crate::runtime::{Driven, Origin};
        use canx_core::frame::{make_id, CanFrame};

        // 10 s ahead of the process clock that an unattached driver reads
        // (its tx_time takes the later of the two); timers long enough
        let base = crate::runtime::engine::now().total_micros() + 10_000_000;
        let at = |us: u64| Instant::from_micros(base + us);
        let mut cfg = config(Address::normal_11(0x7E0, 0x7E8).unwrap(), false);
        cfg.channel.n_as = canx_core::Duration::from_secs(100);
        cfg.channel.n_bs = canx_core::Duration::from_secs(100);
        let mut d = IsoTpDriver::new(cfg).unwrap();
        d.send(&payload(100), TargetAddressType::Physical).unwrap();
        Driven::handle_timeout(&mut d, at(0));
        assert!(Driven::poll_transmit(&mut d, at(0)).is_some(), "FF");
        Driven::sent(&mut d, 1, at(0));
        let fc = Frame::Can(CanFrame::new(make_id(0x7E8, false).unwrap(), &[0x30, 0, 0xF9]).unwrap());
        Driven::handle_frame(&mut d, at(10), &RxFrame { frame: fc, timestamp: 0.0, origin: Origin::Bus });
        Driven::handle_timeout(&mut d, at(1_000));
        assert!(Driven::poll_transmit(&mut d, at(1_000)).is_some(), "CF 1");
        // CF 1 not sent yet: no CF 2 in the same batch, however late the clock
        assert!(Driven::poll_transmit(&mut d, at(50_000)).is_none());
        Driven::sent(&mut d, 1, at(50_000));
        // STmin (900 µs) from CF 1's send
        assert!(Driven::poll_transmit(&mut d, at(50_899)).is_none());
        assert!(Driven::poll_transmit(&mut d, at(50_900)).is_some(), "CF 2");
        // a refused frame releases the hold too
        Driven::send_failed(&mut d, &fc, &crate::runtime::Error::SendTimeout, Instant::ZERO);
        Driven::sent(&mut d, 0, at(60_000));
        assert!(Driven::poll_transmit(&mut d, at(60_900)).is_some(), "CF 3");
    }

    #[test]
    fn refusals_are_checked_before_queueing() {
        let mut cfg = config(Address::normal_11(0x7E0, 0x7E8).unwrap(), false);
        cfg.tx_size = 100;
        cfg.max_waiting = 1;
        let mut d = IsoTpDriver::new(cfg).unwrap();
        assert!(matches!(d.send(&[], TargetAddressType::Physical), Err(IsoTpRefused::Invalid(SendError::Empty))));
        assert!(matches!(
            d.send(&[0; 8], TargetAddressType::Functional),
            Err(IsoTpRefused::Invalid(SendError::FunctionalTooLong { len: 8, max: 7 }))
        ));
        assert!(matches!(
            d.send(&[0; 101], TargetAddressType::Physical),
            Err(IsoTpRefused::Invalid(SendError::TooLong { len: 101, max: 100 }))
        ));
        // Not attached: the first goes into the channel, the second waits, the third is refused.
        d.send(&[0; 50], TargetAddressType::Physical).unwrap();
        d.send(&[0; 50], TargetAddressType::Physical).unwrap();
        assert_eq!(d.send(&[0; 50], TargetAddressType::Physical), Err(IsoTpRefused::Full));
        assert_eq!(d.stop_sending(), 2);
        assert!(!d.transmitting());
    }
}
