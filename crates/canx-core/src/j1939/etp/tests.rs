use super::*;
use crate::time::Duration;
use proptest::prelude::*;
use std::vec::Vec;

const A: u8 = 0x10;
const B: u8 = 0x20;
const PGN: Pgn = Pgn::PROPRIETARY_A;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8).collect()
}

fn cm(src: u8, dst: u8, c: EtpCm) -> Frame {
    Frame::Can(frame(7, Pgn::ETP_CM, src, dst, &c.emit()))
}

fn pump<const S: usize>(a: &mut Etp<'_, S>, b: &mut Etp<'_, S>, mut now: Instant) -> (Instant, usize) {
    let mut frames = 0;
    loop {
        let mut moved = false;
        while let Some(f) = a.poll_transmit(now) {
            b.handle_frame(now, &Frame::Can(f));
            moved = true;
            frames += 1;
        }
        while let Some(f) = b.poll_transmit(now) {
            a.handle_frame(now, &Frame::Can(f));
            moved = true;
            frames += 1;
        }
        if !moved {
            match crate::time::earliest(a.poll_timeout(), b.poll_timeout()) {
                Some(d) => {
                    now = d.max(now);
                    a.handle_timeout(now);
                    b.handle_timeout(now);
                }
                None => return (now, frames),
            }
        }
    }
}

#[test]
fn cm_vectors() {
    let rts = EtpCm::Rts { size: 1 << 20, pgn: PGN };
    assert_eq!(rts.emit(), [0x14, 0x00, 0x00, 0x10, 0x00, 0x00, 0xEF, 0x00]);
    let cts = EtpCm::Cts { count: 255, next: 0x01_0203, pgn: PGN };
    assert_eq!(cts.emit(), [0x15, 0xFF, 0x03, 0x02, 0x01, 0x00, 0xEF, 0x00]);
    let dpo = EtpCm::Dpo { count: 10, offset: 255, pgn: PGN };
    assert_eq!(dpo.emit(), [0x16, 0x0A, 0xFF, 0x00, 0x00, 0x00, 0xEF, 0x00]);
    let eoma = EtpCm::EndOfMsgAck { size: 2000, pgn: PGN };
    assert_eq!(eoma.emit(), [0x17, 0xD0, 0x07, 0x00, 0x00, 0x00, 0xEF, 0x00]);
    for c in [rts, cts, dpo, eoma, EtpCm::Abort { reason: AbortReason::Other(12), pgn: PGN }] {
        assert_eq!(EtpCm::parse(&c.emit()), Ok(c));
    }
    assert_eq!(EtpCm::parse(&[0x13, 0, 0, 0, 0, 0, 0, 0]), Err(EtpCmError::Control(0x13)));
    // ETP.CM from A to B: 1CC82010.
    assert_eq!(frame(7, Pgn::ETP_CM, A, B, &rts.emit()).raw_id(), 0x1CC8_2010);
}

#[test]
fn one_mebibyte_transfer() {
    let msg = data(1 << 20);
    let mut tx_buf = std::vec![0u8; 1 << 20];
    let mut rx_buf = std::vec![0u8; 1 << 20];
    let mut a = Etp::<1>::new(EtpConfig::default(), [&mut tx_buf[..]]);
    let mut b = Etp::<1>::new(EtpConfig::default(), [&mut rx_buf[..]]);
    a.set_local_address(A, true);
    b.set_local_address(B, true);
    let h = a.send(6, PGN, A, B, &msg).unwrap();
    let (_, frames) = pump(&mut a, &mut b, t(0));
    let packets = (1usize << 20).div_ceil(7);
    let windows = packets.div_ceil(255);
    // RTS + (CTS + DPO) per window + DTs + EoMA.
    assert_eq!(frames, 1 + 2 * windows + packets + 1);
    let TransportEvent::Received(r) = b.poll_event().unwrap() else { panic!() };
    assert_eq!((r.len, r.source, r.destination, r.pgn), (1 << 20, A, B, PGN));
    assert!(b.received_data(r.handle).unwrap() == &msg[..]);
    assert_eq!(
        a.poll_event(),
        Some(TransportEvent::Sent { handle: h, pgn: PGN, source: A, destination: B, size: 1 << 20 })
    );
    assert!(b.poll_event().is_none());
    assert_eq!(a.sessions_in_use() + b.sessions_in_use(), 0);
}

