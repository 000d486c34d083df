//! The table server: a board that answers MegaSquirt table requests from
//! caller-owned tables. Sans-IO: frames and time in, frames and events out.
//!
//! Rules (source: `docs/protocols/megasquirt.md`):
//! - A board accepts frames whose to_id is its own id or 15 ("The model").
//! - MSG_REQ / MSG_REQX: reply MSG_RSP to the requester, var_blk/var_offset
//!   = the payload's reply target, DLC = count, data = the bytes at the
//!   request's (table, offset) ("MSG_REQ payload").
//! - MSG_CMD, and MSG_RSP / OUTMSG_RSP on receipt: write data to
//!   (var_blk, var_offset) ("Message types").
//! - MSG_CRC: reply MSG_RSP with the CRC32 of table var_blk, big-endian.
//! - MSG_BURN: burn event; MSG_BURNACK `[14, ok]` if configured or on
//!   [`Server::ack_burn`].
//! - OUTMSG_REQ: send outmsg `data[0]`'s bytes (offsets into the realtime
//!   table) as OUTMSG_RSP chunks of <= 8 bytes, offset advancing ("OUTMSG").
//! - MSG_XSUB, MSG_FWD, MSG_SPND, MSG_BURNACK, MSG_PROT, MSG_WCR: events.
//!
//! Untrusted input never panics and never reaches outside a table: every
//! access is bounds-checked with `get`, and a refused request becomes a
//! [`ServerEvent::Refused`] naming the reason, with no reply.

use core::fmt;

use crc::{Crc, CRC_32_ISO_HDLC};

use super::header::{Header, MsgType, XtndType, BROADCAST_ID, MAX_CAN_ID, MAX_VAR_OFFSET};
use super::message::Message;
use super::payload::{BurnAckRepr, CrcReqRepr, PayloadError};
use super::tables::Tables;
use crate::frame::{CanFrame, Frame, CAN_MAX_LEN};
use crate::ring::Ring;
use crate::time::Instant;

/// Outmsg definitions a board keeps ("up to 20").
pub const MAX_OUTMSGS: usize = 20;
/// Byte offsets in one outmsg definition ("no_bytes <= 24").
pub const MAX_OUTMSG_BYTES: usize = 24;
/// The realtime table (`outpc`) on MS3.
pub const REALTIME_BLK: u8 = 7;

/// CRC-32 (ISO-HDLC, the zlib/Ethernet CRC) as used by MSG_CRC.
pub(crate) const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Server settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// This board's CAN id, 0..14 (15 addresses all boards).
    pub can_id: u8,
    /// Table the outmsg offsets index (default 7, `outpc`).
    pub realtime_blk: u8,
    /// Reply MSG_BURNACK `[14, 1]` to every accepted MSG_BURN at once.
    /// Off by default: the owner burns, then calls [`Server::ack_burn`].
    pub auto_burn_ack: bool,
}

impl ServerConfig {
    pub const fn new(can_id: u8) -> Self {
        ServerConfig { can_id, realtime_blk: REALTIME_BLK, auto_burn_ack: false }
    }
}

/// Caller errors of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerError {
    /// Board id above 14 (15 is the broadcast id).
    InvalidCanId,
    /// Outmsg number above 19.
    InvalidOutmsgNumber,
    /// Outmsg with 0 or more than 24 offsets.
    InvalidOutmsgLength,
    /// The transmit queue is full.
    QueueFull,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerError::InvalidCanId => "board id must be 0-14",
            ServerError::InvalidOutmsgNumber => "outmsg number must be 0-19",
            ServerError::InvalidOutmsgLength => "an outmsg lists 1-24 byte offsets",
            ServerError::QueueFull => "transmit queue full",
        })
    }
}

impl core::error::Error for ServerError {}

/// One outmsg definition: byte offsets into the realtime table, in send order.
/// (The firmware's `xrate` periodic sending is left to the caller.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutmsgDef {
    len: u8,
    offsets: [u16; MAX_OUTMSG_BYTES],
}

impl OutmsgDef {
    /// Errors: [`ServerError::InvalidOutmsgLength`] for 0 or more than 24 offsets.
    pub fn new(offsets: &[u16]) -> Result<Self, ServerError> {
        if offsets.is_empty() || offsets.len() > MAX_OUTMSG_BYTES {
            return Err(ServerError::InvalidOutmsgLength);
        }
        let mut o = [0u16; MAX_OUTMSG_BYTES];
        o[..offsets.len()].copy_from_slice(offsets);
        Ok(OutmsgDef { len: offsets.len() as u8, offsets: o })
    }

    pub fn offsets(&self) -> &[u16] {
        &self.offsets[..usize::from(self.len).min(MAX_OUTMSG_BYTES)]
    }
}

