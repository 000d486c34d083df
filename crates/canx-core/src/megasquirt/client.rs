//! The client: reads, writes, CRC queries, outmsg requests and burns
//! towards any board. Sans-IO: requests are queued by the caller, frames leave through
//! [`Client::poll_transmit`], replies enter through [`Client::handle_frame`].
//!
//! Rules (source: `docs/protocols/megasquirt.md`):
//! - A read is MSG_REQ (tables 0..31) or MSG_REQX (tables 32..255) of at most
//!   8 bytes; longer reads are split into several requests.
//! - A write is MSG_CMD of at most 8 bytes per frame; it has no reply.
//! - The reply (MSG_RSP / OUTMSG_RSP) carries in its header the table and
//!   offset the requester chose (its "reply target"), and to_id = requester.
//! - At most 10 requests may be outstanding towards one board (`NO_CANMSG`).
//! - MSG_BURN may be answered by MSG_BURNACK `[14, ok]`; the ack names no
//!   table, so at most one burn waits for an ack per board.
//!
//! A request that times out is sent again up to [`ClientConfig::retries`]
//! times (with a fresh reply tag); then its operation fails with
//! [`ClientEvent::TimedOut`]. Writes have no reply and never time out.
//!
//! ## Reply targets (how replies are matched)
//! All replies go to one table of this board, [`ClientConfig::reply_blk`].
//! Its 2048 offsets are cut into 256 tags of 8 bytes; every request in
//! flight owns a distinct tag (an outmsg request owns 1..3 adjacent tags),
//! so a reply is matched by (from_id, var_offset / 8) and must also have the
//! requested length. Tags are handed out round-robin; a tag whose request
//! timed out is quarantined for [`ClientConfig::quarantine`], so a reply
//! that arrives late is counted as unmatched and never completes a newer
//! request. A reply can therefore only be mismatched if it is delayed by
//! more than the quarantine.
//!
//! ## Completion data without a heap
//! Each operation owns a `BUF`-byte buffer in one of `OPS` slots. A finished
//! read stays in its slot until the *next* call to [`Client::poll_event`],
//! so [`Client::read_data`] can return the bytes right after the event.

use core::fmt;

use super::header::XtndType;
use super::header::{Header, MsgType, MAX_CAN_ID, MAX_OUTSTANDING, MAX_VAR_BLK, MAX_VAR_OFFSET};
use super::payload::{BurnAckRepr, CrcReqRepr, ReqRepr, ReqxRepr};
use super::server::{MAX_OUTMSGS, MAX_OUTMSG_BYTES};
use crate::frame::{CanFrame, Frame, CAN_MAX_LEN};
use crate::time::{Duration, Instant};

/// Bytes of reply space per tag (one frame).
pub const TAG_BYTES: usize = 8;
/// Number of reply tags: 2048 offsets / 8.
pub const TAGS: usize = (MAX_VAR_OFFSET as usize + 1) / TAG_BYTES;

const IN_USE: Instant = Instant::from_micros(u64::MAX);

/// Client settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// This board's CAN id, 0..14.
    pub can_id: u8,
    /// The table of this board that replies are addressed to (0..31;
    /// default 6, the MS3 scratch table).
    pub reply_blk: u8,
    /// How long a request may wait for its reply (default 100 ms).
    pub timeout: Duration,
    /// How long a timed-out request's reply tag stays unused (default 1 s).
    /// Keep `quarantine` x (timeouts per second) x (tags per request) well
    /// under 256, or new requests wait for tags.
    pub quarantine: Duration,
    /// How many times a request that timed out is sent again before its
    /// operation fails (default 2).
    pub retries: u8,
}

impl ClientConfig {
    pub const fn new(can_id: u8) -> Self {
        ClientConfig {
            can_id,
            reply_blk: 6,
            timeout: Duration::from_millis(100),
            quarantine: Duration::from_secs(1),
            retries: 2,
        }
    }
}

/// Identifies one operation from request to completion event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u32);

/// Caller errors of the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The configuration is invalid (own id above 14 or reply table above 31).
    InvalidConfig,
    /// Board id above 15 (above 14 for requests that expect a reply), or this board.
    InvalidBoard,
    /// Length 0, above the slot buffer, or (outmsg) above 24.
    InvalidLength,
    /// offset + length passes var_offset 2047.
    OutOfRange,
    /// Writes and CRC queries address tables 0..31 only.
    TableNotAddressable,
    /// Outmsg number above 19.
    InvalidOutmsgNumber,
    /// A burn awaiting MSG_BURNACK from this board is already pending
    /// (the ack does not name the table, so only one may be open per board).
    BurnPending,
    /// Every operation slot is in use. (The slot of a completion returned
    /// by `poll_event` is freed by the next `poll_event` call.)
    Busy,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientError::InvalidConfig => "invalid client configuration",
            ClientError::InvalidBoard => "invalid board id",
            ClientError::InvalidLength => "invalid length",
            ClientError::OutOfRange => "offset + length past 2047",
            ClientError::TableNotAddressable => "table must be 0-31",
            ClientError::InvalidOutmsgNumber => "outmsg number must be 0-19",
            ClientError::BurnPending => "a burn awaiting its ack is pending for this board",
            ClientError::Busy => "no free operation slot",
        })
    }
}

impl core::error::Error for ClientError {}

