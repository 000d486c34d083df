use super::*;
use crate::frame::ExtendedId;
use proptest::prelude::*;

type Tp = Transport<4, 16>;

const A: u8 = 0x10;
const B: u8 = 0x20;
const PGN: Pgn = Pgn::DM1;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// A receiver that answers at once (no CTS turnaround), for frame-by-frame tests.
fn immediate() -> TransportConfig {
    TransportConfig { cts_delay: Duration::ZERO, ..Default::default() }
}

fn engine(local: u8, config: TransportConfig) -> Tp {
    let mut e = Tp::new(config).unwrap();
    e.set_local_address(local, true);
    e
}

fn cm_frame(src: u8, dst: u8, cm: TpCm) -> Frame {
    Frame::Can(frame(7, Pgn::TP_CM, src, dst, &cm.emit()))
}

fn dt_frame(src: u8, dst: u8, seq: u8, bytes: &[u8]) -> Frame {
    let mut d = [0xFF; 8];
    d[0] = seq;
    d[1..1 + bytes.len()].copy_from_slice(bytes);
    Frame::Can(frame(7, Pgn::TP_DT, src, dst, &d))
}

fn decode(f: &CanFrame) -> (J1939Id, Option<TpCm>) {
    let (id, data) = J1939Id::from_can_frame(f).unwrap();
    let cm = if id.pgn == Pgn::TP_CM { TpCm::parse(data).ok() } else { None };
    (id, cm)
}

fn drain_tx(e: &mut Tp, now: Instant) -> std::vec::Vec<CanFrame> {
    let mut v = std::vec::Vec::new();
    while let Some(f) = e.poll_transmit(now) {
        v.push(f);
    }
    v
}

fn drain_events<const S: usize, const Q: usize>(
    e: &mut Transport<S, Q>,
) -> std::vec::Vec<(TransportEvent, Option<std::vec::Vec<u8>>)> {
    let mut v = std::vec::Vec::new();
    while let Some(ev) = e.poll_event() {
        let data = match ev {
            TransportEvent::Received(r) => e.received_data(r.handle).map(|d| d.to_vec()),
            _ => None,
        };
        v.push((ev, data));
    }
    v
}

/// Moves frames between two engines until both are quiet, advancing the
/// clock to each deadline; returns the final time.
fn pump(a: &mut Tp, b: &mut Tp, mut now: Instant, limit: usize) -> Instant {
    for _ in 0..limit {
        let mut moved = false;
        while let Some(f) = a.poll_transmit(now) {
            b.handle_frame(now, &Frame::Can(f));
            moved = true;
        }
        while let Some(f) = b.poll_transmit(now) {
            a.handle_frame(now, &Frame::Can(f));
            moved = true;
        }
        if !moved {
            match crate::time::earliest(a.poll_timeout(), b.poll_timeout()) {
                Some(d) => {
                    now = d.max(now);
                    a.handle_timeout(now);
                    b.handle_timeout(now);
                }
                None => return now,
            }
        }
    }
    now
}

fn payload(n: usize) -> std::vec::Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

#[test]
fn rts_bytes_for_1785() {
    let rts = TpCm::Rts { size: 1785, packets: 255, max_per_cts: 255, pgn: PGN };
    assert_eq!(rts.emit(), [0x10, 0xF9, 0x06, 0xFF, 0xFF, 0xCA, 0xFE, 0x00]);
    assert_eq!(TpCm::parse(&rts.emit()), Ok(rts));
    // As a frame from 0x10 to 0x20 at priority 7: 1CEC2010.
    let f = frame(7, Pgn::TP_CM, A, B, &rts.emit());
    assert_eq!(f.raw_id(), 0x1CEC_2010);
    let cts = TpCm::Cts { count: 16, next: 1, pgn: PGN };
    assert_eq!(cts.emit(), [0x11, 0x10, 0x01, 0xFF, 0xFF, 0xCA, 0xFE, 0x00]);
    let bam = TpCm::Bam { size: 20, packets: 3, pgn: PGN };
    assert_eq!(bam.emit(), [0x20, 0x14, 0x00, 0x03, 0xFF, 0xCA, 0xFE, 0x00]);
    let ab = TpCm::Abort { reason: AbortReason::Timeout, pgn: PGN };
    assert_eq!(ab.emit(), [0xFF, 0x03, 0xFF, 0xFF, 0xFF, 0xCA, 0xFE, 0x00]);
    assert_eq!(TpCm::parse(&[0x10; 7]), Err(CmError::Length));
    assert_eq!(TpCm::parse(&[0x12, 0, 0, 0, 0, 0, 0, 0]), Err(CmError::Control(0x12)));
    assert_eq!(packets_for(1785), 255);
    assert_eq!(packets_for(9), 2);
}