/// Why a request got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The payload does not parse.
    Malformed(PayloadError),
    /// A write with no data bytes.
    EmptyWrite,
    /// No table with this var_blk.
    UnknownTable,
    /// offset + count goes past the end of the table.
    OutOfRange,
    /// The table may not be read remotely.
    NotReadable,
    /// The table may not be written or burnt remotely.
    NotWritable,
    /// No outmsg definition with this number.
    UnknownOutmsg,
    /// The reply would not fit the 11-bit var_offset of the reply headers.
    ReplyTargetOutOfRange,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(e) => write!(f, "malformed payload: {e}"),
            Refusal::EmptyWrite => f.write_str("write without data"),
            Refusal::UnknownTable => f.write_str("unknown table"),
            Refusal::OutOfRange => f.write_str("offset/count outside the table"),
            Refusal::NotReadable => f.write_str("table not readable"),
            Refusal::NotWritable => f.write_str("table not writable"),
            Refusal::UnknownOutmsg => f.write_str("unknown outmsg"),
            Refusal::ReplyTargetOutOfRange => f.write_str("reply target past var_offset 2047"),
        }
    }
}

/// What the server reports. `msg` is the message number as the firmware
/// numbers it: the header msg_type 0..7, or for MSG_XTND the subtype
/// `data[0]` (8 and up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// A MSG_CMD / MSG_RSP / OUTMSG_RSP wrote `len` bytes into a table.
    Written { from: u8, msg: MsgType, var_blk: u8, var_offset: u16, len: u8 },
    /// MSG_BURN: burn table `var_blk` to flash.
    Burn { from: u8, var_blk: u8 },
    /// MSG_XSUB: run the subroutine chosen by `from`.
    Xsub { from: u8, var_blk: u8, var_offset: u16 },
    /// MSG_BURNACK from a board this one asked to burn.
    BurnAck { from: u8, ok: bool },
    /// MSG_SPND: suspend (true) or resume CAN polling.
    Suspend { from: u8, suspend: bool },
    /// MSG_FWD: bytes for the serial port.
    Forward { from: u8, data: [u8; 7], len: u8 },
    /// A message the server accepts but does not act on (MSG_PROT,
    /// MSG_WCR, unknown MSG_XTND subtypes).
    Unhandled { from: u8, msg: u8, var_blk: u8, var_offset: u16, data: [u8; CAN_MAX_LEN], len: u8 },
    /// A request refused without reply.
    Refused { from: u8, msg: u8, var_blk: u8, var_offset: u16, reason: Refusal },
}

/// Counters; they saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Frames addressed to this board (own id or 15).
    pub frames: u32,
    /// Reply frames queued.
    pub replies: u32,
    /// Requests refused.
    pub refused: u32,
    /// Reply frames dropped because the transmit queue was full.
    pub tx_dropped: u32,
    /// Events dropped because the event queue was full.
    pub events_dropped: u32,
}

/// A MegaSquirt table server. `TXQ` bounds queued reply frames, `EVQ`
/// queued events; overflow is counted in [`ServerStats`].
#[derive(Debug)]
pub struct Server<T: Tables, const TXQ: usize = 8, const EVQ: usize = 16> {
    cfg: ServerConfig,
    tables: T,
    outmsgs: [Option<OutmsgDef>; MAX_OUTMSGS],
    tx: Ring<CanFrame, TXQ>,
    events: Ring<ServerEvent, EVQ>,
    stats: ServerStats,
}

fn bump(c: &mut u32) {
    *c = c.saturating_add(1);
}

