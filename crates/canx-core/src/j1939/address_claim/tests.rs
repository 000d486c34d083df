use super::*;
use proptest::prelude::*;
use std::vec::Vec;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

const CAPABLE: u64 = 1 << 63;

fn claimer(name: u64, addr: u8) -> AddressClaimer {
    AddressClaimer::new(ClaimConfig::new(Name::from_u64(name), addr)).unwrap()
}

fn frames(c: &mut AddressClaimer, now: Instant) -> Vec<CanFrame> {
    let mut v = Vec::new();
    while let Some(f) = c.poll_transmit(now) {
        v.push(f);
    }
    v
}

fn events(c: &mut AddressClaimer) -> Vec<ClaimEvent> {
    let mut v = Vec::new();
    while let Some(e) = c.poll_event() {
        v.push(e);
    }
    v
}

/// Runs claimers on a lossless bus until quiet; returns the end time.
fn run(cs: &mut [AddressClaimer], mut now: Instant) -> Instant {
    for _ in 0..1000 {
        let mut moved = false;
        for i in 0..cs.len() {
            for f in frames(&mut cs[i], now) {
                moved = true;
                for (j, c) in cs.iter_mut().enumerate() {
                    if j != i {
                        c.handle_frame(now, &Frame::Can(f));
                    }
                }
            }
        }
        if !moved {
            let Some(next) = cs.iter().filter_map(|c| c.poll_timeout()).min() else { return now };
            now = next.max(now);
            for c in cs.iter_mut() {
                c.handle_timeout(now);
            }
        }
    }
    now
}

#[test]
fn claim_frame_vector_and_wait() {
    let name = 0x9524_811A_2461_ABCD;
    let mut c = claimer(name, 0x80);
    c.start(t(0));
    let f = frames(&mut c, t(0));
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].raw_id(), 0x18EE_FF80);
    assert_eq!(f[0].data(), &[0xCD, 0xAB, 0x61, 0x24, 0x1A, 0x81, 0x24, 0x95]);
    assert_eq!(c.address(), None);
    assert_eq!(c.poll_timeout(), Some(t(250)));
    c.handle_timeout(t(249));
    assert_eq!(c.address(), None);
    c.handle_timeout(t(250));
    assert_eq!(c.address(), Some(0x80));
    assert!(events(&mut c).contains(&ClaimEvent::Claimed { address: 0x80 }));
    assert_eq!(c.table().name_at(0x80), Some(Name::from_u64(name)));
    assert_eq!(request_for_address_claim(254, 255).raw_id(), 0x18EA_FFFE);
    assert_eq!(request_for_address_claim(254, 255).data(), &[0x00, 0xEE, 0x00]);
}

#[test]
fn lower_name_wins_capable_loser_moves() {
    let mut cs = [claimer(CAPABLE | 500, 0x80), claimer(CAPABLE | 100, 0x80)];
    cs[0].start(t(0));
    cs[1].start(t(0));
    run(&mut cs, t(0));
    assert_eq!(cs[1].address(), Some(0x80));
    assert_eq!(cs[0].address(), Some(0x81));
    let ev = events(&mut cs[0]);
    assert!(ev.contains(&ClaimEvent::Lost { address: 0x80, winner: Name::from_u64(CAPABLE | 100) }));
    // Both tables agree.
    for c in &cs {
        assert_eq!(c.table().name_at(0x80), Some(Name::from_u64(CAPABLE | 100)));
        assert_eq!(c.table().name_at(0x81), Some(Name::from_u64(CAPABLE | 500)));
        assert_eq!(c.table().len(), 2);
    }
}

#[test]
fn later_higher_claim_is_defended() {
    let mut cs = [claimer(100, 0x20), claimer(500, 0x20)];
    cs[0].start(t(0));
    run(&mut cs, t(0));
    assert_eq!(cs[0].address(), Some(0x20));
    cs[1].start(t(1000));
    run(&mut cs, t(1000));
    assert_eq!(cs[0].address(), Some(0x20));
    assert_eq!(cs[1].state(), ClaimState::CannotClaim);
    assert!(events(&mut cs[1]).contains(&ClaimEvent::CannotClaim));
    assert_eq!(cs[0].table().address_of(Name::from_u64(500)), None);
}

#[test]
fn full_range_gives_cannot_claim() {
    let mut cfg = ClaimConfig::new(Name::from_u64(CAPABLE | 900), 10);
    cfg.range = (10, 11);
    let mut c = AddressClaimer::new(cfg).unwrap();
    c.start(t(0));
    frames(&mut c, t(0));
    c.handle_frame(t(1), &Frame::Can(claim_frame(Name::from_u64(5), 11)));
    c.handle_frame(t(1), &Frame::Can(claim_frame(Name::from_u64(6), 10)));
    let f = frames(&mut c, t(1));
    assert_eq!(f.last().unwrap().raw_id(), 0x18EE_FFFE);
    assert_eq!(c.state(), ClaimState::CannotClaim);
}

