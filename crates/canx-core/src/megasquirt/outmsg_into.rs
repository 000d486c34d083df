//! OUTMSG into a served table (`docs/protocols/megasquirt.md`, "OUTMSG").
//!
//! An OUTMSG_REQ names its reply target (table, offset) in its header; when
//! that target is a table this board serves, the OUTMSG_RSP frames are
//! written there by the [`Server`](super::Server) like any other OUTMSG_RSP.
//! [`OutmsgInto`] builds such a request and, when told how many bytes to
//! expect, follows the server's `Written` events until every expected byte
//! arrived from that board (then [`IntoEvent::Done`]) or the deadline passed
//! ([`IntoEvent::TimedOut`]). The reply bytes themselves stay in the table.
//!
//! Sans-IO like every engine: feed it each `ServerEvent::Written` of the
//! server it sits next to ([`OutmsgInto::handle_written`]), call
//! [`OutmsgInto::handle_timeout`] at [`OutmsgInto::poll_timeout`], and send
//! the frame [`OutmsgInto::request`] returns. `N` bounds the requests
//! waiting at once, `EVQ` the queued events (overflow counted in
//! [`OutmsgInto::dropped_events`]).

use core::fmt;

use super::header::{Header, MsgType, MAX_CAN_ID};
use super::server::{MAX_OUTMSGS, MAX_OUTMSG_BYTES};
use crate::frame::CanFrame;
use crate::ring::Ring;
use crate::time::Instant;

/// Identifies one request that waits for its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IntoKey(pub u32);

/// What an [`OutmsgInto`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntoEvent {
    /// Every expected byte arrived: `len` bytes at `offset` of `var_blk`.
    Done { key: IntoKey, var_blk: u8, offset: u16, len: u8 },
    /// The deadline passed first.
    TimedOut { key: IntoKey },
}

/// Why [`OutmsgInto::request`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntoError {
    /// `board` is not 0..=14 or is this board.
    Board,
    /// `number` is not 0..=19.
    Number,
    /// The expected length is not 1..=24.
    Length,
    /// The reply target is not table 0..=31, offset 0..=2047.
    Target,
    /// `N` requests wait already.
    Busy,
    /// [`Node::outmsg_into`](super::Node::outmsg_into): the reply target is
    /// not a table this board serves.
    NotServed,
    /// [`Node::outmsg_into`](super::Node::outmsg_into): the reply target
    /// table is not writable by the bus.
    NotWritable,
    /// [`Node::outmsg_into`](super::Node::outmsg_into): the reply does not
    /// fit the target table.
    DoesNotFit,
    /// [`Node::outmsg_into`](super::Node::outmsg_into): its queue of
    /// requests waiting to be sent is full.
    QueueFull,
}

impl fmt::Display for IntoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IntoError::Board => "outmsg: board must be 0-14 and not this node's own id",
            IntoError::Number => "outmsg: number must be 0-19",
            IntoError::Length => "outmsg: length must be 1-24",
            IntoError::Target => "outmsg into: table must be 0-31 and offset 0-2047",
            IntoError::Busy => "outmsg into: every wait slot is in use",
            IntoError::NotServed => "outmsg into: the table is not served by this node",
            IntoError::NotWritable => "outmsg into: the table is not writable by the bus",
            IntoError::DoesNotFit => "outmsg into: the reply does not fit the table",
            IntoError::QueueFull => "outmsg into: the request queue is full",
        })
    }
}

impl core::error::Error for IntoError {}

#[derive(Clone, Copy, Debug)]
struct Wait {
    key: u32,
    board: u8,
    var_blk: u8,
    start: u16,
    len: u8,
    /// Bit i: byte `start + i` arrived.
    got: u32,
    deadline: Instant,
}

/// Requests whose OUTMSG_RSP goes into a served table (see the module doc).
#[derive(Debug)]
pub struct OutmsgInto<const N: usize, const EVQ: usize = 8> {
    waits: [Option<Wait>; N],
    next: u32,
    events: Ring<IntoEvent, EVQ>,
}

impl<const N: usize, const EVQ: usize> Default for OutmsgInto<N, EVQ> {
    fn default() -> Self {
        OutmsgInto { waits: [None; N], next: 0, events: Ring::new() }
    }
}

