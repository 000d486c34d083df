//! The ISO-TP engine: one N_AI's sender and receiver.

use super::pci::{self, encode, max_sf_dl, parse, stmin_micros, FlowStatus, PciError, Pdu, PduKind};
use super::{Config, ConfigError, Event, NResult, SendError, Stats, TargetAddressType};
use crate::frame::{CanFrame, FdFrame, Frame, Id};
use crate::managed::ManagedSlice;
use crate::ring::Ring;
use crate::time::{earliest, Duration, Instant};

/// Events the channel holds before [`Channel::poll_event`] takes them.
pub const EVENT_QUEUE: usize = 8;
/// Largest SF_DL (TX_DL 64, normal addressing).
const SF_MAX: usize = 62;

#[derive(Clone, Copy, Debug)]
enum Pending {
    FirstFrame { len: u32, ta: TargetAddressType },
    Single { len: u8, data: [u8; SF_MAX], ta: TargetAddressType },
    Multi { len: usize, gen: u32, ta: TargetAddressType },
    SendComplete,
    TxError(NResult),
    RxError(NResult),
    Unexpected { kind: PduKind, ta: TargetAddressType },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxPhase {
    /// The FF is due (deadline: N_As).
    SendFirst,
    /// Waiting for an FC (deadline: N_Bs).
    AwaitFc,
    /// The next CF is due at `next_cf` (deadline: N_As).
    SendCf,
}

#[derive(Clone, Copy, Debug)]
struct TxSeg {
    len: usize,
    pos: usize,
    sn: u8,
    phase: TxPhase,
    deadline: Instant,
    /// BS of the last CTS (0: no further FC) and CFs sent in this block.
    bs: u8,
    in_block: u8,
    stmin: Duration,
    /// Earliest time of the next CF (the last CF plus STmin).
    next_cf: Instant,
    /// When the last CF went out, if one did.
    last_cf: Option<Instant>,
    waits: u16,
    got_fc: bool,
}

#[derive(Clone, Copy, Debug)]
enum Tx {
    Idle,
    Single { len: u8, data: [u8; SF_MAX], ta: TargetAddressType, deadline: Instant },
    Segmented(TxSeg),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxPhase {
    /// Waiting for CFs (deadline: N_Cr, armed when the FC goes out).
    AwaitCf,
    /// The buffer still holds an unread message; FF data kept in `stash`
    /// (deadline: the next FC.WAIT).
    AwaitBuffer,
}

#[derive(Clone, Copy, Debug)]
struct RxSeg {
    len: usize,
    pos: usize,
    next_sn: u8,
    rx_dl: usize,
    in_block: u8,
    ta: TargetAddressType,
    phase: RxPhase,
    deadline: Instant,
    waits: u8,
    stash: [u8; SF_MAX],
    stash_len: u8,
    /// The FC.CTS that went out is sent again at this time unless a CF
    /// arrives first ([`Config::fc_repeat`]).
    fc_repeat_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct FcOut {
    fs: FlowStatus,
    /// Not handed out before this ([`Config::block_fc_delay`]).
    not_before: Option<Instant>,
    /// N_Ar.
    deadline: Instant,
    /// A repeat of the FC.CTS already sent ([`Config::fc_repeat`]): it does
    /// not restart N_Cr.
    repeat: bool,
}

/// One ISO-TP channel (one N_AI: a pair of identifiers and address bytes):
/// a sender and a receiver over caller storage, full duplex by default.
///
/// Buffers: `rx_buf` bounds the messages it receives (an FF announcing more
/// gets FC.OVFLW), `tx_buf` the multi-frame messages it sends (single
/// frames need none). Either is a [`ManagedSlice`]: borrowed (`&mut [u8]`,
/// no heap) or, with the `alloc` feature, owned (`Vec<u8>`), so a runtime
/// can hold a `Channel<'static>`.
#[derive(Debug)]
pub struct Channel<'b> {
    cfg: Config,
    ae: usize,
    tx_dl: usize,
    rx_buf: ManagedSlice<'b, u8>,
    tx_buf: ManagedSlice<'b, u8>,
    tx: Tx,
    rx: Option<RxSeg>,
    fc: Option<FcOut>,
    events: Ring<Pending, EVENT_QUEUE>,
    current: Option<Pending>,
    /// A completed multi-frame message is in `rx_buf` and its event not yet taken.
    mf_unread: bool,
    rx_gen: u32,
    /// `tx_confirm`: a data frame (SF/FF/CF) was handed out and not yet confirmed.
    tx_unconfirmed: bool,
    /// `tx_confirm`: the N_Ar deadline of an FC handed out and not yet confirmed.
    fc_unconfirmed: Option<Instant>,
    /// Age of the frame being handled ([`Channel::handle_frame_aged`]).
    rx_age: Duration,
    stats: Stats,
}

fn bump(c: &mut u32) {
    *c = c.saturating_add(1);
}

fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(Instant::from_micros(u64::MAX))
}

impl<'b> Channel<'b> {
    /// A channel with `config`, receiving into `rx_buf` and sending
    /// multi-frame messages from `tx_buf` (their lengths bound the messages).
    /// Errors: [`ConfigError`] from [`Config::validate`].
    pub fn new(
        config: Config,
        rx_buf: impl Into<ManagedSlice<'b, u8>>,
        tx_buf: impl Into<ManagedSlice<'b, u8>>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Channel {
            ae: config.address.address_len(),
            tx_dl: usize::from(config.tx_dl),
            cfg: config,
            rx_buf: rx_buf.into(),
            tx_buf: tx_buf.into(),
            tx: Tx::Idle,
            rx: None,
            fc: None,
            events: Ring::new(),
            current: None,
            mf_unread: false,
            rx_gen: 0,
            tx_unconfirmed: false,
            fc_unconfirmed: None,
            rx_age: Duration::ZERO,
            stats: Stats::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.dropped_events = self.events.dropped();
        s
    }