/// Completion of an operation. Exactly one per accepted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// All bytes arrived; get them with [`Client::read_data`].
    ReadDone { handle: Handle, board: u8, table: u8, offset: u16, len: u16 },
    /// Every MSG_CMD frame of the write was handed out by `poll_transmit`.
    WriteDone { handle: Handle, board: u8 },
    /// The CRC32 of the table.
    CrcDone { handle: Handle, board: u8, table: u8, crc: u32 },
    /// All outmsg bytes arrived; get them with [`Client::read_data`].
    OutmsgDone { handle: Handle, board: u8, number: u8, len: u16 },
    /// MSG_BURN was sent; `ack` is the MSG_BURNACK status if the burn
    /// waited for one (`Some(true)` = burnt), `None` if it did not wait.
    BurnDone { handle: Handle, board: u8, table: u8, ack: Option<bool> },
    /// A reply did not come within the timeout; the operation is abandoned.
    TimedOut { handle: Handle, board: u8 },
}

impl ClientEvent {
    /// The operation this event completes.
    pub fn handle(&self) -> Handle {
        match *self {
            ClientEvent::ReadDone { handle, .. }
            | ClientEvent::WriteDone { handle, .. }
            | ClientEvent::CrcDone { handle, .. }
            | ClientEvent::OutmsgDone { handle, .. }
            | ClientEvent::BurnDone { handle, .. }
            | ClientEvent::TimedOut { handle, .. } => handle,
        }
    }
}

/// Counters; they saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Request and write frames handed out.
    pub frames_sent: u32,
    /// Reply frames matched to a request.
    pub replies: u32,
    /// Reply frames to this board's reply table that matched no request
    /// (late, duplicate, wrong length or wrong sender).
    pub unmatched: u32,
    /// Operations that timed out (after their retries).
    pub timeouts: u32,
    /// Requests sent again after a timeout.
    pub retries: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Crc,
    Outmsg(u8),
    /// MSG_BURN; `ack`: wait for MSG_BURNACK.
    Burn {
        ack: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Active,
    Done {
        seq: u32,
        ok: bool,
    },
    /// Reported by the last `poll_event`; freed by the next.
    Delivered,
}

/// One request in flight.
#[derive(Clone, Copy, Debug)]
struct Sub {
    tag: u8,
    ntags: u8,
    /// Offset of this request's bytes within the operation.
    rel: u16,
    len: u8,
    /// Outmsg chunks received (bit k = chunk k).
    got: u8,
    /// Timed out; to be sent again with a new tag (no request in flight).
    resend: bool,
    tries_left: u8,
    deadline: Instant,
}

impl Sub {
    fn base(&self) -> usize {
        usize::from(self.tag) * TAG_BYTES
    }
}

#[derive(Clone, Copy, Debug)]
struct Op<const BUF: usize> {
    handle: Handle,
    kind: Kind,
    state: State,
    board: u8,
    table: u8,
    offset: u16,
    len: u16,
    /// Bytes requested (reads) or sent (writes) so far.
    issued: u16,
    received: u16,
    subs: [Option<Sub>; MAX_OUTSTANDING],
    buf: [u8; BUF],
}

impl<const BUF: usize> Op<BUF> {
    const IDLE: Self = Op {
        handle: Handle(0),
        kind: Kind::Read,
        state: State::Idle,
        board: 0,
        table: 0,
        offset: 0,
        len: 0,
        issued: 0,
        received: 0,
        subs: [None; MAX_OUTSTANDING],
        buf: [0; BUF],
    };
}

/// A MegaSquirt client with `OPS` concurrent operations of up to `BUF`
/// bytes each.
#[derive(Debug)]
pub struct Client<const OPS: usize = 4, const BUF: usize = 64> {
    cfg: ClientConfig,
    ops: [Op<BUF>; OPS],
    /// When each reply tag may be handed out again (`IN_USE` while in flight).
    tag_free_at: [Instant; TAGS],
    /// No tag can be allocated before this instant (lowered by every release).
    tag_hint: Instant,
    tag_cursor: usize,
    next_handle: u32,
    done_seq: u32,
    delivered: Option<usize>,
    rr: usize,
    stats: ClientStats,
}

fn bump(c: &mut u32) {
    *c = c.saturating_add(1);
}

/// Marks `n` tags from `tag` reusable at `at`.
fn release(free_at: &mut [Instant; TAGS], hint: &mut Instant, tag: u8, n: u8, at: Instant) {
    for f in free_at.iter_mut().skip(usize::from(tag)).take(usize::from(n)) {
        *f = at;
    }
    *hint = (*hint).min(at);
}