impl<T: Tables, const TXQ: usize, const EVQ: usize> Server<T, TXQ, EVQ> {
    /// Errors: [`ServerError::InvalidCanId`] for an id above 14.
    pub fn new(cfg: ServerConfig, tables: T) -> Result<Self, ServerError> {
        if cfg.can_id >= MAX_CAN_ID {
            return Err(ServerError::InvalidCanId);
        }
        Ok(Server {
            cfg,
            tables,
            outmsgs: [None; MAX_OUTMSGS],
            tx: Ring::new(),
            events: Ring::new(),
            stats: ServerStats::default(),
        })
    }

    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }
    pub fn tables(&self) -> &T {
        &self.tables
    }
    /// The tables, for the owner to update (e.g. the realtime table).
    pub fn tables_mut(&mut self) -> &mut T {
        &mut self.tables
    }
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Sets (or with `None` clears) outmsg `number` (0..19).
    /// Errors: [`ServerError::InvalidOutmsgNumber`].
    pub fn set_outmsg(&mut self, number: u8, def: Option<OutmsgDef>) -> Result<(), ServerError> {
        let slot = self.outmsgs.get_mut(usize::from(number)).ok_or(ServerError::InvalidOutmsgNumber)?;
        *slot = def;
        Ok(())
    }

    /// Queues MSG_BURNACK `[14, ok]` to board `to` (after a [`ServerEvent::Burn`]).
    /// Errors: `InvalidCanId` for `to` above 15, `QueueFull`.
    pub fn ack_burn(&mut self, to: u8, ok: bool) -> Result<(), ServerError> {
        let hdr = Header::new(MsgType::Xtnd, self.cfg.can_id, to, 0, 0).map_err(|_| ServerError::InvalidCanId)?;
        let f = hdr.frame(&BurnAckRepr { ok }.emit()).map_err(|_| ServerError::QueueFull)?;
        self.tx.push(f).map_err(|_| ServerError::QueueFull)?;
        bump(&mut self.stats.replies);
        Ok(())
    }

    /// Feeds one received frame. Frames that are not MegaSquirt frames for
    /// this board (standard ids, remote, FD and error frames, other to_id,
    /// echoes of this board's own frames) are ignored. Call for every
    /// received frame; then drain [`Self::poll_transmit`] and [`Self::poll_event`].
    pub fn handle_frame(&mut self, _now: Instant, frame: &Frame) {
        let Some(hdr) = Header::from_frame(frame) else { return };
        if hdr.to_id() != self.cfg.can_id && hdr.to_id() != BROADCAST_ID {
            return;
        }
        if hdr.from_id() == self.cfg.can_id {
            return;
        }
        bump(&mut self.stats.frames);
        let data = frame.data();
        let from = hdr.from_id();
        // the message number as the firmware numbers it (MSG_XTND: the subtype)
        let msg = match (hdr.msg_type(), data.first()) {
            (MsgType::Xtnd, Some(&sub)) => sub,
            (t, _) => t.bits(),
        };
        let m = match Message::parse(&hdr, data) {
            Ok(m) => m,
            Err(e) => return self.refuse(&hdr, msg, Refusal::Malformed(e)),
        };
        match m {
            Message::Cmd(d) | Message::Rsp(d) | Message::OutmsgRsp(d) => self.write(&hdr, d),
            Message::Req(r) => self.read(&hdr, msg, hdr.var_blk(), r.reply_blk, r.reply_offset, r.count),
            Message::Reqx(r) => self.read(&hdr, msg, r.table, r.reply_blk, r.reply_offset, r.count),
            Message::Crc(r) => self.crc(&hdr, r),
            Message::Xsub => {
                self.event(ServerEvent::Xsub { from, var_blk: hdr.var_blk(), var_offset: hdr.var_offset() })
            }
            Message::Burn => self.burn(&hdr),
            Message::OutmsgReq { number } => self.outmsg(&hdr, number),
            Message::BurnAck(r) => self.event(ServerEvent::BurnAck { from, ok: r.ok }),
            Message::Spnd(r) => self.event(ServerEvent::Suspend { from, suspend: r.suspend }),
            Message::Fwd(rest) => {
                let mut d = [0u8; 7];
                let n = rest.len().min(7);
                d[..n].copy_from_slice(&rest[..n]);
                self.event(ServerEvent::Forward { from, data: d, len: n as u8 });
            }
            Message::Prot(_) | Message::Wcr(_) | Message::UnknownXtnd { .. } => {
                let mut d = [0u8; CAN_MAX_LEN];
                let n = data.len().min(CAN_MAX_LEN);
                d[..n].copy_from_slice(&data[..n]);
                let (var_blk, var_offset) = (hdr.var_blk(), hdr.var_offset());
                self.event(ServerEvent::Unhandled { from, msg, var_blk, var_offset, data: d, len: n as u8 });
            }
        }
    }

    /// The server keeps no timers: a no-op, present for the common engine shape.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// Always `None`: the server only reacts to frames.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The next reply frame to send, oldest first. Call after
    /// [`Self::handle_frame`] until it returns `None`.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<CanFrame> {
        self.tx.pop()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop()
    }

    fn event(&mut self, e: ServerEvent) {
        if self.events.push(e).is_err() {
            bump(&mut self.stats.events_dropped);
        }
    }

    fn refuse(&mut self, hdr: &Header, msg: u8, reason: Refusal) {
        self.refuse_at(hdr, msg, hdr.var_blk(), reason);
    }

    fn refuse_at(&mut self, hdr: &Header, msg: u8, var_blk: u8, reason: Refusal) {
        bump(&mut self.stats.refused);
        self.event(ServerEvent::Refused { from: hdr.from_id(), msg, var_blk, var_offset: hdr.var_offset(), reason });
    }

    fn send(&mut self, f: CanFrame) {
        if self.tx.push(f).is_ok() {
            bump(&mut self.stats.replies);
        } else {
            bump(&mut self.stats.tx_dropped);
        }
    }

    /// A reply header: from this board to the requester, at the reply target.
    fn reply_header(&self, ty: MsgType, hdr: &Header, reply_blk: u8, reply_offset: u16) -> Option<Header> {
        Header::new(ty, self.cfg.can_id, hdr.from_id(), reply_blk, reply_offset).ok()
    }

    fn write(&mut self, hdr: &Header, data: &[u8]) {
        let msg = hdr.msg_type().bits();
        if data.is_empty() {
            return self.refuse(hdr, msg, Refusal::EmptyWrite);
        }
        let (blk, off) = (hdr.var_blk(), usize::from(hdr.var_offset()));
        let reason = match self.tables.table(blk) {
            None => Some(Refusal::UnknownTable),
            Some((_, a)) if !a.write => Some(Refusal::NotWritable),
            Some((t, _)) if t.get(off..off + data.len()).is_none() => Some(Refusal::OutOfRange),
            Some(_) => None,
        };
        if let Some(r) = reason {
            return self.refuse(hdr, msg, r);
        }
        match self.tables.table_mut(blk).and_then(|t| t.get_mut(off..off + data.len())) {
            Some(dst) => dst.copy_from_slice(data),
            None => return self.refuse(hdr, msg, Refusal::OutOfRange),
        }
        self.event(ServerEvent::Written {
            from: hdr.from_id(),
            msg: hdr.msg_type(),
            var_blk: blk,
            var_offset: hdr.var_offset(),
            len: data.len() as u8,
        });
    }

    /// Bytes `off..off+n` of a readable table, or the refusal.
    fn readable(&self, blk: u8, off: usize, n: usize) -> Result<&[u8], Refusal> {
        match self.tables.table(blk) {
            None => Err(Refusal::UnknownTable),
            Some((_, a)) if !a.read => Err(Refusal::NotReadable),
            Some((t, _)) => t.get(off..off + n).ok_or(Refusal::OutOfRange),
        }
    }

    fn read(&mut self, hdr: &Header, msg: u8, table: u8, reply_blk: u8, reply_offset: u16, count: u8) {
        let mut buf = [0u8; CAN_MAX_LEN];
        let n = usize::from(count).min(CAN_MAX_LEN);
        match self.readable(table, usize::from(hdr.var_offset()), n) {
            Ok(src) => buf[..n].copy_from_slice(src),
            Err(r) => return self.refuse_at(hdr, msg, table, r),
        }
        let frame = self.reply_header(MsgType::Rsp, hdr, reply_blk, reply_offset).and_then(|h| h.frame(&buf[..n]).ok());
        match frame {
            Some(f) => self.send(f),
            None => self.refuse_at(hdr, msg, table, Refusal::Malformed(PayloadError::BadReplyBlk)),
        }
    }

    fn crc(&mut self, hdr: &Header, req: CrcReqRepr) {
        let msg = XtndType::Crc.code();
        let crc = match self.tables.table(hdr.var_blk()) {
            None => return self.refuse(hdr, msg, Refusal::UnknownTable),
            Some((_, a)) if !a.read => return self.refuse(hdr, msg, Refusal::NotReadable),
            Some((t, _)) => CRC32.checksum(t),
        };
        let frame = self
            .reply_header(MsgType::Rsp, hdr, req.reply_blk, req.reply_offset)
            .and_then(|h| h.frame(&crc.to_be_bytes()).ok());
        match frame {
            Some(f) => self.send(f),
            None => self.refuse(hdr, msg, Refusal::Malformed(PayloadError::BadReplyBlk)),
        }
    }

    fn burn(&mut self, hdr: &Header) {
        let msg = MsgType::Burn.bits();
        match self.tables.table(hdr.var_blk()) {
            None => return self.refuse(hdr, msg, Refusal::UnknownTable),
            Some((_, a)) if !a.write => return self.refuse(hdr, msg, Refusal::NotWritable),
            Some(_) => {}
        }
        self.event(ServerEvent::Burn { from: hdr.from_id(), var_blk: hdr.var_blk() });
        if self.cfg.auto_burn_ack && self.ack_burn(hdr.from_id(), true).is_err() {
            bump(&mut self.stats.tx_dropped);
        }
    }

    fn outmsg(&mut self, hdr: &Header, number: u8) {
        let msg = MsgType::OutmsgReq.bits();
        let Some(def) = self.outmsgs.get(usize::from(number)).copied().flatten() else {
            return self.refuse(hdr, msg, Refusal::UnknownOutmsg);
        };
        let offsets = def.offsets();
        if usize::from(hdr.var_offset()) + offsets.len() > usize::from(MAX_VAR_OFFSET) + 1 {
            return self.refuse(hdr, msg, Refusal::ReplyTargetOutOfRange);
        }
        let rt = self.cfg.realtime_blk;
        let mut bytes = [0u8; MAX_OUTMSG_BYTES];
        for (dst, &o) in bytes.iter_mut().zip(offsets) {
            match self.readable(rt, usize::from(o), 1) {
                Ok(src) => *dst = src.first().copied().unwrap_or(0),
                Err(r) => return self.refuse_at(hdr, msg, rt, r),
            }
        }
        let chunks = offsets.len().div_ceil(CAN_MAX_LEN);
        if self.tx.free() < chunks {
            self.stats.tx_dropped = self.stats.tx_dropped.saturating_add(chunks as u32);
            return;
        }
        for (i, chunk) in bytes[..offsets.len()].chunks(CAN_MAX_LEN).enumerate() {
            let off = hdr.var_offset() + (i * CAN_MAX_LEN) as u16;
            if let Some(f) =
                self.reply_header(MsgType::OutmsgRsp, hdr, hdr.var_blk(), off).and_then(|h| h.frame(chunk).ok())
            {
                self.send(f);
            }
        }
    }
}

