//! A whole MegaSquirt board: a table [`Server`], a [`Client`] and
//! [`OutmsgInto`] as one engine (`docs/protocols/megasquirt.md`, "The
//! model", "Message types").
//!
//! A board usually both serves tables and asks other boards for theirs.
//! [`Node`] routes each frame the way every such board must:
//!
//! - MSG_RSP / OUTMSG_RSP addressed to this board's reply table
//!   ([`ClientConfig::reply_blk`](super::ClientConfig)) and MSG_BURNACK
//!   addressed to this board go to the client (so the reply table can not
//!   be served);
//! - every other frame to this board or to 15 goes to the server;
//! - each table write the server reports (`ServerEvent::Written`) also goes
//!   to [`OutmsgInto`], which follows OUTMSG replies into served tables.
//!
//! Frames out: the server's replies first, then OUTMSG_REQs with a
//! caller-chosen target ([`Node::outmsg_into`], a queue of `RAWQ`), then the
//! client's requests. Events ([`Node::poll_event`]): the client's, then the
//! server's, then OutmsgInto's. The parts stay public for their own
//! operations (`node.client.read(..)`, `node.server.tables_mut()`).

use super::client::{Client, ClientEvent};
use super::header::{Header, MsgType, XtndType};
use super::outmsg_into::{IntoError, IntoEvent, IntoKey, OutmsgInto};
use super::server::{Server, ServerEvent};
use super::tables::Tables;
use crate::frame::{CanFrame, Frame};
use crate::ring::Ring;
use crate::time::{earliest, Instant};

/// What a [`Node`] reports: one of its parts' events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A client operation ended (its bytes: `node.client.read_data`).
    Client(ClientEvent),
    /// The server's report (a `Written` was also given to OutmsgInto).
    Server(ServerEvent),
    /// An OUTMSG into a served table completed or timed out.
    Into(IntoEvent),
}

/// A board: server, client and OUTMSG-into in one engine (see the module
/// doc). `TXQ`/`EVQ`: the server's queues; `OPS`/`BUF`: the client's
/// operations and bytes per operation; `N`: OUTMSG-into waits (and its
/// event queue); `RAWQ`: OUTMSG-into requests waiting to be sent.
#[derive(Debug)]
pub struct Node<
    T: Tables,
    const TXQ: usize = 8,
    const EVQ: usize = 16,
    const OPS: usize = 4,
    const BUF: usize = 64,
    const N: usize = 4,
    const RAWQ: usize = 4,
> {
    pub server: Server<T, TXQ, EVQ>,
    pub client: Client<OPS, BUF>,
    pub into: OutmsgInto<N, N>,
    raw: Ring<CanFrame, RAWQ>,
}