    /// Whether a send is in progress (python-can-isotp's `transmitting()`).
    pub fn transmitting(&self) -> bool {
        !matches!(self.tx, Tx::Idle)
    }

    /// Whether a segmented reception is in progress.
    pub fn receiving(&self) -> bool {
        self.rx.is_some()
    }

    /// Largest message one SF carries with this configuration.
    pub fn max_single_frame(&self) -> usize {
        max_sf_dl(self.tx_dl, self.ae)
    }

    /// Starts sending `data` (1 byte up to the transmit buffer; one SF's
    /// worth when functional). The frames come out of [`poll_transmit`]
    /// (the first right away); the end is a `SendComplete` or `TxError` event.
    /// Errors: [`SendError`]; nothing is sent then.
    ///
    /// [`poll_transmit`]: Channel::poll_transmit
    pub fn send(&mut self, now: Instant, data: &[u8], ta_type: TargetAddressType) -> Result<(), SendError> {
        if self.cfg.listen_only {
            return Err(SendError::ListenOnly);
        }
        if !matches!(self.tx, Tx::Idle) || (self.cfg.half_duplex && self.rx.is_some()) {
            return Err(SendError::Busy);
        }
        let len = data.len();
        if len == 0 {
            return Err(SendError::Empty);
        }
        let max_sf = self.max_single_frame();
        if len <= max_sf {
            let mut buf = [0u8; SF_MAX];
            buf[..len].copy_from_slice(data);
            self.tx = Tx::Single { len: len as u8, data: buf, ta: ta_type, deadline: after(now, self.cfg.n_as) };
            return Ok(());
        }
        if ta_type == TargetAddressType::Functional {
            return Err(SendError::FunctionalTooLong { len, max: max_sf });
        }
        let max = self.tx_buf.len().min(u32::MAX as usize);
        if len > max {
            return Err(SendError::TooLong { len, max });
        }
        self.tx_buf[..len].copy_from_slice(data);
        self.tx = Tx::Segmented(TxSeg {
            len,
            pos: 0,
            sn: 0,
            phase: TxPhase::SendFirst,
            deadline: after(now, self.cfg.n_as),
            bs: 0,
            in_block: 0,
            stmin: Duration::ZERO,
            next_cf: now,
            last_cf: None,
            waits: 0,
            got_fc: false,
        });
        Ok(())
    }

    /// Abandons the send in progress, if any, without an event (the
    /// receiver will time out). Returns whether one was in progress.
    pub fn abort_send(&mut self) -> bool {
        let was = self.transmitting();
        self.tx = Tx::Idle;
        self.tx_unconfirmed = false;
        was
    }

    fn push(&mut self, p: Pending) {
        self.events.push_counted(p);
    }