#[test]
fn config_validation() {
    assert!(Tp::new(TransportConfig { bam_gap: Duration::from_millis(49), ..Default::default() }).is_err());
    assert!(Tp::new(TransportConfig { bam_gap: Duration::from_millis(201), ..Default::default() }).is_err());
    assert!(Tp::new(TransportConfig { bam_gap: Duration::from_millis(200), ..Default::default() }).is_ok());
    assert_eq!(
        Tp::new(TransportConfig { packets_per_cts: 0, ..Default::default() }).err(),
        Some(ConfigError::PacketsPerCts)
    );
    assert_eq!(Tp::new(TransportConfig { priority: 8, ..Default::default() }).err(), Some(ConfigError::Priority));
}

#[test]
fn send_errors() {
    let mut a = engine(A, TransportConfig::default());
    assert_eq!(a.send(6, PGN, A, B, &[0; 8]), Err(SendError::TooShort));
    assert_eq!(a.send(6, PGN, A, B, &[0; 1786]), Err(SendError::TooLong));
    assert_eq!(a.send(8, PGN, A, B, &[0; 9]), Err(SendError::Priority));
    assert_eq!(a.send(6, PGN, 254, B, &[0; 9]), Err(SendError::Address));
    assert_eq!(a.send(6, PGN, A, 254, &[0; 9]), Err(SendError::Address));
    for _ in 0..4 {
        a.send(6, PGN, A, B, &[0; 9]).unwrap();
    }
    assert_eq!(a.send(6, PGN, A, B, &[0; 9]), Err(SendError::NoSession));
    assert_eq!(a.stats().rejected_sends, 1);
}

#[test]
fn rts_cts_1785_bytes() {
    let mut a = engine(A, TransportConfig::default());
    let mut b = engine(B, TransportConfig::default());
    let data = payload(1785);
    let h = a.send(6, PGN, A, B, &data).unwrap();
    let first = a.poll_transmit(t(0)).unwrap();
    assert_eq!(first.raw_id(), 0x18EC_2010);
    assert_eq!(first.data(), &[0x10, 0xF9, 0x06, 0xFF, 0xFF, 0xCA, 0xFE, 0x00]);
    b.handle_frame(t(0), &Frame::Can(first));
    // The CTS waits for the turnaround (default 2 ms), then asks for all 255
    // packets at once, as the kernel does.
    assert!(drain_tx(&mut b, t(0)).is_empty());
    assert_eq!(b.poll_timeout(), Some(t(2)));
    b.handle_timeout(t(1));
    assert!(drain_tx(&mut b, t(1)).is_empty());
    b.handle_timeout(t(2));
    let cts = drain_tx(&mut b, t(2));
    assert_eq!(cts.len(), 1);
    assert_eq!(decode(&cts[0]).1, Some(TpCm::Cts { count: 255, next: 1, pgn: PGN }));
    a.handle_frame(t(2), &Frame::Can(cts[0]));
    pump(&mut a, &mut b, t(2), 10_000);
    let ev = drain_events(&mut b);
    assert_eq!(ev.len(), 1);
    match ev[0] {
        (TransportEvent::Received(r), Some(ref d)) => {
            assert_eq!((r.pgn, r.source, r.destination, r.priority, r.len), (PGN, A, B, 6, 1785));
            assert_eq!(d, &data);
        }
        ref other => panic!("{other:?}"),
    }
    let ev = drain_events(&mut a);
    assert_eq!(ev[0].0, TransportEvent::Sent { handle: h, pgn: PGN, source: A, destination: B, size: 1785 });
    assert_eq!(a.sessions_in_use() + b.sessions_in_use(), 0);
}

