//! Entry points of the cargo-fuzz targets `j1939_transport` and
//! `j1939_address_claim` (in `fuzz/` at the repository root), also run by
//! proptest. Each turns arbitrary bytes into a sequence of frames, clock
//! steps and API calls, drives an engine, and asserts its invariants: no
//! panic, no slot beyond capacity, no deadline in the past after a
//! `handle_timeout`, received data within bounds.

use super::address_claim::{AddressClaimer, ClaimConfig};
use super::etp::{Etp, EtpConfig};
use super::id::{J1939Id, Pgn};
use super::name::Name;
use super::transport::{Transport, TransportConfig, TransportEvent, MAX_TP_SIZE};
use crate::frame::{CanFrame, Frame};
use crate::time::{Duration, Instant};

/// A byte cursor that yields zeros when exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// Builds a frame from the input: a TP.CM, TP.DT or other PGN between
/// addresses drawn from a small set (so sessions actually match).
fn frame_from(inp: &mut Input<'_>, pgns: &[Pgn]) -> Option<Frame> {
    const ADDRS: [u8; 6] = [0x10, 0x20, 0x30, 0xFF, 0xFE, 0x00];
    let sel = inp.byte()?;
    let sa = ADDRS[usize::from(sel & 7) % ADDRS.len()];
    let da = ADDRS[usize::from((sel >> 3) & 7) % ADDRS.len()];
    let pgn = pgns[usize::from(sel >> 6) % pgns.len()];
    let len = usize::from(inp.byte()? % 10);
    let id = J1939Id::new(inp.byte()? & 7, pgn, sa, da).ok()?;
    let data = inp.take(len.min(8));
    CanFrame::new(id.to_id(), data).ok().map(Frame::Can)
}

fn step_transport<const S: usize, const Q: usize>(e: &mut Transport<S, Q>, now: Instant) {
    e.handle_timeout(now);
    let mut guard = 0;
    while e.poll_transmit(now).is_some() {
        guard += 1;
        assert!(guard <= 4 * 256 * S + 64, "poll_transmit never ends");
    }
    while let Some(ev) = e.poll_event() {
        if let TransportEvent::Received(r) = ev {
            let d = e.received_data(r.handle).expect("data readable until next poll_event");
            assert_eq!(d.len(), r.len as usize);
            assert!(d.len() <= MAX_TP_SIZE);
        }
    }
    assert!(e.sessions_in_use() <= S);
}

fn step_etp<const S: usize, const Q: usize>(e: &mut Etp<'_, S, Q>, now: Instant) {
    e.handle_timeout(now);
    let mut guard = 0;
    while e.poll_transmit(now).is_some() {
        guard += 1;
        assert!(guard <= 2 * 256 * S + 64, "poll_transmit never ends");
    }
    while let Some(ev) = e.poll_event() {
        if let TransportEvent::Received(r) = ev {
            let d = e.received_data(r.handle).expect("data readable until next poll_event");
            assert_eq!(d.len(), r.len as usize);
        }
    }
    assert!(e.sessions_in_use() <= S);
}