#[test]
fn request_answers_and_cannot_claim_delay() {
    let mut c = claimer(100, 0x33);
    c.handle_frame(t(0), &Frame::Can(request_for_address_claim(254, 255)));
    assert!(frames(&mut c, t(0)).is_empty()); // idle: silent
    c.start(t(0));
    frames(&mut c, t(0));
    c.handle_frame(t(10), &Frame::Can(request_for_address_claim(254, 255)));
    assert_eq!(frames(&mut c, t(10))[0].raw_id(), 0x18EE_FF33);
    // Specific request to another address: not for us.
    c.handle_frame(t(10), &Frame::Can(request_for_address_claim(254, 0x34)));
    assert!(frames(&mut c, t(10)).is_empty());
    c.handle_frame(t(10), &Frame::Can(request_for_address_claim(254, 0x33)));
    assert_eq!(frames(&mut c, t(10)).len(), 1);

    // Cannot Claim replies come after 0..=153 ms, deterministic per seed.
    let mut delays = Vec::new();
    for seed in 1..40u32 {
        let mut cfg = ClaimConfig::new(Name::from_u64(100), 1);
        cfg.seed = seed;
        let mut c = AddressClaimer::new(cfg).unwrap();
        c.start(t(0));
        c.handle_frame(t(0), &Frame::Can(claim_frame(Name::from_u64(1), 1)));
        frames(&mut c, t(0));
        c.handle_frame(t(1000), &Frame::Can(request_for_address_claim(254, 255)));
        let due = c.poll_timeout().unwrap();
        let d = due - t(1000);
        assert!(d <= Duration::from_millis(153), "{d:?}");
        assert!(frames(&mut c, t(1000)).is_empty());
        c.handle_timeout(due);
        assert_eq!(frames(&mut c, due)[0].raw_id(), 0x18EE_FFFE);
        delays.push(d);
    }
    delays.sort();
    delays.dedup();
    assert!(delays.len() > 10);
}

#[test]
fn commanded_address() {
    let mut c = claimer(CAPABLE | 7, 0x40);
    c.start(t(0));
    c.handle_timeout(t(250));
    frames(&mut c, t(250));
    assert!(!c.handle_commanded_address(t(300), &commanded_address_payload(Name::from_u64(8), 0x41)));
    assert!(!c.handle_commanded_address(t(300), &commanded_address_payload(Name::from_u64(CAPABLE | 7), 254)));
    assert!(!c.handle_commanded_address(t(300), &[1, 2, 3]));
    assert!(c.handle_commanded_address(t(300), &commanded_address_payload(Name::from_u64(CAPABLE | 7), 0x41)));
    assert_eq!(frames(&mut c, t(300))[0].raw_id(), 0x18EE_FF41);
    c.handle_timeout(t(550));
    assert_eq!(c.address(), Some(0x41));
    assert_eq!(c.table().address_of(Name::from_u64(CAPABLE | 7)), Some(0x41));
}

#[test]
fn table_changes() {
    let mut tbl = AddressTable::new();
    let mut ev = Vec::new();
    let (n1, n2) = (Name::from_u64(10), Name::from_u64(20));
    tbl.observe_claim(5, n2, |e| ev.push(e));
    tbl.observe_claim(5, n1, |e| ev.push(e)); // lower NAME takes it
    tbl.observe_claim(5, n2, |e| ev.push(e)); // higher NAME does not
    tbl.observe_claim(6, n2, |e| ev.push(e));
    tbl.observe_claim(7, n1, |e| ev.push(e)); // n1 moves
    tbl.observe_cannot_claim(n2, |e| ev.push(e));
    tbl.observe_claim(254, n2, |e| ev.push(e)); // ignored
    use TableEvent::*;
    assert_eq!(
        ev,
        [
            Added { address: 5, name: n2 },
            Removed { address: 5, name: n2 },
            Added { address: 5, name: n1 },
            Added { address: 6, name: n2 },
            Removed { address: 5, name: n1 },
            Added { address: 7, name: n1 },
            Removed { address: 6, name: n2 },
        ]
    );
    assert_eq!(tbl.iter().collect::<Vec<_>>(), [(7, n1)]);
}

#[test]
fn config_errors() {
    assert_eq!(AddressClaimer::new(ClaimConfig::new(Name::from_u64(1), 254)).err(), Some(ClaimConfigError::Address));
    let mut cfg = ClaimConfig::new(Name::from_u64(1), 1);
    cfg.range = (20, 10);
    assert_eq!(AddressClaimer::new(cfg).err(), Some(ClaimConfigError::Range));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_frames_never_panic(ops in proptest::collection::vec((0u8..4, any::<u8>(), any::<u64>(), 0u64..300, any::<u8>()), 0..300)) {
        let mut c = claimer(CAPABLE | 0x1234_5678, 0x80);
        c.start(Instant::ZERO);
        let mut now = Instant::ZERO;
        for (kind, addr, name, dt, da) in ops {
            now += Duration::from_millis(dt);
            let f = match kind {
                0 => claim_frame(Name::from_u64(name), addr),
                1 => request_for_address_claim(addr, da),
                2 => CanFrame::new(J1939Id::new(6, Pgn::ADDRESS_CLAIMED, addr, da).unwrap().to_id(), &name.to_le_bytes()[..(da % 9) as usize]).unwrap(),
                _ => {
                    let mut p = [0u8; 9];
                    p[..8].copy_from_slice(&name.to_le_bytes());
                    p[8] = da;
                    c.handle_commanded_address(now, &p);
                    claim_frame(Name::from_u64(name), addr)
                }
            };
            c.handle_frame(now, &Frame::Can(f));
            c.handle_timeout(now);
            while c.poll_transmit(now).is_some() {}
            while c.poll_event().is_some() {}
            prop_assert!(c.table().len() <= 254);
            if let Some(a) = c.claiming_address() { prop_assert!(a <= 253); }
            if let Some(t) = c.poll_timeout() { prop_assert!(t <= now + Duration::from_millis(250)); }
        }
    }
}