#[test]
fn cts_window_and_sender_limit() {
    let cfg = TransportConfig { packets_per_cts: 4, ..immediate() };
    let mut a = engine(A, TransportConfig { max_packets_per_cts: 3, ..immediate() });
    let mut b = engine(B, cfg);
    let data = payload(100); // 15 packets
    a.send(6, PGN, A, B, &data).unwrap();
    let mut now = t(0);
    let mut cts = 0;
    for _ in 0..1000 {
        let mut moved = false;
        while let Some(f) = a.poll_transmit(now) {
            b.handle_frame(now, &Frame::Can(f));
            moved = true;
        }
        while let Some(f) = b.poll_transmit(now) {
            if let (_, Some(TpCm::Cts { count, .. })) = decode(&f) {
                assert!(count <= 3);
                cts += 1;
            }
            a.handle_frame(now, &Frame::Can(f));
            moved = true;
        }
        if !moved {
            break;
        }
        now += Duration::from_millis(1);
    }
    assert_eq!(cts, 5);
    assert_eq!(drain_events(&mut b)[0].1.as_deref(), Some(&data[..]));
}

#[test]
fn bam_gap_and_reception() {
    let mut a = engine(A, TransportConfig { bam_gap: Duration::from_millis(100), ..Default::default() });
    let mut b = engine(B, TransportConfig::default());
    let data = payload(20);
    a.send(6, PGN, A, GLOBAL_ADDRESS, &data).unwrap();
    let bam = a.poll_transmit(t(0)).unwrap();
    assert_eq!(bam.raw_id(), 0x18EC_FF10);
    assert_eq!(decode(&bam).1, Some(TpCm::Bam { size: 20, packets: 3, pgn: PGN }));
    assert_eq!(a.poll_transmit(t(99)), None);
    assert_eq!(a.poll_timeout(), Some(t(100)));
    b.handle_frame(t(0), &Frame::Can(bam));
    let end = pump(&mut a, &mut b, t(0), 100);
    assert_eq!(end, t(300));
    let ev = drain_events(&mut b);
    assert_eq!(ev[0].1.as_deref(), Some(&data[..]));
    assert!(matches!(drain_events(&mut a)[0].0, TransportEvent::Sent { .. }));
}

#[test]
fn sender_timeout_t3_sends_abort() {
    let mut a = engine(A, TransportConfig::default());
    a.send(6, PGN, A, B, &payload(30)).unwrap();
    assert!(a.poll_transmit(t(0)).is_some());
    assert_eq!(a.poll_timeout(), Some(t(1250)));
    a.handle_timeout(t(1249));
    assert!(a.poll_transmit(t(1249)).is_none());
    a.handle_timeout(t(1250));
    let f = a.poll_transmit(t(1250)).unwrap();
    assert_eq!(decode(&f).1, Some(TpCm::Abort { reason: AbortReason::Timeout, pgn: PGN }));
    assert!(matches!(
        a.poll_event(),
        Some(TransportEvent::Aborted {
            reason: AbortReason::Timeout,
            by_peer: false,
            direction: Direction::Transmit,
            ..
        })
    ));
    assert_eq!(a.poll_timeout(), None);
}

/// The receiver's CTS turnaround (module doc, "CTS turnaround"): every CTS,
/// the first and each window's, leaves `cts_delay` after what caused it; DTs
/// before it are ignored and counted; T2 runs from the CTS.
#[test]
fn cts_turnaround() {
    assert_eq!(
        Tp::new(TransportConfig { cts_delay: Duration::from_millis(101), ..Default::default() }).err(),
        Some(ConfigError::CtsDelay)
    );
    let cfg = TransportConfig { packets_per_cts: 2, cts_delay: Duration::from_millis(5), ..Default::default() };
    let mut b = engine(B, cfg);
    b.handle_frame(t(0), &cm_frame(A, B, TpCm::Rts { size: 20, packets: 3, max_per_cts: 255, pgn: PGN }));
    assert!(drain_tx(&mut b, t(0)).is_empty());
    assert_eq!(b.poll_timeout(), Some(t(5)));
    // A DT before our CTS: not asked for, ignored (no abort, not stored).
    b.handle_frame(t(1), &dt_frame(A, B, 1, &[9; 7]));
    assert_eq!(b.stats().ignored_frames, 1);
    b.handle_timeout(t(4));
    assert!(drain_tx(&mut b, t(4)).is_empty());
    b.handle_timeout(t(5));
    let f = drain_tx(&mut b, t(5));
    assert_eq!(
        f.iter().map(|f| decode(f).1).collect::<std::vec::Vec<_>>(),
        [Some(TpCm::Cts { count: 2, next: 1, pgn: PGN })]
    );
    assert_eq!(b.poll_timeout(), Some(t(5) + T2));
    b.handle_frame(t(6), &dt_frame(A, B, 1, &[1; 7]));
    b.handle_frame(t(6), &dt_frame(A, B, 2, &[2; 7]));
    // The second window's CTS waits as well.
    assert!(drain_tx(&mut b, t(6)).is_empty());
    b.handle_timeout(t(11));
    let f = drain_tx(&mut b, t(11));
    assert_eq!(decode(&f[0]).1, Some(TpCm::Cts { count: 1, next: 3, pgn: PGN }));
    b.handle_frame(t(12), &dt_frame(A, B, 3, &[3; 6]));
    let f = drain_tx(&mut b, t(12));
    assert_eq!(decode(&f[0]).1, Some(TpCm::EndOfMsgAck { size: 20, packets: 3, pgn: PGN }));
    let ev = drain_events(&mut b);
    assert_eq!(ev[0].1.as_deref(), Some(&[1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3][..]));
}

