//! Hand-derived vectors, simulation and property tests of the CAN-X engine.

extern crate std;

use std::vec::Vec;

use proptest::prelude::*;

use super::fuzzing::drive_receiver;
use super::*;
use crate::frame::{make_id, CanFrame, Frame};
use crate::time::Instant;

fn key(direction: Direction, device: u8, stream: u16) -> Key {
    Key::new(direction, device, stream).unwrap()
}

fn ext(raw: u32) -> crate::frame::Id {
    make_id(raw, true).unwrap()
}

/// A frame with CAN-X id fields.
fn xframe(priority: u8, k: Key, seq: u8, cont: bool, data: &[u8]) -> Frame {
    Frame::Can(CanFrame::new(CanxId::new(priority, k, seq, cont).unwrap().pack(), data).unwrap())
}

/// Owned copy of an event.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Ev {
    Msg(Key, u8, Vec<u8>),
    Err(ErrorEvent),
}

fn drain<const S: usize, const E: usize>(rx: &mut Receiver<S, E>) -> Vec<Ev> {
    let mut out = Vec::new();
    while let Some(ev) = rx.poll_event() {
        out.push(match ev {
            Event::Message(m) => Ev::Msg(m.key, m.msg_id, m.body.to_vec()),
            Event::Error(e) => Ev::Err(e),
        });
    }
    out
}

fn drain_tx<const S: usize, const K: usize>(tx: &mut Sender<S, K>) -> Vec<CanFrame> {
    let mut out = Vec::new();
    while let Some(f) = tx.poll_transmit(Instant::ZERO) {
        out.push(f);
    }
    out
}

#[test]
fn crc_check_value() {
    // "123456789": msg_id b'1' followed by the body "23456789".
    assert_eq!(envelope_crc(DEFAULT_CRC, b'1', b"23456789"), 0x29B1);
    assert_eq!(envelope_crc(DEFAULT_CRC, 0x42, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), 0xF0C6);
}

#[test]
fn identifier_fields_by_hand() {
    // priority 2, from device, device 0xA5, stream 0x3C7, seq 0x55, continue:
    // 2<<27 | 1<<26 | 0xA5<<18 | 0x3C7<<8 | 0x55<<1 | 1 = 0x1697_C7AB.
    let id = CanxId::new(2, key(Direction::FromDevice, 0xA5, 0x3C7), 0x55, true).unwrap();
    assert_eq!(id.to_raw(), 0x1697_C7AB);
    assert_eq!(CanxId::unpack(id.pack()), id);
    assert_eq!(CanxId::from_raw(0x1697_C7AB), id);
    assert_eq!(CanxId::from_raw(0).key(), key(Direction::ToDevice, 0, 0));
    assert_eq!(CanxId::from_raw(0x1FFF_FFFF).to_raw(), 0x1FFF_FFFF);
    assert_eq!(CanxId::from_id(make_id(0x123, false).unwrap()), None);
    assert_eq!(Key::new(Direction::ToDevice, 0, 1024), Err(FieldError::StreamOutOfRange));
    let k = key(Direction::ToDevice, 0, 0);
    assert_eq!(CanxId::new(4, k, 0, false), Err(FieldError::PriorityOutOfRange));
    assert_eq!(CanxId::new(0, k, 128, false), Err(FieldError::SequenceOutOfRange));
}

#[test]
fn envelope_of_13_bytes_frame_by_frame() {
    // Body 00..0C (13 bytes), msg_id 0x42: 13 + 8 = 21 bytes -> N = 3.
    // head:  42 00 00 03 | 00 01 02 03
    // cont:  04 05 06 07 08 09 0A 0B
    // tail:  0C | 01 00 | C6 F0   (CRC-16/IBM-3740 of 42 00..0C = 0xF0C6, LE)
    let k = key(Direction::FromDevice, 7, 9);
    let body: Vec<u8> = (0..13).collect();
    let mut tx: Sender = Sender::default();
    tx.send(1, k, 0x42, &body).unwrap();
    let frames = drain_tx(&mut tx);
    let expected: [&[u8]; 3] = [
        &[0x42, 0x00, 0x00, 0x03, 0x00, 0x01, 0x02, 0x03],
        &[0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B],
        &[0x0C, 0x01, 0x00, 0xC6, 0xF0],
    ];
    assert_eq!(frames.len(), 3);
    for (i, (f, want)) in frames.iter().zip(expected).enumerate() {
        assert_eq!(f.data(), want, "frame {i}");
        let id = CanxId::from_id(f.id()).unwrap();
        assert_eq!(id.seq(), i as u8);
        assert_eq!(id.cont(), i > 0);
        assert_eq!(id.priority(), 1);
        assert_eq!(id.key(), k);
    }
    // The same frames written by hand decode to the body.
    let mut rx: Receiver = Receiver::default();
    for (i, d) in expected.iter().enumerate() {
        rx.handle_frame(Instant::ZERO, &xframe(1, k, i as u8, i > 0, d));
    }
    assert_eq!(drain(&mut rx), [Ev::Msg(k, 0x42, body)]);
}

