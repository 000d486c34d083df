//! Host tests of the driver over the in-memory bus (limited mailboxes,
//! overruns, injected errors) and a blocking mock.

use std::collections::VecDeque;
use std::vec::Vec;

use core::cell::RefCell;

use embedded_can::{ErrorKind, ExtendedId, StandardId};

use super::mem::{MemBus, MemPort};
use super::*;
use crate::time::Duration;

fn sid(raw: u16) -> StandardId {
    StandardId::new(raw).unwrap()
}

fn frame(raw: u16, byte: u8) -> CanFrame {
    CanFrame::new(sid(raw), &[byte]).unwrap()
}

/// An engine that sends a script of frames and records what it receives.
#[derive(Default)]
struct Scripted {
    out: VecDeque<CanFrame>,
    got: Vec<CanFrame>,
    deadline: Option<Instant>,
    timeouts: Vec<Instant>,
}

impl Engine for Scripted {
    fn handle_frame(&mut self, _now: Instant, frame: &Frame) {
        if let Frame::Can(f) = frame {
            self.got.push(*f);
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.timeouts.push(now);
        self.deadline = None;
    }
    fn poll_transmit(&mut self, _now: Instant) -> Option<CanFrame> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
}

fn scripted(frames: impl IntoIterator<Item = CanFrame>) -> Scripted {
    Scripted { out: frames.into_iter().collect(), ..Default::default() }
}

/// Reads everything waiting at a node that has no driver (a sniffer).
fn sniff<const N: usize, const MB: usize, const RXQ: usize>(port: &mut MemPort<'_, N, MB, RXQ>) -> Vec<CanFrame> {
    use embedded_can::nb::Can as _;
    let mut v = Vec::new();
    while let Ok(f) = port.receive() {
        v.push(f);
    }
    v
}

#[test]
fn back_pressure_keeps_every_frame_in_order() {
    let bus: RefCell<MemBus<2, 1, 32>> = RefCell::new(MemBus::new());
    let mut drv: Driver<_, 4> = Driver::new(MemPort::new(&bus, 0));
    let mut sniffer = MemPort::new(&bus, 1);
    let sent: Vec<CanFrame> = (0..10).map(|i| frame(0x100, i)).collect();
    let mut eng = scripted(sent.clone());
    let now = Instant::ZERO;

    // One mailbox: one frame accepted, the queue filled (4), the rest stays in the engine.
    let next = drv.poll(now, &mut [&mut eng]);
    assert_eq!(bus.borrow().pending(0), 1);
    assert_eq!(drv.queued(), 4);
    assert_eq!(eng.out.len(), 5);
    assert_eq!(next, Some(now), "frames are waiting: poll again");
    assert!(drv.stats().would_block >= 1);
    // Polling again while the mailbox is full changes nothing.
    drv.poll(now, &mut [&mut eng]);
    assert_eq!((drv.queued(), eng.out.len()), (4, 5));

    let mut on_wire = Vec::new();
    for _ in 0..20 {
        if let Some(f) = bus.borrow_mut().deliver() {
            on_wire.push(f);
        }
        drv.poll(now, &mut [&mut eng]);
    }
    assert_eq!(on_wire, sent);
    assert_eq!(sniff(&mut sniffer), sent);
    assert_eq!(drv.stats().transmitted, 10);
    assert_eq!(drv.queued(), 0);
    assert_eq!(drv.poll(now, &mut [&mut eng]), None);
}

#[test]
fn engines_share_the_mailbox_round_robin() {
    let bus: RefCell<MemBus<2, 1, 32>> = RefCell::new(MemBus::new());
    let mut drv: Driver<_, 2> =
        Driver::with_config(MemPort::new(&bus, 0), DriverConfig { local_echo: false, ..Default::default() });
    let mut a = scripted((0..4).map(|i| frame(0x200, i)));
    let mut b = scripted((0..4).map(|i| frame(0x200, 0x10 + i)));
    let mut wire = Vec::new();
    for _ in 0..12 {
        drv.poll(Instant::ZERO, &mut [&mut a, &mut b]);
        if let Some(f) = bus.borrow_mut().deliver() {
            wire.push(f.data()[0]);
        }
    }
    assert_eq!(wire, [0x00, 0x10, 0x01, 0x11, 0x02, 0x12, 0x03, 0x13]);
    assert!(a.got.is_empty() && b.got.is_empty(), "no echo when off");
}

#[test]
fn local_echo_reaches_the_other_engines_only() {
    let bus: RefCell<MemBus<1, 3, 8>> = RefCell::new(MemBus::new());
    let mut drv: Driver<_, 4> = Driver::new(MemPort::new(&bus, 0));
    let mut a = scripted([frame(0x10, 1)]);
    let mut b = scripted([frame(0x20, 2)]);
    let mut c = Scripted::default();
    drv.poll(Instant::ZERO, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(a.got, [frame(0x20, 2)]);
    assert_eq!(b.got, [frame(0x10, 1)]);
    assert_eq!(c.got, [frame(0x10, 1), frame(0x20, 2)]);
    assert_eq!(drv.stats().echoed, 2);
}

#[test]
fn timers_run_when_due_and_poll_returns_the_deadline() {
    let bus: RefCell<MemBus<1, 1, 4>> = RefCell::new(MemBus::new());
    let mut drv: Driver<_, 2> = Driver::new(MemPort::new(&bus, 0));
    let t = Instant::from_millis(50);
    let mut a = Scripted { deadline: Some(t), ..Default::default() };
    let mut b = Scripted { deadline: Some(Instant::from_millis(80)), ..Default::default() };
    assert_eq!(drv.poll(Instant::from_millis(49), &mut [&mut a, &mut b]), Some(t));
    assert!(a.timeouts.is_empty());
    assert_eq!(drv.poll(t, &mut [&mut a, &mut b]), Some(Instant::from_millis(80)));
    assert_eq!(a.timeouts, [t]);
    assert!(b.timeouts.is_empty());
}

#[test]
fn receive_errors_are_counted_and_reading_goes_on() {
    let bus: RefCell<MemBus<2, 3, 2>> = RefCell::new(MemBus::new());
    let mut tx = MemPort::new(&bus, 0);
    let mut drv: Driver<_, 2, 2> = Driver::new(MemPort::new(&bus, 1));
    let mut eng = Scripted::default();
    {
        use embedded_can::nb::Can as _;
        // Four frames into a 2-frame FIFO: two are lost (one overrun report).
        for i in 0..3 {
            tx.transmit(&frame(0x300, i)).unwrap();
        }
        bus.borrow_mut().deliver_all();
        tx.transmit(&frame(0x300, 3)).unwrap();
        bus.borrow_mut().deliver_all();
    }
    bus.borrow_mut().inject_rx_error(1, ErrorKind::Bit);
    drv.poll(Instant::ZERO, &mut [&mut eng]);
    assert_eq!(eng.got, [frame(0x300, 0), frame(0x300, 1)]);
    let s = drv.stats();
    assert_eq!((s.receive_errors, s.received), (2, 2));
    assert_eq!(drv.poll_event(), Some(DriverEvent::ReceiveError(ErrorKind::Bit)));
    assert_eq!(drv.poll_event(), Some(DriverEvent::ReceiveError(ErrorKind::Overrun)));
    assert_eq!(drv.poll_event(), None);
    assert_eq!(bus.borrow().overruns(), 2);
}

#[test]
fn event_queue_overflow_is_counted() {
    let bus: RefCell<MemBus<1, 1, 2>> = RefCell::new(MemBus::new());
    let mut drv: Driver<_, 2, 1> = Driver::new(MemPort::new(&bus, 0));
    for kind in [ErrorKind::Bit, ErrorKind::Crc] {
        bus.borrow_mut().inject_rx_error(0, kind);
        drv.poll(Instant::ZERO, &mut []);
    }
    assert_eq!(drv.stats().dropped_events, 1);
    assert_eq!(drv.poll_event(), Some(DriverEvent::ReceiveError(ErrorKind::Bit)));
}

#[test]
fn rx_budget_bounds_one_poll() {
    let bus: RefCell<MemBus<2, 64, 64>> = RefCell::new(MemBus::new());
    let mut tx = MemPort::new(&bus, 0);
    let cfg = DriverConfig { rx_budget: 5, ..Default::default() };
    let mut drv: Driver<_, 2> = Driver::with_config(MemPort::new(&bus, 1), cfg);
    {
        use embedded_can::nb::Can as _;
        for i in 0..12 {
            tx.transmit(&frame(0x1, i)).unwrap();
        }
    }
    bus.borrow_mut().deliver_all();
    let mut eng = Scripted::default();
    drv.poll(Instant::ZERO, &mut [&mut eng]);
    assert_eq!(eng.got.len(), 5);
    drv.poll(Instant::ZERO, &mut [&mut eng]);
    drv.poll(Instant::ZERO, &mut [&mut eng]);
    assert_eq!(eng.got.len(), 12);
}

#[test]
fn transmit_error_drops_one_frame_and_goes_on() {
    let bus: RefCell<MemBus<2, 3, 8>> = RefCell::new(MemBus::new());
    let mut drv: Driver<_, 4> = Driver::new(MemPort::new(&bus, 0));
    let mut sniffer = MemPort::new(&bus, 1);
    let mut eng = scripted((0..3).map(|i| frame(0x400, i)));
    bus.borrow_mut().inject_tx_error(0, ErrorKind::Acknowledge);
    drv.poll(Instant::ZERO, &mut [&mut eng]);
    bus.borrow_mut().deliver_all();
    assert_eq!(sniff(&mut sniffer), [frame(0x400, 1), frame(0x400, 2)]);
    assert_eq!(drv.stats().transmit_errors, 1);
    assert_eq!(drv.poll_event(), Some(DriverEvent::TransmitError(ErrorKind::Acknowledge)));
}

#[test]
fn displaced_frame_is_requeued_and_sent_after() {
    let bus: RefCell<MemBus<2, 1, 8>> = RefCell::new(MemBus::new());
    bus.borrow_mut().set_displacing(true);
    let mut drv: Driver<_, 4> = Driver::new(MemPort::new(&bus, 0));
    let mut sniffer = MemPort::new(&bus, 1);
    let low = frame(0x700, 1);
    let high = frame(0x100, 2);
    let mut eng = scripted([low, high]);
    drv.poll(Instant::ZERO, &mut [&mut eng]);
    let s = drv.stats();
    assert_eq!((s.displaced, s.transmitted), (1, 2));
    assert_eq!(drv.queued(), 1, "the displaced frame waits in the queue");
    for _ in 0..3 {
        bus.borrow_mut().deliver_all();
        drv.poll(Instant::ZERO, &mut [&mut eng]);
    }
    assert_eq!(sniff(&mut sniffer), [high, low]);
}

#[test]
fn arbitration_order() {
    use super::mem::arbitration_key as k;
    let std_data = CanFrame::new(sid(0x123), &[]).unwrap();
    let std_remote = CanFrame::new_remote(sid(0x123), 0).unwrap();
    let ext_same_base = CanFrame::new(ExtendedId::new(0x123 << 18).unwrap(), &[]).unwrap();
    let ext_lower_base = CanFrame::new(ExtendedId::new(0x122 << 18 | 0x3_FFFF).unwrap(), &[]).unwrap();
    assert!(k(&std_data) < k(&std_remote));
    assert!(k(&std_remote) < k(&ext_same_base));
    assert!(k(&ext_lower_base) < k(&std_data));
}

// ---- a blocking controller whose frame type refuses extended ids ----

#[derive(Debug)]
struct StdOnly(CanFrame);

impl embedded_can::Frame for StdOnly {
    fn new(id: impl Into<embedded_can::Id>, data: &[u8]) -> Option<Self> {
        match id.into() {
            embedded_can::Id::Standard(s) => CanFrame::new(s, data).ok().map(StdOnly),
            embedded_can::Id::Extended(_) => None,
        }
    }
    fn new_remote(id: impl Into<embedded_can::Id>, dlc: usize) -> Option<Self> {
        CanFrame::new_remote(id, dlc).ok().map(StdOnly)
    }
    fn is_extended(&self) -> bool {
        self.0.is_extended()
    }
    fn is_remote_frame(&self) -> bool {
        self.0.is_remote()
    }
    fn id(&self) -> embedded_can::Id {
        self.0.id()
    }
    fn dlc(&self) -> usize {
        usize::from(self.0.dlc())
    }
    fn data(&self) -> &[u8] {
        self.0.data()
    }
}

#[derive(Default)]
struct BlockingMock {
    sent: Vec<CanFrame>,
    incoming: VecDeque<Result<CanFrame, ErrorKind>>,
    fail_next_tx: Option<ErrorKind>,
}

#[derive(Debug)]
struct MockError(ErrorKind);
impl embedded_can::Error for MockError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

impl embedded_can::blocking::Can for BlockingMock {
    type Frame = StdOnly;
    type Error = MockError;
    fn transmit(&mut self, frame: &StdOnly) -> Result<(), MockError> {
        if let Some(k) = self.fail_next_tx.take() {
            return Err(MockError(k));
        }
        self.sent.push(frame.0);
        Ok(())
    }
    fn receive(&mut self) -> Result<StdOnly, MockError> {
        match self.incoming.pop_front() {
            Some(Ok(f)) => Ok(StdOnly(f)),
            Some(Err(k)) => Err(MockError(k)),
            None => panic!("test would block forever"),
        }
    }
}

#[test]
fn blocking_controller() {
    let ext = CanFrame::new(ExtendedId::new(0x18FEEC00).unwrap(), &[1]).unwrap();
    let mut drv: Driver<_, 2> =
        Driver::new(BlockingMock { fail_next_tx: Some(ErrorKind::Other), ..Default::default() });
    let mut eng = scripted([frame(0x1, 0), frame(0x1, 1), ext, frame(0x1, 2), frame(0x1, 3)]);
    assert_eq!(drv.poll_blocking(Instant::ZERO, &mut [&mut eng]), None);
    assert_eq!(drv.can().sent, [frame(0x1, 1), frame(0x1, 2), frame(0x1, 3)]);
    let s = drv.stats();
    assert_eq!((s.transmitted, s.transmit_errors, s.unconvertible), (3, 1, 1));
    assert_eq!(drv.poll_event(), Some(DriverEvent::TransmitError(ErrorKind::Other)));
    assert_eq!(drv.poll_event(), Some(DriverEvent::Unconvertible { transmit: true }));

    drv.can_mut().incoming.extend([Ok(frame(0x5, 9)), Err(ErrorKind::Stuff)]);
    let t = Instant::from_millis(7);
    drv.receive_blocking(|| t, &mut [&mut eng]);
    drv.receive_blocking(|| t, &mut [&mut eng]);
    assert_eq!(eng.got, [frame(0x5, 9)]);
    assert_eq!(drv.poll_event(), Some(DriverEvent::ReceiveError(ErrorKind::Stuff)));
}

// ---- real engines talking through drivers ----

#[test]
fn two_j1939_ecus_through_drivers_with_one_mailbox() {
    use crate::j1939::codecs::{eec1, vin};
    use crate::j1939::{Ecu, EcuConfig, EcuEvent, Name, Pgn, Responder};

    const VIN: &[u8] = b"1M8GDM9AXKP042788*";
    let bus: RefCell<MemBus<2, 1, 8>> = RefCell::new(MemBus::new());
    let mut engine_drv: Driver<_, 4> = Driver::new(MemPort::new(&bus, 0));
    let mut tool_drv: Driver<_, 4> = Driver::new(MemPort::new(&bus, 1));
    let mut engine: Ecu<'_, 2> = Ecu::new(EcuConfig::new(Name::from_u64(10), 0x00)).unwrap();
    let mut tool: Ecu<'_, 2> = Ecu::new(EcuConfig::new(Name::from_u64(20), 0xF9)).unwrap();
    engine.register(Pgn::VEHICLE_IDENTIFICATION, Responder::Data(VIN)).unwrap();

    let mut now = Instant::ZERO;
    engine.start(now);
    tool.start(now);
    let (mut got_vin, mut rpm, mut requested) = (None, None, false);
    for _ in 0..3000 {
        engine_drv.poll(now, &mut [&mut engine]);
        tool_drv.poll(now, &mut [&mut tool]);
        // One frame on the wire per millisecond: the mailbox is often full.
        bus.borrow_mut().deliver();
        while engine.poll_event().is_some() {}
        while let Some(ev) = tool.poll_event() {
            match ev {
                EcuEvent::Received(r) if r.pgn == Pgn::VEHICLE_IDENTIFICATION => {
                    got_vin = tool.received_data(r.handle).and_then(|d| vin::decode(d).ok()).map(Vec::from);
                }
                EcuEvent::Message { id, data, len } if id.pgn == Pgn::EEC1 => {
                    rpm = eec1::engine_speed(&data[..usize::from(len)]);
                }
                _ => {}
            }
        }
        if let (Some(_), Some(ecu), false) = (tool.address(), engine.address(), requested) {
            // Destination-specific: the VIN comes by RTS/CTS.
            tool.request(now, Pgn::VEHICLE_IDENTIFICATION, ecu).unwrap();
            requested = true;
        }
        if engine.address().is_some() && now.total_millis() % 100 == 0 {
            engine.send(eec1::PRIORITY, Pgn::EEC1, 0xFF, &eec1::encode(eec1::raw_from_rpm(1800.0))).unwrap();
        }
        if got_vin.is_some() && rpm.is_some() {
            break;
        }
        now += Duration::from_millis(1);
    }
    assert_eq!(engine.address(), Some(0x00));
    assert_eq!(tool.address(), Some(0xF9));
    assert_eq!(got_vin.as_deref(), Some(&b"1M8GDM9AXKP042788"[..]));
    assert_eq!(rpm, Some(1800.0));
    assert!(engine_drv.stats().would_block > 0, "back-pressure was exercised");
    assert_eq!(engine.stats().dropped_frames, 0);
}

#[test]
fn reliable_delivery_survives_a_transmit_error() {
    use crate::filter::Filter;
    use crate::reliable::{
        ReliableEvent, ReliableReceiver, ReliableReceiverConfig, ReliableSender, ReliableSenderConfig,
    };

    let bus: RefCell<MemBus<2, 2, 8>> = RefCell::new(MemBus::new());
    let mut a: Driver<_, 4> = Driver::new(MemPort::new(&bus, 0));
    let mut b: Driver<_, 4> = Driver::new(MemPort::new(&bus, 1));
    let mut sender: ReliableSender = ReliableSender::new(ReliableSenderConfig::default());
    let accept = Filter::canio_match(0x500, None, false).unwrap();
    let mut receiver: ReliableReceiver =
        ReliableReceiver::new(ReliableReceiverConfig { accept, ack: Default::default() });
    let h = sender.send(embedded_can::Id::Standard(sid(0x500)), b"hi").unwrap();
    bus.borrow_mut().inject_tx_error(0, ErrorKind::Acknowledge);
    let mut now = Instant::ZERO;
    let mut outcome = None;
    let mut delivered = Vec::new();
    for _ in 0..1000 {
        let next_a = a.poll(now, &mut [&mut sender]);
        b.poll(now, &mut [&mut receiver]);
        bus.borrow_mut().deliver_all();
        while let Some(ev) = receiver.poll_event() {
            delivered.push(Vec::from(ev.payload()));
        }
        if let Some(ev) = sender.poll_event() {
            outcome = Some(ev);
            break;
        }
        // Sleep until the next deadline, at most 1 ms (frames in flight).
        now = next_a.map_or(now + Duration::from_millis(1), |t| t.min(now + Duration::from_millis(1)).max(now));
        now += Duration::from_micros(1);
    }
    assert_eq!(outcome, Some(ReliableEvent::Delivered { handle: h, tries: 2 }));
    assert_eq!(delivered, [b"hi".to_vec()]);
    assert_eq!(a.stats().transmit_errors, 1);
}

// ---- property: frames are conserved, whatever the controller does ----

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// The engine queues this many frames (ids vary, so displacement happens).
        Emit(u8),
        /// The bus puts this many frames on the wire.
        Deliver(u8),
        TxError,
        RxError,
        Poll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u8..6).prop_map(Op::Emit),
            (0u8..4).prop_map(Op::Deliver),
            Just(Op::TxError),
            Just(Op::RxError),
            Just(Op::Poll),
            Just(Op::Poll),
        ]
    }

    proptest! {
        #[test]
        fn frames_are_conserved(ops in proptest::collection::vec(op(), 1..80), displacing in any::<bool>()) {
            let bus: RefCell<MemBus<2, 2, 4>> = RefCell::new(MemBus::new());
            bus.borrow_mut().set_displacing(displacing);
            let mut drv: Driver<_, 3, 2> = Driver::new(MemPort::new(&bus, 0));
            let mut other: Driver<_, 3, 2> = Driver::new(MemPort::new(&bus, 1));
            let mut eng = Scripted::default();
            let mut sink = Scripted::default();
            let mut emitted = 0u32;
            let mut on_wire = 0u32;
            for (k, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Emit(n) => {
                        for i in 0..n {
                            let id = 0x100 + u16::from((k as u8).wrapping_mul(37).wrapping_add(i)) ;
                            eng.out.push_back(frame(id, i));
                            emitted += 1;
                        }
                    }
                    Op::Deliver(n) => {
                        for _ in 0..n {
                            if bus.borrow_mut().deliver().is_some() {
                                on_wire += 1;
                            }
                        }
                    }
                    Op::TxError => bus.borrow_mut().inject_tx_error(0, ErrorKind::Acknowledge),
                    Op::RxError => bus.borrow_mut().inject_rx_error(1, ErrorKind::Crc),
                    Op::Poll => {
                        drv.poll(Instant::ZERO, &mut [&mut eng]);
                        other.poll(Instant::ZERO, &mut [&mut sink]);
                    }
                }
                let s = drv.stats();
                let pulled = emitted - eng.out.len() as u32;
                // Every frame taken from the engine is queued, in a mailbox,
                // on the wire, or dropped by a counted transmit error.
                let in_mailbox = bus.borrow().pending(0) as u32;
                prop_assert_eq!(pulled, drv.queued() as u32 + in_mailbox + on_wire + s.transmit_errors);
                prop_assert_eq!(s.transmitted, in_mailbox + on_wire + s.displaced);
                prop_assert!(drv.queued() <= 3);
            }
            // The receiving node saw every frame on the wire, or counted an overrun.
            other.poll(Instant::ZERO, &mut [&mut sink]);
            for _ in 0..8 {
                other.poll(Instant::ZERO, &mut [&mut sink]);
            }
            prop_assert_eq!(sink.got.len() as u32 + bus.borrow().overruns(), on_wire);
        }
    }
}