#[test]
fn turnaround_skip_sends_every_cts_at_once() {
    // The same 5 ms turnaround as `cts_turnaround`, but the RTS is fed as
    // from a sender known not to need it: both windows' CTS go out at once.
    let cfg = TransportConfig { packets_per_cts: 2, cts_delay: Duration::from_millis(5), ..Default::default() };
    let mut b = engine(B, cfg);
    let rts = cm_frame(A, B, TpCm::Rts { size: 20, packets: 3, max_per_cts: 255, pgn: PGN });
    let (id, data) = J1939Id::from_frame(&rts).unwrap();
    b.handle_j1939(t(0), &id, data, Turnaround::Skip);
    let f = drain_tx(&mut b, t(0));
    assert_eq!(decode(&f[0]).1, Some(TpCm::Cts { count: 2, next: 1, pgn: PGN }));
    assert_eq!(b.poll_timeout(), Some(t(0) + T2));
    b.handle_frame(t(1), &dt_frame(A, B, 1, &[1; 7]));
    b.handle_frame(t(1), &dt_frame(A, B, 2, &[2; 7]));
    let f = drain_tx(&mut b, t(1));
    assert_eq!(decode(&f[0]).1, Some(TpCm::Cts { count: 1, next: 3, pgn: PGN }));
    b.handle_frame(t(2), &dt_frame(A, B, 3, &[3; 6]));
    let f = drain_tx(&mut b, t(2));
    assert_eq!(decode(&f[0]).1, Some(TpCm::EndOfMsgAck { size: 20, packets: 3, pgn: PGN }));
    // The next RTS on the pair, fed with handle_frame, waits again.
    b.handle_frame(t(10), &rts);
    assert!(drain_tx(&mut b, t(10)).is_empty());
    assert_eq!(b.poll_timeout(), Some(t(15)));
}

#[test]
fn sender_turnaround_before_the_first_dt() {
    // A kernel receiver must have handled the echo of its own CTS before our
    // first DT: fed with Apply, the DTs wait cts_delay after the CTS; with
    // Skip they go at once.
    let cts = cm_frame(B, A, TpCm::Cts { count: 5, next: 1, pgn: PGN });
    let mut a = engine(A, TransportConfig { cts_delay: Duration::from_millis(5), ..Default::default() });
    a.send(6, PGN, A, B, &payload(30)).unwrap();
    a.poll_transmit(t(0)).unwrap();
    a.handle_frame(t(1), &cts);
    assert!(drain_tx(&mut a, t(1)).is_empty());
    assert_eq!(a.poll_timeout(), Some(t(6)));
    assert!(drain_tx(&mut a, t(5)).is_empty());
    assert_eq!(drain_tx(&mut a, t(6)).len(), 5);
    assert_eq!(a.poll_timeout(), Some(t(6) + T3));
    let mut a = engine(A, TransportConfig { cts_delay: Duration::from_millis(5), ..Default::default() });
    a.send(6, PGN, A, B, &payload(30)).unwrap();
    a.poll_transmit(t(0)).unwrap();
    let (id, data) = J1939Id::from_frame(&cts).unwrap();
    a.handle_j1939(t(1), &id, data, Turnaround::Skip);
    assert_eq!(drain_tx(&mut a, t(1)).len(), 5);
}

