//! An entry point for fuzzers (`fuzz/fuzz_targets/isotp_channel.rs`) and
//! for the property test that exercises the same logic on stable Rust.

use super::{Address, Channel, Config, Event, TargetAddressType};
use crate::frame::{fd_padded_len, CanFrame, FdFrame, Frame, Id};
use crate::time::{Duration, Instant};

/// Receive buffer of the channel driven by [`drive_channel`].
pub const FUZZ_RX: usize = 300;
/// Transmit buffer of the channel driven by [`drive_channel`].
pub const FUZZ_TX: usize = 300;

fn address(sel: u8) -> Address {
    let r = match sel % 7 {
        0 => Address::normal_11(0x7E0, 0x7E8).and_then(|a| a.with_functional_rxid(0x7DF)),
        1 => Address::normal_29(0x100, 0x200),
        2 => Ok(Address::normal_fixed_29(0x10, 0xF1)),
        3 => Address::extended_11(0x600, 0x601, 0x10, 0x20),
        4 => Address::extended_29(0x600, 0x600, 0x10, 0x20),
        5 => Address::mixed_11(0x700, 0x701, 0x33),
        _ => Ok(Address::mixed_29(0x10, 0xF1, 0x33)),
    };
    r.unwrap_or(Address::normal_fixed_29(1, 2))
}

/// Drives one [`Channel`] (300-byte buffers) with the operations encoded in
/// `input` and checks its invariants after each, panicking if one breaks
/// (the finding a fuzzer reports). Returns the number of messages received.
///
/// Encoding: byte 0 chooses the addressing (bits 0..=2, mod 7), FD with
/// TX_DL 64 (bit 3), padding 0xCC (bit 4), half duplex (bit 5), N_WFTmax 2
/// (bit 6) and receive padding checks (bit 7); byte 1 is BS (bits 0..=6)
/// and transmit confirmations (bit 7), byte 2 STmin.
/// Then, repeated until the input ends:
/// - `op` 0xC0..=0xFF: advance the clock by `(op & 0x3F) * 5` ms, `handle_timeout`.
/// - `op` 0x80..=0x9F: `send` of `1 + b1 * 2` bytes (bit 0 functional); `b1` follows.
/// - `op` 0xA0..=0xBF: `on_tx_confirm` of the last frame sent (bit 0: of the one before).
/// - `op` 0x00..=0x7F: a frame: length `op & 0x3F` (FD lengths rounded up,
///   classic above 8 becomes FD), bit 6 the functional identifier, then
///   that many data bytes. The identifier is the channel's own receive
///   identifier, so the bytes reach the parser.
///
/// After each operation every frame is taken (`poll_transmit`) and every
/// event (`poll_event`). Invariants: no panic; frames fit TX_DL; a received
/// message fits the buffer; after that, no deadline is at or before now.
pub fn drive_channel(input: &[u8]) -> usize {
    let [cfg0, bs, stmin, tail @ ..] = input else { return 0 };
    let mut rest: &[u8] = tail;
    let address = address(*cfg0);
    let fd = cfg0 & 0x08 != 0;
    let config = Config {
        fd,
        tx_dl: if fd { 64 } else { 8 },
        padding: (cfg0 & 0x10 != 0).then_some(0xCC),
        half_duplex: cfg0 & 0x20 != 0,
        wft_max: if cfg0 & 0x40 != 0 { 2 } else { 0 },
        rx_check_padding_len: cfg0 & 0x80 != 0,
        rx_padding_byte: (cfg0 & 0x80 != 0).then_some(0xCC),
        bs: bs & 0x7F,
        tx_confirm: bs & 0x80 != 0,
        stmin: *stmin,
        n_bs: Duration::from_millis(100),
        n_cr: Duration::from_millis(100),
        ..Config::new(address)
    };
    let mut rx = [0u8; FUZZ_RX];
    let mut tx = [0u8; FUZZ_TX];
    let Ok(mut ch) = Channel::new(config, &mut rx[..], &mut tx[..]) else { return 0 };
    let rx_id: Id = address.rx_id();
    let func_id: Id = address.rx_functional_id().unwrap_or(rx_id);
    let mut now = Instant::ZERO;
    let mut received = 0;
    let msg = [0x5Au8; FUZZ_TX];
    let mut sent: [Option<Frame>; 2] = [None, None];
    let mut sends = 0u32;
    let mut send_ends = 0u32;
    while let [op, tail @ ..] = rest {
        rest = tail;
        match op {
            0xC0..=0xFF => {
                now += Duration::from_millis(u64::from(op & 0x3F) * 5);
                ch.handle_timeout(now);
            }
            0xA0..=0xBF => {
                if let Some(f) = sent[usize::from(op & 1)] {
                    ch.on_tx_confirm(now, &f);
                }
            }
            0x80..=0x9F => {
                let [b1, tail @ ..] = rest else { break };
                rest = tail;
                let len = (1 + usize::from(*b1) * 2).min(FUZZ_TX);
                let ta = if op & 1 != 0 { TargetAddressType::Functional } else { TargetAddressType::Physical };
                if ch.send(now, &msg[..len], ta).is_ok() {
                    sends += 1;
                }
            }
            _ => {
                let want = usize::from(op & 0x3F);
                let len = fd_padded_len(want).unwrap_or(64);
                let Some(data) = rest.get(..want) else { break };
                rest = &rest[want..];
                let mut buf = [0xCCu8; 64];
                buf[..want].copy_from_slice(data);
                let id = if op & 0x40 != 0 { func_id } else { rx_id };
                let frame = if len > 8 {
                    match FdFrame::new(id, &buf[..len], false, false) {
                        Ok(f) => Frame::Fd(f),
                        Err(_) => continue,
                    }
                } else {
                    match CanFrame::new(id, &buf[..len]) {
                        Ok(f) => Frame::Can(f),
                        Err(_) => continue,
                    }
                };
                ch.handle_frame(now, &frame);
            }
        }
        while let Some(f) = ch.poll_transmit(now) {
            sent = [Some(f), sent[0]];
            assert!(f.data().len() <= usize::from(config.tx_dl).max(8), "frame above TX_DL");
            assert!(matches!(f, Frame::Fd(_)) == fd, "frame type follows the configuration");
        }
        drain_events(&mut ch, &mut received, &mut send_ends);
        if let Some(t) = ch.poll_timeout() {
            assert!(t > now, "a deadline at or before now survived handle_* and poll_transmit");
        }
        assert!(send_ends <= sends, "more send results than sends");
    }
    // Everything started ends: with the peer silent (and every frame
    // confirmed), stepping from deadline to deadline ends every send and
    // reception, and no deadline is left.
    while let Some(f) = ch.poll_transmit(now) {
        ch.on_tx_confirm(now, &f);
    }
    drain_events(&mut ch, &mut received, &mut send_ends);
    for _ in 0..1000 {
        let Some(t) = ch.poll_timeout() else { break };
        now = t.max(now);
        ch.handle_timeout(now);
        while let Some(f) = ch.poll_transmit(now) {
            ch.on_tx_confirm(now, &f);
        }
        drain_events(&mut ch, &mut received, &mut send_ends);
    }
    assert_eq!(ch.poll_timeout(), None, "a deadline is left with the peer silent");
    assert!(!ch.transmitting() && !ch.receiving(), "a transfer never ended");
    assert_eq!(send_ends, sends, "a send never ended in SendComplete or TxError");
    received
}