#[test]
fn single_frames_and_sequence_across_messages() {
    let k = key(Direction::ToDevice, 1, 2);
    let mut tx: Sender = Sender::default();
    tx.send(0, k, 0x10, &[]).unwrap();
    tx.send(0, k, 0x11, &[1, 2, 3, 4, 5, 6, 7]).unwrap();
    tx.send(0, k, 0x12, &[9; 8]).unwrap();
    let frames = drain_tx(&mut tx);
    assert_eq!(frames[0].data(), &[0x10]);
    assert_eq!(frames[1].data(), &[0x11, 1, 2, 3, 4, 5, 6, 7]);
    // 8-byte body: 16 bytes, N = 2, last frame DLC 8.
    assert_eq!(frames[2].data(), &[0x12, 0, 0, 2, 9, 9, 9, 9]);
    assert_eq!(frames[3].data().len(), 8);
    let seqs: Vec<u8> = frames.iter().map(|f| CanxId::from_id(f.id()).unwrap().seq()).collect();
    assert_eq!(seqs, [0, 1, 2, 3]);
    assert_eq!(tx.next_seq(k), 4);
    let mut rx: Receiver = Receiver::default();
    for f in &frames {
        rx.handle_frame(Instant::ZERO, &Frame::Can(*f));
    }
    assert_eq!(
        drain(&mut rx),
        [Ev::Msg(k, 0x10, Vec::new()), Ev::Msg(k, 0x11, (1..=7).collect()), Ev::Msg(k, 0x12, [9; 8].to_vec())]
    );
}

#[test]
fn sequence_wraps_mod_128() {
    let k = key(Direction::ToDevice, 0, 0);
    let mut tx: Sender<1, 1> = Sender::default();
    for _ in 0..130 {
        tx.send(0, k, 0, &[]).unwrap();
        let f = tx.poll_transmit(Instant::ZERO).unwrap();
        assert!(tx.poll_transmit(Instant::ZERO).is_none());
        let _ = f;
    }
    assert_eq!(tx.next_seq(k), 2);
    // An envelope across the wrap: seq 127 then 0.
    let mut tx: Sender<1, 1> = Sender::default();
    for _ in 0..127 {
        tx.send(0, k, 0, &[]).unwrap();
        drain_tx(&mut tx);
    }
    tx.send(0, k, 5, &[3; 20]).unwrap();
    let frames = drain_tx(&mut tx);
    let seqs: Vec<u8> = frames.iter().map(|f| CanxId::from_id(f.id()).unwrap().seq()).collect();
    assert_eq!(seqs, [127, 0, 1, 2]);
    let mut rx: Receiver = Receiver::default();
    for f in &frames {
        rx.handle_frame(Instant::ZERO, &Frame::Can(*f));
    }
    assert_eq!(drain(&mut rx), [Ev::Msg(k, 5, [3; 20].to_vec())]);
}

#[test]
fn ambiguous_seven_byte_body_goes_as_envelope() {
    let k = key(Direction::ToDevice, 3, 3);
    assert!(uses_envelope(&[0, 0, 2, 0, 0, 0, 0]));
    assert!(!uses_envelope(&[0, 0, 1, 0, 0, 0, 0]));
    assert!(!uses_envelope(&[0, 1, 2, 0, 0, 0, 0]));
    for body in [[0u8, 0, 2, 4, 5, 6, 7], [0, 0, 1, 4, 5, 6, 7], [0, 0, 0, 0, 0, 0, 0]] {
        let mut tx: Sender = Sender::default();
        tx.send(0, k, 0x77, &body).unwrap();
        let frames = drain_tx(&mut tx);
        assert_eq!(frames.len(), if body[2] >= 2 { 2 } else { 1 });
        let mut rx: Receiver = Receiver::default();
        for f in &frames {
            rx.handle_frame(Instant::ZERO, &Frame::Can(*f));
        }
        assert_eq!(drain(&mut rx), [Ev::Msg(k, 0x77, body.to_vec())]);
    }
}

