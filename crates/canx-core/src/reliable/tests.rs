//! Byte-level vectors, guide-program models, simulations and property tests
//! of the reliable-delivery engines.

extern crate std;

use std::collections::{BTreeMap, VecDeque};
use std::vec::Vec;

use proptest::prelude::*;

use super::compat::{GUIDE_ACK_ID, GUIDE_DATA_ID};
use super::fuzzing::drive_engines;
use super::*;
use crate::canx_proto::tests::Rng;
use crate::filter::Filter;
use crate::frame::{make_id, CanFrame, Frame};
use crate::time::{Duration, Instant};

fn sid(raw: u32) -> Id {
    make_id(raw, false).unwrap()
}

fn eid(raw: u32) -> Id {
    make_id(raw, true).unwrap()
}

fn can(id: Id, data: &[u8]) -> Frame {
    Frame::Can(CanFrame::new(id, data).unwrap())
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

// ---------------------------------------------------------------- compat

#[test]
fn compat_sender_frames_byte_for_byte() {
    let mut s = CompatSender::default();
    // struct.pack("<II", 0, 1234) = 00 00 00 00 D2 04 00 00
    assert_eq!(s.send(ms(1234)), Ok(0));
    assert_eq!(s.send(ms(1234)), Err(SendError::NoFreeSlot));
    let f = s.poll_transmit(ms(1234)).unwrap();
    assert_eq!(f.id(), sid(0x408));
    assert_eq!(f.data(), &[0, 0, 0, 0, 0xD2, 0x04, 0, 0]);
    assert!(s.poll_transmit(ms(1234)).is_none());
    // No ACK within 0.1 s: the same 8 bytes again.
    assert_eq!(s.poll_timeout(), Some(ms(1334)));
    s.handle_timeout(ms(1333));
    assert!(s.poll_transmit(ms(1333)).is_none());
    s.handle_timeout(ms(1334));
    s.handle_timeout(ms(1334));
    let again = s.poll_transmit(ms(1334)).unwrap();
    assert_eq!(again, f);
    assert!(s.poll_transmit(ms(1334)).is_none());
    // A wrong count is ignored; a wrong length reported; the right one completes.
    s.handle_frame(ms(1340), &can(sid(0x409), &[7, 0, 0, 0]));
    s.handle_frame(ms(1340), &can(sid(0x409), &[0, 0, 0]));
    s.handle_frame(ms(1340), &can(eid(0x409), &[0, 0, 0, 0])); // extended: not the guide's id
    s.handle_frame(ms(1341), &can(sid(0x409), &[0, 0, 0, 0]));
    assert_eq!(s.poll_event(), Some(CompatEvent::Delivered { count: 0, tries: 2 }));
    assert!(matches!(s.poll_event(), Some(CompatEvent::Malformed(m)) if m.reason == FrameFault::BadLength { len: 3 }));
    assert_eq!(s.poll_event(), None);
    // count 1, now_ms wraps to 32 bits: 2^32 + 5 ms -> 5.
    assert_eq!(s.send(Instant::from_millis((1 << 32) + 5)), Ok(1));
    assert_eq!(s.poll_transmit(ms(0)).unwrap().data(), &[1, 0, 0, 0, 5, 0, 0, 0]);
    let st = s.stats();
    assert_eq!((st.sent, st.resent, st.acknowledged, st.stale_acks, st.malformed), (2, 1, 1, 1, 1));
}

#[test]
fn compat_sender_resends_forever_or_up_to_a_limit() {
    let mut s = CompatSender::default();
    s.send(ms(0)).unwrap();
    let mut t = 0;
    for _ in 0..200 {
        assert!(s.poll_transmit(ms(t)).is_some());
        t += 100;
        s.handle_timeout(ms(t));
    }
    assert_eq!(s.stats().resent, 199);
    assert_eq!(s.poll_event(), None);

    let cfg = CompatSenderConfig {
        policy: RetryPolicy { retries: Some(2), ..CompatSenderConfig::default().policy },
        ..Default::default()
    };
    let mut s = CompatSender::new(cfg);
    s.send(ms(0)).unwrap();
    let mut t = 0;
    while let Some(_f) = s.poll_transmit(ms(t)) {
        t += 100;
        s.handle_timeout(ms(t));
    }
    assert_eq!(s.poll_event(), Some(CompatEvent::Failed { count: 0, tries: 3 }));
    assert_eq!(s.stats().failed, 1);
    assert_eq!(s.send(ms(t)), Ok(1));
}

#[test]
fn compat_listener_acks_every_copy_and_delivers_once() {
    let mut l: CompatListener = CompatListener::default();
    let data = [5, 0, 0, 0, 0x10, 0x27, 0, 0]; // count 5, now_ms 10000
    l.handle_frame(ms(0), &can(sid(0x408), &data));
    l.handle_frame(ms(1), &can(sid(0x408), &data));
    l.handle_frame(ms(2), &can(sid(0x408), &[1, 2, 3])); // "Unusual message length"
    l.handle_frame(ms(2), &can(sid(0x407), &data)); // not matched
    l.handle_frame(ms(2), &Frame::Can(CanFrame::new_remote(sid(0x408), 8).unwrap()));
    for _ in 0..2 {
        let ack = l.poll_transmit(ms(3)).unwrap();
        assert_eq!(ack.id(), sid(0x409));
        assert_eq!(ack.data(), &[5, 0, 0, 0]);
    }
    assert!(l.poll_transmit(ms(3)).is_none());
    assert_eq!(l.poll_event(), Some(CompatEvent::Received { count: 5, now_ms: 10000 }));
    assert!(matches!(l.poll_event(), Some(CompatEvent::Malformed(m)) if m.id == sid(0x408)));
    assert_eq!(l.poll_event(), None);
    let st = l.stats();
    assert_eq!((st.delivered, st.duplicates_dropped, st.ack_sent, st.malformed), (1, 1, 2, 1));
    // A restarted sender (count back to 0) is heard.
    l.handle_frame(ms(4), &can(sid(0x408), &[0; 8]));
    assert_eq!(l.poll_event(), Some(CompatEvent::Received { count: 0, now_ms: 0 }));
}

/// The guide's `listener-ack/code.py` transcribed: ACK every 8-byte 0x408
/// frame with `struct.pack("<I", count)` on 0x409.
fn guide_listener(frame: &CanFrame) -> Option<CanFrame> {
    if frame.id() != sid(0x408) || frame.data().len() != 8 {
        return None;
    }
    Some(CanFrame::new(sid(0x409), &frame.data()[..4]).unwrap())
}

/// Our compat sender against the guide's listener on a lossy bus: every
/// message is acknowledged, in order, and the bytes are the guide's.
#[test]
fn compat_sender_interoperates_with_guide_listener() {
    for seed in 0..20 {
        let mut rng = Rng::new(seed);
        let mut s = CompatSender::default();
        let mut t = 0u64;
        let mut delivered = Vec::new();
        let mut steps = 0;
        while delivered.len() < 20 {
            steps += 1;
            assert!(steps < 10_000, "step cap");
            let _ = s.send(ms(t));
            while let Some(f) = s.poll_transmit(ms(t)) {
                assert_eq!(u32::from_le_bytes(f.data()[..4].try_into().unwrap()), s.in_flight().unwrap());
                if rng.chance(30) {
                    continue; // data frame lost
                }
                if let Some(ack) = guide_listener(&f) {
                    if !rng.chance(30) {
                        s.handle_frame(ms(t + 1), &Frame::Can(ack));
                    }
                }
            }
            while let Some(e) = s.poll_event() {
                if let CompatEvent::Delivered { count, .. } = e {
                    delivered.push(count);
                }
            }
            t += 50;
            s.handle_timeout(ms(t));
        }
        assert_eq!(delivered, (0..20).collect::<Vec<u32>>());
    }
}

/// The guide's `sender-ack/code.py` transcribed as a state machine: send
/// `(count, now_ms)`, wait 0.1 s for a 4-byte ACK equal to count, resend on
/// timeout or on a wrong ACK, then count += 1.
struct GuideSender {
    count: u32,
    msg: Option<CanFrame>,
    wait_until: u64,
}

#[test]
fn compat_listener_interoperates_with_guide_sender() {
    for seed in 0..20 {
        let mut rng = Rng::new(seed);
        let mut g = GuideSender { count: 0, msg: None, wait_until: 0 };
        let mut l: CompatListener = CompatListener::default();
        let mut t = 0u64;
        let mut received = Vec::new();
        let mut bus: VecDeque<CanFrame> = VecDeque::new();
        for _ in 0..5000 {
            if g.count == 15 {
                break;
            }
            // Guide sender: (re)send when nothing is outstanding or the wait ended.
            if g.msg.is_none() {
                let mut d = [0u8; 8];
                d[..4].copy_from_slice(&g.count.to_le_bytes());
                d[4..].copy_from_slice(&(t as u32).to_le_bytes());
                g.msg = Some(CanFrame::new(sid(0x408), &d).unwrap());
                g.wait_until = 0;
            }
            if t >= g.wait_until {
                if !rng.chance(25) {
                    bus.push_back(g.msg.unwrap());
                }
                g.wait_until = t + 100;
            }
            while let Some(f) = bus.pop_front() {
                l.handle_frame(ms(t), &Frame::Can(f));
            }
            while let Some(ack) = l.poll_transmit(ms(t)) {
                assert_eq!(ack.id(), sid(0x409));
                assert_eq!(ack.data().len(), 4);
                if rng.chance(25) {
                    continue;
                }
                let ack_count = u32::from_le_bytes(ack.data().try_into().unwrap());
                if ack_count == g.count {
                    g.count += 1;
                    g.msg = None;
                }
            }
            while let Some(e) = l.poll_event() {
                if let CompatEvent::Received { count, .. } = e {
                    received.push(count);
                }
            }
            t += 10;
        }
        assert_eq!(g.count, 15, "seed {seed}");
        assert_eq!(received, (0..15).collect::<Vec<u32>>(), "seed {seed}: delivered exactly once each");
    }
}

#[test]
fn guide_ids_are_standard() {
    let c = CompatSenderConfig::default();
    assert_eq!(c.data_id, sid(u32::from(GUIDE_DATA_ID)));
    assert_eq!(c.ack_id, sid(u32::from(GUIDE_ACK_ID)));
    assert_eq!(AckMapping::default().ack_id(c.data_id), Some(c.ack_id));
}

// ---------------------------------------------------------------- general

fn rx_config() -> ReliableReceiverConfig {
    ReliableReceiverConfig {
        accept: Filter::canio_match(0x100, Some(0x700), false).unwrap(),
        ack: AckMapping::Offset(0x100),
    }
}

fn tx_config(policy: RetryPolicy) -> ReliableSenderConfig {
    ReliableSenderConfig { ack: AckMapping::Offset(0x100), policy, initial_seq: 0 }
}

#[test]
fn general_frame_format() {
    let mut tx: ReliableSender = ReliableSender::new(tx_config(RetryPolicy::default()));
    let mut rx: ReliableReceiver = ReliableReceiver::new(rx_config());
    let h = tx.send(sid(0x123), &[0xDE, 0xAD]).unwrap();
    let f = tx.poll_transmit(ms(0)).unwrap();
    // data: [seq = 0, payload]
    assert_eq!((f.id(), f.data()), (sid(0x123), &[0x00, 0xDE, 0xAD][..]));
    rx.handle_frame(ms(1), &Frame::Can(f));
    let ack = rx.poll_transmit(ms(1)).unwrap();
    // ACK: [0xAC, seq] on data id + 0x100
    assert_eq!((ack.id(), ack.data()), (sid(0x223), &[0xAC, 0x00][..]));
    let ev = rx.poll_event().unwrap();
    assert_eq!(ev.payload(), &[0xDE, 0xAD]);
    assert!(matches!(ev, ReliableEvent::Message { id, seq: 0, .. } if id == sid(0x123)));
    tx.handle_frame(ms(2), &Frame::Can(ack));
    assert_eq!(tx.poll_event(), Some(ReliableEvent::Delivered { handle: h, tries: 1 }));
    // The next message to the same id uses seq 1; an empty payload is fine.
    tx.send(sid(0x123), &[]).unwrap();
    assert_eq!(tx.poll_transmit(ms(3)).unwrap().data(), &[1]);
    assert_eq!(tx.send(sid(0x123), &[1]), Err(SendError::PeerBusy));
    assert_eq!(tx.send(sid(0x124), &[0; 8]), Err(SendError::PayloadTooLong));
    assert_eq!(tx.send(sid(0x7FF), &[]), Err(SendError::NoAckId));
}

#[test]
fn general_duplicates_delivered_once_but_acked() {
    let mut rx: ReliableReceiver = ReliableReceiver::new(rx_config());
    let f = can(sid(0x150), &[9, 1, 2, 3]);
    for _ in 0..3 {
        rx.handle_frame(ms(0), &f);
    }
    let mut acks = 0;
    while let Some(a) = rx.poll_transmit(ms(0)) {
        assert_eq!(a.data(), &[0xAC, 9]);
        acks += 1;
    }
    assert_eq!(acks, 3);
    assert!(matches!(rx.poll_event(), Some(ReliableEvent::Message { seq: 9, .. })));
    assert_eq!(rx.poll_event(), None);
    let st = rx.stats();
    assert_eq!((st.delivered, st.duplicates_dropped, st.ack_sent), (1, 2, 3));
    // Another data id with the same seq is another message.
    rx.handle_frame(ms(0), &can(sid(0x151), &[9]));
    assert!(rx.poll_event().is_some());
    // Frames outside the filter, ACK ids and remote frames are ignored; an
    // empty data frame is reported.
    rx.handle_frame(ms(0), &can(sid(0x250), &[0xAC, 9]));
    rx.handle_frame(ms(0), &Frame::Can(CanFrame::new_remote(sid(0x150), 1).unwrap()));
    rx.handle_frame(ms(0), &can(sid(0x152), &[]));
    assert!(matches!(rx.poll_event(), Some(ReliableEvent::Malformed(m)) if m.id == sid(0x152)));
    assert_eq!(rx.poll_event(), None);
}

#[test]
fn general_backoff_retry_limit_and_failure() {
    let policy = RetryPolicy {
        timeout: Duration::from_millis(100),
        retries: Some(3),
        multiplier: 2,
        max_timeout: Duration::from_millis(300),
    };
    assert_eq!([1, 2, 3, 4, 5].map(|n| policy.timeout_for(n).total_millis()), [100, 200, 300, 300, 300]);
    let mut tx: ReliableSender = ReliableSender::new(tx_config(policy));
    let h = tx.send(sid(0x100), &[1]).unwrap();
    let mut times = Vec::new();
    let mut t = 0;
    for _ in 0..2000 {
        if tx.poll_timeout().is_some_and(|d| d <= ms(t)) {
            tx.handle_timeout(ms(t));
        }
        if let Some(f) = tx.poll_transmit(ms(t)) {
            assert_eq!(f.data(), &[0, 1]);
            times.push(t);
        }
        if let Some(e) = tx.poll_event() {
            assert_eq!(e, ReliableEvent::Failed { handle: h, tries: 4 });
            break;
        }
        t += 1;
    }
    assert_eq!(times, [0, 100, 300, 600]);
    assert_eq!(t, 900);
    let st = tx.stats();
    assert_eq!((st.sent, st.resent, st.failed), (1, 3, 1));
}

#[test]
fn general_several_peers_in_flight_and_stale_acks() {
    let mut tx: ReliableSender<3, 3> = ReliableSender::new(tx_config(RetryPolicy::default()));
    let ids = [sid(0x101), sid(0x102), sid(0x103)];
    let hs: Vec<Handle> = ids.iter().map(|id| tx.send(*id, &[]).unwrap()).collect();
    assert_eq!(tx.send(sid(0x104), &[]), Err(SendError::NoFreeSlot));
    let frames: Vec<CanFrame> = std::iter::from_fn(|| tx.poll_transmit(ms(0))).collect();
    assert_eq!(frames.len(), 3);
    assert_eq!(tx.in_flight(), 3);
    // ACK the second, a stale seq for the first, a malformed one for the third.
    tx.handle_frame(ms(1), &can(sid(0x202), &[0xAC, 0]));
    tx.handle_frame(ms(1), &can(sid(0x201), &[0xAC, 77]));
    tx.handle_frame(ms(1), &can(sid(0x203), &[0xAB, 0]));
    tx.handle_frame(ms(1), &can(sid(0x202), &[0xAC, 0])); // duplicate ACK
    assert_eq!(tx.poll_event(), Some(ReliableEvent::Delivered { handle: hs[1], tries: 1 }));
    assert!(
        matches!(tx.poll_event(), Some(ReliableEvent::Malformed(m)) if m.reason == FrameFault::BadMarker { byte: 0xAB })
    );
    assert_eq!(tx.stats().stale_acks, 1); // the duplicate ACK no longer matches an in-flight id
                                          // A fourth peer does not fit the 3-entry sequence table.
    assert_eq!(tx.send(sid(0x104), &[]), Err(SendError::PeerTableFull));
    assert!(tx.send(sid(0x102), &[]).is_ok());
}

#[test]
fn general_fixed_ack_id_never_ambiguous() {
    let cfg = ReliableSenderConfig { ack: AckMapping::Fixed(eid(0x1_0000)), ..Default::default() };
    let mut tx: ReliableSender = ReliableSender::new(cfg);
    tx.send(eid(0x10), &[]).unwrap();
    // Same seq 0 for another data id would make ACK [0xAC, 0] ambiguous.
    assert_eq!(tx.send(eid(0x11), &[]), Err(SendError::PeerBusy));
    let f = tx.poll_transmit(ms(0)).unwrap();
    assert!(f.is_extended());
    tx.handle_frame(ms(1), &can(eid(0x1_0000), &[0xAC, 0]));
    assert!(matches!(tx.poll_event(), Some(ReliableEvent::Delivered { .. })));
    assert!(tx.send(eid(0x11), &[]).is_ok());
}

#[test]
fn general_receiver_back_pressure_never_acks_undelivered() {
    let mut rx: ReliableReceiver<2, 1, 8> = ReliableReceiver::new(rx_config());
    rx.handle_frame(ms(0), &can(sid(0x100), &[0]));
    rx.handle_frame(ms(0), &can(sid(0x100), &[1])); // event queue full: dropped unACKed
    assert_eq!(rx.stats().dropped_no_room, 1);
    assert_eq!(std::iter::from_fn(|| rx.poll_transmit(ms(0))).count(), 1);
    assert!(rx.poll_event().is_some());
    // Peer table of 2: a third id evicts the least recently used.
    rx.handle_frame(ms(0), &can(sid(0x101), &[0]));
    rx.poll_event();
    rx.handle_frame(ms(0), &can(sid(0x102), &[0]));
    rx.poll_event();
    assert_eq!(rx.peers(), 2);
    assert_eq!(rx.stats().peers_evicted, 1);
}

#[test]
fn errors_display() {
    assert_eq!(std::format!("{}", SendError::PeerBusy), "a message to this id is already in flight");
    let m = Malformed { id: sid(0x409), reason: FrameFault::BadLength { len: 3 } };
    assert_eq!(std::format!("{m}"), "frame 409: unexpected data length 3");
    let _: &dyn core::error::Error = &SendError::NoFreeSlot;
}

/// A lossy, duplicating, reordering bus on a virtual clock: frames wait a
/// random 0..5 ms (so they overtake each other), 15% are lost, 10% arrive
/// twice, in both directions. Several messages to several peers in flight.
/// Every handle gets exactly one outcome; a Delivered message reached the
/// application exactly once, a Failed one at most once; nothing is
/// delivered that was not sent; nothing is silently lost.
#[test]
fn general_simulation_loss_duplication_reordering() {
    let (mut resent, mut dups, mut failed) = (0, 0, 0);
    for seed in 0..50u64 {
        let mut rng = Rng::new(seed);
        let policy = RetryPolicy {
            timeout: Duration::from_millis(20),
            retries: Some(6),
            multiplier: 2,
            max_timeout: Duration::from_millis(80),
        };
        let mut tx: ReliableSender<4, 8> = ReliableSender::new(tx_config(policy));
        let mut rx: ReliableReceiver<8, 8, 4> = ReliableReceiver::new(rx_config());
        let mut bus: Vec<(u64, u64, Frame)> = Vec::new(); // (arrival µs, tiebreak, frame)
        let mut now = 0u64;
        let mut sent: BTreeMap<Handle, (Id, Vec<u8>)> = BTreeMap::new();
        let mut outcome: BTreeMap<Handle, bool> = BTreeMap::new();
        let mut got: BTreeMap<(u32, Vec<u8>), usize> = BTreeMap::new();
        let mut next_payload = 0u32;
        let total = 60;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 200_000, "seed {seed}: step cap");
            let t = Instant::from_micros(now);
            if sent.len() < total && rng.chance(20) {
                let id = sid(0x100 + rng.below(6) as u32);
                let payload = next_payload.to_le_bytes().to_vec();
                if let Ok(h) = tx.send(id, &payload) {
                    sent.insert(h, (id, payload));
                    next_payload += 1;
                }
            }
            let put = |f: CanFrame, rng: &mut Rng, bus: &mut Vec<(u64, u64, Frame)>| {
                if rng.chance(15) {
                    return;
                }
                let copies = if rng.chance(10) { 2 } else { 1 };
                for _ in 0..copies {
                    bus.push((now + rng.below(5000), rng.next(), Frame::Can(f)));
                }
            };
            while let Some(f) = tx.poll_transmit(t) {
                put(f, &mut rng, &mut bus);
            }
            while let Some(f) = rx.poll_transmit(t) {
                put(f, &mut rng, &mut bus);
            }
            bus.sort_by_key(|b| (b.0, b.1));
            while bus.first().is_some_and(|b| b.0 <= now) {
                let (_, _, f) = bus.remove(0);
                tx.handle_frame(t, &f);
                rx.handle_frame(t, &f);
            }
            if tx.poll_timeout().is_some_and(|d| d <= t) {
                tx.handle_timeout(t);
            }
            while let Some(e) = tx.poll_event() {
                match e {
                    ReliableEvent::Delivered { handle, .. } => assert!(outcome.insert(handle, true).is_none()),
                    ReliableEvent::Failed { handle, .. } => assert!(outcome.insert(handle, false).is_none()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            while let Some(e) = rx.poll_event() {
                let ReliableEvent::Message { id, .. } = e else { panic!("unexpected {e:?}") };
                *got.entry((crate::frame::id_raw(id), e.payload().to_vec())).or_default() += 1;
            }
            if sent.len() >= total && outcome.len() == sent.len() && bus.is_empty() {
                break;
            }
            now += 1 + rng.below(1500);
        }
        for (h, (id, payload)) in &sent {
            let n = got.get(&(crate::frame::id_raw(*id), payload.clone())).copied().unwrap_or(0);
            match outcome[h] {
                true => assert_eq!(n, 1, "seed {seed} {h:?}: delivered {n} times"),
                false => assert!(n <= 1, "seed {seed} {h:?}: failed but delivered {n} times"),
            }
        }
        assert_eq!(got.values().sum::<usize>(), got.len(), "seed {seed}: a duplicate reached the app");
        assert!(got.len() <= sent.len());
        let st = tx.stats();
        assert_eq!(st.acknowledged + st.failed, total as u32);
        resent += st.resent;
        failed += st.failed;
        dups += rx.stats().duplicates_dropped;
    }
    // The faults were exercised.
    assert!(resent > 100 && dups > 50, "resent {resent}, duplicates {dups}, failed {failed}");
}

/// The compat pair on the same faulty bus as the general simulation (loss,
/// duplication, reordering, both directions), with a retry limit: every
/// count gets exactly one outcome; a delivered count reached the listener's
/// application exactly once, a failed one at most once.
#[test]
fn compat_simulation_loss_duplication_reordering() {
    for seed in 0..50u64 {
        let mut rng = Rng::new(seed);
        let policy = RetryPolicy {
            timeout: Duration::from_millis(20),
            retries: Some(5),
            multiplier: 1,
            max_timeout: Duration::from_millis(20),
        };
        let mut tx = CompatSender::new(CompatSenderConfig { policy, ..Default::default() });
        let mut rx: CompatListener = CompatListener::default();
        let mut bus: Vec<(u64, u64, Frame)> = Vec::new();
        let mut now = 0u64;
        let mut outcome: BTreeMap<u32, bool> = BTreeMap::new();
        let mut got: BTreeMap<u32, usize> = BTreeMap::new();
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 200_000, "seed {seed}: step cap");
            let t = Instant::from_micros(now);
            if outcome.len() < 40 {
                let _ = tx.send(t);
            }
            let put = |f: CanFrame, rng: &mut Rng, bus: &mut Vec<(u64, u64, Frame)>| {
                if rng.chance(20) {
                    return;
                }
                let copies = if rng.chance(10) { 2 } else { 1 };
                for _ in 0..copies {
                    bus.push((now + rng.below(8000), rng.next(), Frame::Can(f)));
                }
            };
            while let Some(f) = tx.poll_transmit(t) {
                put(f, &mut rng, &mut bus);
            }
            while let Some(f) = rx.poll_transmit(t) {
                put(f, &mut rng, &mut bus);
            }
            bus.sort_by_key(|b| (b.0, b.1));
            while bus.first().is_some_and(|b| b.0 <= now) {
                let (_, _, f) = bus.remove(0);
                tx.handle_frame(t, &f);
                rx.handle_frame(t, &f);
            }
            if tx.poll_timeout().is_some_and(|d| d <= t) {
                tx.handle_timeout(t);
            }
            while let Some(e) = tx.poll_event() {
                match e {
                    CompatEvent::Delivered { count, .. } => assert!(outcome.insert(count, true).is_none()),
                    CompatEvent::Failed { count, .. } => assert!(outcome.insert(count, false).is_none()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            while let Some(e) = rx.poll_event() {
                let CompatEvent::Received { count, .. } = e else { panic!("unexpected {e:?}") };
                *got.entry(count).or_default() += 1;
            }
            if outcome.len() >= 40 && bus.is_empty() {
                break;
            }
            now += 1 + rng.below(1500);
        }
        for (count, ok) in &outcome {
            let n = got.get(count).copied().unwrap_or(0);
            if *ok {
                assert_eq!(n, 1, "seed {seed} count {count}");
            } else {
                assert!(n <= 1, "seed {seed} count {count}");
            }
        }
        assert!(got.keys().all(|c| outcome.contains_key(c)));
        assert_eq!(outcome.keys().copied().collect::<Vec<u32>>(), (0..40).collect::<Vec<u32>>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        drive_engines(&input);
    }

    /// Well-formed traffic for the engines (guide data frames, general data
    /// frames and ACKs) with arbitrary values and clock jumps.
    #[test]
    fn structured_input_never_panics(ops in proptest::collection::vec((0u8..6, any::<u8>(), proptest::array::uniform8(any::<u8>())), 0..80)) {
        let mut input = Vec::new();
        for (kind, b, data) in ops {
            match kind {
                0 => { input.push(8); input.push(0x00); input.extend_from_slice(&data); }           // 0x408, 8 bytes
                1 => { input.push(4); input.push(0x40); input.extend_from_slice(&data[..4]); }      // 0x409, 4 bytes
                2 => { input.push(1 + (b & 7)); input.push(0x80 | (b & 3)); input.extend_from_slice(&data[..usize::from(1 + (b & 7))]); }
                3 => { input.push(2); input.push(0xC0 | (b & 3)); input.extend_from_slice(&[0xAC, data[0] & 3]); }
                4 => input.push(0x80 | (b & 0x1F)),
                _ => { input.push(b & 0x3F); input.push(b); }
            }
        }
        drive_engines(&input);
    }

    #[test]
    fn general_any_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..=7), raw in 0x100u32..0x200, ext in any::<bool>()) {
        let id = make_id(raw, ext).unwrap();
        let accept = Filter::canio_match(0x100, Some(0x100), ext).unwrap();
        let mut rx: ReliableReceiver = ReliableReceiver::new(ReliableReceiverConfig { accept, ack: AckMapping::Offset(0x100) });
        let mut tx: ReliableSender = ReliableSender::new(tx_config(RetryPolicy::default()));
        let h = tx.send(id, &payload).unwrap();
        let f = tx.poll_transmit(ms(0)).unwrap();
        rx.handle_frame(ms(0), &Frame::Can(f));
        let ev = rx.poll_event().unwrap();
        prop_assert_eq!(ev.payload(), &payload[..]);
        let ack = rx.poll_transmit(ms(0)).unwrap();
        prop_assert_eq!(ack.is_extended(), ext);
        tx.handle_frame(ms(0), &Frame::Can(ack));
        prop_assert_eq!(tx.poll_event(), Some(ReliableEvent::Delivered { handle: h, tries: 1 }));
    }

    #[test]
    fn backoff_is_monotonic_and_bounded(base in 1u64..10_000, mult in 0u32..5, max in 1u64..100_000, tries in 1u32..40) {
        let p = RetryPolicy { timeout: Duration::from_micros(base), retries: None, multiplier: mult, max_timeout: Duration::from_micros(max) };
        let a = p.timeout_for(tries);
        let b = p.timeout_for(tries + 1);
        prop_assert!(a <= b);
        prop_assert!(b <= Duration::from_micros(max.max(base)));
        prop_assert!(a >= Duration::from_micros(base.min(max)) || a == Duration::from_micros(base));
    }
}