    fn tx_fail(&mut self, r: NResult) {
        self.tx = Tx::Idle;
        self.tx_unconfirmed = false;
        bump(&mut self.stats.tx_errors);
        self.push(Pending::TxError(r));
    }

    fn rx_fail(&mut self, r: NResult) {
        self.rx = None;
        self.fc = None;
        self.fc_unconfirmed = None;
        bump(&mut self.stats.rx_errors);
        self.push(Pending::RxError(r));
    }

    fn unexpected(&mut self, kind: PduKind, ta: TargetAddressType) {
        bump(&mut self.stats.unexpected);
        self.push(Pending::Unexpected { kind, ta });
    }

    fn queue_fc(&mut self, now: Instant, fs: FlowStatus) {
        if self.cfg.listen_only {
            return;
        }
        if fs == FlowStatus::Wait {
            bump(&mut self.stats.wait_sent);
        }
        self.fc = Some(FcOut { fs, not_before: None, deadline: after(now, self.cfg.n_ar), repeat: false });
    }

    /// Padding rules on receive for an SF, FC or last CF whose N_PDU takes
    /// `used` bytes of `data` (the whole frame).
    fn padding_ok(&self, data: &[u8], used: usize) -> bool {
        if self.cfg.rx_check_padding_len && data.len() < 8 {
            return false;
        }
        match self.cfg.rx_padding_byte {
            Some(b) => data.get(used..).is_none_or(|pad| pad.iter().all(|&x| x == b)),
            None => true,
        }
    }

    /// Feeds one received frame. Frames of other N_AIs (identifier or
    /// address byte), remote and error frames, and FD frames on a classic
    /// channel are ignored at once. The rest follows ISO 15765-2:2016
    /// `docs/protocols/isotp.md` §1-§6 (Table 23 in §6).
    pub fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        self.handle_frame_aged(now, Duration::ZERO, frame);
    }

    /// [`handle_frame`](Channel::handle_frame) for a frame that arrived
    /// `age` before `now` (its receive timestamp): delays that count from
    /// the arrival ([`Config::block_fc_delay`]) are shortened by `age`, so
    /// a host that was late to read the frame does not wait twice.
    pub fn handle_frame_aged(&mut self, now: Instant, age: Duration, frame: &Frame) {
        self.rx_age = age;
        self.handle(now, frame);
        self.rx_age = Duration::ZERO;
    }