impl<const N: usize, const EVQ: usize> OutmsgInto<N, EVQ> {
    /// The OUTMSG_REQ from board `me` asking `board` for outmsg `number`,
    /// its reply addressed to (`var_blk`, `offset`) of `me`. With `len`
    /// (1..=24 bytes expected), a wait until `deadline` starts and its key
    /// is returned; without, nothing is followed. Checking that the target
    /// table is served, writable and large enough is the caller's (it owns
    /// the tables). Errors: [`IntoError`].
    #[allow(clippy::too_many_arguments)] // the OUTMSG_REQ's fields, each checked
    pub fn request(
        &mut self,
        me: u8,
        board: u8,
        number: u8,
        var_blk: u8,
        offset: u16,
        len: Option<usize>,
        deadline: Instant,
    ) -> Result<(CanFrame, Option<IntoKey>), IntoError> {
        if board >= MAX_CAN_ID || board == me {
            return Err(IntoError::Board);
        }
        if usize::from(number) >= MAX_OUTMSGS {
            return Err(IntoError::Number);
        }
        let len = match len {
            Some(n) if n == 0 || n > MAX_OUTMSG_BYTES => return Err(IntoError::Length),
            Some(n) => Some(n as u8),
            None => None,
        };
        let hdr = Header::new(MsgType::OutmsgReq, me, board, var_blk, offset).map_err(|_| IntoError::Target)?;
        let frame = hdr.frame(&[number]).map_err(|_| IntoError::Target)?;
        let Some(len) = len else { return Ok((frame, None)) };
        let slot = self.waits.iter().position(Option::is_none).ok_or(IntoError::Busy)?;
        let key = self.next;
        self.next = self.next.wrapping_add(1);
        self.waits[slot] = Some(Wait { key, board, var_blk, start: offset, len, got: 0, deadline });
        Ok((frame, Some(IntoKey(key))))
    }

    /// Feeds one `ServerEvent::Written` of the server next to this tracker:
    /// an OUTMSG_RSP from a waited-for board into its target marks those
    /// bytes; a wait whose bytes all arrived ends with [`IntoEvent::Done`].
    pub fn handle_written(&mut self, from: u8, msg: MsgType, var_blk: u8, var_offset: u16, len: u8) {
        if msg != MsgType::OutmsgRsp {
            return;
        }
        for slot in self.waits.iter_mut() {
            let Some(w) = slot else { continue };
            if w.board != from || w.var_blk != var_blk || var_offset < w.start {
                continue;
            }
            let rel = u32::from(var_offset - w.start);
            let end = (rel + u32::from(len)).min(u32::from(w.len));
            for k in rel..end {
                w.got |= 1 << k;
            }
            if w.got.count_ones() == u32::from(w.len) {
                let done = IntoEvent::Done { key: IntoKey(w.key), var_blk: w.var_blk, offset: w.start, len: w.len };
                self.events.push_counted(done);
                *slot = None;
            }
        }
    }

    /// Ends every wait whose deadline is at or before `now` with
    /// [`IntoEvent::TimedOut`].
    pub fn handle_timeout(&mut self, now: Instant) {
        for slot in self.waits.iter_mut() {
            if let Some(w) = slot.filter(|w| w.deadline <= now) {
                self.events.push_counted(IntoEvent::TimedOut { key: IntoKey(w.key) });
                *slot = None;
            }
        }
    }

    /// The earliest deadline of a waiting request.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.waits.iter().flatten().map(|w| w.deadline).min()
    }

    pub fn poll_event(&mut self) -> Option<IntoEvent> {
        self.events.pop()
    }

    /// Stops waiting for `key` (no event for it).
    pub fn cancel(&mut self, key: IntoKey) {
        for slot in self.waits.iter_mut() {
            if slot.is_some_and(|w| w.key == key.0) {
                *slot = None;
            }
        }
    }

    /// Requests waiting for their reply.
    pub fn waiting(&self) -> usize {
        self.waits.iter().flatten().count()
    }

    /// Events lost because the event queue was full.
    pub fn dropped_events(&self) -> u32 {
        self.events.dropped()
    }
}

