//! CAN-X (`canx_core::canx_proto`, `docs/protocols/can-x.md`) driven by a
//! bus's receive thread.
//!
//! [`CanxDriver`] wraps one core `Endpoint` (sender + reassembling receiver):
//!
//! - Sending: [`CanxDriver::send`] puts a message in a bounded FIFO
//!   (`max_waiting` messages); the driver moves messages into the core's
//!   8 transmit slots as they free up, in order, and the receive thread sends
//!   at most [`FRAMES_PER_ROUND`] frames per round before it looks at
//!   received frames again (so a long transfer does not starve reception).
//! - Receiving: every frame goes to the core receiver at once; messages and
//!   error events (each broken rule of `can-x.md` "Receiver rules", naming
//!   the key and the reason) are copied out into the application's bounded
//!   event queue (full: dropped and counted).
//! - Memory bound: at most `max_open` envelopes (1..=[`MAX_OPEN_LIMIT`]) are
//!   reassembled at once, each with a 2036-byte buffer. A head that would
//!   open one more is refused by the core receiver
//!   (`ReceiverConfig::max_open`, so boards enforce it too): reported as an
//!   error event with reason [`RxError::NoFreeSlot`] and counted
//!   (`ReceiverStats::refused`); its following frames are then reported as
//!   stray.

use canx_core::canx_proto::{
    Direction, Endpoint, ErrorEvent, Event, Key, ReceiverConfig, ReceiverStats, RxError, SendError, SenderConfig,
    SenderStats, MAX_BODY, MAX_PRIORITY,
};
use canx_core::filter::Filter;
use canx_core::Duration;

use super::host::{Adapter, Backlog, Hosted, Offer};
use crate::runtime::EventQueue;

/// Largest `max_open` (envelopes reassembled at once).
pub const MAX_OPEN_LIMIT: usize = 64;
/// Frames sent per receive-thread round before received frames are handled again.
pub const FRAMES_PER_ROUND: usize = 64;
/// Core transmit slots (messages being framed at once, one 2 KiB body copy each).
const TX_SLOTS: usize = 8;

type Core = Endpoint<TX_SLOTS, 256, { MAX_OPEN_LIMIT + 1 }, 128>;

/// An event for the application.
#[derive(Clone, Debug, PartialEq)]
pub enum CanxEvent {
    /// A complete message (single frame or verified envelope).
    Message { key: Key, priority: u8, msg_id: u8, body: Vec<u8>, timestamp: f64 },
    /// A broken receiver rule (`can-x.md` "Receiver rules").
    Error(ErrorEvent),
}

/// Parameters of a [`CanxDriver`].
#[derive(Clone, Copy, Debug)]
pub struct CanxConfig {
    /// Accept only frames with this direction bit (`None`: both).
    pub receive_direction: Option<Direction>,
    /// Accept only frames of this device id (`None`: all).
    pub device: Option<u8>,
    /// Envelopes reassembled at once, 1..=[`MAX_OPEN_LIMIT`].
    pub max_open: usize,
    /// Discard an envelope after this long without a frame (spec default 1 s).
    pub reassembly_timeout: Duration,
    /// Messages waiting to be sent (beyond the core's slots).
    pub max_waiting: usize,
    /// Application event queue length.
    pub queue_size: usize,
}

impl Default for CanxConfig {
    fn default() -> Self {
        CanxConfig {
            receive_direction: None,
            device: None,
            max_open: 16,
            reassembly_timeout: canx_core::canx_proto::DEFAULT_REASSEMBLY_TIMEOUT,
            max_waiting: 256,
            queue_size: 4096,
        }
    }
}

/// Why [`CanxDriver::send`] refused a message (nothing was queued).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanxRefused {
    /// A caller error (body too long, priority out of range).
    Invalid(SendError),
    /// `max_waiting` messages wait already; retry after some were sent.
    Full,
}

/// Counters of the driver beyond the core's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CanxDriverStats {
    /// Frames the bus refused to send (bus off, interface down).
    pub send_failed: u64,
    /// Messages waiting in the driver's FIFO.
    pub waiting: usize,
}

#[derive(Clone, Debug)]
struct TxMsg {
    priority: u8,
    key: Key,
    msg_id: u8,
    body: Vec<u8>,
}

/// A CAN-X endpoint driven by the receive thread: the core endpoint hosted
/// with [`CanxAdapter`].
pub type CanxDriver = Hosted<Core, CanxAdapter>;