impl<const OPS: usize, const BUF: usize> Client<OPS, BUF> {
    /// Errors: [`ClientError::InvalidConfig`].
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        if cfg.can_id >= MAX_CAN_ID || cfg.reply_blk > MAX_VAR_BLK {
            return Err(ClientError::InvalidConfig);
        }
        Ok(Client {
            cfg,
            ops: [Op::IDLE; OPS],
            tag_free_at: [Instant::ZERO; TAGS],
            tag_hint: Instant::ZERO,
            tag_cursor: 0,
            next_handle: 1,
            done_seq: 0,
            delivered: None,
            rr: 0,
            stats: ClientStats::default(),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }
    pub fn stats(&self) -> ClientStats {
        self.stats
    }
    /// Operations accepted and not yet reported by `poll_event`.
    pub fn pending(&self) -> usize {
        self.ops.iter().filter(|o| matches!(o.state, State::Active | State::Done { .. })).count()
    }

    /// Reads `len` bytes (1..=BUF) of `table` at `offset` on `board`.
    /// Completes with [`ClientEvent::ReadDone`] or [`ClientEvent::TimedOut`].
    /// Errors: `InvalidBoard`, `InvalidLength`, `OutOfRange`, `Busy`.
    pub fn read(&mut self, board: u8, table: u8, offset: u16, len: u16) -> Result<Handle, ClientError> {
        self.check_peer(board)?;
        self.check_span(offset, usize::from(len))?;
        self.start(Kind::Read, board, table, offset, len, &[])
    }

    /// Writes `data` (1..=BUF bytes) to `table` (0..31) at `offset` on
    /// `board` (15 = every board) as MSG_CMD frames. Errors:
    /// `InvalidBoard`, `TableNotAddressable`, `InvalidLength`, `OutOfRange`, `Busy`.
    pub fn write(&mut self, board: u8, table: u8, offset: u16, data: &[u8]) -> Result<Handle, ClientError> {
        if board > MAX_CAN_ID || board == self.cfg.can_id {
            return Err(ClientError::InvalidBoard);
        }
        if table > MAX_VAR_BLK {
            return Err(ClientError::TableNotAddressable);
        }
        self.check_span(offset, data.len())?;
        self.start(Kind::Write, board, table, offset, data.len() as u16, data)
    }

    /// Asks `board` for the CRC32 of `table` (0..31). Completes with
    /// [`ClientEvent::CrcDone`]. Errors: `InvalidBoard`, `TableNotAddressable`, `Busy`.
    pub fn crc(&mut self, board: u8, table: u8) -> Result<Handle, ClientError> {
        self.check_peer(board)?;
        if table > MAX_VAR_BLK {
            return Err(ClientError::TableNotAddressable);
        }
        if BUF < 4 {
            return Err(ClientError::InvalidLength);
        }
        self.start(Kind::Crc, board, table, 0, 4, &[])
    }

    /// Asks `board` for outmsg `number` (0..19), expecting `len` bytes
    /// (1..=24, the definition's no_bytes). Completes with
    /// [`ClientEvent::OutmsgDone`]. Errors: `InvalidBoard`,
    /// `InvalidOutmsgNumber`, `InvalidLength`, `Busy`.
    pub fn outmsg(&mut self, board: u8, number: u8, len: u16) -> Result<Handle, ClientError> {
        self.check_peer(board)?;
        if usize::from(number) >= MAX_OUTMSGS {
            return Err(ClientError::InvalidOutmsgNumber);
        }
        if len == 0 || usize::from(len) > MAX_OUTMSG_BYTES || usize::from(len) > BUF {
            return Err(ClientError::InvalidLength);
        }
        self.start(Kind::Outmsg(number), board, 0, 0, len, &[])
    }

    /// Asks `board` to burn `table` (0..31) to flash (MSG_BURN). With
    /// `wait_ack`, completes with [`ClientEvent::BurnDone`] when MSG_BURNACK
    /// arrives (or [`ClientEvent::TimedOut`]; the burn is sent again on
    /// retries, which is harmless); without, as soon as the frame is sent.
    /// Errors: `InvalidBoard`, `TableNotAddressable`, `BurnPending`, `Busy`.
    pub fn burn(&mut self, board: u8, table: u8, wait_ack: bool) -> Result<Handle, ClientError> {
        if wait_ack {
            self.check_peer(board)?;
            let pending = self
                .ops
                .iter()
                .any(|o| o.state == State::Active && o.board == board && o.kind == Kind::Burn { ack: true });
            if pending {
                return Err(ClientError::BurnPending);
            }
        } else if board > MAX_CAN_ID || board == self.cfg.can_id {
            return Err(ClientError::InvalidBoard);
        }
        if table > MAX_VAR_BLK {
            return Err(ClientError::TableNotAddressable);
        }
        self.start(Kind::Burn { ack: wait_ack }, board, table, 0, 1, &[])
    }

    /// The bytes of a read or outmsg reported by the last `poll_event`;
    /// `None` for any other handle. Valid until the next `poll_event` call.
    pub fn read_data(&self, handle: Handle) -> Option<&[u8]> {
        let op = self.ops.get(self.delivered?)?;
        let ok = op.handle == handle && matches!(op.kind, Kind::Read | Kind::Outmsg(_));
        ok.then(|| op.buf.get(..usize::from(op.len)).unwrap_or(&[]))
    }

    fn check_peer(&self, board: u8) -> Result<(), ClientError> {
        if board >= MAX_CAN_ID || board == self.cfg.can_id {
            return Err(ClientError::InvalidBoard);
        }
        Ok(())
    }

    fn check_span(&self, offset: u16, len: usize) -> Result<(), ClientError> {
        if len == 0 || len > BUF || len > usize::from(u16::MAX) {
            return Err(ClientError::InvalidLength);
        }
        if usize::from(offset) + len > usize::from(MAX_VAR_OFFSET) + 1 {
            return Err(ClientError::OutOfRange);
        }
        Ok(())
    }

    fn start(
        &mut self,
        kind: Kind,
        board: u8,
        table: u8,
        offset: u16,
        len: u16,
        data: &[u8],
    ) -> Result<Handle, ClientError> {
        let slot = self.ops.iter_mut().find(|o| o.state == State::Idle).ok_or(ClientError::Busy)?;
        let handle = Handle(self.next_handle);
        self.next_handle = self.next_handle.wrapping_add(1);
        *slot = Op { handle, kind, state: State::Active, board, table, offset, len, ..Op::IDLE };
        if let Some(dst) = slot.buf.get_mut(..data.len()) {
            dst.copy_from_slice(data);
        }
        Ok(handle)
    }

    fn complete(&mut self, i: usize, ok: bool, now: Instant) {
        let q = if ok { now } else { now + self.cfg.quarantine };
        let seq = self.done_seq;
        self.done_seq = self.done_seq.wrapping_add(1);
        let Some(op) = self.ops.get_mut(i) else { return };
        for sub in op.subs.iter_mut().filter_map(Option::take) {
            if sub.resend {
                // its tag was quarantined when it timed out and may be in use again
                continue;
            }
            release(&mut self.tag_free_at, &mut self.tag_hint, sub.tag, sub.ntags, q);
        }
        op.state = State::Done { seq, ok };
    }

    fn outstanding(&self, board: u8) -> usize {
        self.ops
            .iter()
            .filter(|o| o.state == State::Active && o.board == board)
            .map(|o| o.subs.iter().flatten().count())
            .sum()
    }

    /// `n` adjacent free tags, marked in use.
    fn alloc_tags(&mut self, n: usize, now: Instant) -> Option<u8> {
        if now < self.tag_hint {
            return None;
        }
        let got = self.scan_tags(n, now);
        if got.is_none() {
            // nothing frees up before the earliest quarantine ends (or a release)
            self.tag_hint = self.tag_free_at.iter().copied().min().unwrap_or(IN_USE);
        }
        got
    }

    fn scan_tags(&mut self, n: usize, now: Instant) -> Option<u8> {
        for k in 0..TAGS {
            let t = (self.tag_cursor + k) % TAGS;
            let Some(span) = self.tag_free_at.get_mut(t..t + n) else { continue };
            if span.iter().all(|&f| f <= now) {
                span.fill(IN_USE);
                self.tag_cursor = (t + n) % TAGS;
                return u8::try_from(t).ok();
            }
        }
        None
    }

    /// Feeds one received frame. Only MSG_RSP / OUTMSG_RSP frames to this
    /// board's id and reply table are looked at; anything else is ignored.
    pub fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        let Some(hdr) = Header::from_frame(frame) else { return };
        if hdr.to_id() != self.cfg.can_id {
            return;
        }
        let to_reply_table = hdr.var_blk() == self.cfg.reply_blk;
        let data = frame.data();
        let matched = match hdr.msg_type() {
            MsgType::Rsp if to_reply_table => self.match_rsp(&hdr, data, now),
            MsgType::OutmsgRsp if to_reply_table => self.match_outmsg(&hdr, data, now),
            MsgType::Xtnd if data.first() == Some(&XtndType::BurnAck.code()) => self.match_burnack(&hdr, data, now),
            _ => return,
        };
        if matched {
            bump(&mut self.stats.replies);
        } else {
            bump(&mut self.stats.unmatched);
        }
    }