#[test]
fn small_table_counts_claims_it_cannot_hold() {
    let mut t = AddressTable::<2>::with_capacity();
    let n = |v: u64| Name::from_u64(v);
    let mut events = std::vec::Vec::new();
    t.observe_claim(0x10, n(5), |e| events.push(e));
    t.observe_claim(0x20, n(6), |e| events.push(e));
    t.observe_claim(0x30, n(7), |e| events.push(e));
    assert_eq!(t.len(), 2);
    assert_eq!(t.dropped(), 1);
    assert_eq!(t.name_at(0x30), None);
    // A NAME that moves frees its old slot, so the next claim fits.
    t.observe_claim(0x11, n(5), |e| events.push(e));
    assert_eq!(t.address_of(n(5)), Some(0x11));
    t.observe_cannot_claim(n(6), |e| events.push(e));
    t.observe_claim(0x30, n(7), |e| events.push(e));
    assert_eq!(t.iter().collect::<std::vec::Vec<_>>(), [(0x11, n(5)), (0x30, n(7))]);
    // A lower NAME takes an address; a higher one does not.
    t.observe_claim(0x30, n(9), |e| events.push(e));
    assert_eq!(t.name_at(0x30), Some(n(7)));
    t.observe_claim(0x30, n(1), |e| events.push(e));
    assert_eq!(t.name_at(0x30), Some(n(1)));
    assert!(events.contains(&TableEvent::Removed { address: 0x30, name: n(7) }));
}

#[test]
fn a_claim_that_was_not_sent_claims_nothing_until_it_is_resent() {
    // J1939-81 4.4.4.3: the 250 ms wait runs from the claim's transmission.
    let name = 0x0000_0000_0000_0042;
    let mut c = claimer(name, 0x80);
    c.start(t(0));
    let f = frames(&mut c, t(0));
    assert_eq!(f.len(), 1);
    // The driver reports the frame failed (jammed queue) at 100 ms.
    assert!(c.claim_not_sent(t(100), &Frame::Can(f[0])));
    assert_eq!(c.claims_not_sent(), 1);
    // Past the original 250 ms: still not claimed, no event.
    c.handle_timeout(t(300));
    assert_eq!(c.address(), None);
    assert!(matches!(c.state(), ClaimState::Claiming { address: 0x80, .. }));
    assert!(!events(&mut c).iter().any(|e| matches!(e, ClaimEvent::Claimed { .. })));
    // Resent at 100 + CLAIM_RESEND = 350 ms ...
    assert_eq!(c.poll_timeout(), Some(t(350)));
    c.handle_timeout(t(350));
    let again = frames(&mut c, t(350));
    assert_eq!(again, f, "the same claim is sent again");
    // ... and claimed 250 ms after that, not before.
    c.handle_timeout(t(599));
    assert_eq!(c.address(), None);
    c.handle_timeout(t(600));
    assert_eq!(c.address(), Some(0x80));
    assert!(events(&mut c).contains(&ClaimEvent::Claimed { address: 0x80 }));
}

#[test]
fn a_failed_frame_that_is_not_our_claim_changes_nothing() {
    let mut c = claimer(0x42, 0x80);
    c.start(t(0));
    let _ = frames(&mut c, t(0));
    let other = claim_frame(Name::from_u64(0x43), 0x80);
    assert!(!c.claim_not_sent(t(10), &Frame::Can(other)));
    let old = claim_frame(Name::from_u64(0x42), 0x81);
    assert!(!c.claim_not_sent(t(10), &Frame::Can(old)));
    c.handle_timeout(t(250));
    assert_eq!(c.address(), Some(0x80));
    assert_eq!(c.claims_not_sent(), 0);
    // After the claim, a late failure report of it takes the address back
    // until the resent claim has waited its 250 ms.
    assert!(c.claim_not_sent(t(260), &Frame::Can(claim_frame(Name::from_u64(0x42), 0x80))));
    assert_eq!(c.address(), None);
    c.handle_timeout(t(510));
    assert_eq!(frames(&mut c, t(510)).len(), 1);
    c.handle_timeout(t(760));
    assert_eq!(c.address(), Some(0x80));
}