#[test]
fn small_windows_queue_and_buffer_choice() {
    let (mut t1, mut t2, mut r1, mut r2) =
        (std::vec![0u8; 4000], std::vec![0u8; 9000], std::vec![0u8; 3000], std::vec![0u8; 9000]);
    let mut a = Etp::<2>::new(EtpConfig::default(), [&mut t1[..], &mut t2[..]]);
    let mut b = Etp::<2>::new(
        EtpConfig { packets_per_cts: 16, priority: 7, ..EtpConfig::default() },
        [&mut r1[..], &mut r2[..]],
    );
    a.set_local_address(A, true);
    b.set_local_address(B, true);
    let (m1, m2) = (data(8000), data(2500));
    assert_eq!(a.send(6, PGN, A, B, &data(9001)), Err(SendError::NoSession));
    a.send(6, PGN, A, B, &m1).unwrap();
    a.send(6, PGN, A, B, &m2).unwrap(); // queued behind m1 (same pair)
    assert_eq!(a.send(6, PGN, A, 255, &m2), Err(SendError::Address));
    assert_eq!(a.send(6, PGN, A, B, &data(1785)), Err(SendError::TooShort));
    let mut got = Vec::new();
    let mut now = t(0);
    for _ in 0..4 {
        now = pump(&mut a, &mut b, now).0;
        while let Some(ev) = b.poll_event() {
            if let TransportEvent::Received(r) = ev {
                got.push(b.received_data(r.handle).unwrap().to_vec());
            }
        }
    }
    assert_eq!(got, [m1, m2]);
}

/// The default CTS turnaround (2 ms) holds the ETP CTS; a DPO before it is
/// ignored and counted.
#[test]
fn cts_turnaround() {
    let mut rx = std::vec![0u8; 2000];
    let mut b = Etp::<1>::new(EtpConfig::default(), [&mut rx[..]]);
    b.set_local_address(B, true);
    b.handle_frame(t(0), &cm(A, B, EtpCm::Rts { size: 1800, pgn: PGN }));
    assert!(b.poll_transmit(t(0)).is_none());
    assert_eq!(b.poll_timeout(), Some(t(2)));
    b.handle_frame(t(1), &cm(A, B, EtpCm::Dpo { count: 255, offset: 0, pgn: PGN }));
    assert_eq!(b.stats().ignored_frames, 1);
    assert!(b.poll_transmit(t(1)).is_none());
    b.handle_timeout(t(2));
    assert_eq!(EtpCm::parse(b.poll_transmit(t(2)).unwrap().data()), Ok(EtpCm::Cts { count: 255, next: 1, pgn: PGN }));
    assert_eq!(b.poll_timeout(), Some(t(1252)));
}

#[test]
fn turnaround_skip_sends_cts_at_once() {
    let mut rx = std::vec![0u8; 2000];
    let mut b = Etp::<1>::new(EtpConfig::default(), [&mut rx[..]]);
    b.set_local_address(B, true);
    let rts = cm(A, B, EtpCm::Rts { size: 1800, pgn: PGN });
    let (id, data) = J1939Id::from_frame(&rts).unwrap();
    b.handle_j1939(t(0), &id, data, Turnaround::Skip);
    assert_eq!(EtpCm::parse(b.poll_transmit(t(0)).unwrap().data()), Ok(EtpCm::Cts { count: 255, next: 1, pgn: PGN }));
    assert_eq!(b.poll_timeout(), Some(t(1250)));
}