/// The backlog in front of the core's transmit slots, owned messages out.
#[derive(Debug)]
pub struct CanxAdapter {
    config: CanxConfig,
    backlog: Backlog<TxMsg>,
}

impl Adapter<Core> for CanxAdapter {
    type Event = CanxEvent;
    const TX_PER_ROUND: usize = FRAMES_PER_ROUND;
    fn event(&mut self, ev: Event<'_>, at: f64, out: &EventQueue<CanxEvent>) {
        out.push(match ev {
            Event::Message(m) => CanxEvent::Message {
                key: m.key,
                priority: m.priority,
                msg_id: m.msg_id,
                body: m.body.to_vec(),
                timestamp: at,
            },
            Event::Error(e) => CanxEvent::Error(e),
        });
    }
    /// Moves waiting messages into free core slots, in order.
    fn refill(&mut self, core: &mut Core, _out: &EventQueue<CanxEvent>) {
        self.backlog.feed(
            |_| (),
            |m| {
                if core.sender.queued() >= TX_SLOTS {
                    return Offer::Full;
                }
                match core.send(m.priority, m.key, m.msg_id, &m.body) {
                    Err(SendError::QueueFull | SendError::KeyTableFull) => Offer::Full,
                    // Validated in `send`; another error is never expected: drop it rather than stall.
                    Ok(()) | Err(_) => Offer::Done,
                }
            },
        );
    }
    fn pending(&self, core: &Core) -> bool {
        core.sender.queued() + self.backlog.len() > 0
    }
    fn filters(&self) -> Option<Vec<Filter>> {
        let mut id = 0u32;
        let mut mask = 0u32;
        if let Some(d) = self.config.receive_direction {
            mask |= 1 << 26;
            if d == Direction::FromDevice {
                id |= 1 << 26;
            }
        }
        if let Some(dev) = self.config.device {
            mask |= 0xFF << 18;
            id |= u32::from(dev) << 18;
        }
        // CAN-X is extended ids only (`can-x.md` "Identifier").
        Some(vec![Filter::canio_match(id, Some(mask), true).unwrap_or(Filter::ACCEPT_ALL)])
    }
}

impl CanxDriver {
    pub fn new(mut config: CanxConfig) -> Self {
        config.max_open = config.max_open.clamp(1, MAX_OPEN_LIMIT);
        config.max_waiting = config.max_waiting.max(1);
        let rx = ReceiverConfig {
            reassembly_timeout: config.reassembly_timeout,
            direction: config.receive_direction,
            device: config.device,
            max_open: config.max_open,
            ..ReceiverConfig::default()
        };
        let core = Box::new(Core::new(SenderConfig::default(), rx));
        Hosted::host(core, CanxAdapter { config, backlog: Backlog::default() }, config.queue_size)
    }

    pub fn config(&self) -> CanxConfig {
        self.adapter.config
    }

    /// Queues one message (`can-x.md` "Messages"): `body` 0..=2032 bytes,
    /// `priority` 0..=3. Errors: [`CanxRefused::Invalid`] for a caller error,
    /// [`CanxRefused::Full`] when `max_waiting` messages wait.
    pub fn send(&mut self, priority: u8, key: Key, msg_id: u8, body: &[u8]) -> Result<(), CanxRefused> {
        if body.len() > MAX_BODY {
            return Err(CanxRefused::Invalid(SendError::BodyTooLong));
        }
        if priority > MAX_PRIORITY {
            return Err(CanxRefused::Invalid(SendError::PriorityOutOfRange));
        }
        if self.is_full() {
            return Err(CanxRefused::Full);
        }
        let m = TxMsg { priority, key, msg_id, body: body.to_vec() };
        self.with(|core, a, out| {
            a.backlog.push(m);
            a.refill(core, out);
        });
        Ok(())
    }

    /// Messages not completely sent (in the core or waiting).
    pub fn unsent(&self) -> usize {
        self.engine.sender.queued() + self.adapter.backlog.len()
    }

    /// `true` when `max_waiting` messages wait.
    pub fn is_full(&self) -> bool {
        self.adapter.backlog.len() >= self.adapter.config.max_waiting
    }

    pub fn stats(&self) -> (SenderStats, ReceiverStats, CanxDriverStats) {
        let (s, r) = self.engine.stats();
        let h = self.host_stats();
        (s, r, CanxDriverStats { send_failed: h.send_failed, waiting: self.adapter.backlog.len() })
    }

