//! An entry point for fuzzers (`fuzz/fuzz_targets/canx_proto_receiver.rs`)
//! and for the property tests that exercise the same logic on stable Rust.

use super::{Event, Receiver, MAX_BODY};
use crate::frame::{make_id, CanFrame, Frame};
use crate::time::{Duration, Instant};

/// Slots of the receiver driven by [`drive_receiver`].
pub const FUZZ_SLOTS: usize = 3;

/// Feeds a [`Receiver`] with 3 slots and 8 events the operations encoded in
/// `input`, and checks its invariants after each one, panicking if one
/// breaks (that is the finding a fuzzer reports). Returns the number of
/// messages delivered.
///
/// Encoding, repeated until the input ends:
/// - `op` with bit 7 set: advance the clock by `(op & 0x7F) * 10` ms, then
///   `handle_timeout`.
/// - otherwise a frame: `op` bits 0..=3 data length (clamped to 8), bit 4
///   standard identifier, bit 5 remote, bit 6 continue; then `b1` (bits
///   0..=6 sequence number, bit 7 direction), `b2` (bits 0..=1 device id,
///   bits 2..=3 stream id, bits 4..=5 priority, bit 6 an FD frame instead),
///   then the data bytes. A truncated operation ends the input.
///
/// Invariants: no panic; open envelopes and busy slots never exceed the
/// slot count; no delivered body is longer than 2032 bytes; a poll that
/// returned `None` stays `None` until new input.
pub fn drive_receiver(input: &[u8]) -> usize {
    let mut rx: Receiver<FUZZ_SLOTS, 8> = Receiver::default();
    let mut now = Instant::ZERO;
    let mut delivered = 0;
    let mut rest = input;
    while let [op, tail @ ..] = rest {
        rest = tail;
        if op & 0x80 != 0 {
            now += Duration::from_millis(u64::from(op & 0x7F) * 10);
            rx.handle_timeout(now);
        } else {
            let [b1, b2, tail @ ..] = rest else { break };
            let len = usize::from(op & 0x0F).min(8);
            if tail.len() < len {
                break;
            }
            let (data, tail) = tail.split_at(len);
            rest = tail;
            let raw = (u32::from((b2 >> 4) & 3) << 27)
                | (u32::from(b1 >> 7) << 26)
                | (u32::from(b2 & 3) << 18)
                | (u32::from((b2 >> 2) & 3) << 8)
                | (u32::from(b1 & 0x7F) << 1)
                | u32::from((op >> 6) & 1);
            let standard = op & 0x10 != 0;
            let Ok(id) = make_id(if standard { raw & 0x7FF } else { raw }, !standard) else { continue };
            let frame = if b2 & 0x40 != 0 {
                match crate::frame::FdFrame::new(id, data, false, false) {
                    Ok(f) => Frame::Fd(f),
                    Err(_) => continue,
                }
            } else if op & 0x20 != 0 {
                match CanFrame::new_remote(id, len) {
                    Ok(f) => Frame::Can(f),
                    Err(_) => continue,
                }
            } else {
                match CanFrame::new(id, data) {
                    Ok(f) => Frame::Can(f),
                    Err(_) => continue,
                }
            };
            rx.handle_frame(now, &frame);
        }
        assert!(rx.open_envelopes() <= FUZZ_SLOTS);
        assert!(rx.busy_slots() <= FUZZ_SLOTS);
        while let Some(ev) = rx.poll_event() {
            if let Event::Message(m) = ev {
                assert!(m.body.len() <= MAX_BODY);
                delivered += 1;
            }
        }
        assert!(rx.poll_event().is_none());
        if let Some(t) = rx.poll_timeout() {
            assert!(t > now, "a deadline at or before now survived handle_*");
        }
    }
    // Every started message ends: after silence, stepping from deadline to
    // deadline closes every envelope and frees every slot.
    for _ in 0..100 {
        let Some(t) = rx.poll_timeout() else { break };
        now = t.max(now);
        rx.handle_timeout(now);
        while rx.poll_event().is_some() {}
    }
    assert_eq!(rx.poll_timeout(), None, "a deadline is left after silence");
    assert_eq!(rx.open_envelopes(), 0, "an envelope never ended");
    assert_eq!(rx.busy_slots(), 0, "a slot never freed");
    delivered
}