#[test]
fn refusals_and_dpo_checks() {
    let mut rx = std::vec![0u8; 2000];
    let mut b = Etp::<1>::new(EtpConfig { cts_delay: Duration::ZERO, ..EtpConfig::default() }, [&mut rx[..]]);
    b.set_local_address(B, true);
    // Too large for every buffer: Abort(2).
    b.handle_frame(t(0), &cm(A, B, EtpCm::Rts { size: 2001, pgn: PGN }));
    assert_eq!(
        EtpCm::parse(b.poll_transmit(t(0)).unwrap().data()),
        Ok(EtpCm::Abort { reason: AbortReason::Resources, pgn: PGN })
    );
    // A TP-sized RTS on ETP: Abort(250).
    b.handle_frame(t(0), &cm(A, B, EtpCm::Rts { size: 100, pgn: PGN }));
    assert_eq!(
        EtpCm::parse(b.poll_transmit(t(0)).unwrap().data()),
        Ok(EtpCm::Abort { reason: AbortReason::OTHER, pgn: PGN })
    );
    // Accepted; CTS for 255 from packet 1.
    b.handle_frame(t(0), &cm(A, B, EtpCm::Rts { size: 1800, pgn: PGN }));
    assert_eq!(EtpCm::parse(b.poll_transmit(t(0)).unwrap().data()), Ok(EtpCm::Cts { count: 255, next: 1, pgn: PGN }));
    // Bad DPO offset: abort 12.
    b.handle_frame(t(1), &cm(A, B, EtpCm::Dpo { count: 255, offset: 5, pgn: PGN }));
    assert_eq!(
        EtpCm::parse(b.poll_transmit(t(1)).unwrap().data()),
        Ok(EtpCm::Abort { reason: abort::BAD_DPO_OFFSET, pgn: PGN })
    );
    // DT before DPO: abort 6; DPO with another PGN: 10.
    b.handle_frame(t(2), &cm(A, B, EtpCm::Rts { size: 1800, pgn: PGN }));
    b.poll_transmit(t(2)).unwrap();
    b.handle_frame(t(2), &cm(A, B, EtpCm::Dpo { count: 1, offset: 0, pgn: Pgn::DM1 }));
    assert_eq!(
        EtpCm::parse(b.poll_transmit(t(2)).unwrap().data()),
        Ok(EtpCm::Abort { reason: abort::BAD_DPO_PGN, pgn: PGN })
    );
    // Receiver T2 after CTS.
    b.handle_frame(t(3), &cm(A, B, EtpCm::Rts { size: 1800, pgn: PGN }));
    b.poll_transmit(t(3)).unwrap();
    assert_eq!(b.poll_timeout(), Some(t(1253)));
    b.handle_timeout(t(1253));
    assert_eq!(
        EtpCm::parse(b.poll_transmit(t(1253)).unwrap().data()),
        Ok(EtpCm::Abort { reason: AbortReason::Timeout, pgn: PGN })
    );
    let mut n = 0;
    while let Some(ev) = b.poll_event() {
        assert!(matches!(ev, TransportEvent::Aborted { .. }));
        n += 1;
    }
    assert_eq!(n, 5);
    assert_eq!(b.sessions_in_use(), 0);
}

