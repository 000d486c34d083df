//! A CAN-X node: a [`Sender`] and a [`Receiver`] behind the common engine
//! shape (`handle_frame`, `handle_timeout`, `poll_transmit`, `poll_event`,
//! `poll_timeout`), for drivers that treat every engine alike.

use super::{Event, Key, Receiver, ReceiverConfig, ReceiverStats, SendError, Sender, SenderConfig, SenderStats};
use crate::frame::{CanFrame, Frame};
use crate::time::Instant;

/// A CAN-X node. `TX_SLOTS`/`KEYS` size the [`Sender`], `RX_SLOTS`/`EVENTS`
/// the [`Receiver`] (see their docs for the memory each takes).
#[derive(Debug)]
pub struct Endpoint<
    const TX_SLOTS: usize = 4,
    const KEYS: usize = 16,
    const RX_SLOTS: usize = 4,
    const EVENTS: usize = 16,
> {
    pub sender: Sender<TX_SLOTS, KEYS>,
    pub receiver: Receiver<RX_SLOTS, EVENTS>,
}

impl<const TS: usize, const K: usize, const RS: usize, const E: usize> Default for Endpoint<TS, K, RS, E> {
    fn default() -> Self {
        Endpoint::new(SenderConfig::default(), ReceiverConfig::default())
    }
}

impl<const TS: usize, const K: usize, const RS: usize, const E: usize> Endpoint<TS, K, RS, E> {
    pub fn new(tx: SenderConfig, rx: ReceiverConfig) -> Self {
        Endpoint { sender: Sender::new(tx), receiver: Receiver::new(rx) }
    }

    /// Queues a message; see [`Sender::send`].
    pub fn send(&mut self, priority: u8, key: Key, msg_id: u8, body: &[u8]) -> Result<(), SendError> {
        self.sender.send(priority, key, msg_id, body)
    }

    /// Feed every received frame; see [`Receiver::handle_frame`].
    pub fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        self.receiver.handle_frame(now, frame);
    }

    /// Call when [`Endpoint::poll_timeout`] is due; extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.receiver.handle_timeout(now);
    }

    /// Frames to send; call after `send` until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.sender.poll_transmit(now)
    }

    /// Events (messages borrow the receiver); call after `handle_*` until `None`.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.receiver.poll_event()
    }

    /// The next reassembly deadline (the sender has no timers).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.receiver.poll_timeout()
    }

    pub fn stats(&self) -> (SenderStats, ReceiverStats) {
        (self.sender.stats(), self.receiver.stats())
    }
}

impl<const TS: usize, const K: usize, const RS: usize, const E: usize> crate::driver::Events
    for Endpoint<TS, K, RS, E>
{
    type Event<'a> = Event<'a>;
    fn poll_event(&mut self) -> Option<Event<'_>> {
        Endpoint::poll_event(self)
    }
}