    fn handle(&mut self, now: Instant, frame: &Frame) {
        let (id, data, is_fd) = match frame {
            Frame::Can(f) if !f.is_remote() => (f.id(), f.data(), false),
            Frame::Fd(f) => (f.id(), f.data(), true),
            _ => return,
        };
        let Some(ta) = self.cfg.address.classify(id, data) else { return };
        if is_fd && !self.cfg.fd {
            return;
        }
        bump(&mut self.stats.rx_frames);
        self.release(now);
        let ae = self.ae;
        let pdu = match parse(data.get(ae..).unwrap_or(&[]), ae) {
            Ok(p) => p,
            Err(PciError::InvalidFlowStatus(_)) if self.awaiting_fc() && !self.fc_blocked() => {
                self.tx_fail(NResult::NInvalidFs);
                return;
            }
            Err(_) => {
                bump(&mut self.stats.malformed);
                return;
            }
        };
        let tx_segmented = matches!(self.tx, Tx::Segmented(_));
        match pdu {
            Pdu::Single { data: msg } => {
                if self.cfg.half_duplex && tx_segmented {
                    return self.unexpected(PduKind::SingleFrame, ta);
                }
                if ta == TargetAddressType::Physical && self.rx.is_some() {
                    self.rx_fail(NResult::NUnexpPdu);
                }
                let used = ae + pci_sf_len(data.len()) + msg.len();
                if !self.padding_ok(data, used) {
                    bump(&mut self.stats.rx_errors);
                    self.push(Pending::RxError(NResult::NError));
                    return;
                }
                let mut buf = [0u8; SF_MAX];
                let n = msg.len().min(SF_MAX);
                buf[..n].copy_from_slice(&msg[..n]);
                bump(&mut self.stats.rx_messages);
                self.push(Pending::Single { len: n as u8, data: buf, ta });
            }
            Pdu::First { ff_dl, data: first } => {
                if ta == TargetAddressType::Functional || (self.cfg.half_duplex && tx_segmented) {
                    return self.unexpected(PduKind::FirstFrame, ta);
                }
                if self.rx.is_some() {
                    self.rx_fail(NResult::NUnexpPdu);
                }
                let len = ff_dl as usize;
                if u64::from(ff_dl) > self.rx_buf.len() as u64 {
                    self.queue_fc(now, FlowStatus::Overflow);
                    bump(&mut self.stats.rx_errors);
                    self.push(Pending::RxError(NResult::NBufferOvflw));
                    return;
                }
                self.push(Pending::FirstFrame { len: ff_dl, ta });
                let mut seg = RxSeg {
                    len,
                    pos: 0,
                    next_sn: 1,
                    rx_dl: data.len(),
                    in_block: 0,
                    ta,
                    phase: RxPhase::AwaitCf,
                    deadline: after(after(now, self.cfg.n_ar), self.cfg.n_cr),
                    waits: 0,
                    stash: [0; SF_MAX],
                    stash_len: 0,
                    fc_repeat_at: None,
                };
                if self.mf_unread {
                    if self.cfg.wft_max > 0 && !self.cfg.listen_only {
                        let n = first.len().min(SF_MAX);
                        seg.stash[..n].copy_from_slice(&first[..n]);
                        seg.stash_len = n as u8;
                        seg.phase = RxPhase::AwaitBuffer;
                        seg.waits = 1;
                        seg.deadline = after(now, self.wait_interval());
                        self.rx = Some(seg);
                        self.queue_fc(now, FlowStatus::Wait);
                        return;
                    }
                    self.mf_unread = false;
                    bump(&mut self.stats.rx_unread_dropped);
                }
                self.rx_gen = self.rx_gen.wrapping_add(1);
                self.rx_buf[..first.len()].copy_from_slice(first);
                seg.pos = first.len();
                self.rx = Some(seg);
                self.queue_fc(now, FlowStatus::ContinueToSend);
            }
            Pdu::Consecutive { sn, data: payload } => {
                if self.cfg.half_duplex && tx_segmented {
                    return self.unexpected(PduKind::ConsecutiveFrame, ta);
                }
                let Some(mut seg) = self.rx else { return self.unexpected(PduKind::ConsecutiveFrame, ta) };
                // a CF answering our FC confirms it
                if self.fc_unconfirmed.take().is_some() && seg.fc_repeat_at.is_some() {
                    seg.fc_repeat_at = Some(after(now, self.fc_repeat_interval()));
                    self.rx = Some(seg);
                }
                // The sender took an earlier copy of our FC.CTS: no repeat.
                if seg.phase == RxPhase::AwaitCf && seg.ta == ta {
                    seg.fc_repeat_at = None;
                    if self.fc.is_some_and(|fc| fc.repeat) {
                        self.fc = None;
                    }
                }
                if seg.phase != RxPhase::AwaitCf || self.fc.is_some() || seg.ta != ta {
                    return self.unexpected(PduKind::ConsecutiveFrame, ta);
                }
                if data.len() > seg.rx_dl {
                    bump(&mut self.stats.malformed);
                    return;
                }
                if sn != seg.next_sn {
                    return self.rx_fail(NResult::NWrongSn);
                }
                let remaining = seg.len - seg.pos;
                let chunk = remaining.min(payload.len());
                let last = chunk == remaining;
                if !last && data.len() != seg.rx_dl {
                    bump(&mut self.stats.malformed);
                    return;
                }
                if last && !self.padding_ok(data, ae + 1 + chunk) {
                    return self.rx_fail(NResult::NError);
                }
                self.rx_buf[seg.pos..seg.pos + chunk].copy_from_slice(&payload[..chunk]);
                seg.pos += chunk;
                seg.next_sn = (seg.next_sn + 1) & 0x0F;
                if last {
                    self.rx = None;
                    bump(&mut self.stats.rx_messages);
                    // A dropped event must not leave the buffer marked unread.
                    self.mf_unread =
                        self.events.push_counted(Pending::Multi { len: seg.len, gen: self.rx_gen, ta: seg.ta });
                    return;
                }
                seg.deadline = after(now, self.cfg.n_cr);
                if self.cfg.bs != 0 {
                    seg.in_block += 1;
                    if seg.in_block >= self.cfg.bs {
                        seg.in_block = 0;
                        seg.deadline = after(after(now, self.cfg.n_ar), self.cfg.n_cr);
                        self.rx = Some(seg);
                        self.queue_fc(now, FlowStatus::ContinueToSend);
                        // A sender may take the block's end as reached only
                        // when its last CF is confirmed (Linux: the CF's
                        // echo); an FC arriving before that is ignored.
                        if let Some(fc) = self.fc.as_mut() {
                            let wait =
                                self.cfg.block_fc_delay.total_micros().saturating_sub(self.rx_age.total_micros());
                            fc.not_before = Some(after(now, Duration::from_micros(wait)));
                        }
                        return;
                    }
                }
                self.rx = Some(seg);
            }
            Pdu::FlowControl { fs, bs, stmin } => {
                // tx_confirm: an FC answering a block's last CF confirms it
                if let Tx::Segmented(seg) = self.tx {
                    if self.tx_unconfirmed && seg.phase == TxPhase::SendCf && seg.bs != 0 && seg.in_block + 1 >= seg.bs
                    {
                        self.confirm_data(now);
                    }
                }
                if !self.awaiting_fc() || self.fc_blocked() {
                    return self.unexpected(PduKind::FlowControl, ta);
                }
                if !self.padding_ok(data, ae + 3) {
                    return self.tx_fail(NResult::NError);
                }
                self.handle_fc(now, fs, bs, stmin);
            }
        }
    }