    /// Envelopes being reassembled now.
    pub fn open_envelopes(&self) -> usize {
        self.engine.receiver.open_envelopes()
    }
}

/// The snake_case name of a receiver error (for the Python side).
pub fn reason_name(r: &RxError) -> &'static str {
    match r {
        RxError::BadSequence { .. } => "bad_sequence",
        RxError::FrameCountMismatch { .. } => "frame_count_mismatch",
        RxError::Truncated => "truncated",
        RxError::BadTailPid { .. } => "bad_tail_pid",
        RxError::CrcMismatch { .. } => "crc_mismatch",
        RxError::Superseded => "superseded",
        RxError::Timeout => "timeout",
        RxError::Stray => "stray",
        RxError::NoFreeSlot => "no_free_slot",
        RxError::Empty => "empty",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use parking_lot::Mutex;

    use super::*;
    use canx_core::canx_proto::CanxId;
    use canx_core::Frame;
    use std::sync::Arc;

    use crate::runtime::{Bus, BusConfig, DropPolicy, ListenerFilter};

    fn open(name: &str) -> Bus {
        Bus::open(BusConfig::virtual_bus(name)).unwrap()
    }

    #[test]
    fn envelopes_cross_the_bus_in_order() {
        let a = open("drv-canx");
        let b = open("drv-canx");
        let host = Arc::new(Mutex::new(CanxDriver::new(CanxConfig {
            receive_direction: Some(Direction::FromDevice),
            ..Default::default()
        })));
        let dev = Arc::new(Mutex::new(CanxDriver::new(CanxConfig {
            receive_direction: Some(Direction::ToDevice),
            device: Some(5),
            ..Default::default()
        })));
        let dev_events = dev.lock().events();
        let h = a.attach(host.clone());
        let _hd = b.attach(dev.clone());
        let key = Key::new(Direction::ToDevice, 5, 300).unwrap();
        let other = Key::new(Direction::ToDevice, 6, 300).unwrap();
        let bodies: Vec<Vec<u8>> = (0..40).map(|i| (0..(i * 50 + 3)).map(|k| (k * 7 + i) as u8).collect()).collect();
        for (i, body) in bodies.iter().enumerate() {
            host.lock().send(1, key, i as u8, body).unwrap();
            host.lock().send(0, other, 0xEE, b"not for 5").unwrap();
        }
        h.kick();
        for (i, body) in bodies.iter().enumerate() {
            match dev_events.recv_timeout(StdDuration::from_secs(5)).expect("message") {
                CanxEvent::Message { key: k, msg_id, body: got, priority, .. } => {
                    assert_eq!((k, msg_id, priority), (key, i as u8, 1));
                    assert_eq!(&got, body);
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        assert!(dev_events.try_recv().is_none(), "device 6's messages are filtered out");
        assert!(matches!(
            host.lock().send(0, key, 0, &[0; MAX_BODY + 1]),
            Err(CanxRefused::Invalid(SendError::BodyTooLong))
        ));
    }

    #[test]
    fn open_envelope_limit_is_enforced_and_counted() {
        let a = open("drv-canx-open");
        let b = open("drv-canx-open");
        let rx = Arc::new(Mutex::new(CanxDriver::new(CanxConfig { max_open: 2, ..Default::default() })));
        let events = rx.lock().events();
        let _h = b.attach(rx.clone());
        // Three heads on three keys, no following frames: the third is refused.
        let l = b.listen(ListenerFilter::default(), 16, DropPolicy::DropNewest);
        for stream in 0..3u16 {
            let id = CanxId::new(0, Key::new(Direction::ToDevice, 1, stream).unwrap(), 0, false).unwrap();
            let f = canx_core::CanFrame::new(id.pack(), &[9, 0, 0, 3, 1, 2, 3, 4]).unwrap();
            a.send(&Frame::Can(f), StdDuration::from_secs(1)).unwrap();
        }
        for _ in 0..3 {
            l.recv_timeout(StdDuration::from_secs(2)).expect("frame");
        }
        // The error event is pushed in the round that counted the refusal.
        match events.recv_timeout(StdDuration::from_secs(2)).expect("error event") {
            CanxEvent::Error(e) => {
                assert_eq!(e.reason, RxError::NoFreeSlot);
                assert_eq!(e.key.stream(), 2);
            }
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(rx.lock().stats().1.refused, 1);
        assert_eq!(rx.lock().open_envelopes(), 2);
    }
}