#[test]
fn largest_body_takes_255_frames() {
    let k = key(Direction::FromDevice, 255, 1023);
    let body: Vec<u8> = (0..MAX_BODY).map(|i| (i * 7) as u8).collect();
    let mut tx: Sender<1, 1> = Sender::default();
    assert_eq!(tx.send(0, k, 1, &[0; MAX_BODY + 1]), Err(SendError::BodyTooLong));
    assert_eq!(tx.send(4, k, 1, &[]), Err(SendError::PriorityOutOfRange));
    tx.send(3, k, 1, &body).unwrap();
    let frames = drain_tx(&mut tx);
    assert_eq!(frames.len(), 255);
    assert_eq!(frames[0].data()[3], 255);
    assert_eq!(frames[254].data().len(), 8);
    let mut rx: Receiver<1, 1> = Receiver::default();
    for f in &frames {
        rx.handle_frame(Instant::ZERO, &Frame::Can(*f));
    }
    assert_eq!(drain(&mut rx), [Ev::Msg(k, 1, body)]);
}

/// The frames of one 20-byte envelope (N = 4) on `k`, first seq `s0`.
fn envelope20(k: Key, s0: u8) -> Vec<Frame> {
    let body: Vec<u8> = (100..120).collect();
    let crc = envelope_crc(DEFAULT_CRC, 0x33, &body);
    (0..frame_count(&body))
        .map(|i| {
            let mut d = [0; 8];
            let n = encode_frame(0x33, &body, crc, i, &mut d).unwrap();
            xframe(0, k, (s0 + i as u8) % 128, i > 0, &d[..n])
        })
        .collect()
}

fn errors(evs: &[Ev]) -> Vec<RxError> {
    evs.iter()
        .filter_map(|e| match e {
            Ev::Err(e) => Some(e.reason),
            Ev::Msg(..) => None,
        })
        .collect()
}

#[test]
fn receiver_rules_each_reported_with_key() {
    let k = key(Direction::FromDevice, 9, 99);
    let t0 = Instant::ZERO;
    let good = envelope20(k, 10);

    // Bad sequence: skip frame 1.
    let mut rx: Receiver = Receiver::default();
    rx.handle_frame(t0, &good[0]);
    rx.handle_frame(t0, &good[2]);
    let ev = drain(&mut rx);
    assert_eq!(
        ev,
        [Ev::Err(ErrorEvent { key: k, msg_id: Some(0x33), reason: RxError::BadSequence { expected: 11, got: 12 } })]
    );
    assert_eq!(rx.open_envelopes(), 0);

    // Frame count mismatch: a short frame before the declared last one.
    let mut rx: Receiver = Receiver::default();
    rx.handle_frame(t0, &good[0]);
    rx.handle_frame(t0, &xframe(0, k, 11, true, &[1, 2, 3]));
    assert_eq!(errors(&drain(&mut rx)), [RxError::FrameCountMismatch { declared: 4, received: 2 }]);

    // Bad tail PID: corrupt the PID byte in the last frame (20 + 8 = 28
    // bytes: frames 8+8+8+4, the last frame is exactly PID + CRC).
    let mut rx: Receiver = Receiver::default();
    let mut last = good[3].data().to_vec();
    assert_eq!(last.len(), 4);
    last[0] = 2;
    for f in &good[..3] {
        rx.handle_frame(t0, f);
    }
    rx.handle_frame(t0, &xframe(0, k, 13, true, &last));
    assert_eq!(errors(&drain(&mut rx)), [RxError::BadTailPid { pid: 2 }]);

    // CRC mismatch: corrupt a body byte.
    let mut rx: Receiver = Receiver::default();
    let mut mid = good[1].data().to_vec();
    mid[0] ^= 0xFF;
    rx.handle_frame(t0, &good[0]);
    rx.handle_frame(t0, &xframe(0, k, 11, true, &mid));
    rx.handle_frame(t0, &good[2]);
    rx.handle_frame(t0, &good[3]);
    assert!(matches!(errors(&drain(&mut rx))[..], [RxError::CrcMismatch { .. }]));

    // New head discards the open envelope, then completes itself.
    let mut rx: Receiver = Receiver::default();
    rx.handle_frame(t0, &good[0]);
    rx.handle_frame(t0, &good[1]);
    for f in &envelope20(k, 50) {
        rx.handle_frame(t0, f);
    }
    let ev = drain(&mut rx);
    assert_eq!(ev[0], Ev::Err(ErrorEvent { key: k, msg_id: Some(0x33), reason: RxError::Superseded }));
    assert!(matches!(&ev[1], Ev::Msg(kk, 0x33, b) if *kk == k && b.len() == 20));

    // Timeout: default 1 s after the last frame.
    let mut rx: Receiver = Receiver::default();
    rx.handle_frame(t0, &good[0]);
    rx.handle_frame(Instant::from_millis(500), &good[1]);
    assert_eq!(rx.poll_timeout(), Some(Instant::from_millis(1500)));
    rx.handle_timeout(Instant::from_millis(1499));
    assert!(drain(&mut rx).is_empty());
    rx.handle_timeout(Instant::from_millis(1500));
    rx.handle_timeout(Instant::from_millis(1500));
    assert_eq!(errors(&drain(&mut rx)), [RxError::Timeout]);
    assert_eq!(rx.poll_timeout(), None);
    // A late frame after the deadline is stray, even without handle_timeout.
    let mut rx: Receiver = Receiver::default();
    rx.handle_frame(t0, &good[0]);
    rx.handle_frame(Instant::from_millis(2000), &good[1]);
    assert_eq!(errors(&drain(&mut rx)), [RxError::Timeout, RxError::Stray]);

    // Stray continue frame.
    let mut rx: Receiver = Receiver::default();
    rx.handle_frame(t0, &good[1]);
    assert_eq!(drain(&mut rx), [Ev::Err(ErrorEvent { key: k, msg_id: None, reason: RxError::Stray })]);

    // Truncated: N = 2 and a last frame of 3 bytes cannot hold the tail.
    let mut rx: Receiver = Receiver::default();
    rx.handle_frame(t0, &xframe(0, k, 0, false, &[1, 0, 0, 2, 1, 2, 3, 4]));
    rx.handle_frame(t0, &xframe(0, k, 1, true, &[1, 0, 0]));
    assert_eq!(errors(&drain(&mut rx)), [RxError::Truncated]);

    // Empty first frame, ignored frames.
    let mut rx: Receiver = Receiver::default();
    rx.handle_frame(t0, &xframe(0, k, 0, false, &[]));
    rx.handle_frame(t0, &Frame::Can(CanFrame::new(make_id(0x100, false).unwrap(), &[1]).unwrap()));
    rx.handle_frame(t0, &Frame::Can(CanFrame::new_remote(ext(0x100), 1).unwrap()));
    assert_eq!(errors(&drain(&mut rx)), [RxError::Empty]);
    assert_eq!(rx.stats().ignored, 2);
}