    fn find_sub(&self, from: u8, pred: impl Fn(&Sub) -> bool) -> Option<(usize, usize)> {
        self.ops.iter().enumerate().find_map(|(i, op)| {
            if op.state != State::Active || op.board != from {
                return None;
            }
            op.subs.iter().position(|s| s.as_ref().is_some_and(|s| !s.resend && pred(s))).map(|j| (i, j))
        })
    }

    fn match_rsp(&mut self, hdr: &Header, data: &[u8], now: Instant) -> bool {
        let off = usize::from(hdr.var_offset());
        let Some((i, j)) = self.find_sub(hdr.from_id(), |s| s.base() == off && usize::from(s.len) == data.len()) else {
            return false;
        };
        let op = &mut self.ops[i];
        let Some(sub) = op.subs[j] else { return false };
        match op.kind {
            Kind::Read | Kind::Crc => {}
            Kind::Write | Kind::Outmsg(_) | Kind::Burn { .. } => return false,
        }
        let rel = usize::from(sub.rel);
        let Some(dst) = op.buf.get_mut(rel..rel + data.len()) else { return false };
        dst.copy_from_slice(data);
        op.subs[j] = None;
        op.received = op.received.saturating_add(data.len() as u16);
        release(&mut self.tag_free_at, &mut self.tag_hint, sub.tag, 1, now);
        if op.received >= op.len {
            self.complete(i, true, now);
        }
        true
    }

    fn match_burnack(&mut self, hdr: &Header, data: &[u8], now: Instant) -> bool {
        let Ok(ack) = BurnAckRepr::parse(data) else { return false };
        let from = hdr.from_id();
        let found = self.ops.iter().position(|o| {
            o.state == State::Active && o.board == from && o.kind == Kind::Burn { ack: true } && o.issued > 0
        });
        let Some(i) = found else { return false };
        if let Some(b) = self.ops[i].buf.first_mut() {
            *b = ack.ok as u8;
        }
        self.complete(i, true, now);
        true
    }

    fn match_outmsg(&mut self, hdr: &Header, data: &[u8], now: Instant) -> bool {
        let off = usize::from(hdr.var_offset());
        let found = self.find_sub(hdr.from_id(), |s| off >= s.base() && off < s.base() + usize::from(s.len));
        let Some((i, j)) = found else { return false };
        let op = &mut self.ops[i];
        let Some(mut sub) = op.subs[j] else { return false };
        if !matches!(op.kind, Kind::Outmsg(_)) {
            return false;
        }
        let rel = off - sub.base();
        let k = rel / CAN_MAX_LEN;
        let want = (usize::from(sub.len) - rel).min(CAN_MAX_LEN);
        if rel % CAN_MAX_LEN != 0 || data.len() != want || sub.got & (1 << k) != 0 {
            return false;
        }
        let Some(dst) = op.buf.get_mut(rel..rel + want) else { return false };
        dst.copy_from_slice(data);
        sub.got |= 1 << k;
        op.subs[j] = Some(sub);
        op.received = op.received.saturating_add(want as u16);
        if op.received >= op.len {
            self.complete(i, true, now);
        }
        true
    }