#[test]
fn receiver_timeouts_t2_t1() {
    let mut b = engine(B, immediate());
    b.handle_frame(t(0), &cm_frame(A, B, TpCm::Rts { size: 20, packets: 3, max_per_cts: 255, pgn: PGN }));
    drain_tx(&mut b, t(0));
    assert_eq!(b.poll_timeout(), Some(t(1250)));
    b.handle_frame(t(100), &dt_frame(A, B, 1, &[1; 7]));
    assert_eq!(b.poll_timeout(), Some(t(850)));
    b.handle_timeout(t(850));
    let f = b.poll_transmit(t(850)).unwrap();
    assert_eq!(f.raw_id(), 0x1CEC_1020);
    assert_eq!(decode(&f).1, Some(TpCm::Abort { reason: AbortReason::Timeout, pgn: PGN }));
    assert!(matches!(b.poll_event(), Some(TransportEvent::Aborted { reason: AbortReason::Timeout, .. })));
    // BAM: T1 ends it quietly (no abort on the wire).
    b.handle_frame(t(0), &cm_frame(A, 255, TpCm::Bam { size: 20, packets: 3, pgn: PGN }));
    b.handle_timeout(t(750));
    assert!(b.poll_transmit(t(750)).is_none());
    assert!(matches!(b.poll_event(), Some(TransportEvent::Aborted { reason: AbortReason::Timeout, .. })));
}

#[test]
fn sequence_checks() {
    let rts = TpCm::Rts { size: 20, packets: 3, max_per_cts: 255, pgn: PGN };
    let mut b = engine(B, immediate());
    // Beyond the window: bad sequence.
    b.handle_frame(t(0), &cm_frame(A, B, rts));
    drain_tx(&mut b, t(0));
    b.handle_frame(t(1), &dt_frame(A, B, 9, &[0; 7]));
    let f = drain_tx(&mut b, t(1));
    assert_eq!(decode(&f[0]).1, Some(TpCm::Abort { reason: AbortReason::BadSequence, pgn: PGN }));
    drain_events(&mut b);

    // Duplicate: ignored by default, Abort(8) when not tolerated.
    b.handle_frame(t(0), &cm_frame(A, B, rts));
    drain_tx(&mut b, t(0));
    b.handle_frame(t(1), &dt_frame(A, B, 1, &[0; 7]));
    b.handle_frame(t(2), &dt_frame(A, B, 1, &[0; 7]));
    assert!(drain_tx(&mut b, t(2)).is_empty());
    assert_eq!(b.stats().duplicate_packets, 1);
    b.handle_frame(t(2), &dt_frame(A, B, 2, &[0; 7]));
    b.handle_frame(t(2), &dt_frame(A, B, 3, &[0; 7]));
    let f = drain_tx(&mut b, t(2));
    assert_eq!(decode(&f[0]).1, Some(TpCm::EndOfMsgAck { size: 20, packets: 3, pgn: PGN }));
    drain_events(&mut b);

    let mut b = engine(B, TransportConfig { tolerate_duplicates: false, ..immediate() });
    b.handle_frame(t(0), &cm_frame(A, B, rts));
    drain_tx(&mut b, t(0));
    b.handle_frame(t(1), &dt_frame(A, B, 1, &[0; 7]));
    b.handle_frame(t(2), &dt_frame(A, B, 1, &[0; 7]));
    let f = drain_tx(&mut b, t(2));
    assert_eq!(decode(&f[0]).1, Some(TpCm::Abort { reason: AbortReason::DuplicateSequence, pgn: PGN }));
    assert!(matches!(
        b.poll_event(),
        Some(TransportEvent::Aborted { reason: AbortReason::DuplicateSequence, by_peer: false, .. })
    ));
}

#[test]
fn lost_dt_is_requested_again() {
    let rts = TpCm::Rts { size: 20, packets: 3, max_per_cts: 255, pgn: PGN };
    let mut b = engine(B, immediate());
    b.handle_frame(t(0), &cm_frame(A, B, rts));
    drain_tx(&mut b, t(0));
    // Packet 1 lost: 2 is a gap (wait), 3 ends the window: CTS from 1 again.
    b.handle_frame(t(1), &dt_frame(A, B, 2, &[2; 7]));
    assert!(drain_tx(&mut b, t(1)).is_empty());
    b.handle_frame(t(2), &dt_frame(A, B, 3, &[3; 6]));
    let f = drain_tx(&mut b, t(2));
    assert_eq!(decode(&f[0]).1, Some(TpCm::Cts { count: 3, next: 1, pgn: PGN }));
    for seq in 1..=3u8 {
        b.handle_frame(t(3), &dt_frame(A, B, seq, &[seq; 7][..if seq == 3 { 6 } else { 7 }]));
    }
    let f = drain_tx(&mut b, t(3));
    assert_eq!(decode(&f[0]).1, Some(TpCm::EndOfMsgAck { size: 20, packets: 3, pgn: PGN }));
    let ev = drain_events(&mut b);
    assert_eq!(ev[0].1.as_deref(), Some(&[1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3][..]));
}

