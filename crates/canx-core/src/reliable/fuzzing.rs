//! An entry point for fuzzers (`fuzz/fuzz_targets/reliable_receiver.rs`)
//! and for the property tests that exercise the same logic on stable Rust.

use super::{
    AckMapping, CompatEvent, CompatListener, CompatSender, ReliableEvent, ReliableReceiver, ReliableReceiverConfig,
    ReliableSender, ReliableSenderConfig,
};
use crate::filter::Filter;
use crate::frame::{make_id, CanFrame, Frame};
use crate::time::{Duration, Instant};

/// Feeds the operations encoded in `input` to all four reliable-delivery
/// engines at once (a compat listener and sender, a general receiver with 2
/// peers and 2-entry queues, a general sender with 2 slots) and checks their
/// invariants, panicking if one breaks. Returns the number of messages the
/// two receivers delivered.
///
/// Encoding, repeated until the input ends:
/// - `op` with bit 7 set: advance the clock by `(op & 0x7F) * 10` ms, then
///   `handle_timeout` everywhere.
/// - otherwise a frame: `op` bits 0..=3 length (clamped to 8), bit 4 remote,
///   bit 5 an extended id instead; then `b`: bits 6..=7 pick the id among
///   0x408, 0x409, 0x100 + (b & 0xF) (general data) and 0x300 + (b & 0xF)
///   (general ACK, mapping `Offset(0x200)`); then the data bytes.
///
/// Every 8th operation the senders are asked to send a new message (refusals
/// are fine). Invariants: no panic; each sender handle gets at most one
/// outcome; queues stay within their capacities; the general receiver
/// remembers at most 2 peers.
pub fn drive_engines(input: &[u8]) -> usize {
    let mut now = Instant::ZERO;
    let mut listener: CompatListener<2, 2> = CompatListener::default();
    let mut csender = CompatSender::default();
    let accept = Filter::canio_match(0x100, Some(0x700), false).unwrap_or(Filter::ACCEPT_ALL);
    let mut rx: ReliableReceiver<2, 2, 2> =
        ReliableReceiver::new(ReliableReceiverConfig { accept, ack: AckMapping::Offset(0x200) });
    let mut tx: ReliableSender<2, 4> =
        ReliableSender::new(ReliableSenderConfig { ack: AckMapping::Offset(0x200), ..Default::default() });
    let mut outcomes = [0u8; 64];
    let mut delivered = 0;
    let mut rest = input;
    let mut ops = 0u32;
    let mut sends = 0u32;
    let mut ends = 0u32;
    while let [op, tail @ ..] = rest {
        rest = tail;
        ops += 1;
        if ops % 8 == 0 {
            let _ = csender.send(now);
            if let Ok(id) = make_id(0x100 + (ops / 8) % 4, false) {
                if tx.send(id, &ops.to_le_bytes()).is_ok() {
                    sends += 1;
                }
            }
        }
        if op & 0x80 != 0 {
            now += Duration::from_millis(u64::from(op & 0x7F) * 10);
            csender.handle_timeout(now);
            tx.handle_timeout(now);
            listener.handle_timeout(now);
            rx.handle_timeout(now);
        } else {
            let [b, tail @ ..] = rest else { break };
            let len = usize::from(op & 0x0F).min(8);
            if tail.len() < len {
                break;
            }
            let (data, tail) = tail.split_at(len);
            rest = tail;
            let low = u32::from(b & 0x0F);
            let raw = match b >> 6 {
                0 => 0x408,
                1 => 0x409,
                2 => 0x100 + low,
                _ => 0x300 + low,
            };
            let Ok(id) = make_id(raw, op & 0x20 != 0) else { continue };
            let f = if op & 0x10 != 0 { CanFrame::new_remote(id, len) } else { CanFrame::new(id, data) };
            let Ok(f) = f else { continue };
            let frame = Frame::Can(f);
            listener.handle_frame(now, &frame);
            csender.handle_frame(now, &frame);
            rx.handle_frame(now, &frame);
            tx.handle_frame(now, &frame);
        }
        let mut n = 0;
        while listener.poll_transmit(now).is_some() {
            n += 1;
        }
        assert!(n <= 2, "compat ACK queue over capacity");
        n = 0;
        while rx.poll_transmit(now).is_some() {
            n += 1;
        }
        assert!(n <= 2, "general ACK queue over capacity");
        n = 0;
        while tx.poll_transmit(now).is_some() {
            n += 1;
        }
        assert!(n <= 2, "more transmissions than slots");
        while csender.poll_transmit(now).is_some() {}
        n = 0;
        while let Some(e) = listener.poll_event() {
            n += 1;
            delivered += usize::from(matches!(e, CompatEvent::Received { .. }));
        }
        assert!(n <= 2, "compat event queue over capacity");
        n = 0;
        while let Some(e) = rx.poll_event() {
            n += 1;
            delivered += usize::from(matches!(e, ReliableEvent::Message { .. }));
        }
        assert!(n <= 2, "general event queue over capacity");
        while let Some(e) = tx.poll_event() {
            if let ReliableEvent::Delivered { handle, .. } | ReliableEvent::Failed { handle, .. } = e {
                let slot = &mut outcomes[(handle.0 % 64) as usize];
                if handle.0 < 64 {
                    assert_eq!(*slot, 0, "two outcomes for one handle");
                }
                *slot = 1;
                ends += 1;
            }
        }
        while csender.poll_event().is_some() {}
        assert!(rx.peers() <= 2);
        if let Some(t) = tx.poll_timeout() {
            assert!(t > now || tx.in_flight() > 0);
        }
    }
    // Every accepted send ends: with the bus silent, stepping from deadline
    // to deadline (retries, then failure) gives each one its outcome.
    while tx.poll_transmit(now).is_some() {}
    for _ in 0..1000 {
        let Some(t) = tx.poll_timeout() else { break };
        now = t.max(now);
        tx.handle_timeout(now);
        while tx.poll_transmit(now).is_some() {}
        while let Some(e) = tx.poll_event() {
            if let ReliableEvent::Delivered { .. } | ReliableEvent::Failed { .. } = e {
                ends += 1;
            }
        }
    }
    assert_eq!(tx.in_flight(), 0, "a send never ended");
    assert_eq!(ends, sends, "accepted sends and outcomes differ");
    delivered
}