    fn awaiting_fc(&self) -> bool {
        matches!(self.tx, Tx::Segmented(TxSeg { phase: TxPhase::AwaitFc, .. }))
    }

    /// Half duplex: an FC is not taken while receiving.
    fn fc_blocked(&self) -> bool {
        self.cfg.half_duplex && self.rx.is_some()
    }

    fn handle_fc(&mut self, now: Instant, fs: FlowStatus, bs: u8, stmin: u8) {
        let Tx::Segmented(mut seg) = self.tx else { return };
        // an FC answering our FF or last CF confirms it
        self.tx_unconfirmed = false;
        match fs {
            FlowStatus::ContinueToSend => {
                seg.got_fc = true;
                seg.bs = bs;
                seg.in_block = 0;
                seg.waits = 0;
                seg.stmin = self.cfg.stmin_override.unwrap_or(Duration::from_micros(stmin_micros(stmin)));
                // The new STmin also holds between the last CF of the previous block and the next.
                if let Some(last) = seg.last_cf {
                    seg.next_cf = seg.next_cf.max(after(last, seg.stmin));
                }
                seg.phase = TxPhase::SendCf;
                seg.deadline = after(if seg.next_cf > now { seg.next_cf } else { now }, self.cfg.n_as);
                self.tx = Tx::Segmented(seg);
            }
            FlowStatus::Wait => {
                bump(&mut self.stats.wait_received);
                seg.waits = seg.waits.saturating_add(1);
                if self.cfg.tx_wft_max.is_some_and(|m| seg.waits > u16::from(m)) {
                    return self.tx_fail(NResult::NWftOvrn);
                }
                seg.deadline = after(now, self.cfg.n_bs);
                self.tx = Tx::Segmented(seg);
            }
            FlowStatus::Overflow => {
                let r = if seg.got_fc { NResult::NInvalidFs } else { NResult::NBufferOvflw };
                self.tx_fail(r);
            }
        }
    }

    /// How long an FC.CTS may go unanswered before it is sent again:
    /// [`Config::fc_repeat`] plus the STmin it asked for (a sender may hold
    /// the first CF of a block that long after the previous block's last).
    fn fc_repeat_interval(&self) -> Duration {
        self.cfg.fc_repeat + Duration::from_micros(stmin_micros(self.cfg.stmin))
    }

    fn wait_interval(&self) -> Duration {
        Duration::from_micros(self.cfg.n_br.total_micros() / 2)
    }

    /// A reception waiting for room goes on once the unread message was taken.
    fn release(&mut self, now: Instant) {
        let Some(mut seg) = self.rx else { return };
        if seg.phase != RxPhase::AwaitBuffer || self.mf_unread {
            return;
        }
        self.rx_gen = self.rx_gen.wrapping_add(1);
        let n = usize::from(seg.stash_len);
        self.rx_buf[..n].copy_from_slice(&seg.stash[..n]);
        seg.pos = n;
        seg.phase = RxPhase::AwaitCf;
        seg.deadline = after(after(now, self.cfg.n_ar), self.cfg.n_cr);
        self.rx = Some(seg);
        self.queue_fc(now, FlowStatus::ContinueToSend);
    }