impl<
        T: Tables,
        const TXQ: usize,
        const EVQ: usize,
        const OPS: usize,
        const BUF: usize,
        const N: usize,
        const RAWQ: usize,
    > Node<T, TXQ, EVQ, OPS, BUF, N, RAWQ>
{
    /// Pairs a server and a client of one board. The server's `can_id` is
    /// the board's (routing); give the client the same one.
    pub fn new(server: Server<T, TXQ, EVQ>, client: Client<OPS, BUF>) -> Self {
        Node { server, client, into: OutmsgInto::default(), raw: Ring::new() }
    }

    /// This board's CAN id (the server's).
    pub fn can_id(&self) -> u8 {
        self.server.config().can_id
    }

    /// Sends OUTMSG_REQ `number` to `board` with the reply going into table
    /// `var_blk` at `offset` of this board's server (see [`OutmsgInto::request`];
    /// `len`: wait for that many bytes until `deadline`, `None`: no wait).
    /// Errors, nothing queued: those of `request` first; then
    /// [`IntoError::NotServed`], [`IntoError::NotWritable`] or
    /// [`IntoError::DoesNotFit`] for the target table; then
    /// [`IntoError::QueueFull`] when `RAWQ` requests wait to be sent.
    pub fn outmsg_into(
        &mut self,
        board: u8,
        number: u8,
        var_blk: u8,
        offset: u16,
        len: Option<usize>,
        deadline: Instant,
    ) -> Result<Option<IntoKey>, IntoError> {
        let me = self.can_id();
        let (frame, key) = self.into.request(me, board, number, var_blk, offset, len, deadline)?;
        let refused = match self.server.tables().table(var_blk) {
            None => Some(IntoError::NotServed),
            Some((_, access)) if !access.write => Some(IntoError::NotWritable),
            Some((data, _)) if usize::from(offset) + len.unwrap_or(1) > data.len() => Some(IntoError::DoesNotFit),
            Some(_) if self.raw.is_full() => Some(IntoError::QueueFull),
            Some(_) => None,
        };
        if let Some(e) = refused {
            if let Some(k) = key {
                self.into.cancel(k);
            }
            return Err(e);
        }
        // Room was checked above.
        let _ = self.raw.push(frame);
        Ok(key)
    }

    /// Whether `frame` (to this board) is a reply for the client.
    fn for_client(&self, hdr: &Header, frame: &Frame) -> bool {
        match hdr.msg_type() {
            MsgType::Rsp | MsgType::OutmsgRsp => hdr.var_blk() == self.client.config().reply_blk,
            MsgType::Xtnd => frame.data().first() == Some(&XtndType::BurnAck.code()),
            _ => false,
        }
    }

    pub fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        let Some(hdr) = Header::from_frame(frame) else { return };
        if hdr.to_id() == self.can_id() && self.for_client(&hdr, frame) {
            self.client.handle_frame(now, frame);
        } else {
            self.server.handle_frame(now, frame);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.into.handle_timeout(now);
    }

    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.server.poll_transmit(now).or_else(|| self.raw.pop()).or_else(|| self.client.poll_transmit(now))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(self.client.poll_timeout(), self.into.poll_timeout())
    }

    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        if let Some(e) = self.client.poll_event() {
            return Some(NodeEvent::Client(e));
        }
        if let Some(e) = self.server.poll_event() {
            if let ServerEvent::Written { from, msg, var_blk, var_offset, len } = e {
                self.into.handle_written(from, msg, var_blk, var_offset, len);
            }
            return Some(NodeEvent::Server(e));
        }
        self.into.poll_event().map(NodeEvent::Into)
    }
}