#[test]
fn retransmit_limit() {
    let rts = TpCm::Rts { size: 20, packets: 3, max_per_cts: 255, pgn: PGN };
    let mut b = engine(B, immediate());
    b.handle_frame(t(0), &cm_frame(A, B, rts));
    drain_tx(&mut b, t(0));
    // Packet 1 is lost every time.
    for _ in 0..MAX_RETRANSMITS {
        b.handle_frame(t(1), &dt_frame(A, B, 2, &[0; 7]));
        assert!(drain_tx(&mut b, t(1)).is_empty());
        b.handle_frame(t(1), &dt_frame(A, B, 3, &[0; 7]));
        let f = drain_tx(&mut b, t(1));
        assert_eq!(decode(&f[0]).1, Some(TpCm::Cts { count: 3, next: 1, pgn: PGN }));
    }
    b.handle_frame(t(2), &dt_frame(A, B, 2, &[0; 7]));
    let f = drain_tx(&mut b, t(2));
    assert_eq!(decode(&f[0]).1, Some(TpCm::Abort { reason: AbortReason::MaxRetransmit, pgn: PGN }));
    assert!(matches!(b.poll_event(), Some(TransportEvent::Aborted { reason: AbortReason::MaxRetransmit, .. })));
}

#[test]
fn second_rts_too_large_and_resources() {
    let mut b = Transport::<1, 8>::new(immediate()).unwrap();
    b.set_local_address(B, true);
    let rts = TpCm::Rts { size: 20, packets: 3, max_per_cts: 255, pgn: PGN };
    b.handle_frame(t(0), &cm_frame(A, B, rts));
    b.poll_transmit(t(0)).unwrap();
    // Another pair while the only slot is busy: resources.
    b.handle_frame(t(0), &cm_frame(0x30, B, rts));
    let f = b.poll_transmit(t(0)).unwrap();
    assert_eq!(f.raw_id() & 0xFFFF, 0x3020);
    assert_eq!(decode(&f).1, Some(TpCm::Abort { reason: AbortReason::Resources, pgn: PGN }));
    assert_eq!(b.stats().refused_sessions, 1);
    // Second RTS on the active pair: abort 1.
    b.handle_frame(t(0), &cm_frame(A, B, rts));
    let f = b.poll_transmit(t(0)).unwrap();
    assert_eq!(decode(&f).1, Some(TpCm::Abort { reason: AbortReason::AlreadyInSession, pgn: PGN }));
    assert_eq!(b.sessions_in_use(), 0);
    // Too large.
    b.handle_frame(t(0), &cm_frame(A, B, TpCm::Rts { size: 1786, packets: 255, max_per_cts: 255, pgn: PGN }));
    let f = b.poll_transmit(t(0)).unwrap();
    assert_eq!(decode(&f).1, Some(TpCm::Abort { reason: AbortReason::TooLarge, pgn: PGN }));
    let ev = drain_events(&mut b);
    assert_eq!(ev.len(), 3);
    // Not for us: ignored, no answer.
    b.handle_frame(t(0), &cm_frame(A, 0x55, rts));
    assert!(b.poll_transmit(t(0)).is_none());
}

#[test]
fn queued_sends_to_busy_pair_complete_in_order() {
    let mut a = engine(A, TransportConfig::default());
    let mut b = engine(B, TransportConfig::default());
    let msgs = [payload(9), payload(50), payload(700)];
    for m in &msgs {
        a.send(6, PGN, A, B, m).unwrap();
    }
    assert_eq!(a.stats().queued_sends, 2);
    // Only one RTS goes out: the pair is busy.
    let out = drain_tx(&mut a, t(0));
    assert_eq!(out.len(), 1);
    for f in out {
        b.handle_frame(t(0), &Frame::Can(f));
    }
    pump(&mut a, &mut b, t(0), 10_000);
    let got: std::vec::Vec<_> = drain_events(&mut b).into_iter().filter_map(|(_, d)| d).collect();
    assert_eq!(got, msgs.to_vec());
    assert_eq!(drain_events(&mut a).len(), 3);
}