/// Fuzz body of the TP and ETP engines (both see the same frames).
pub fn transport(data: &[u8]) {
    let mut etp_bufs = [[0u8; 2600]; 2];
    let [b0, b1] = &mut etp_bufs;
    let mut etp = Etp::<2, 4>::new(
        EtpConfig { priority: 7, packets_per_cts: 4, ..EtpConfig::default() },
        [&mut b0[..], &mut b1[..]],
    );
    etp.set_local_address(0x10, true);
    etp.set_local_address(0x20, true);
    let _ = etp.send(6, Pgn::DM1, 0x20, 0x30, &[0x5A; 2000]);
    let mut inp = Input(data);
    let mut e = match Transport::<4, 8>::new(TransportConfig {
        packets_per_cts: 1 + (inp.byte().unwrap_or(0) % 8),
        ..TransportConfig::default()
    }) {
        Ok(e) => e,
        Err(_) => return,
    };
    e.set_local_address(0x10, true);
    e.set_local_address(0x20, true);
    let mut now = Instant::ZERO;
    let pgns = [Pgn::TP_CM, Pgn::TP_DT, Pgn::ETP_CM, Pgn::ETP_DT];
    while let Some(op) = inp.byte() {
        match op % 4 {
            0 | 1 => {
                if let Some(f) = frame_from(&mut inp, &pgns) {
                    e.handle_frame(now, &f);
                    etp.handle_frame(now, &f);
                }
            }
            2 => now += Duration::from_millis(u64::from(inp.byte().unwrap_or(0)) * 10),
            _ => {
                let n = usize::from(inp.byte().unwrap_or(0)) * 7 + 2;
                let to = if op & 0x80 != 0 { 0xFF } else { 0x30 };
                let _ = e.send(6, Pgn::DM1, 0x10, to, &[0xA5; MAX_TP_SIZE][..n.min(MAX_TP_SIZE)]);
            }
        }
        step_transport(&mut e, now);
        step_etp(&mut etp, now);
    }
    step_etp(&mut etp, now);
    for _ in 0..16 {
        match etp.poll_timeout() {
            Some(t) => now = t.max(now),
            None => break,
        }
        step_etp(&mut etp, now);
    }
    assert_eq!(etp.sessions_in_use(), 0);
    // Everything ends: stepping from deadline to deadline, no session is
    // left (4 queued 1785-byte BAMs take 4 x 255 x 50 ms).
    for _ in 0..4 * 256 + 16 {
        match e.poll_timeout() {
            Some(t) => now = t.max(now),
            None => break,
        }
        step_transport(&mut e, now);
    }
    assert_eq!(e.sessions_in_use(), 0);
    assert_eq!(e.poll_timeout(), None);
}

/// Fuzz body of the address claimer (bit 7 of an op: the frames it sends
/// in that step fail, as a jammed or bus-off controller reports them).
pub fn address_claim(data: &[u8]) {
    let mut inp = Input(data);
    let name = Name::from_u64(u64::from_le_bytes([
        inp.byte().unwrap_or(0),
        inp.byte().unwrap_or(0),
        0,
        0,
        0,
        0,
        0,
        inp.byte().unwrap_or(0x80),
    ]));
    let mut cfg = ClaimConfig::new(name, 0x20);
    cfg.range = (0x10, 0x30);
    let Ok(mut c) = AddressClaimer::new(cfg) else { return };
    let mut now = Instant::ZERO;
    c.start(now);
    let pgns = [Pgn::ADDRESS_CLAIMED, Pgn::REQUEST, Pgn::ADDRESS_CLAIMED, Pgn::COMMANDED_ADDRESS];
    while let Some(op) = inp.byte() {
        match op % 4 {
            0 => {
                // A claim with a NAME close to ours.
                let sa = inp.byte().unwrap_or(0);
                let delta = u64::from(inp.byte().unwrap_or(0));
                let other = Name::from_u64(name.to_u64() ^ delta);
                let f = super::address_claim::claim_frame(other, sa);
                c.handle_frame(now, &Frame::Can(f));
            }
            1 => {
                if let Some(f) = frame_from(&mut inp, &pgns) {
                    c.handle_frame(now, &f);
                }
            }
            2 => now += Duration::from_millis(u64::from(inp.byte().unwrap_or(0))),
            _ => {
                let payload = inp.take(9);
                c.handle_commanded_address(now, payload);
            }
        }
        c.handle_timeout(now);
        if let Some(t) = c.poll_timeout() {
            assert!(t > now, "expired timer left after handle_timeout");
        }
        while let Some(f) = c.poll_transmit(now) {
            // Bit 7 of the op: the driver could not send what it took
            // (jammed queue, bus-off): the claim is resent later.
            if op & 0x80 != 0 {
                c.claim_not_sent(now, &Frame::Can(f));
                if let Some(t) = c.poll_timeout() {
                    assert!(t > now, "a timer at or before now after claim_not_sent");
                }
            }
        }
        while c.poll_event().is_some() {}
        assert!(c.table().len() <= 254);
        if let Some(a) = c.claiming_address() {
            assert!(a <= 253);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// Inputs that once failed: queued sends that never started, long BAMs.
    #[test]
    fn regressions() {
        super::transport(&[]);
        super::address_claim(&[]);
        super::transport(&[3, 255, 3, 255, 0x83, 255, 0x83, 255]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn transport_target(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::transport(&data);
        }

        #[test]
        fn address_claim_target(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            super::address_claim(&data);
        }
    }
}