    /// Handles expired requests: a request with retries left is sent again
    /// (with a fresh reply tag; the old one is quarantined); otherwise its
    /// operation fails with [`ClientEvent::TimedOut`]. Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..OPS {
            if self.ops[i].state != State::Active {
                continue;
            }
            let mut failed = false;
            let until = now + self.cfg.quarantine;
            for j in 0..MAX_OUTSTANDING {
                let Some(mut sub) = self.ops[i].subs[j] else { continue };
                if sub.resend || sub.deadline > now {
                    continue;
                }
                if sub.tries_left == 0 {
                    failed = true;
                    break;
                }
                release(&mut self.tag_free_at, &mut self.tag_hint, sub.tag, sub.ntags, until);
                sub.resend = true;
                self.ops[i].subs[j] = Some(sub);
            }
            if failed {
                bump(&mut self.stats.timeouts);
                self.complete(i, false, now);
            }
        }
    }

    /// The earliest request deadline; call `handle_timeout` then.
    /// Changes when a request is sent or answered.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ops
            .iter()
            .filter(|o| o.state == State::Active)
            .flat_map(|o| o.subs.iter().flatten().filter(|s| !s.resend).map(|s| s.deadline))
            .min()
    }

    /// The next frame to send. Call after queuing requests, after
    /// `handle_frame` and after `handle_timeout`, until it returns `None`.
    /// `now` starts the timeout of the request it sends. Operations take
    /// turns; retries go first; reads are paced to 10 outstanding requests
    /// per board.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        for k in 0..OPS {
            let i = (self.rr + k) % OPS;
            if let Some(f) = self.next_frame(i, now) {
                self.rr = (i + 1) % OPS;
                bump(&mut self.stats.frames_sent);
                return Some(f);
            }
        }
        None
    }

    /// The request frame for bytes `rel..rel+len` of operation `i`, replied to `tag`.
    fn request_frame(&self, i: usize, rel: u16, len: u8, tag: u8) -> Option<CanFrame> {
        let op = self.ops.get(i)?;
        let me = self.cfg.can_id;
        let rb = self.cfg.reply_blk;
        let reply_off = u16::from(tag) * TAG_BYTES as u16;
        let at = op.offset.checked_add(rel)?;
        let frame = match op.kind {
            Kind::Read if op.table <= MAX_VAR_BLK => {
                let p = ReqRepr::new(rb, reply_off, len).ok()?;
                Header::new(MsgType::Req, me, op.board, op.table, at).ok()?.frame(&p.emit())
            }
            Kind::Read => {
                let p = ReqxRepr::new(rb, reply_off, len, op.table).ok()?;
                Header::new(MsgType::Xtnd, me, op.board, 0, at).ok()?.frame(&p.emit())
            }
            Kind::Crc => {
                let p = CrcReqRepr::new(rb, reply_off).ok()?;
                Header::new(MsgType::Xtnd, me, op.board, op.table, 0).ok()?.frame(&p.emit())
            }
            Kind::Outmsg(n) => Header::new(MsgType::OutmsgReq, me, op.board, rb, reply_off).ok()?.frame(&[n]),
            Kind::Burn { .. } => Header::new(MsgType::Burn, me, op.board, op.table, 0).ok()?.frame(&[]),
            Kind::Write => return None,
        };
        frame.ok()
    }

    /// `request_frame` with `n` fresh tags; the tags are given back on failure.
    fn send_request(&mut self, i: usize, rel: u16, len: u8, ntags: usize, now: Instant) -> Option<(CanFrame, u8)> {
        let tag = if ntags == 0 { 0 } else { self.alloc_tags(ntags, now)? };
        match self.request_frame(i, rel, len, tag) {
            Some(f) => Some((f, tag)),
            None => {
                release(&mut self.tag_free_at, &mut self.tag_hint, tag, ntags as u8, now);
                None
            }
        }
    }

    fn next_frame(&mut self, i: usize, now: Instant) -> Option<CanFrame> {
        let o = self.ops.get(i)?;
        if o.state != State::Active {
            return None;
        }
        let (kind, board, len_total, issued) = (o.kind, o.board, o.len, o.issued);
        let subs = o.subs;
        if kind == (Kind::Burn { ack: false }) {
            if issued >= len_total {
                return None;
            }
            let f = Header::new(MsgType::Burn, self.cfg.can_id, board, o.table, 0).ok()?.frame(&[]).ok()?;
            self.ops[i].issued = len_total;
            self.complete(i, true, now);
            return Some(f);
        }
        if kind == Kind::Write {
            if issued >= len_total {
                return None;
            }
            let start = usize::from(issued);
            let chunk = (usize::from(len_total) - start).min(CAN_MAX_LEN);
            let h = Header::new(MsgType::Cmd, self.cfg.can_id, board, o.table, o.offset.checked_add(issued)?).ok()?;
            let f = h.frame(o.buf.get(start..start + chunk)?).ok()?;
            self.ops[i].issued += chunk as u16;
            if self.ops[i].issued >= len_total {
                self.complete(i, true, now);
            }
            return Some(f);
        }
        // 1. a timed-out request with retries left
        if let Some(j) = subs.iter().position(|s| s.is_some_and(|s| s.resend)) {
            let mut sub = subs[j]?;
            let (f, tag) = self.send_request(i, sub.rel, sub.len, usize::from(sub.ntags), now)?;
            sub = Sub {
                tag,
                resend: false,
                got: 0,
                tries_left: sub.tries_left - 1,
                deadline: now + self.cfg.timeout,
                ..sub
            };
            let op = &mut self.ops[i];
            if let Kind::Outmsg(_) = op.kind {
                op.received = 0;
            }
            op.subs[j] = Some(sub);
            bump(&mut self.stats.retries);
            return Some(f);
        }
        // 2. the next new request
        if issued >= len_total || self.outstanding(board) >= MAX_OUTSTANDING {
            return None;
        }
        let j = subs.iter().position(Option::is_none)?;
        let (len, ntags) = match kind {
            Kind::Outmsg(_) => (usize::from(len_total), usize::from(len_total).div_ceil(TAG_BYTES)),
            Kind::Burn { .. } => (1, 0),
            _ => ((usize::from(len_total - issued)).min(CAN_MAX_LEN), 1),
        };
        let (f, tag) = self.send_request(i, issued, len as u8, ntags, now)?;
        let sub = Sub {
            tag,
            ntags: ntags as u8,
            rel: issued,
            len: len as u8,
            got: 0,
            resend: false,
            tries_left: self.cfg.retries,
            deadline: now + self.cfg.timeout,
        };
        let op = &mut self.ops[i];
        op.subs[j] = Some(sub);
        op.issued += len as u16;
        Some(f)
    }

    /// The next completion, oldest first. Frees the slot of the completion
    /// returned by the previous call (so its [`Self::read_data`] ends here).
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        if let Some(i) = self.delivered.take() {
            if let Some(op) = self.ops.get_mut(i) {
                *op = Op::IDLE;
            }
        }
        let (i, ok) = self
            .ops
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o.state {
                State::Done { seq, ok } => Some((seq.wrapping_sub(self.done_seq), i, ok)),
                _ => None,
            })
            .min_by_key(|&(age, ..)| age)
            .map(|(_, i, ok)| (i, ok))?;
        let op = &mut self.ops[i];
        op.state = State::Delivered;
        self.delivered = Some(i);
        let (handle, board) = (op.handle, op.board);
        Some(if !ok {
            ClientEvent::TimedOut { handle, board }
        } else {
            match op.kind {
                Kind::Read => ClientEvent::ReadDone { handle, board, table: op.table, offset: op.offset, len: op.len },
                Kind::Write => ClientEvent::WriteDone { handle, board },
                Kind::Crc => {
                    let [a, b, c, d, ..] = op.buf[..] else { return None };
                    ClientEvent::CrcDone { handle, board, table: op.table, crc: u32::from_be_bytes([a, b, c, d]) }
                }
                Kind::Outmsg(number) => ClientEvent::OutmsgDone { handle, board, number, len: op.len },
                Kind::Burn { ack } => ClientEvent::BurnDone {
                    handle,
                    board,
                    table: op.table,
                    ack: ack.then(|| op.buf.first() == Some(&1)),
                },
            }
        })
    }
}