#[test]
fn peer_abort_and_hold() {
    let mut a = engine(A, immediate());
    a.send(6, PGN, A, B, &payload(30)).unwrap();
    a.poll_transmit(t(0)).unwrap();
    // CTS(0): hold, T4.
    a.handle_frame(t(10), &cm_frame(B, A, TpCm::Cts { count: 0, next: 1, pgn: PGN }));
    assert_eq!(a.poll_timeout(), Some(t(1060)));
    // CTS(n) after CTS(0) is accepted (the kernel would abort with 8).
    a.handle_frame(t(20), &cm_frame(B, A, TpCm::Cts { count: 2, next: 1, pgn: PGN }));
    let dts = drain_tx(&mut a, t(20));
    assert_eq!(dts.len(), 2);
    assert_eq!(dts[0].data()[0], 1);
    // Peer abort.
    a.handle_frame(t(30), &cm_frame(B, A, TpCm::Abort { reason: AbortReason::Resources, pgn: PGN }));
    assert!(matches!(
        a.poll_event(),
        Some(TransportEvent::Aborted { reason: AbortReason::Resources, by_peer: true, .. })
    ));
    assert!(drain_tx(&mut a, t(30)).is_empty());
}

#[test]
fn cts_during_transfer_and_retransmit() {
    let mut a = engine(A, immediate());
    a.send(6, PGN, A, B, &payload(30)).unwrap();
    a.poll_transmit(t(0)).unwrap();
    a.handle_frame(t(1), &cm_frame(B, A, TpCm::Cts { count: 5, next: 1, pgn: PGN }));
    let dts = drain_tx(&mut a, t(1));
    assert_eq!(dts.len(), 5);
    // Last packet padded with 0xFF: 30 bytes = 4*7 + 2.
    assert_eq!(&dts[4].data()[3..], &[0xFF; 5]);
    // Retransmit request of packet 2 after the last one.
    a.handle_frame(t(2), &cm_frame(B, A, TpCm::Cts { count: 1, next: 2, pgn: PGN }));
    let again = drain_tx(&mut a, t(2));
    assert_eq!(again[0].data(), dts[1].data());
    // CTS while a window is being sent: abort 4.
    a.handle_frame(t(3), &cm_frame(B, A, TpCm::Cts { count: 5, next: 1, pgn: PGN }));
    a.handle_frame(t(3), &cm_frame(B, A, TpCm::Cts { count: 5, next: 1, pgn: PGN }));
    let f = a.poll_transmit(t(3)).unwrap();
    assert_eq!(decode(&f).1, Some(TpCm::Abort { reason: AbortReason::CtsWhileTransfer, pgn: PGN }));
}

