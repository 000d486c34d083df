//! An in-memory CAN bus for tests and emulators: `NODES` controllers, each
//! with `MB` transmit mailboxes and a receive FIFO of `RXQ` frames, behind
//! `embedded_can::nb::Can` ([`MemPort`]). No heap; the bus sits in a
//! [`RefCell`] the ports borrow, so it works the same in a host test and in
//! firmware.
//!
//! The bus moves frames only when told ([`MemBus::deliver`]): one call is
//! one frame on the wire. The frame that wins arbitration (lowest
//! identifier, ISO 11898-1 bitwise arbitration: a standard frame beats an
//! extended one with the same 11-bit base, a data frame beats a remote one)
//! leaves its mailbox and lands in every *other* node's receive FIFO; a full
//! FIFO drops it and the next `receive` on that node reports
//! [`ErrorKind::Overrun`] (as bxCAN's FIFO overrun).
//!
//! Faults on demand: [`MemBus::inject_rx_error`] and
//! [`MemBus::inject_tx_error`] make the next `receive`/`transmit` of a node
//! fail once; [`MemBus::set_displacing`] makes a full node hand back a
//! pending lower-priority frame instead of `WouldBlock` (bxcan's behaviour).

use core::cell::RefCell;
use core::fmt;

use embedded_can::ErrorKind;

use super::FrameQueue;
use crate::frame::{CanFrame, Id};

/// A controller error of the in-memory bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError(pub ErrorKind);

impl embedded_can::Error for MemError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Arbitration order of a frame: smaller wins (ISO 11898-1 10.4.4: the
/// identifier bits MSB first, then RTR/SRR, IDE, the 18 extension bits, RTR).
pub fn arbitration_key(f: &CanFrame) -> u64 {
    let rtr = u64::from(f.is_remote());
    match f.id() {
        Id::Standard(s) => (u64::from(s.as_raw()) << 21) | (rtr << 20),
        Id::Extended(e) => {
            let raw = u64::from(e.as_raw());
            ((raw >> 18) << 21) | (1 << 20) | (1 << 19) | ((raw & 0x3_FFFF) << 1) | rtr
        }
    }
}

struct Node<const MB: usize, const RXQ: usize> {
    mailboxes: [Option<(CanFrame, u32)>; MB],
    rx: FrameQueue<RXQ>,
    overrun: bool,
    rx_error: Option<ErrorKind>,
    tx_error: Option<ErrorKind>,
}

/// The bus: see the module doc.
pub struct MemBus<const NODES: usize, const MB: usize = 3, const RXQ: usize = 16> {
    nodes: [Node<MB, RXQ>; NODES],
    displacing: bool,
    /// Mailbox fill order, so equal identifiers leave FIFO.
    order: u32,
    delivered: u32,
    overruns: u32,
}

impl<const NODES: usize, const MB: usize, const RXQ: usize> fmt::Debug for MemBus<NODES, MB, RXQ> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemBus").field("delivered", &self.delivered).field("overruns", &self.overruns).finish()
    }
}

impl<const NODES: usize, const MB: usize, const RXQ: usize> Default for MemBus<NODES, MB, RXQ> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const NODES: usize, const MB: usize, const RXQ: usize> MemBus<NODES, MB, RXQ> {
    pub fn new() -> Self {
        MemBus {
            nodes: core::array::from_fn(|_| Node {
                mailboxes: [None; MB],
                rx: FrameQueue::new(),
                overrun: false,
                rx_error: None,
                tx_error: None,
            }),
            displacing: false,
            order: 0,
            delivered: 0,
            overruns: 0,
        }
    }

    /// When `true`, a transmit on a node whose mailboxes are all full
    /// replaces the lowest-priority pending frame if the new one wins
    /// arbitration against it, and returns the old one (`Ok(Some(old))`).
    pub fn set_displacing(&mut self, on: bool) {
        self.displacing = on;
    }