    /// Runs expired timers: N_As, N_Bs (sender), N_Ar, N_Cr and the next
    /// FC.WAIT (receiver). Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.release(now);
        if let Some(fc) = self.fc {
            if fc.deadline <= now {
                self.rx_fail(NResult::NTimeoutA);
            }
        }
        if self.fc_unconfirmed.is_some_and(|d| d <= now) {
            self.rx_fail(NResult::NTimeoutA);
        }
        match self.tx {
            Tx::Single { deadline, .. } if deadline <= now => self.tx_fail(NResult::NTimeoutA),
            Tx::Segmented(seg) if seg.deadline <= now => {
                self.tx_fail(if seg.phase == TxPhase::AwaitFc && !self.tx_unconfirmed {
                    NResult::NTimeoutBs
                } else {
                    NResult::NTimeoutA
                })
            }
            _ => {}
        }
        if self.fc.is_some() || self.fc_unconfirmed.is_some() {
            return;
        }
        let Some(mut seg) = self.rx else { return };
        if seg.deadline > now {
            // No CF since the FC.CTS: send it again (Config::fc_repeat).
            if seg.phase == RxPhase::AwaitCf && seg.fc_repeat_at.is_some_and(|t| t <= now) {
                seg.fc_repeat_at = None;
                self.rx = Some(seg);
                bump(&mut self.stats.fc_repeated);
                let deadline = after(now, self.cfg.n_ar);
                self.fc = Some(FcOut { fs: FlowStatus::ContinueToSend, not_before: None, deadline, repeat: true });
            }
            return;
        }
        match seg.phase {
            RxPhase::AwaitCf => self.rx_fail(NResult::NTimeoutCr),
            RxPhase::AwaitBuffer => {
                if seg.waits >= self.cfg.wft_max {
                    return self.rx_fail(NResult::NWftOvrn);
                }
                seg.waits += 1;
                seg.deadline = after(now, self.wait_interval());
                self.rx = Some(seg);
                self.queue_fc(now, FlowStatus::Wait);
            }
        }
    }

    /// The next deadline: a timer (N_As, N_Ar, N_Bs, N_Cr, the next
    /// FC.WAIT) or the STmin slot of the next CF. Call
    /// [`handle_timeout`](Channel::handle_timeout) and `poll_transmit` then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t =
            earliest(self.fc.map(|f| f.not_before.map_or(f.deadline, |t| t.min(f.deadline))), self.fc_unconfirmed);
        t = earliest(
            t,
            match self.tx {
                Tx::Idle => None,
                Tx::Single { deadline, .. } => Some(deadline),
                Tx::Segmented(seg) if seg.phase == TxPhase::SendCf && !self.tx_unconfirmed => {
                    Some(seg.next_cf.min(seg.deadline))
                }
                Tx::Segmented(seg) => Some(seg.deadline),
            },
        );
        if self.fc.is_none() && self.fc_unconfirmed.is_none() {
            t = earliest(t, self.rx.map(|s| s.deadline));
            t = earliest(t, self.rx.and_then(|s| s.fc_repeat_at));
        }
        t
    }

    fn frame(&self, id: Id, data: &[u8]) -> Option<Frame> {
        if self.cfg.fd {
            FdFrame::new(id, data, self.cfg.brs, false).ok().map(Frame::Fd)
        } else {
            CanFrame::new(id, data).ok().map(Frame::Can)
        }
    }

    fn emit(&mut self, id: Id, pdu: &Pdu<'_>) -> Option<Frame> {
        let mut out = [0u8; 64];
        let n = encode(pdu, self.cfg.address.tx_address_byte(), self.tx_dl, self.cfg.padding, &mut out).ok()?;
        let f = self.frame(id, &out[..n])?;
        bump(&mut self.stats.tx_frames);
        Some(f)
    }

    /// The next frame to send: a pending FC first, then the sender's SF,
    /// FF or CF. A CF comes out only at its STmin slot (`None` before; the
    /// slot is in [`poll_timeout`](Channel::poll_timeout)), and never
    /// earlier than STmin after the previous CF. Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        self.release(now);
        let phys = self.cfg.address.tx_id(TargetAddressType::Physical);
        if let Some(fc) = self.fc.filter(|fc| fc.not_before.is_none_or(|t| t <= now)) {
            self.fc = None;
            if fc.repeat {
                // N_Cr keeps counting from the first copy
            } else if self.cfg.tx_confirm {
                self.fc_unconfirmed = Some(fc.deadline);
            } else if let Some(seg) = self.rx.as_mut() {
                if seg.phase == RxPhase::AwaitCf {
                    seg.deadline = after(now, self.cfg.n_cr);
                }
            }
            let repeat_in = self.fc_repeat_interval();
            if let Some(seg) = self.rx.as_mut() {
                if fc.fs == FlowStatus::ContinueToSend
                    && seg.phase == RxPhase::AwaitCf
                    && self.cfg.fc_repeat > Duration::ZERO
                {
                    seg.fc_repeat_at = Some(after(now, repeat_in));
                }
            }
            return self.emit(phys, &Pdu::FlowControl { fs: fc.fs, bs: self.cfg.bs, stmin: self.cfg.stmin });
        }
        if self.tx_unconfirmed {
            return None;
        }
        match self.tx {
            Tx::Idle => None,
            Tx::Single { len, data, ta, .. } => {
                let id = self.cfg.address.tx_id(ta);
                let f = self.emit(id, &Pdu::Single { data: &data[..usize::from(len)] });
                if self.cfg.tx_confirm {
                    self.tx_unconfirmed = true;
                    self.tx = Tx::Single { len, data, ta, deadline: after(now, self.cfg.n_as) };
                } else {
                    self.tx = Tx::Idle;
                    bump(&mut self.stats.tx_messages);
                    self.push(Pending::SendComplete);
                }
                f
            }
            Tx::Segmented(mut seg) => match seg.phase {
                TxPhase::AwaitFc => None,
                TxPhase::SendFirst => {
                    let head = if seg.len as u64 > u64::from(pci::FF_DL_12BIT_MAX) { 6 } else { 2 };
                    let n = self.tx_dl - self.ae - head;
                    let mut chunk = [0u8; 64];
                    chunk[..n].copy_from_slice(&self.tx_buf[..n]);
                    seg.pos = n;
                    seg.sn = 1;
                    seg.phase = TxPhase::AwaitFc;
                    seg.deadline = after(now, if self.cfg.tx_confirm { self.cfg.n_as } else { self.cfg.n_bs });
                    self.tx_unconfirmed = self.cfg.tx_confirm;
                    self.tx = Tx::Segmented(seg);
                    self.emit(phys, &Pdu::First { ff_dl: seg.len as u32, data: &chunk[..n] })
                }
                TxPhase::SendCf => {
                    if now < seg.next_cf {
                        return None;
                    }
                    let n = (self.tx_dl - self.ae - 1).min(seg.len - seg.pos);
                    let mut chunk = [0u8; 64];
                    chunk[..n].copy_from_slice(&self.tx_buf[seg.pos..seg.pos + n]);
                    let sn = seg.sn;
                    seg.pos += n;
                    seg.sn = (seg.sn + 1) & 0x0F;
                    seg.next_cf = after(now, seg.stmin);
                    seg.last_cf = Some(now);
                    if self.cfg.tx_confirm {
                        // the rest happens at the confirmation (on_tx_confirm)
                        self.tx_unconfirmed = true;
                        seg.deadline = after(now, self.cfg.n_as);
                        self.tx = Tx::Segmented(seg);
                    } else if seg.pos >= seg.len {
                        self.tx = Tx::Idle;
                        bump(&mut self.stats.tx_messages);
                        self.push(Pending::SendComplete);
                    } else {
                        seg.deadline = after(seg.next_cf, self.cfg.n_as);
                        if seg.bs != 0 {
                            seg.in_block += 1;
                            if seg.in_block >= seg.bs {
                                seg.phase = TxPhase::AwaitFc;
                                seg.deadline = after(now, self.cfg.n_bs);
                            }
                        }
                        self.tx = Tx::Segmented(seg);
                    }
                    self.emit(phys, &Pdu::Consecutive { sn, data: &chunk[..n] })
                }
            },
        }
    }

    /// With [`Config::tx_confirm`]: `frame`, which this channel's
    /// `poll_transmit` returned, is now on the bus (a SocketCAN echo, a
    /// controller's transmit-complete). Stops N_As/N_Ar; starts N_Bs or
    /// N_Cr; releases the next CF (STmin counted from now); completes the
    /// send after its last frame. Frames of other channels, and calls
    /// without `tx_confirm`, are ignored.
    pub fn on_tx_confirm(&mut self, now: Instant, frame: &Frame) {
        if !self.cfg.tx_confirm {
            return;
        }
        let Some(id) = frame.id() else { return };
        let a = &self.cfg.address;
        let ours = id == a.tx_id(TargetAddressType::Physical) || id == a.tx_id(TargetAddressType::Functional);
        let data = frame.data();
        if !ours || (a.tx_address_byte().is_some() && data.first() != a.tx_address_byte().as_ref()) {
            return;
        }
        let Some(&b0) = data.get(self.ae) else { return };
        if b0 >> 4 == 3 {
            if self.fc_unconfirmed.take().is_some() {
                let repeat_in = self.fc_repeat_interval();
                if let Some(seg) = self.rx.as_mut() {
                    if seg.phase == RxPhase::AwaitCf {
                        seg.deadline = after(now, self.cfg.n_cr);
                        // the repeat too counts from the FC on the bus
                        if seg.fc_repeat_at.is_some() {
                            seg.fc_repeat_at = Some(after(now, repeat_in));
                        }
                    }
                }
            }
            return;
        }
        self.confirm_data(now);
    }

    /// The unconfirmed SF/FF/CF is on the bus (see [`Channel::on_tx_confirm`]).
    fn confirm_data(&mut self, now: Instant) {
        if !self.tx_unconfirmed {
            return;
        }
        self.tx_unconfirmed = false;
        match self.tx {
            Tx::Idle => {}
            Tx::Single { .. } => {
                self.tx = Tx::Idle;
                bump(&mut self.stats.tx_messages);
                self.push(Pending::SendComplete);
            }
            Tx::Segmented(mut seg) => {
                if seg.pos >= seg.len {
                    self.tx = Tx::Idle;
                    bump(&mut self.stats.tx_messages);
                    self.push(Pending::SendComplete);
                    return;
                }
                if seg.phase == TxPhase::AwaitFc {
                    seg.deadline = after(now, self.cfg.n_bs);
                } else {
                    seg.next_cf = seg.next_cf.max(after(now, seg.stmin));
                    seg.last_cf = Some(now);
                    seg.deadline = after(seg.next_cf, self.cfg.n_as);
                    if seg.bs != 0 {
                        seg.in_block += 1;
                        if seg.in_block >= seg.bs {
                            seg.phase = TxPhase::AwaitFc;
                            seg.deadline = after(now, self.cfg.n_bs);
                        }
                    }
                }
                self.tx = Tx::Segmented(seg);
            }
        }
    }

    /// The next event; [`Event::Received`] borrows the channel until the
    /// next call. Take events after every `handle_*`/`poll_transmit` call:
    /// at most [`EVENT_QUEUE`] wait (more are dropped and counted).
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.current = None;
        loop {
            let p = self.events.pop()?;
            if let Pending::Multi { gen, .. } = p {
                if gen != self.rx_gen {
                    continue;
                }
                self.mf_unread = false;
            }
            self.current = Some(p);
            break;
        }
        let ev = match self.current.as_ref()? {
            Pending::FirstFrame { len, ta } => Event::FirstFrameReceived { len: *len, ta_type: *ta },
            Pending::Single { len, data, ta } => Event::Received(&data[..usize::from(*len)], *ta),
            Pending::Multi { len, ta, .. } => Event::Received(self.rx_buf.get(..*len).unwrap_or(&[]), *ta),
            Pending::SendComplete => Event::SendComplete,
            Pending::TxError(r) => Event::TxError(*r),
            Pending::RxError(r) => Event::RxError(*r),
            Pending::Unexpected { kind, ta } => Event::UnexpectedPdu { kind: *kind, ta_type: *ta },
        };
        Some(ev)
    }
}

/// N_PCI bytes of an SF in a frame of `can_dl` bytes.
fn pci_sf_len(can_dl: usize) -> usize {
    if can_dl <= 8 {
        1
    } else {
        2
    }
}

impl crate::driver::Events for Channel<'_> {
    type Event<'a>
        = Event<'a>
    where
        Self: 'a;
    fn poll_event(&mut self) -> Option<Event<'_>> {
        Channel::poll_event(self)
    }
}