#[test]
fn full_event_queue_refuses_instead_of_losing() {
    let mut b = Transport::<4, 1>::new(TransportConfig::default()).unwrap();
    b.set_local_address(B, true);
    for src in [1u8, 2] {
        b.handle_frame(t(0), &cm_frame(src, 255, TpCm::Bam { size: 9, packets: 2, pgn: PGN }));
        b.handle_frame(t(0), &dt_frame(src, 255, 1, &[1; 7]));
        b.handle_frame(t(0), &dt_frame(src, 255, 2, &[2; 2]));
    }
    assert_eq!(b.stats().dropped_events, 2); // the second Received and its Aborted
    let ev = b.poll_event().unwrap();
    let TransportEvent::Received(r) = ev else { panic!() };
    assert_eq!(b.received_data(r.handle), Some(&[1, 1, 1, 1, 1, 1, 1, 2, 2][..]));
    assert!(b.poll_event().is_none());
    assert_eq!(b.received_data(r.handle), None);
    assert_eq!(b.sessions_in_use(), 0);
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let addr = prop_oneof![Just(A), Just(B), Just(255u8), any::<u8>()];
    let cm = (0u8..6, any::<u16>(), any::<u8>(), any::<u8>(), prop_oneof![Just(PGN.raw()), 0u32..0x40000]).prop_map(
        |(k, size, p, q, pgn)| {
            let pgn = Pgn::new(pgn).unwrap();
            let size = if k % 2 == 0 { size % 1800 } else { size };
            match k {
                0 => TpCm::Rts { size, packets: packets_for(usize::from(size)).min(255) as u8, max_per_cts: q, pgn },
                1 => TpCm::Cts { count: p, next: q, pgn },
                2 => TpCm::EndOfMsgAck { size, packets: p, pgn },
                3 => TpCm::Bam { size, packets: packets_for(usize::from(size)).min(255) as u8, pgn },
                4 => TpCm::Abort { reason: AbortReason::from_code(p), pgn },
                _ => TpCm::Rts { size, packets: p, max_per_cts: q, pgn },
            }
            .emit()
            .to_vec()
        },
    );
    let dt = (0u8..6, proptest::collection::vec(any::<u8>(), 0..7)).prop_map(|(s, mut v)| {
        v.insert(0, s);
        v
    });
    let raw = proptest::collection::vec(any::<u8>(), 0..=8);
    (addr.clone(), addr, prop_oneof![Just(Pgn::TP_CM), Just(Pgn::TP_DT)], prop_oneof![cm, dt, raw]).prop_map(
        |(s, d, pgn, data)| Frame::Can(CanFrame::new(J1939Id::new(7, pgn, s, d).unwrap().to_id(), &data).unwrap()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn cm_roundtrip(k in 0u8..5, size: u16, p: u8, q: u8, pgn in 0u32..0x40000) {
        let pgn = Pgn::new(pgn).unwrap();
        let cm = match k {
            0 => TpCm::Rts { size, packets: p, max_per_cts: q, pgn },
            1 => TpCm::Cts { count: p, next: q, pgn },
            2 => TpCm::EndOfMsgAck { size, packets: p, pgn },
            3 => TpCm::Bam { size, packets: p, pgn },
            _ => TpCm::Abort { reason: AbortReason::from_code(p), pgn },
        };
        prop_assert_eq!(TpCm::parse(&cm.emit()), Ok(cm));
    }

    #[test]
    fn random_frames_never_panic(frames in proptest::collection::vec((arb_frame(), 0u64..2000), 0..200)) {
        let mut e = Transport::<3, 4>::new(TransportConfig::default()).unwrap();
        e.set_local_address(A, true);
        e.set_local_address(B, true);
        let _ = e.send(6, PGN, A, 0x33, &[5; 40]);
        let _ = e.send(6, PGN, B, 255, &[5; 40]);
        let mut now = Instant::ZERO;
        for (f, dt) in frames {
            now += Duration::from_millis(dt);
            fuzz_step(&mut e, now, &f);
            prop_assert!(e.sessions_in_use() <= 3);
        }
        // Everything times out eventually; no session lingers.
        for _ in 0..10 {
            now += Duration::from_secs(2);
            fuzz_step(&mut e, now, &Frame::Can(CanFrame::new(ExtendedId::ZERO, &[]).unwrap()));
        }
        prop_assert_eq!(e.sessions_in_use(), 0);
        prop_assert_eq!(e.poll_timeout(), None);
    }
}

fn fuzz_step<const S: usize, const Q: usize>(e: &mut Transport<S, Q>, now: Instant, f: &Frame) {
    e.handle_frame(now, f);
    e.handle_timeout(now);
    while e.poll_transmit(now).is_some() {}
    while let Some(ev) = e.poll_event() {
        if let TransportEvent::Received(r) = ev {
            assert!(e.received_data(r.handle).unwrap().len() <= MAX_TP_SIZE);
        }
    }
}

#[test]
fn sending_needs_no_local_address_but_receiving_does() {
    let mut a = Tp::new(TransportConfig::default()).unwrap();
    let mut b = engine(B, TransportConfig::default());
    a.send(6, PGN, A, B, &payload(40)).unwrap();
    pump(&mut a, &mut b, t(0), 1000);
    assert!(matches!(drain_events(&mut a)[0].0, TransportEvent::Sent { .. }));
    // B sends to A, which is not local in `a`: no answer, B times out.
    b.send(6, PGN, B, A, &payload(40)).unwrap();
    let end = pump(&mut a, &mut b, t(0), 1000);
    assert_eq!(end, t(1250));
    assert!(matches!(
        drain_events(&mut b).last().unwrap().0,
        TransportEvent::Aborted { reason: AbortReason::Timeout, direction: Direction::Transmit, .. }
    ));
}