    /// The next `receive` of `node` fails once with `kind`.
    pub fn inject_rx_error(&mut self, node: usize, kind: ErrorKind) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.rx_error = Some(kind);
        }
    }

    /// The next `transmit` of `node` fails once with `kind`.
    pub fn inject_tx_error(&mut self, node: usize, kind: ErrorKind) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.tx_error = Some(kind);
        }
    }

    /// Frames put on the wire so far.
    pub fn delivered(&self) -> u32 {
        self.delivered
    }
    /// Frames lost to full receive FIFOs (one per receiving node).
    pub fn overruns(&self) -> u32 {
        self.overruns
    }
    /// Frames waiting in `node`'s mailboxes.
    pub fn pending(&self, node: usize) -> usize {
        self.nodes.get(node).map_or(0, |n| n.mailboxes.iter().flatten().count())
    }
    /// Frames waiting in `node`'s receive FIFO.
    pub fn rx_pending(&self, node: usize) -> usize {
        self.nodes.get(node).map_or(0, |n| n.rx.len())
    }

    /// Puts the one frame that wins arbitration on the wire; returns it, or
    /// `None` when every mailbox is empty.
    pub fn deliver(&mut self) -> Option<CanFrame> {
        let mut best: Option<(usize, usize, u64, u32)> = None;
        for (ni, n) in self.nodes.iter().enumerate() {
            for (mi, m) in n.mailboxes.iter().enumerate() {
                if let Some((f, order)) = m {
                    let key = arbitration_key(f);
                    if best.is_none_or(|(_, _, k, o)| (key, *order) < (k, o)) {
                        best = Some((ni, mi, key, *order));
                    }
                }
            }
        }
        let (ni, mi, _, _) = best?;
        let (frame, _) = self.nodes[ni].mailboxes[mi].take()?;
        self.delivered = self.delivered.wrapping_add(1);
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if i != ni && n.rx.push_back(frame).is_err() {
                n.overrun = true;
                self.overruns = self.overruns.wrapping_add(1);
            }
        }
        Some(frame)
    }

    /// Delivers until every mailbox is empty; returns how many frames.
    pub fn deliver_all(&mut self) -> usize {
        let mut n = 0;
        while self.deliver().is_some() {
            n += 1;
        }
        n
    }

    fn transmit(&mut self, node: usize, frame: &CanFrame) -> nb::Result<Option<CanFrame>, MemError> {
        let order = self.order;
        let displacing = self.displacing;
        let n = self.nodes.get_mut(node).ok_or(nb::Error::Other(MemError(ErrorKind::Other)))?;
        if let Some(kind) = n.tx_error.take() {
            return Err(nb::Error::Other(MemError(kind)));
        }
        if let Some(slot) = n.mailboxes.iter_mut().find(|m| m.is_none()) {
            *slot = Some((*frame, order));
            self.order = order.wrapping_add(1);
            return Ok(None);
        }
        if displacing {
            // The pending frame that loses arbitration to all others.
            let worst = n
                .mailboxes
                .iter_mut()
                .flatten()
                .max_by_key(|(f, o)| (arbitration_key(f), *o))
                .filter(|(f, _)| arbitration_key(frame) < arbitration_key(f));
            if let Some(slot) = worst {
                let old = slot.0;
                *slot = (*frame, order);
                self.order = order.wrapping_add(1);
                return Ok(Some(old));
            }
        }
        Err(nb::Error::WouldBlock)
    }

    fn receive(&mut self, node: usize) -> nb::Result<CanFrame, MemError> {
        let n = self.nodes.get_mut(node).ok_or(nb::Error::Other(MemError(ErrorKind::Other)))?;
        if let Some(kind) = n.rx_error.take() {
            return Err(nb::Error::Other(MemError(kind)));
        }
        if n.overrun {
            n.overrun = false;
            return Err(nb::Error::Other(MemError(ErrorKind::Overrun)));
        }
        n.rx.pop_front().ok_or(nb::Error::WouldBlock)
    }
}

/// One node's controller on a [`MemBus`]: an `embedded_can::nb::Can` whose
/// frame type is [`CanFrame`].
pub struct MemPort<'b, const NODES: usize, const MB: usize, const RXQ: usize> {
    bus: &'b RefCell<MemBus<NODES, MB, RXQ>>,
    node: usize,
}

impl<const NODES: usize, const MB: usize, const RXQ: usize> fmt::Debug for MemPort<'_, NODES, MB, RXQ> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemPort").field("node", &self.node).finish()
    }
}

impl<'b, const NODES: usize, const MB: usize, const RXQ: usize> MemPort<'b, NODES, MB, RXQ> {
    /// Node `node` (0..NODES; any other index fails every call with
    /// [`ErrorKind::Other`]).
    pub fn new(bus: &'b RefCell<MemBus<NODES, MB, RXQ>>, node: usize) -> Self {
        MemPort { bus, node }
    }
    pub fn node(&self) -> usize {
        self.node
    }
}

impl<const NODES: usize, const MB: usize, const RXQ: usize> embedded_can::nb::Can for MemPort<'_, NODES, MB, RXQ> {
    type Frame = CanFrame;
    type Error = MemError;

    /// A free mailbox takes the frame; a full node blocks (or displaces,
    /// see [`MemBus::set_displacing`]). The bus being borrowed elsewhere
    /// (only possible from an interrupt) reads as `WouldBlock`.
    fn transmit(&mut self, frame: &CanFrame) -> nb::Result<Option<CanFrame>, MemError> {
        match self.bus.try_borrow_mut() {
            Ok(mut bus) => bus.transmit(self.node, frame),
            Err(_) => Err(nb::Error::WouldBlock),
        }
    }

    fn receive(&mut self) -> nb::Result<CanFrame, MemError> {
        match self.bus.try_borrow_mut() {
            Ok(mut bus) => bus.receive(self.node),
            Err(_) => Err(nb::Error::WouldBlock),
        }
    }
}