impl<T: Tables, const TXQ: usize, const EVQ: usize> crate::driver::Events for Server<T, TXQ, EVQ> {
    type Event<'a>
        = ServerEvent
    where
        Self: 'a;
    fn poll_event(&mut self) -> Option<ServerEvent> {
        Server::poll_event(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::megasquirt::tables::{Access, TableSet};
    use crate::ExtendedId;
    use proptest::prelude::*;

    const T0: Instant = Instant::ZERO;

    fn ext(raw: u32, data: &[u8]) -> Frame {
        Frame::Can(CanFrame::new(ExtendedId::new(raw).unwrap(), data).unwrap())
    }

    fn frame(t: MsgType, from: u8, to: u8, blk: u8, off: u16, data: &[u8]) -> Frame {
        Frame::Can(Header::new(t, from, to, blk, off).unwrap().frame(data).unwrap())
    }

    struct Mem {
        rt: [u8; 64],
        cfg: [u8; 32],
        ro: [u8; 9],
        wo: [u8; 8],
        big: [u8; 16],
    }

    impl Mem {
        fn new() -> Self {
            let mut rt = [0u8; 64];
            for (i, b) in rt.iter_mut().enumerate() {
                *b = i as u8;
            }
            Mem { rt, cfg: [0; 32], ro: *b"123456789", wo: [0; 8], big: [0xB0; 16] }
        }
        fn set(&mut self) -> TableSet<'_, 5> {
            let mut s = TableSet::new();
            s.add(7, Access::READ_ONLY, &mut self.rt).unwrap();
            s.add(20, Access::READ_WRITE, &mut self.cfg).unwrap();
            s.add(15, Access::READ_ONLY, &mut self.ro).unwrap();
            s.add(3, Access::WRITE_ONLY, &mut self.wo).unwrap();
            s.add(40, Access::READ_ONLY, &mut self.big).unwrap();
            s
        }
    }

    type Srv<'a> = Server<TableSet<'a, 5>, 8, 8>;

    fn drain_tx(s: &mut Srv<'_>) -> std::vec::Vec<CanFrame> {
        core::iter::from_fn(|| s.poll_transmit(T0)).collect()
    }

    #[test]
    fn req_from_board_4_table_7() {
        let mut m = Mem::new();
        let mut s: Srv<'_> = Server::new(ServerConfig::new(0), m.set()).unwrap();
        // MSG_REQ from 4 to 0, table 7, offset 0x10 (id derived in header tests: 0x0040_A038);
        // reply wanted in table 3 offset 0x20, 4 bytes: [3, 0x20>>3 = 4, 0<<5 | 4 = 4].
        s.handle_frame(T0, &ext(0x0040_A038, &[3, 4, 4]));
        let tx = drain_tx(&mut s);
        assert_eq!(tx.len(), 1);
        // MSG_RSP from 0 to 4, table 3, offset 0x20:
        //   0x20<<18 = 0x80_0000, 2<<15 = 0x1_0000, 0<<11, 4<<7 = 0x200, 3<<3 = 0x18
        //   sum = 0x81_0218; data = rt[0x10..0x14] = 10 11 12 13.
        assert_eq!(tx[0].raw_id(), 0x0081_0218);
        assert!(tx[0].is_extended());
        assert_eq!(tx[0].data(), &[0x10, 0x11, 0x12, 0x13]);
        assert_eq!(s.poll_event(), None);
        assert_eq!(s.stats().replies, 1);
    }

    #[test]
    fn out_of_range_and_unknown_get_no_reply() {
        let mut m = Mem::new();
        let mut s: Srv<'_> = Server::new(ServerConfig::new(0), m.set()).unwrap();
        let cases: [(Frame, u8, u8, Refusal); 7] = [
            // 0x3E + 4 > 64
            (frame(MsgType::Req, 4, 0, 7, 0x3E, &[3, 4, 4]), 1, 7, Refusal::OutOfRange),
            (frame(MsgType::Req, 4, 0, 7, 0x7FF, &[3, 4, 8]), 1, 7, Refusal::OutOfRange),
            (frame(MsgType::Req, 4, 0, 9, 0, &[3, 4, 4]), 1, 9, Refusal::UnknownTable),
            (frame(MsgType::Req, 4, 0, 3, 0, &[3, 4, 4]), 1, 3, Refusal::NotReadable),
            (frame(MsgType::Req, 4, 0, 7, 0, &[3, 4]), 1, 7, Refusal::Malformed(PayloadError::Truncated)),
            (frame(MsgType::Req, 4, 0, 7, 0, &[3, 4, 0]), 1, 7, Refusal::Malformed(PayloadError::BadCount)),
            (frame(MsgType::Xtnd, 4, 0, 0, 0, &[12, 3, 0, 1, 99]), 12, 99, Refusal::UnknownTable),
        ];
        for (f, msg, blk, reason) in cases {
            s.handle_frame(T0, &f);
            assert_eq!(s.poll_transmit(T0), None, "{reason:?}");
            match s.poll_event() {
                Some(ServerEvent::Refused { from: 4, msg: m, var_blk, reason: r, .. }) => {
                    assert_eq!((m, var_blk, r), (msg, blk, reason))
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(s.stats().refused, 7);
    }

    #[test]
    fn writes() {
        let mut m = Mem::new();
        {
            let mut s: Srv<'_> = Server::new(ServerConfig::new(2), m.set()).unwrap();
            s.handle_frame(T0, &frame(MsgType::Cmd, 1, 2, 20, 30, &[0xAA, 0xBB]));
            s.handle_frame(T0, &frame(MsgType::Rsp, 1, 2, 20, 0, &[1, 2, 3]));
            s.handle_frame(T0, &frame(MsgType::OutmsgRsp, 1, BROADCAST_ID, 3, 4, &[9, 9, 9, 9]));
            assert_eq!(
                s.poll_event(),
                Some(ServerEvent::Written { from: 1, msg: MsgType::Cmd, var_blk: 20, var_offset: 30, len: 2 })
            );
            assert!(matches!(s.poll_event(), Some(ServerEvent::Written { msg: MsgType::Rsp, len: 3, .. })));
            assert!(matches!(s.poll_event(), Some(ServerEvent::Written { msg: MsgType::OutmsgRsp, len: 4, .. })));
            // refused: past the end, read-only, empty, unknown
            s.handle_frame(T0, &frame(MsgType::Cmd, 1, 2, 20, 31, &[1, 2]));
            s.handle_frame(T0, &frame(MsgType::Cmd, 1, 2, 7, 0, &[1]));
            s.handle_frame(T0, &frame(MsgType::Cmd, 1, 2, 20, 0, &[]));
            s.handle_frame(T0, &frame(MsgType::Cmd, 1, 2, 21, 0, &[1]));
            let reasons: std::vec::Vec<_> = core::iter::from_fn(|| s.poll_event())
                .map(|e| match e {
                    ServerEvent::Refused { reason, .. } => reason,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(
                reasons,
                [Refusal::OutOfRange, Refusal::NotWritable, Refusal::EmptyWrite, Refusal::UnknownTable]
            );
            // not for this board: ignored silently
            s.handle_frame(T0, &frame(MsgType::Cmd, 1, 5, 20, 0, &[7]));
            // own echo: ignored
            s.handle_frame(T0, &frame(MsgType::Cmd, 2, 2, 20, 0, &[7]));
            assert_eq!(s.poll_event(), None);
            assert_eq!(s.poll_transmit(T0), None);
        }
        assert_eq!(&m.cfg[..3], &[1, 2, 3]);
        assert_eq!(&m.cfg[30..], &[0xAA, 0xBB]);
        assert_eq!(&m.wo[4..], &[9, 9, 9, 9]);
        assert_eq!(m.rt[0], 0);
    }

    #[test]
    fn crc_reqx_burn_outmsg() {
        let mut m = Mem::new();
        let mut cfg = ServerConfig::new(0);
        cfg.auto_burn_ack = true;
        let mut s: Srv<'_> = Server::new(cfg, m.set()).unwrap();
        // CRC of table 15 = "123456789": the CRC-32 check value 0xCBF43926.
        s.handle_frame(T0, &frame(MsgType::Xtnd, 4, 0, 15, 0, &[9, 6, 1, 4]));
        let f = s.poll_transmit(T0).unwrap();
        assert_eq!(f.data(), &[0xCB, 0xF4, 0x39, 0x26]);
        assert_eq!(Header::from_frame(&Frame::Can(f)), Header::new(MsgType::Rsp, 0, 4, 6, 8).ok());
        // MSG_REQX of table 40 (> 31), offset 14, 2 bytes, reply to table 1 offset 0
        s.handle_frame(T0, &frame(MsgType::Xtnd, 4, 0, 0, 14, &[12, 1, 0, 2, 40]));
        let f = s.poll_transmit(T0).unwrap();
        assert_eq!(f.data(), &[0xB0, 0xB0]);
        assert_eq!(Header::from_frame(&Frame::Can(f)), Header::new(MsgType::Rsp, 0, 4, 1, 0).ok());
        // burn of a writable table with auto ack
        s.handle_frame(T0, &frame(MsgType::Burn, 4, 0, 20, 0, &[]));
        assert_eq!(s.poll_event(), Some(ServerEvent::Burn { from: 4, var_blk: 20 }));
        let f = s.poll_transmit(T0).unwrap();
        assert_eq!(f.data(), &[14, 1]);
        assert_eq!(Header::from_frame(&Frame::Can(f)), Header::new(MsgType::Xtnd, 0, 4, 0, 0).ok());
        s.handle_frame(T0, &frame(MsgType::Burn, 4, 0, 7, 0, &[]));
        assert!(matches!(s.poll_event(), Some(ServerEvent::Refused { reason: Refusal::NotWritable, .. })));
        // outmsg 3: 10 bytes -> two OUTMSG_RSP frames (8 + 2), offset advancing by 8
        let offs = [0u16, 5, 10, 15, 20, 25, 30, 35, 40, 63];
        s.set_outmsg(3, Some(OutmsgDef::new(&offs).unwrap())).unwrap();
        s.handle_frame(T0, &frame(MsgType::OutmsgReq, 4, 0, 6, 100, &[3]));
        let a = s.poll_transmit(T0).unwrap();
        let b = s.poll_transmit(T0).unwrap();
        assert_eq!(s.poll_transmit(T0), None);
        assert_eq!(a.data(), &[0, 5, 10, 15, 20, 25, 30, 35]);
        assert_eq!(b.data(), &[40, 63]);
        assert_eq!(Header::from_frame(&Frame::Can(a)), Header::new(MsgType::OutmsgRsp, 0, 4, 6, 100).ok());
        assert_eq!(Header::from_frame(&Frame::Can(b)), Header::new(MsgType::OutmsgRsp, 0, 4, 6, 108).ok());
        s.handle_frame(T0, &frame(MsgType::OutmsgReq, 4, 0, 6, 100, &[4]));
        assert!(matches!(s.poll_event(), Some(ServerEvent::Refused { reason: Refusal::UnknownOutmsg, .. })));
        s.set_outmsg(4, Some(OutmsgDef::new(&[64]).unwrap())).unwrap();
        s.handle_frame(T0, &frame(MsgType::OutmsgReq, 4, 0, 6, 100, &[4]));
        assert!(matches!(s.poll_event(), Some(ServerEvent::Refused { reason: Refusal::OutOfRange, .. })));
        s.handle_frame(T0, &frame(MsgType::OutmsgReq, 4, 0, 6, 2040, &[3]));
        assert!(matches!(s.poll_event(), Some(ServerEvent::Refused { reason: Refusal::ReplyTargetOutOfRange, .. })));
        assert_eq!(s.poll_transmit(T0), None);
        assert_eq!(s.set_outmsg(20, None), Err(ServerError::InvalidOutmsgNumber));
        assert_eq!(OutmsgDef::new(&[0; 25]), Err(ServerError::InvalidOutmsgLength));
        // events: XSUB, SPND, FWD, PROT
        s.handle_frame(T0, &frame(MsgType::Xsub, 4, 0, 1, 2, &[]));
        s.handle_frame(T0, &frame(MsgType::Xtnd, 4, 15, 0, 0, &[0x82, 1]));
        s.handle_frame(T0, &frame(MsgType::Xtnd, 4, 0, 0, 0, &[8, b'h', b'i']));
        s.handle_frame(T0, &frame(MsgType::Xtnd, 4, 0, 0, 0, &[0x80, 6, 0, 5]));
        assert_eq!(s.poll_event(), Some(ServerEvent::Xsub { from: 4, var_blk: 1, var_offset: 2 }));
        assert_eq!(s.poll_event(), Some(ServerEvent::Suspend { from: 4, suspend: true }));
        assert_eq!(s.poll_event(), Some(ServerEvent::Forward { from: 4, data: [b'h', b'i', 0, 0, 0, 0, 0], len: 2 }));
        assert!(matches!(s.poll_event(), Some(ServerEvent::Unhandled { msg: 0x80, len: 4, .. })));
        assert_eq!(
            Server::<TableSet<'_, 1>>::new(ServerConfig::new(15), TableSet::new()).err(),
            Some(ServerError::InvalidCanId)
        );
    }

    #[test]
    fn queues_are_bounded_and_count_drops() {
        let mut m = Mem::new();
        let mut s: Server<TableSet<'_, 5>, 2, 1> = Server::new(ServerConfig::new(0), m.set()).unwrap();
        for _ in 0..5 {
            s.handle_frame(T0, &frame(MsgType::Req, 4, 0, 7, 0, &[3, 0, 8]));
            s.handle_frame(T0, &frame(MsgType::Req, 4, 0, 9, 0, &[3, 0, 8]));
        }
        let st = s.stats();
        assert_eq!((st.replies, st.tx_dropped, st.refused, st.events_dropped), (2, 3, 5, 4));
    }

    /// A `Tables` implementation whose write view is shorter than its read
    /// view: the server must still never index out of bounds.
    struct Liar {
        read: [u8; 16],
        write: [u8; 4],
    }

    impl Tables for Liar {
        fn table(&self, blk: u8) -> Option<(&[u8], Access)> {
            (blk == 1).then_some((&self.read[..], Access::READ_WRITE))
        }
        fn table_mut(&mut self, blk: u8) -> Option<&mut [u8]> {
            (blk == 1).then_some(&mut self.write[..])
        }
    }

    #[test]
    fn inconsistent_tables_impl_is_refused_not_panicking() {
        let mut s: Server<Liar> = Server::new(ServerConfig::new(0), Liar { read: [0; 16], write: [0; 4] }).unwrap();
        s.handle_frame(T0, &frame(MsgType::Cmd, 4, 0, 1, 2, &[1, 2]));
        s.handle_frame(T0, &frame(MsgType::Cmd, 4, 0, 1, 8, &[1, 2]));
        assert!(matches!(s.poll_event(), Some(ServerEvent::Written { len: 2, .. })));
        assert!(matches!(s.poll_event(), Some(ServerEvent::Refused { reason: Refusal::OutOfRange, .. })));
        assert_eq!(s.tables().write, [0, 0, 1, 2]);
    }

    /// What a frame *should* do to the server, computed independently.
    fn valid_read(m: &Mem, f: &Frame, id: u8) -> bool {
        let Some(h) = Header::from_frame(f) else { return false };
        if (h.to_id() != id && h.to_id() != 15) || h.from_id() == id {
            return false;
        }
        let d = f.data();
        let (table, count) = match h.msg_type() {
            MsgType::Req if d.len() >= 3 && (1..=8).contains(&(d[2] & 0xF)) => (h.var_blk(), usize::from(d[2] & 0xF)),
            MsgType::Xtnd if d.len() >= 5 && d[0] == 12 && d[1] < 32 && (1..=8).contains(&(d[3] & 0xF)) => {
                (d[4], usize::from(d[3] & 0xF))
            }
            MsgType::Xtnd if d.len() >= 4 && d[0] == 9 && d[1] < 32 && d[3] & 0xF == 4 => {
                return matches!(h.var_blk(), 7 | 20 | 15 | 40);
            }
            MsgType::Burn => return false,
            _ => return false,
        };
        let len = match table {
            7 => m.rt.len(),
            20 => m.cfg.len(),
            15 => m.ro.len(),
            40 => m.big.len(),
            _ => return false,
        };
        usize::from(h.var_offset()) + count <= len
    }

    /// Applies `f` to the model if it is a valid write (independent of the server code).
    fn model_write(m: &mut Mem, f: &Frame, id: u8) {
        let Some(h) = Header::from_frame(f) else { return };
        let d = f.data();
        let ok_to = (h.to_id() == id || h.to_id() == 15) && h.from_id() != id;
        let is_write = matches!(h.msg_type(), MsgType::Cmd | MsgType::Rsp | MsgType::OutmsgRsp);
        if !ok_to || !is_write || d.is_empty() {
            return;
        }
        let table: &mut [u8] = match h.var_blk() {
            20 => &mut m.cfg,
            3 => &mut m.wo,
            _ => return,
        };
        let off = usize::from(h.var_offset());
        if off + d.len() <= table.len() {
            table[off..off + d.len()].copy_from_slice(d);
        }
    }

    /// The bytes a valid MSG_REQ / MSG_REQX must be answered with.
    fn model_read(m: &Mem, f: &Frame) -> Option<std::vec::Vec<u8>> {
        let h = Header::from_frame(f)?;
        let d = f.data();
        let (table, n) = match h.msg_type() {
            MsgType::Req => (h.var_blk(), usize::from(d[2] & 0xF)),
            MsgType::Xtnd if d[0] == 12 => (d[4], usize::from(d[3] & 0xF)),
            _ => return None,
        };
        let t: &[u8] = match table {
            7 => &m.rt,
            20 => &m.cfg,
            15 => &m.ro,
            40 => &m.big,
            _ => return None,
        };
        let off = usize::from(h.var_offset());
        Some(t[off..off + n].to_vec())
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let blk = prop_oneof![Just(7u8), Just(20u8), Just(3u8), Just(15u8), 0u8..32];
        let hdr =
            (0u8..8, 0u8..16, prop_oneof![Just(0u8), Just(15u8), 0u8..16], blk, prop_oneof![0u16..80, 0u16..2048]);
        let data = proptest::collection::vec(
            prop_oneof![Just(9u8), Just(12u8), Just(40u8), Just(7u8), Just(4u8), any::<u8>()],
            0..=8,
        );
        prop_oneof![
            8 => (hdr, data).prop_map(|((t, fr, to, b, o), d)| frame(MsgType::from_bits(t), fr, to, b, o, &d)),
            1 => (0u32..=0x1FFF_FFFF, proptest::collection::vec(any::<u8>(), 0..=8)).prop_map(|(r, d)| ext(r, &d)),
            1 => (0u16..0x800, proptest::collection::vec(any::<u8>(), 0..=8)).prop_map(|(r, d)| {
                Frame::Can(CanFrame::new(crate::StandardId::new(r).unwrap(), &d).unwrap())
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn random_frames_never_panic_or_misbehave(frames in proptest::collection::vec(arb_frame(), 1..24)) {
            let mut m = Mem::new();
            let mut reference = Mem::new();
            let mut s: Server<TableSet<'_, 5>, 64, 64> = Server::new(ServerConfig::new(0), m.set()).unwrap();
            s.set_outmsg(0, Some(OutmsgDef::new(&[1, 2, 3]).unwrap())).unwrap();
            for f in &frames {
                let before = s.stats().replies;
                s.handle_frame(T0, f);
                let sent = s.stats().replies - before;
                let h = Header::from_frame(f);
                let is_outmsg = h.is_some_and(|h| h.msg_type() == MsgType::OutmsgReq);
                if !is_outmsg {
                    // at most one reply, and only to a valid read/CRC request
                    prop_assert!(sent <= 1);
                    prop_assert_eq!(sent == 1, valid_read(&reference, f, 0), "{:?}", f);
                }
                while let Some(tx) = s.poll_transmit(T0) {
                    let rh = Header::from_frame(&Frame::Can(tx)).unwrap();
                    prop_assert_eq!(rh.from_id(), 0);
                    prop_assert_eq!(Some(rh.to_id()), h.map(|h| h.from_id()));
                    // a read reply carries exactly the model's bytes
                    if let Some(want) = model_read(&reference, f) {
                        prop_assert_eq!(tx.data(), &want[..]);
                    }
                }
                while s.poll_event().is_some() {}
                model_write(&mut reference, f, 0);
            }

            // read-only tables are untouched; writable ones changed exactly as the model
            prop_assert_eq!(m.cfg, reference.cfg);
            prop_assert_eq!(m.wo, reference.wo);
            prop_assert_eq!(m.rt, reference.rt);
            prop_assert_eq!(m.ro, reference.ro);
            prop_assert_eq!(m.big, reference.big);
        }
    }
}