#[test]
fn slot_limit_refuses_and_reports() {
    let t0 = Instant::ZERO;
    let mut rx: Receiver<2, 8> = Receiver::default();
    let ks: Vec<Key> = (0..3).map(|d| key(Direction::ToDevice, d, 0)).collect();
    let envs: Vec<Vec<Frame>> = ks.iter().map(|k| envelope20(*k, 0)).collect();
    for e in &envs {
        rx.handle_frame(t0, &e[0]);
    }
    assert_eq!(rx.open_envelopes(), 2);
    assert_eq!(rx.stats().refused, 1);
    let ev = drain(&mut rx);
    assert_eq!(ev, [Ev::Err(ErrorEvent { key: ks[2], msg_id: Some(0x33), reason: RxError::NoFreeSlot })]);
    for e in &envs {
        for f in &e[1..] {
            rx.handle_frame(t0, f);
        }
    }
    let ev = drain(&mut rx);
    assert_eq!(ev.iter().filter(|e| matches!(e, Ev::Msg(..))).count(), 2);
    assert_eq!(errors(&ev), [RxError::Stray; 3]);
}

#[test]
fn max_open_refuses_heads_below_the_slot_count() {
    // Four slots, at most two open: the third head is refused and reported
    // like a missing slot; once one envelope completed, a head is accepted.
    let t0 = Instant::ZERO;
    let cfg = ReceiverConfig { max_open: 2, ..ReceiverConfig::default() };
    let mut rx: Receiver<4, 16> = Receiver::new(cfg);
    let ks: Vec<Key> = (0..4).map(|d| key(Direction::ToDevice, d, 0)).collect();
    let envs: Vec<Vec<Frame>> = ks.iter().map(|k| envelope20(*k, 0)).collect();
    for e in &envs[..3] {
        rx.handle_frame(t0, &e[0]);
    }
    assert_eq!((rx.open_envelopes(), rx.stats().refused), (2, 1));
    assert_eq!(drain(&mut rx), [Ev::Err(ErrorEvent { key: ks[2], msg_id: Some(0x33), reason: RxError::NoFreeSlot })]);
    for f in &envs[0][1..] {
        rx.handle_frame(t0, f);
    }
    assert_eq!(drain(&mut rx).iter().filter(|e| matches!(e, Ev::Msg(..))).count(), 1);
    rx.handle_frame(t0, &envs[3][0]);
    assert_eq!((rx.open_envelopes(), rx.stats().refused), (2, 1), "room again after a completion");
}