impl<
        T: Tables,
        const TXQ: usize,
        const EVQ: usize,
        const OPS: usize,
        const BUF: usize,
        const N: usize,
        const RAWQ: usize,
    > crate::driver::Events for Node<T, TXQ, EVQ, OPS, BUF, N, RAWQ>
{
    type Event<'a>
        = NodeEvent
    where
        Self: 'a;
    fn poll_event(&mut self) -> Option<NodeEvent> {
        Node::poll_event(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::megasquirt::{Access, ClientConfig, ServerConfig, TableSet};
    use crate::time::Duration;

    type Board<'a> = Node<TableSet<'a, 4>>;

    fn board<'a>(id: u8, tables: TableSet<'a, 4>) -> Board<'a> {
        let server = Server::new(ServerConfig::new(id), tables).unwrap();
        let client = Client::new(ClientConfig::new(id)).unwrap();
        Node::new(server, client)
    }

    /// Moves frames between two boards until both are quiet.
    fn exchange(now: Instant, a: &mut Board<'_>, b: &mut Board<'_>) {
        for _ in 0..64 {
            let mut moved = false;
            while let Some(f) = a.poll_transmit(now) {
                b.handle_frame(now, &Frame::Can(f));
                moved = true;
            }
            while let Some(f) = b.poll_transmit(now) {
                a.handle_frame(now, &Frame::Can(f));
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Two boards each serving a table read each other's (replies routed
    /// to the client, requests to the server), and an OUTMSG reply lands in
    /// a served table and completes the OutmsgInto wait.
    #[test]
    fn two_boards_read_each_other_and_outmsg_into() {
        let (mut ta, mut tb, mut rx) = ([1u8, 2, 3, 4, 5, 6, 7, 8], [9u8, 8, 7, 6, 5, 4, 3, 2], [0u8; 16]);
        let mut sa = TableSet::new();
        sa.add(7, Access::READ_ONLY, &mut ta).unwrap();
        sa.add(20, Access::READ_WRITE, &mut rx).unwrap();
        let mut sb = TableSet::new();
        sb.add(7, Access::READ_ONLY, &mut tb).unwrap();
        let (mut a, mut b) = (board(1, sa), board(2, sb));
        b.server.set_outmsg(0, Some(crate::megasquirt::OutmsgDef::new(&[0, 1, 2]).unwrap())).unwrap();
        let now = Instant::ZERO;

        let ha = a.client.read(2, 7, 0, 4).unwrap();
        let hb = b.client.read(1, 7, 4, 4).unwrap();
        let key = a.outmsg_into(2, 0, 20, 5, Some(3), now + Duration::from_millis(100)).unwrap().unwrap();
        exchange(now, &mut a, &mut b);

        // A read's bytes are valid until the next `poll_event`.
        let mut a_events = std::vec::Vec::new();
        let mut read = None;
        while let Some(e) = a.poll_event() {
            if matches!(e, NodeEvent::Client(ClientEvent::ReadDone { handle, .. }) if handle == ha) {
                read = a.client.read_data(ha).map(<[u8]>::to_vec);
            }
            a_events.push(e);
        }
        assert_eq!(read.as_deref(), Some(&[9u8, 8, 7, 6][..]));
        assert!(
            a_events.contains(&NodeEvent::Into(IntoEvent::Done { key, var_blk: 20, offset: 5, len: 3 })),
            "{a_events:?}"
        );
        assert_eq!(a.server.tables().table(20).unwrap().0[5..8], [9, 8, 7]);
        assert!(
            matches!(b.poll_event(), Some(NodeEvent::Client(ClientEvent::ReadDone { handle, .. })) if handle == hb)
        );
        assert_eq!(b.client.read_data(hb), Some(&[5u8, 6, 7, 8][..]));
    }

    /// OUTMSG-into requests beyond `RAWQ` waiting to be sent, or into a
    /// table that is not served or too short, are refused without queueing
    /// anything.
    #[test]
    fn outmsg_into_queue_is_bounded() {
        let mut rx = [0u8; 64];
        let mut s = TableSet::new();
        s.add(20, Access::READ_WRITE, &mut rx).unwrap();
        let mut a: Node<TableSet<'_, 4>, 8, 16, 4, 64, 4, 2> =
            Node::new(Server::new(ServerConfig::new(1), s).unwrap(), Client::new(ClientConfig::new(1)).unwrap());
        assert!(a.outmsg_into(2, 0, 20, 0, None, Instant::ZERO).is_ok());
        assert!(a.outmsg_into(2, 1, 20, 8, None, Instant::ZERO).is_ok());
        assert_eq!(a.outmsg_into(2, 2, 20, 16, None, Instant::ZERO), Err(IntoError::QueueFull));
        assert_eq!(a.outmsg_into(2, 2, 21, 0, None, Instant::ZERO), Err(IntoError::NotServed));
        assert_eq!(a.outmsg_into(2, 2, 20, 63, Some(2), Instant::ZERO), Err(IntoError::DoesNotFit));
        assert_eq!(a.into.waiting(), 0, "a refused wait is cancelled");
        assert!(a.poll_transmit(Instant::ZERO).is_some());
        assert!(a.poll_transmit(Instant::ZERO).is_some());
        assert!(a.poll_transmit(Instant::ZERO).is_none());
    }
}