fn drain_events(ch: &mut Channel<'_>, received: &mut usize, send_ends: &mut u32) {
    while let Some(ev) = ch.poll_event() {
        match ev {
            Event::Received(d, _) => {
                assert!(!d.is_empty() && d.len() <= FUZZ_RX);
                *received += 1;
            }
            Event::SendComplete | Event::TxError(_) => *send_ends += 1,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_hand_written_input_receives() {
        // normal 11-bit, classic: an SF "3E 00", then an FF of 10 bytes and its CF
        let input = [0x00, 0, 0, 3, 0x02, 0x3E, 0x00, 8, 0x10, 10, 1, 2, 3, 4, 5, 6, 5, 0x21, 7, 8, 9, 10];
        assert_eq!(drive_channel(&input), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn random_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..400)) {
            drive_channel(&input);
        }

        /// Inputs made of plausible frames (valid N_PCI types) reach deeper states.
        #[test]
        fn plausible_frames_never_panic(cfg in any::<[u8; 3]>(), ops in proptest::collection::vec((0u8..6, any::<u8>(), any::<u8>(), any::<u8>()), 0..120)) {
            let mut input = cfg.to_vec();
            for (kind, a, b, c) in ops {
                match kind {
                    0 => input.extend_from_slice(&[8, 0x10 | (a & 1), b, 1, 2, 3, 4, 5, 6]),
                    1 => input.extend_from_slice(&[8, 0x20 | (a & 0x0F), b, c, 4, 5, 6, 7, 8]),
                    2 => input.extend_from_slice(&[3, 0x30 | (a & 3), b, c]),
                    3 => input.extend_from_slice(&[0x80 | (a & 1), b]),
                    4 => input.push(0xA0 | (a & 1)),
                    _ => input.push(0xC0 | (a & 0x3F)),
                }
            }
            drive_channel(&input);
        }
    }
}