#[test]
fn completed_slot_is_held_until_polled() {
    // One slot: a complete envelope waits in the queue; a second head is
    // refused until the first message was polled.
    let t0 = Instant::ZERO;
    let k1 = key(Direction::ToDevice, 1, 0);
    let k2 = key(Direction::ToDevice, 2, 0);
    let mut rx: Receiver<1, 4> = Receiver::default();
    for f in &envelope20(k1, 0) {
        rx.handle_frame(t0, f);
    }
    rx.handle_frame(t0, &envelope20(k2, 0)[0]);
    assert_eq!(rx.stats().refused, 1);
    let first = drain(&mut rx);
    assert!(matches!(&first[0], Ev::Msg(k, ..) if *k == k1));
    for f in &envelope20(k2, 0) {
        rx.handle_frame(t0, f);
    }
    assert!(matches!(&drain(&mut rx)[..], [Ev::Msg(k, ..)] if *k == k2));
}

#[test]
fn event_queue_overflow_is_counted() {
    let k = key(Direction::ToDevice, 1, 0);
    let mut rx: Receiver<1, 2> = Receiver::default();
    for i in 0..5 {
        rx.handle_frame(Instant::ZERO, &xframe(0, k, i, false, &[i]));
    }
    assert_eq!(rx.stats().events_dropped, 3);
    assert_eq!(drain(&mut rx).len(), 2);
}

#[test]
fn direction_and_device_filter() {
    let cfg = ReceiverConfig { direction: Some(Direction::FromDevice), device: Some(4), ..ReceiverConfig::default() };
    let mut rx: Receiver = Receiver::new(cfg);
    rx.handle_frame(Instant::ZERO, &xframe(0, key(Direction::ToDevice, 4, 0), 0, false, &[1]));
    rx.handle_frame(Instant::ZERO, &xframe(0, key(Direction::FromDevice, 5, 0), 0, false, &[1]));
    rx.handle_frame(Instant::ZERO, &xframe(0, key(Direction::FromDevice, 4, 0), 0, false, &[1]));
    assert_eq!(drain(&mut rx).len(), 1);
    assert_eq!(rx.stats().ignored, 2);
}

#[test]
fn sender_interleaves_keys_by_priority_and_keeps_key_order() {
    let a = key(Direction::ToDevice, 1, 0);
    let b = key(Direction::ToDevice, 2, 0);
    let mut tx: Sender<4, 4> = Sender::default();
    tx.send(2, a, 1, &[0; 20]).unwrap();
    tx.send(2, a, 2, &[1]).unwrap();
    tx.send(2, b, 3, &[0; 20]).unwrap();
    tx.send(0, b, 4, &[2]).unwrap(); // behind b's first message despite priority
    assert_eq!(tx.send(0, b, 5, &[]), Err(SendError::QueueFull));
    let frames = drain_tx(&mut tx);
    let keys: Vec<u8> = frames.iter().map(|f| CanxId::from_id(f.id()).unwrap().key().device()).collect();
    // a and b alternate (round-robin at priority 2); b's priority-0 message
    // jumps ahead as soon as it is at the front of its key.
    assert_eq!(keys[..2], [1, 2]);
    let mut rx: Receiver = Receiver::default();
    for f in &frames {
        rx.handle_frame(Instant::ZERO, &Frame::Can(*f));
    }
    let ids: Vec<(u8, u8)> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Ev::Msg(k, m, _) => Some((k.device(), m)),
            Ev::Err(_) => None,
        })
        .collect();
    let a_ids: Vec<u8> = ids.iter().filter(|x| x.0 == 1).map(|x| x.1).collect();
    let b_ids: Vec<u8> = ids.iter().filter(|x| x.0 == 2).map(|x| x.1).collect();
    assert_eq!(a_ids, [1, 2]);
    assert_eq!(b_ids, [3, 4]);
    assert_eq!(tx.stats().sent, 4);
}

#[test]
fn key_table_evicts_idle_keys_only() {
    let mut tx: Sender<2, 1> = Sender::default();
    let a = key(Direction::ToDevice, 1, 0);
    let b = key(Direction::ToDevice, 2, 0);
    tx.send(0, a, 0, &[]).unwrap();
    assert_eq!(tx.send(0, b, 0, &[]), Err(SendError::KeyTableFull));
    drain_tx(&mut tx);
    assert_eq!(tx.next_seq(a), 1);
    tx.send(0, b, 0, &[]).unwrap();
    assert_eq!(tx.stats().keys_evicted, 1);
    assert_eq!(tx.next_seq(a), 0);
    assert_eq!(tx.stats().refused, 1);
}