impl<const OPS: usize, const BUF: usize> crate::driver::Events for Client<OPS, BUF> {
    type Event<'a> = ClientEvent;
    fn poll_event(&mut self) -> Option<ClientEvent> {
        Client::poll_event(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::megasquirt::payload::ReqRepr;
    use std::vec::Vec;

    const T0: Instant = Instant::ZERO;

    fn hdr(f: &CanFrame) -> Header {
        Header::from_frame(&Frame::Can(*f)).unwrap()
    }

    fn rsp(from: u8, to: u8, blk: u8, off: u16, data: &[u8]) -> Frame {
        Frame::Can(Header::new(MsgType::Rsp, from, to, blk, off).unwrap().frame(data).unwrap())
    }

    fn drain(c: &mut Client<4, 128>, now: Instant) -> Vec<CanFrame> {
        core::iter::from_fn(|| c.poll_transmit(now)).collect()
    }

    #[test]
    fn split_read_and_matching() {
        let mut c: Client<4, 128> = Client::new(ClientConfig::new(3)).unwrap();
        let h = c.read(1, 7, 0x100, 20).unwrap();
        let tx = drain(&mut c, T0);
        assert_eq!(tx.len(), 3);
        for (k, f) in tx.iter().enumerate() {
            let hd = hdr(f);
            assert_eq!((hd.msg_type(), hd.from_id(), hd.to_id(), hd.var_blk()), (MsgType::Req, 3, 1, 7));
            assert_eq!(hd.var_offset(), 0x100 + 8 * k as u16);
            let p = ReqRepr::parse(f.data()).unwrap();
            // tags 0, 1, 2 -> reply offsets 0, 8, 16 in table 6
            assert_eq!((p.reply_blk, p.reply_offset, p.count), (6, 8 * k as u16, if k == 2 { 4 } else { 8 }));
        }
        // replies out of order; a wrong-length and a wrong-sender reply are not matched
        c.handle_frame(T0, &rsp(1, 3, 6, 16, &[16, 17, 18]));
        c.handle_frame(T0, &rsp(2, 3, 6, 16, &[16, 17, 18, 19]));
        c.handle_frame(T0, &rsp(1, 3, 6, 16, &[16, 17, 18, 19]));
        c.handle_frame(T0, &rsp(1, 3, 6, 0, &[0, 1, 2, 3, 4, 5, 6, 7]));
        assert_eq!(c.poll_event(), None);
        c.handle_frame(T0, &rsp(1, 3, 6, 8, &[8, 9, 10, 11, 12, 13, 14, 15]));
        assert_eq!(c.stats().unmatched, 2);
        assert_eq!(
            c.poll_event(),
            Some(ClientEvent::ReadDone { handle: h, board: 1, table: 7, offset: 0x100, len: 20 })
        );
        let want: Vec<u8> = (0..20).collect();
        assert_eq!(c.read_data(h), Some(&want[..]));
        assert_eq!(c.poll_event(), None);
        assert_eq!(c.read_data(h), None);
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn ten_outstanding_per_board_and_timeouts() {
        let mut c: Client<4, 128> = Client::new(ClientConfig { retries: 0, ..ClientConfig::new(3) }).unwrap();
        let h = c.read(1, 7, 0, 128).unwrap();
        let h2 = c.read(2, 40, 0, 8).unwrap();
        let tx = drain(&mut c, T0);
        // 10 requests to board 1, then 1 MSG_REQX to board 2
        assert_eq!(tx.len(), 11);
        assert_eq!(tx.iter().filter(|f| hdr(f).to_id() == 1).count(), 10);
        let x = tx.iter().find(|f| hdr(f).to_id() == 2).unwrap();
        assert_eq!(hdr(x).msg_type(), MsgType::Xtnd);
        assert_eq!(x.data()[0], 12);
        assert_eq!(x.data()[4], 40);
        // one reply frees one slot: one more request goes out
        let first = ReqRepr::parse(tx[0].data()).unwrap();
        c.handle_frame(T0, &rsp(1, 3, 6, first.reply_offset, &[0; 8]));
        assert_eq!(drain(&mut c, T0).len(), 1);
        assert_eq!(c.poll_timeout(), Some(T0 + Duration::from_millis(100)));
        let t1 = Instant::from_millis(100);
        c.handle_timeout(Instant::from_millis(99));
        assert_eq!(c.poll_event(), None);
        c.handle_timeout(t1);
        c.handle_timeout(t1);
        let mut evs = [c.poll_event(), c.poll_event(), c.poll_event()];
        evs.sort_by_key(|e| format!("{e:?}"));
        assert!(evs.contains(&Some(ClientEvent::TimedOut { handle: h, board: 1 })));
        assert!(evs.contains(&Some(ClientEvent::TimedOut { handle: h2, board: 2 })));
        assert_eq!(c.stats().timeouts, 2);
        // a late reply to a quarantined tag is not matched, even to a new read
        let h3 = c.read(1, 7, 0, 8).unwrap();
        let again = drain(&mut c, t1);
        let p = ReqRepr::parse(again[0].data()).unwrap();
        assert_ne!(p.reply_offset, ReqRepr::parse(tx[1].data()).unwrap().reply_offset);
        c.handle_frame(t1, &rsp(1, 3, 6, ReqRepr::parse(tx[1].data()).unwrap().reply_offset, &[9; 8]));
        assert_eq!(c.poll_event(), None);
        c.handle_frame(t1, &rsp(1, 3, 6, p.reply_offset, &[7; 8]));
        assert!(matches!(c.poll_event(), Some(ClientEvent::ReadDone { handle, .. }) if handle == h3));
        assert_eq!(c.read_data(h3), Some(&[7u8; 8][..]));
    }

    #[test]
    fn write_crc_outmsg() {
        let mut c: Client<4, 128> = Client::new(ClientConfig::new(3)).unwrap();
        let data: Vec<u8> = (0..10).collect();
        let w = c.write(15, 20, 4, &data).unwrap();
        let tx = drain(&mut c, T0);
        assert_eq!(tx.len(), 2);
        assert_eq!(hdr(&tx[0]), Header::new(MsgType::Cmd, 3, 15, 20, 4).unwrap());
        assert_eq!(hdr(&tx[1]), Header::new(MsgType::Cmd, 3, 15, 20, 12).unwrap());
        assert_eq!(tx[1].data(), &[8, 9]);
        assert_eq!(c.poll_event(), Some(ClientEvent::WriteDone { handle: w, board: 15 }));
        assert_eq!(c.read_data(w), None);

        let k = c.crc(1, 15).unwrap();
        let f = drain(&mut c, T0)[0];
        assert_eq!(hdr(&f), Header::new(MsgType::Xtnd, 3, 1, 15, 0).unwrap());
        let p = CrcReqRepr::parse(f.data()).unwrap();
        c.handle_frame(T0, &rsp(1, 3, 6, p.reply_offset, &[0xCB, 0xF4, 0x39, 0x26]));
        assert_eq!(c.poll_event(), Some(ClientEvent::CrcDone { handle: k, board: 1, table: 15, crc: 0xCBF4_3926 }));

        let o = c.outmsg(1, 3, 20).unwrap();
        let f = drain(&mut c, T0)[0];
        let h = hdr(&f);
        assert_eq!((h.msg_type(), h.var_blk(), f.data()), (MsgType::OutmsgReq, 6, &[3u8][..]));
        let base = h.var_offset();
        let chunk =
            |off: u16, d: &[u8]| Frame::Can(Header::new(MsgType::OutmsgRsp, 1, 3, 6, off).unwrap().frame(d).unwrap());
        c.handle_frame(T0, &chunk(base + 16, &[16, 17, 18, 19]));
        c.handle_frame(T0, &chunk(base, &[0, 1, 2, 3, 4, 5, 6, 7]));
        c.handle_frame(T0, &chunk(base, &[0, 1, 2, 3, 4, 5, 6, 7]));
        assert_eq!(c.stats().unmatched, 1);
        c.handle_frame(T0, &chunk(base + 8, &[8, 9, 10, 11, 12, 13, 14, 15]));
        assert_eq!(c.poll_event(), Some(ClientEvent::OutmsgDone { handle: o, board: 1, number: 3, len: 20 }));
        let want: Vec<u8> = (0..20).collect();
        assert_eq!(c.read_data(o), Some(&want[..]));
    }

    #[test]
    fn quarantined_tag_is_skipped_after_wrap() {
        let mut c: Client<1, 8> = Client::new(ClientConfig { retries: 0, ..ClientConfig::new(3) }).unwrap();
        let h = c.read(1, 7, 0, 8).unwrap();
        let f = c.poll_transmit(T0).unwrap();
        assert_eq!(ReqRepr::parse(f.data()).unwrap().reply_offset, 0);
        let t = Instant::from_millis(100);
        c.handle_timeout(t);
        assert_eq!(c.poll_event(), Some(ClientEvent::TimedOut { handle: h, board: 1 }));
        assert_eq!(c.poll_event(), None);
        // 255 answered reads walk the cursor once around the 256 tags
        for k in 1..256u16 {
            c.read(1, 7, 0, 8).unwrap();
            let f = c.poll_transmit(t).unwrap();
            let p = ReqRepr::parse(f.data()).unwrap();
            assert_eq!(p.reply_offset, 8 * k);
            c.handle_frame(t, &rsp(1, 3, 6, p.reply_offset, &[0; 8]));
            assert!(matches!(c.poll_event(), Some(ClientEvent::ReadDone { .. })));
            assert_eq!(c.poll_event(), None); // frees the slot
        }
        // tag 0 is still quarantined (1 s): the next request gets tag 1
        c.read(1, 7, 0, 8).unwrap();
        let f = c.poll_transmit(t).unwrap();
        assert_eq!(ReqRepr::parse(f.data()).unwrap().reply_offset, 8);
        // a late reply at offset 0 matches nothing
        c.handle_frame(t, &rsp(1, 3, 6, 0, &[0; 8]));
        assert_eq!(c.poll_event(), None);
        assert_eq!(c.stats().unmatched, 1);
    }

    #[test]
    fn retries_use_fresh_tags() {
        let mut c: Client<1, 32> = Client::new(ClientConfig { retries: 1, ..ClientConfig::new(3) }).unwrap();
        let h = c.read(1, 7, 0, 16).unwrap();
        let a = core::iter::from_fn(|| c.poll_transmit(T0)).collect::<Vec<_>>();
        assert_eq!(a.len(), 2);
        let tag = |f: &CanFrame| ReqRepr::parse(f.data()).unwrap().reply_offset;
        // the first chunk is answered, the second is lost
        c.handle_frame(T0, &rsp(1, 3, 6, tag(&a[0]), &[1; 8]));
        let t1 = Instant::from_millis(100);
        assert_eq!(c.poll_timeout(), Some(t1));
        c.handle_timeout(t1);
        assert_eq!(c.poll_event(), None);
        assert_eq!(c.poll_timeout(), None);
        let b = c.poll_transmit(t1).unwrap();
        assert_eq!(c.poll_transmit(t1), None);
        assert_eq!(hdr(&b).var_offset(), 8);
        assert_ne!(tag(&b), tag(&a[1]));
        assert_eq!(c.stats().retries, 1);
        // the late reply to the first try is not matched; the retry's is
        c.handle_frame(t1, &rsp(1, 3, 6, tag(&a[1]), &[9; 8]));
        assert_eq!(c.poll_event(), None);
        c.handle_frame(t1, &rsp(1, 3, 6, tag(&b), &[2; 8]));
        assert!(matches!(c.poll_event(), Some(ClientEvent::ReadDone { handle, len: 16, .. }) if handle == h));
        assert_eq!(c.read_data(h), Some(&[1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2][..]));
        assert_eq!(c.poll_event(), None);
        // no retries left: the second timeout fails the operation
        let h = c.read(1, 7, 0, 8).unwrap();
        c.poll_transmit(t1).unwrap();
        let t2 = t1 + Duration::from_millis(100);
        c.handle_timeout(t2);
        c.poll_transmit(t2).unwrap();
        c.handle_timeout(t2 + Duration::from_millis(100));
        assert_eq!(c.poll_event(), Some(ClientEvent::TimedOut { handle: h, board: 1 }));
        assert_eq!(c.stats().timeouts, 1);
    }

    #[test]
    fn burn_with_and_without_ack() {
        let mut c: Client<4, 8> = Client::new(ClientConfig::new(3)).unwrap();
        let quick = c.burn(15, 20, false).unwrap();
        let f = c.poll_transmit(T0).unwrap();
        assert_eq!(hdr(&f), Header::new(MsgType::Burn, 3, 15, 20, 0).unwrap());
        assert!(f.data().is_empty());
        assert_eq!(c.poll_event(), Some(ClientEvent::BurnDone { handle: quick, board: 15, table: 20, ack: None }));
        let h = c.burn(1, 20, true).unwrap();
        assert_eq!(c.burn(1, 21, true), Err(ClientError::BurnPending));
        assert_eq!(c.burn(15, 21, true), Err(ClientError::InvalidBoard));
        let ack =
            |from: u8, ok: u8| Frame::Can(Header::new(MsgType::Xtnd, from, 3, 0, 0).unwrap().frame(&[14, ok]).unwrap());
        // an ack before the burn was sent matches nothing
        c.handle_frame(T0, &ack(1, 1));
        assert_eq!(c.stats().unmatched, 1);
        let f = c.poll_transmit(T0).unwrap();
        assert_eq!(hdr(&f), Header::new(MsgType::Burn, 3, 1, 20, 0).unwrap());
        assert_eq!(c.poll_timeout(), Some(T0 + Duration::from_millis(100)));
        c.handle_frame(T0, &ack(2, 1)); // other board
        assert_eq!(c.poll_event(), None);
        c.handle_frame(T0, &ack(1, 0));
        assert_eq!(c.poll_event(), Some(ClientEvent::BurnDone { handle: h, board: 1, table: 20, ack: Some(false) }));
        assert_eq!(c.poll_event(), None);
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn caller_errors() {
        assert_eq!(Client::<1, 8>::new(ClientConfig::new(15)).err(), Some(ClientError::InvalidConfig));
        let mut c: Client<1, 16> = Client::new(ClientConfig::new(3)).unwrap();
        assert_eq!(c.read(3, 7, 0, 1), Err(ClientError::InvalidBoard));
        assert_eq!(c.read(15, 7, 0, 1), Err(ClientError::InvalidBoard));
        assert_eq!(c.read(1, 7, 0, 0), Err(ClientError::InvalidLength));
        assert_eq!(c.read(1, 7, 0, 17), Err(ClientError::InvalidLength));
        assert_eq!(c.read(1, 7, 2040, 9), Err(ClientError::OutOfRange));
        assert_eq!(c.write(1, 32, 0, &[1]), Err(ClientError::TableNotAddressable));
        assert_eq!(c.crc(1, 40), Err(ClientError::TableNotAddressable));
        assert_eq!(c.outmsg(1, 20, 4), Err(ClientError::InvalidOutmsgNumber));
        assert_eq!(c.outmsg(1, 0, 17), Err(ClientError::InvalidLength));
        c.read(1, 7, 2040, 8).unwrap();
        assert_eq!(c.read(1, 7, 0, 1), Err(ClientError::Busy));
    }
}