#[test]
fn sender_timeout_and_cts_checks() {
    let mut tx = std::vec![0u8; 4000];
    let mut a = Etp::<1>::new(EtpConfig::default(), [&mut tx[..]]);
    a.set_local_address(A, true);
    a.send(6, PGN, A, B, &data(2000)).unwrap();
    a.poll_transmit(t(0)).unwrap();
    // CTS beyond the message (286 packets): abort 15.
    a.handle_frame(t(1), &cm(B, A, EtpCm::Cts { count: 1, next: 287, pgn: PGN }));
    assert_eq!(
        EtpCm::parse(a.poll_transmit(t(1)).unwrap().data()),
        Ok(EtpCm::Abort { reason: abort::CTS_TOO_BIG, pgn: PGN })
    );
    a.send(6, PGN, A, B, &data(2000)).unwrap();
    a.poll_transmit(t(2)).unwrap();
    a.handle_timeout(t(2) + Duration::from_millis(1250));
    assert_eq!(
        EtpCm::parse(a.poll_transmit(t(1252)).unwrap().data()),
        Ok(EtpCm::Abort { reason: AbortReason::Timeout, pgn: PGN })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn cm_roundtrip(k in 0u8..5, v: u32, p: u8, pgn in 0u32..0x40000) {
        let pgn = Pgn::new(pgn).unwrap();
        let c = match k {
            0 => EtpCm::Rts { size: v, pgn },
            1 => EtpCm::Cts { count: p, next: v & 0xFF_FFFF, pgn },
            2 => EtpCm::Dpo { count: p, offset: v & 0xFF_FFFF, pgn },
            3 => EtpCm::EndOfMsgAck { size: v, pgn },
            _ => EtpCm::Abort { reason: AbortReason::from_code(p), pgn },
        };
        prop_assert_eq!(EtpCm::parse(&c.emit()), Ok(c));
    }

    #[test]
    fn random_frames_never_panic(ops in proptest::collection::vec((0u8..8, any::<u8>(), any::<u32>(), 0u64..3000), 0..200)) {
        let (mut b1, mut b2) = (std::vec![0u8; 2500], std::vec![0u8; 5000]);
        let mut e = Etp::<2, 4>::new(EtpConfig { packets_per_cts: 3, priority: 7, ..EtpConfig::default() }, [&mut b1[..], &mut b2[..]]);
        e.set_local_address(B, true);
        let _ = e.send(6, PGN, B, A, &data(2100));
        let mut now = Instant::ZERO;
        for (k, p, v, dt) in ops {
            now += Duration::from_millis(dt);
            let f = match k {
                0 => cm(A, B, EtpCm::Rts { size: 1786 + v % 4000, pgn: PGN }),
                1 => cm(A, B, EtpCm::Cts { count: p, next: v % 400, pgn: PGN }),
                2 => cm(A, B, EtpCm::Dpo { count: p, offset: v % 400, pgn: PGN }),
                3 => cm(A, B, EtpCm::EndOfMsgAck { size: v, pgn: PGN }),
                4 => cm(A, B, EtpCm::Abort { reason: AbortReason::from_code(p), pgn: PGN }),
                _ => Frame::Can(frame(7, Pgn::ETP_DT, A, B, &[p, 1, 2, 3, 4, 5, 6, 7])),
            };
            e.handle_frame(now, &f);
            e.handle_timeout(now);
            while e.poll_transmit(now).is_some() {}
            while let Some(ev) = e.poll_event() {
                if let TransportEvent::Received(r) = ev {
                    prop_assert_eq!(e.received_data(r.handle).unwrap().len(), r.len as usize);
                }
            }
            prop_assert!(e.sessions_in_use() <= 2);
        }
        for _ in 0..10 {
            now += Duration::from_secs(2);
            e.handle_timeout(now);
            while e.poll_transmit(now).is_some() {}
            while e.poll_event().is_some() {}
        }
        prop_assert_eq!(e.sessions_in_use(), 0);
    }
}

/// Code 9 is "unexpected DPO" in ETP (kernel `J1939_XTP_ABORT_EDPO_UNEXPECTED`)
/// and "too large" in TP; an ETP abort must not display as TP's meaning only.
#[test]
fn unexpected_dpo_displays_its_etp_meaning() {
    use std::string::ToString;
    assert_eq!(abort::UNEXPECTED_DPO.code(), 9);
    let text = abort::UNEXPECTED_DPO.to_string();
    assert!(text.contains("unexpected DPO"), "{text}");
    assert_eq!(AbortReason::from_code(9), abort::UNEXPECTED_DPO);
}