#[test]
fn errors_display() {
    let k = key(Direction::FromDevice, 1, 2);
    let e = ErrorEvent { key: k, msg_id: Some(3), reason: RxError::CrcMismatch { received: 1, computed: 2 } };
    let s = std::format!("{e}");
    assert!(s.contains("from device 1 stream 2") && s.contains("CRC mismatch"), "{s}");
    assert_eq!(std::format!("{}", SendError::QueueFull), "CAN-X transmit queue full");
    let _: &dyn core::error::Error = &FieldError::StreamOutOfRange;
}

/// A tiny deterministic PRNG for simulations (xorshift64*).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Several senders' keys on one simulated bus: frames of different keys
/// arrive interleaved in random order (each key's own order kept, as on a
/// real bus), 3% of frames are lost and 2% arrive twice in a row (a
/// retransmission after an error in the ACK slot). CAN-X has no ACK, so the
/// properties are: every message whose frames all arrived once is delivered
/// exactly once, intact and in order; a lost single frame is not delivered
/// and a doubled one is delivered twice (CAN-X cannot tell, by design); an
/// envelope that lost or doubled a frame is delivered at most once and is
/// reported by at least one error event on its key (unless all its frames
/// were lost); nothing else is delivered.
#[test]
fn simulated_bus_with_loss_duplication_and_interleaving() {
    let (mut faulty_total, mut delivered_total) = (0, 0);
    for seed in 0..50u64 {
        let mut rng = Rng::new(seed);
        let keys: Vec<Key> = (0..5).map(|i| key(Direction::FromDevice, i, u16::from(i) * 100)).collect();
        let mut tx: Sender<6, 8> = Sender::default();
        let mut rx: Receiver<5, 64> = Receiver::default();
        // Per key and message: the body, and the fate of its frames.
        let mut sent: Vec<Vec<Vec<u8>>> = std::vec![Vec::new(); keys.len()];
        let mut fate: Vec<Vec<Fate>> = std::vec![Vec::new(); keys.len()];
        let mut lanes: Vec<std::collections::VecDeque<(usize, Frame)>> = std::vec![Default::default(); keys.len()];
        let mut now = Instant::ZERO;
        let mut delivered: Vec<Vec<(u8, Vec<u8>)>> = std::vec![Vec::new(); keys.len()];
        let mut errs = std::vec![0usize; keys.len()];
        let mut cursor = std::vec![(0usize, 0usize); keys.len()];
        let mut steps = 0;
        let mut msgs = 0;
        loop {
            steps += 1;
            assert!(steps < 100_000, "step cap");
            if msgs < 60 && rng.chance(30) {
                let ki = rng.below(keys.len() as u64) as usize;
                let len = match rng.below(4) {
                    0 => rng.below(8) as usize,
                    1 => 8 + rng.below(30) as usize,
                    2 => rng.below(300) as usize,
                    _ => rng.below(MAX_BODY as u64 + 1) as usize,
                };
                let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                // msg_id = index of the message on its key: identifies it.
                let msg_id = sent[ki].len() as u8;
                if tx.send(rng.below(4) as u8, keys[ki], msg_id, &body).is_ok() {
                    fate[ki].push(Fate { total: frame_count(&body), lost: 0, doubled: false });
                    sent[ki].push(body);
                    msgs += 1;
                }
            }
            for _ in 0..rng.below(4) {
                if let Some(f) = tx.poll_transmit(now) {
                    let ki = keys.iter().position(|k| *k == CanxId::from_id(f.id()).unwrap().key()).unwrap();
                    // Frames of a key leave in message order: attribute this
                    // one to the current message of its key.
                    let mi = cursor[ki].0;
                    cursor[ki].1 += 1;
                    if cursor[ki].1 == fate[ki][mi].total {
                        cursor[ki] = (mi + 1, 0);
                    }
                    lanes[ki].push_back((mi, Frame::Can(f)));
                }
            }
            // Deliver from a random non-empty lane.
            let busy: Vec<usize> = (0..keys.len()).filter(|&i| !lanes[i].is_empty()).collect();
            if !busy.is_empty() {
                let ki = busy[rng.below(busy.len() as u64) as usize];
                let (mi, f) = lanes[ki].pop_front().unwrap();
                if rng.chance(3) {
                    fate[ki][mi].lost += 1;
                } else {
                    rx.handle_frame(now, &f);
                    if rng.chance(2) {
                        fate[ki][mi].doubled = true;
                        rx.handle_frame(now, &f);
                    }
                }
            }
            now += crate::time::Duration::from_micros(rng.below(2000));
            if rx.poll_timeout().is_some_and(|t| t <= now) {
                rx.handle_timeout(now);
            }
            collect(&mut rx, &keys, &mut delivered, &mut errs);
            if msgs >= 60 && tx.is_idle() && lanes.iter().all(|l| l.is_empty()) {
                break;
            }
        }
        now += DEFAULT_REASSEMBLY_TIMEOUT;
        rx.handle_timeout(now);
        collect(&mut rx, &keys, &mut delivered, &mut errs);
        for ki in 0..keys.len() {
            let ids: Vec<u8> = delivered[ki].iter().map(|d| d.0).collect();
            assert!(ids.windows(2).all(|w| w[0] <= w[1]), "seed {seed} key {ki}: out of order {ids:?}");
            for (m, body) in &delivered[ki] {
                assert_eq!(&sent[ki][usize::from(*m)], body, "seed {seed} key {ki} msg {m}: corrupted");
            }
            let mut faulty_envelopes = 0;
            for (mi, f) in fate[ki].iter().enumerate() {
                let n = ids.iter().filter(|&&m| usize::from(m) == mi).count();
                let why = std::format!("seed {seed} key {ki} msg {mi} {f:?}: delivered {n}");
                match (f.total, f.lost, f.doubled) {
                    (_, 0, false) => assert_eq!(n, 1, "{why}"),
                    (1, 0, true) => assert_eq!(n, 2, "{why}"),
                    (1, _, _) => assert_eq!(n, 0, "{why}"),
                    (t, lost, _) => {
                        assert!(n <= 1, "{why}");
                        if lost < t {
                            faulty_envelopes += 1;
                        }
                    }
                }
            }
            assert!(errs[ki] >= faulty_envelopes, "seed {seed} key {ki}: {} errors < {faulty_envelopes}", errs[ki]);
            faulty_total += faulty_envelopes;
            delivered_total += delivered[ki].len();
        }
        assert!(rx.busy_slots() == 0);
    }
    assert!(faulty_total > 50 && delivered_total > 1000, "faulty {faulty_total}, delivered {delivered_total}");
}