#[test]
fn two_cas_on_one_controller_contend_through_local_echo() {
    use crate::j1939::{Ecu, EcuConfig, Name};

    for echo in [true, false] {
        let bus: RefCell<MemBus<2, 3, 16>> = RefCell::new(MemBus::new());
        let cfg = DriverConfig { local_echo: echo, ..Default::default() };
        let mut drv: Driver<_, 8> = Driver::with_config(MemPort::new(&bus, 0), cfg);
        let mut sniffer = MemPort::new(&bus, 1);
        let mut a: Ecu<'_, 1> = Ecu::new(EcuConfig::new(Name::from_u64(10), 0x80)).unwrap();
        let mut b: Ecu<'_, 1> = Ecu::new(EcuConfig::new(Name::from_u64(20), 0x80)).unwrap();
        let mut now = Instant::ZERO;
        a.start(now);
        b.start(now);
        for _ in 0..400 {
            drv.poll(now, &mut [&mut a, &mut b]);
            bus.borrow_mut().deliver_all();
            while a.poll_event().is_some() {}
            while b.poll_event().is_some() {}
            now += Duration::from_millis(1);
        }
        let _ = sniff(&mut sniffer);
        assert_eq!(a.address(), Some(0x80), "the lower NAME wins");
        if echo {
            assert_ne!(b.address(), Some(0x80), "b saw a's claim and gave way");
        } else {
            // Without the echo the two never see each other: a real conflict.
            assert_eq!(b.address(), Some(0x80));
        }
    }
}

/// The `Events` trait reads every engine alike, borrowed events included.
#[test]
fn events_trait_drains_engines_generically() {
    use crate::canx_proto::{Direction, Endpoint, Key};
    fn drain<E: Events>(e: &mut E) -> usize {
        let mut n = 0;
        while e.poll_event().is_some() {
            n += 1;
        }
        n
    }
    let t = Instant::ZERO;
    let mut tx: Endpoint<2, 4, 2, 8> = Endpoint::default();
    let mut rx: Endpoint<2, 4, 2, 8> = Endpoint::default();
    let k = Key::new(Direction::ToDevice, 1, 0).unwrap();
    tx.send(0, k, 7, &[1, 2, 3]).unwrap();
    tx.send(0, k, 8, &[0; 40]).unwrap();
    while let Some(f) = tx.poll_transmit(t) {
        rx.handle_frame(t, &Frame::Can(f));
    }
    assert_eq!(drain(&mut rx), 2, "a single-frame message and an envelope");
    assert_eq!(drain(&mut tx), 0);
}