impl<const N: usize, const EVQ: usize> crate::driver::Events for OutmsgInto<N, EVQ> {
    type Event<'a> = IntoEvent;
    fn poll_event(&mut self) -> Option<IntoEvent> {
        OutmsgInto::poll_event(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::megasquirt::{Server, ServerConfig, ServerEvent, TableSet};
    use crate::time::Duration;
    use crate::Frame;

    fn t(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn request_frame_and_validation() {
        let mut o: OutmsgInto<1> = OutmsgInto::default();
        let (f, key) = o.request(3, 0, 5, 20, 8, None, t(100)).unwrap();
        let h = Header::from_frame(&Frame::Can(f)).unwrap();
        assert_eq!(
            (h.msg_type(), h.from_id(), h.to_id(), h.var_blk(), h.var_offset()),
            (MsgType::OutmsgReq, 3, 0, 20, 8)
        );
        assert_eq!((f.data(), key), (&[5u8][..], None));
        assert_eq!(o.request(3, 3, 5, 20, 8, Some(4), t(100)).unwrap_err(), IntoError::Board);
        assert_eq!(o.request(3, 15, 5, 20, 8, Some(4), t(100)).unwrap_err(), IntoError::Board);
        assert_eq!(o.request(3, 0, 20, 20, 8, Some(4), t(100)).unwrap_err(), IntoError::Number);
        assert_eq!(o.request(3, 0, 5, 20, 8, Some(25), t(100)).unwrap_err(), IntoError::Length);
        assert_eq!(o.request(3, 0, 5, 32, 8, Some(4), t(100)).unwrap_err(), IntoError::Target);
        assert!(o.request(3, 0, 5, 20, 8, Some(4), t(100)).unwrap().1.is_some());
        assert_eq!(o.request(3, 0, 5, 20, 8, Some(4), t(100)).unwrap_err(), IntoError::Busy);
    }

    /// A server serving table 20 writes two OUTMSG_RSP frames from board 0;
    /// the wait completes only when all 12 bytes arrived, and only from
    /// that board; another wait times out at its deadline.
    #[test]
    fn completes_on_the_last_byte_and_times_out() {
        let mut buf = [0u8; 32];
        let mut tables: TableSet<'_, 1> = TableSet::new();
        tables.add(20, crate::megasquirt::Access { read: true, write: true }, &mut buf).unwrap();
        let mut server: Server<TableSet<'_, 1>> = Server::new(ServerConfig::new(3), tables).unwrap();
        let mut o: OutmsgInto<2> = OutmsgInto::default();
        let (_, k1) = o.request(3, 0, 1, 20, 4, Some(12), t(100)).unwrap();
        let (_, k2) = o.request(3, 1, 1, 20, 20, Some(4), t(50)).unwrap();
        let rsp = |from: u8, off: u16, data: &[u8]| {
            Frame::Can(Header::new(MsgType::OutmsgRsp, from, 3, 20, off).unwrap().frame(data).unwrap())
        };
        let feed = |server: &mut Server<TableSet<'_, 1>>, o: &mut OutmsgInto<2>, f: Frame| {
            server.handle_frame(t(10), &f);
            while let Some(ev) = server.poll_event() {
                if let ServerEvent::Written { from, msg, var_blk, var_offset, len } = ev {
                    o.handle_written(from, msg, var_blk, var_offset, len);
                }
            }
        };
        feed(&mut server, &mut o, rsp(0, 4, &[1; 8]));
        feed(&mut server, &mut o, rsp(2, 12, &[2; 4])); // another board: not ours
        assert_eq!(o.poll_event(), None);
        feed(&mut server, &mut o, rsp(0, 12, &[3; 4]));
        assert_eq!(o.poll_event(), Some(IntoEvent::Done { key: k1.unwrap(), var_blk: 20, offset: 4, len: 12 }));
        assert_eq!(o.poll_timeout(), Some(t(50)));
        o.handle_timeout(t(49));
        assert_eq!(o.poll_event(), None);
        o.handle_timeout(t(50));
        assert_eq!(o.poll_event(), Some(IntoEvent::TimedOut { key: k2.unwrap() }));
        assert_eq!((o.waiting(), o.poll_timeout()), (0, None));
    }
}