#[derive(Clone, Copy, Debug)]
struct Fate {
    total: usize,
    lost: usize,
    doubled: bool,
}

fn collect<const S: usize, const E: usize>(
    rx: &mut Receiver<S, E>,
    keys: &[Key],
    delivered: &mut [Vec<(u8, Vec<u8>)>],
    errs: &mut [usize],
) {
    for e in drain(rx) {
        match e {
            Ev::Msg(k, m, b) => delivered[keys.iter().position(|x| *x == k).unwrap()].push((m, b)),
            Ev::Err(e) => errs[keys.iter().position(|x| *x == e.key).unwrap()] += 1,
        }
    }
}

/// Encodes frames in the input format of [`drive_receiver`] (keys with
/// device and stream ids 0..=3 only).
fn fuzz_encode(frames: &[Frame], out: &mut Vec<u8>) {
    for f in frames {
        let Frame::Can(c) = f else { continue };
        let id = CanxId::from_id(c.id()).unwrap();
        let k = id.key();
        let d = c.data();
        out.push(d.len() as u8 | (u8::from(id.cont()) << 6));
        out.push(id.seq() | (u8::from(k.direction() == Direction::FromDevice) << 7));
        out.push((k.device() & 3) | ((k.stream() as u8 & 3) << 2) | (id.priority() << 4));
        out.extend_from_slice(d);
    }
}

#[test]
fn fuzz_entry_point_delivers_sender_output() {
    let k = key(Direction::FromDevice, 2, 3);
    let mut tx: Sender = Sender::default();
    tx.send(1, k, 9, &[5; 100]).unwrap();
    tx.send(1, k, 9, &[5; 3]).unwrap();
    let frames: Vec<Frame> = drain_tx(&mut tx).into_iter().map(Frame::Can).collect();
    let mut input = Vec::new();
    fuzz_encode(&frames, &mut input);
    assert_eq!(drive_receiver(&input), 2);
    assert_eq!(drive_receiver(&[]), 0);
    assert_eq!(drive_receiver(&[0x0F]), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_body_round_trips(
        body in proptest::collection::vec(any::<u8>(), 0..=MAX_BODY),
        msg_id in any::<u8>(),
        priority in 0u8..=3,
        dir in any::<bool>(),
        device in any::<u8>(),
        stream in 0u16..=MAX_STREAM,
        skip in 0u8..128,
    ) {
        let k = key(if dir { Direction::FromDevice } else { Direction::ToDevice }, device, stream);
        let mut tx: Sender<2, 2> = Sender::default();
        // Start at an arbitrary sequence number.
        for _ in 0..skip {
            tx.send(0, k, 0, &[]).unwrap();
            drain_tx(&mut tx);
        }
        tx.send(priority, k, msg_id, &body).unwrap();
        let frames = drain_tx(&mut tx);
        prop_assert_eq!(frames.len(), frame_count(&body));
        prop_assert!(frames.len() <= MAX_FRAMES);
        let mut rx: Receiver<1, 2> = Receiver::default();
        for f in &frames {
            prop_assert!(f.is_extended());
            rx.handle_frame(Instant::ZERO, &Frame::Can(*f));
        }
        let evs = drain(&mut rx);
        prop_assert_eq!(evs, std::vec![Ev::Msg(k, msg_id, body)]);
    }

    #[test]
    fn id_codec_round_trips(raw in 0u32..=0x1FFF_FFFF) {
        let id = CanxId::from_raw(raw);
        prop_assert_eq!(id.to_raw(), raw);
        prop_assert_eq!(CanxId::new(id.priority(), id.key(), id.seq(), id.cont()), Ok(id));
    }

    #[test]
    fn random_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        drive_receiver(&input);
    }

    /// Real sender output with frames dropped, duplicated, swapped and
    /// corrupted, and clock jumps, fed to the fuzz entry point.
    #[test]
    fn mutated_sender_output_never_panics(
        bodies in proptest::collection::vec((0u8..16, proptest::collection::vec(any::<u8>(), 0..120)), 1..6),
        mutations in proptest::collection::vec((any::<u16>(), 0u8..5, any::<u8>()), 0..12),
    ) {
        let mut tx: Sender<1, 8> = Sender::default();
        let mut frames: Vec<Frame> = Vec::new();
        for (sel, body) in &bodies {
            let k = key(if sel & 1 == 1 { Direction::FromDevice } else { Direction::ToDevice }, (sel >> 1) & 3, u16::from(sel >> 3));
            tx.send(0, k, *sel, body).unwrap();
            frames.extend(drain_tx(&mut tx).into_iter().map(Frame::Can));
        }
        let mut input = Vec::new();
        fuzz_encode(&frames, &mut input);
        let intact = drive_receiver(&input);
        prop_assert_eq!(intact, bodies.len());
        for (at, what, byte) in mutations {
            if frames.is_empty() { break; }
            let i = usize::from(at) % frames.len();
            match what {
                0 => { frames.remove(i); }
                1 => { let f = frames[i]; frames.insert(i, f); }
                2 => { let j = (i + 1) % frames.len(); frames.swap(i, j); }
                3 => {
                    let Frame::Can(c) = frames[i] else { continue };
                    let mut d = c.data().to_vec();
                    if !d.is_empty() { let n = d.len(); d[usize::from(byte) % n] ^= byte | 1; }
                    frames[i] = Frame::Can(CanFrame::new(c.id(), &d).unwrap());
                }
                _ => {
                    let Frame::Can(c) = frames[i] else { continue };
                    let d = c.data();
                    frames[i] = Frame::Can(CanFrame::new(c.id(), &d[..usize::from(byte) % (d.len() + 1)]).unwrap());
                }
            }
        }
        let mut input = Vec::new();
        fuzz_encode(&frames, &mut input);
        input.insert(input.len() / 2, 0x80 | 120); // 1.2 s pause mid-stream
        drive_receiver(&input);
    }
}

#[test]
fn endpoints_talk_to_each_other() {
    let dev = key(Direction::FromDevice, 42, 7);
    let mut a: Endpoint = Endpoint::default();
    let mut b: Endpoint = Endpoint::default();
    a.send(0, dev, 1, &[7; 300]).unwrap();
    a.send(0, dev, 2, b"hi").unwrap();
    while let Some(f) = a.poll_transmit(Instant::ZERO) {
        b.handle_frame(Instant::ZERO, &Frame::Can(f));
    }
    assert_eq!(b.poll_timeout(), None);
    b.handle_timeout(Instant::ZERO);
    let mut got = Vec::new();
    while let Some(Event::Message(m)) = b.poll_event() {
        got.push((m.msg_id, m.body.len()));
    }
    assert_eq!(got, [(1, 300), (2, 2)]);
    assert_eq!(a.stats().0.sent, 2);
    assert_eq!(b.stats().1.delivered, 2);
}
