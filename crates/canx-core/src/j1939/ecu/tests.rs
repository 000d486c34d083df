use super::*;
use crate::j1939::sim_tests::{Faults, Sim};
use std::vec::Vec;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

const VIN: &[u8] = b"1M8GDM9AXKP042788*";

fn ecu(name: u64, addr: u8) -> Ecu<'static, 4> {
    Ecu::new(EcuConfig::new(Name::from_u64(name), addr)).unwrap()
}

/// Two claimed ECUs at 0x00 (engine) and 0xF9 (tool) on a lossless bus.
fn pair() -> Sim<Ecu<'static, 4>> {
    let mut sim = Sim::new(vec![ecu(10, 0x00), ecu(20, 0xF9)], 1, Faults::default());
    sim.nodes[0].start(t(0));
    sim.nodes[1].start(t(0));
    assert!(sim.run(t(1000), 1000));
    assert_eq!(sim.nodes[0].address(), Some(0x00));
    assert_eq!(sim.nodes[1].address(), Some(0xF9));
    sim.logs.iter_mut().for_each(Vec::clear);
    sim
}

fn frames_of(sim: &mut Sim<Ecu<'static, 4>>, node: usize) -> Vec<CanFrame> {
    let now = sim.now;
    let mut v = Vec::new();
    while let Some(f) = sim.nodes[node].poll_transmit(now) {
        v.push(f);
    }
    v
}

#[test]
fn nothing_sent_before_claim() {
    let mut e = ecu(1, 0x10);
    assert_eq!(e.send(6, Pgn::EEC1, 255, &[0; 8]), Err(EcuError::NoAddress));
    e.start(t(0));
    assert_eq!(e.poll_transmit(t(0)).unwrap().raw_id(), 0x18EE_FF10);
    assert_eq!(e.request(t(1), Pgn::ET1, 255), Err(EcuError::NoAddress));
    e.handle_timeout(t(250));
    assert_eq!(e.address(), Some(0x10));
    assert!(e.send(3, Pgn::EEC1, 255, &[0; 8]).is_ok());
    assert_eq!(e.poll_transmit(t(250)).unwrap().raw_id(), 0x0CF0_0410);
    assert!(matches!(e.poll_event(), Some(EcuEvent::Address(ClaimEvent::Table(_)))));
}

#[test]
fn nack_for_unsupported_specific_request_only() {
    let mut sim = pair();
    let now = sim.now;
    sim.nodes[0].handle_frame(now, &Frame::Can(Request { pgn: Pgn::VEHICLE_IDENTIFICATION }.frame(0xF9, 0x00)));
    let f = frames_of(&mut sim, 0);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].raw_id(), 0x18E8_FF00);
    assert_eq!(f[0].data(), &[0x01, 0xFF, 0xFF, 0xFF, 0xF9, 0xEC, 0xFE, 0x00]);
    // Global request: no NACK.
    sim.nodes[0].handle_frame(now, &Frame::Can(Request { pgn: Pgn::VEHICLE_IDENTIFICATION }.frame(0xF9, 0xFF)));
    assert!(frames_of(&mut sim, 0).is_empty());
    // Specific request to someone else: not for us.
    sim.nodes[0].handle_frame(now, &Frame::Can(Request { pgn: Pgn::VEHICLE_IDENTIFICATION }.frame(0xF9, 0x01)));
    assert!(frames_of(&mut sim, 0).is_empty());
}

#[test]
fn registered_data_single_frame_bam_and_rts() {
    let mut sim = pair();
    sim.nodes[0].register(Pgn::ET1, Responder::Data(&[0x7D, 0x50, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])).unwrap();
    sim.nodes[0].register(Pgn::VEHICLE_IDENTIFICATION, Responder::Data(VIN)).unwrap();
    let now = sim.now;
    // Single frame, PDU2: to global.
    sim.nodes[0].handle_frame(now, &Frame::Can(Request { pgn: Pgn::ET1 }.frame(0xF9, 0x00)));
    assert_eq!(frames_of(&mut sim, 0)[0].raw_id(), 0x18FE_EE00);
    // Long reply after a global request: BAM.
    sim.nodes[0].handle_frame(now, &Frame::Can(Request { pgn: Pgn::VEHICLE_IDENTIFICATION }.frame(0xF9, 0xFF)));
    let f = frames_of(&mut sim, 0);
    assert_eq!(f[0].raw_id(), 0x18EC_FF00);
    assert_eq!(f[0].data()[0], 32);
    // Long reply after a specific request: RTS to the requester (the BAM of
    // the same PGN from the same source runs on another pair).
    sim.nodes[0].handle_frame(now, &Frame::Can(Request { pgn: Pgn::VEHICLE_IDENTIFICATION }.frame(0xF9, 0x00)));
    let f = frames_of(&mut sim, 0);
    assert_eq!(f[0].raw_id(), 0x18EC_F900);
    assert_eq!(f[0].data()[0], 16);
}

#[test]
fn request_roundtrip_by_tp_and_timeouts() {
    let mut sim = pair();
    sim.nodes[0].register(Pgn::VEHICLE_IDENTIFICATION, Responder::Data(VIN)).unwrap();
    let now = sim.now;
    sim.nodes[1].request(now, Pgn::VEHICLE_IDENTIFICATION, 0x00).unwrap();
    assert!(sim.run(now + Duration::from_secs(5), 10_000));
    let log = &sim.logs[1];
    let got = log.iter().find_map(|(e, d)| matches!(e, EcuEvent::Received(_)).then(|| d.clone())).flatten();
    assert_eq!(got.as_deref(), Some(VIN));
    assert!(log.iter().any(|(e, _)| *e
        == EcuEvent::RequestDone {
            pgn: Pgn::VEHICLE_IDENTIFICATION,
            destination: 0,
            outcome: RequestOutcome::Answered
        }));

    // NACK ends a request.
    let now = sim.now;
    sim.nodes[1].request(now, Pgn::DM2, 0x00).unwrap();
    assert!(sim.run(now + Duration::from_secs(5), 10_000));
    assert!(sim.logs[1].iter().any(|(e, _)| matches!(
        e,
        EcuEvent::RequestDone { pgn: Pgn::DM2, outcome: RequestOutcome::Acknowledged(AckControl::Nack), .. }
    )));

    // A global request nobody answers times out after 1250 ms.
    let now = sim.now;
    sim.nodes[1].request(now, Pgn::DM2, 0xFF).unwrap();
    assert_eq!(sim.nodes[1].poll_timeout(), Some(now + Duration::from_millis(1250)));
    assert!(sim.run(now + Duration::from_secs(5), 10_000));
    assert!(sim.logs[1].iter().any(|(e, _)| matches!(
        e,
        EcuEvent::RequestDone { pgn: Pgn::DM2, destination: 0xFF, outcome: RequestOutcome::TimedOut }
    )));
    assert_eq!(sim.now, now + Duration::from_millis(1250));
}

#[test]
fn application_responder() {
    let mut sim = pair();
    sim.nodes[0].register(Pgn::DM11, Responder::Application).unwrap();
    let now = sim.now;
    sim.nodes[1].request(now, Pgn::DM11, 0x00).unwrap();
    sim.run(now + Duration::from_millis(10), 100);
    let req = sim.logs[0].iter().find_map(|(e, _)| match e {
        EcuEvent::Request { pgn, requester, global } => Some((*pgn, *requester, *global)),
        _ => None,
    });
    assert_eq!(req, Some((Pgn::DM11, 0xF9, false)));
    sim.nodes[0].acknowledge(AckControl::Ack, Pgn::DM11, 0xF9).unwrap();
    assert!(sim.run(now + Duration::from_secs(2), 1000));
    assert!(sim.logs[1].iter().any(|(e, _)| matches!(
        e,
        EcuEvent::RequestDone { pgn: Pgn::DM11, outcome: RequestOutcome::Acknowledged(AckControl::Ack), .. }
    )));
    assert_eq!(sim.nodes[0].register(Pgn::DM1, Responder::Data(&[0; 1786])), Ok(()));
}

/// Two requests for one PGN that one TP transfer answers: the first ends
/// `Answered`, the second times out (it used to wait for good, its slot
/// taken: found by the `j1939_ecu` fuzz target). Nothing is left pending.
#[test]
fn two_requests_answered_by_one_transfer_both_end() {
    let mut sim = pair();
    sim.nodes[0].register(Pgn::SOFTWARE_IDENTIFICATION, Responder::Application).unwrap();
    let now = sim.now;
    sim.nodes[1].request(now, Pgn::SOFTWARE_IDENTIFICATION, 0x00).unwrap();
    sim.nodes[1].request(now, Pgn::SOFTWARE_IDENTIFICATION, 0x00).unwrap();
    sim.run(now + Duration::from_millis(10), 100);
    sim.nodes[0].respond(Pgn::SOFTWARE_IDENTIFICATION, 0xF9, false, &[0x2A; 20]).unwrap();
    assert!(sim.run(now + Duration::from_secs(10), 10_000));
    let outcomes: Vec<RequestOutcome> = sim.logs[1]
        .iter()
        .filter_map(|(e, _)| match e {
            EcuEvent::RequestDone { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes, [RequestOutcome::Answered, RequestOutcome::TimedOut]);
    assert!(sim.nodes[1].pending.iter().all(Option::is_none));
    assert_eq!(sim.nodes[1].poll_timeout(), None);
}

/// An answer that starts by TP and then stops: the request ends (the
/// transport's T1/T2 abort, or the request timeout) instead of waiting for good.
#[test]
fn a_tp_answer_that_stops_ends_the_request() {
    let mut sim = pair();
    let now = sim.now;
    sim.nodes[1].request(now, Pgn::SOFTWARE_IDENTIFICATION, 0x00).unwrap();
    // Node 0 never answers; a third party at 0x00's address sends only the RTS.
    let rts = TpCm::Rts { size: 20, packets: 3, max_per_cts: 255, pgn: Pgn::SOFTWARE_IDENTIFICATION };
    let f = frame(7, Pgn::TP_CM, 0x00, 0xF9, &rts.emit());
    sim.nodes[1].handle_frame(now, &Frame::Can(f));
    while sim.nodes[1].poll_transmit(now).is_some() {}
    let mut t = now;
    let mut done = None;
    for _ in 0..100 {
        let Some(next) = sim.nodes[1].poll_timeout() else { break };
        assert!(next > t);
        t = next;
        sim.nodes[1].handle_timeout(t);
        while sim.nodes[1].poll_transmit(t).is_some() {}
        while let Some(e) = sim.nodes[1].poll_event() {
            if let EcuEvent::RequestDone { outcome, .. } = e {
                assert!(done.replace(outcome).is_none(), "two RequestDone");
            }
        }
    }
    assert!(matches!(done, Some(RequestOutcome::TransportAborted(_) | RequestOutcome::TimedOut)), "{done:?}");
    assert!(sim.nodes[1].pending.iter().all(Option::is_none));
}

#[test]
fn commanded_address_by_tp() {
    let mut sim = pair();
    let now = sim.now;
    sim.nodes[1].command_address(Name::from_u64(10), 0x33, 0xFF).unwrap();
    assert!(sim.run(now + Duration::from_secs(2), 1000));
    assert_eq!(sim.nodes[0].address(), Some(0x33));
    assert_eq!(sim.nodes[1].table().address_of(Name::from_u64(10)), Some(0x33));
    assert_eq!(sim.nodes[1].table().name_at(0x00), None);
    // The transport follows the new address: RTS/CTS to 0x33 works.
    let now = sim.now;
    sim.nodes[1].send(6, Pgn::PROPRIETARY_A, 0x33, &[9; 20]).unwrap();
    assert!(sim.run(now + Duration::from_secs(2), 1000));
    assert!(sim.logs[0].iter().any(|(e, d)| matches!(e, EcuEvent::Received(_)) && d.as_deref() == Some(&[9; 20][..])));
}

#[test]
fn single_frame_messages_are_events() {
    let mut sim = pair();
    let now = sim.now;
    sim.nodes[0].send(3, Pgn::EEC1, 0xFF, &[0xFF, 0xFF, 0xFF, 0x40, 0x38, 0xFF, 0xFF, 0xFF]).unwrap();
    sim.nodes[0].send(6, Pgn::PROPRIETARY_A, 0x77, &[1]).unwrap(); // not for node 1
    assert!(sim.run(now + Duration::from_secs(1), 100));
    let msgs: Vec<_> = sim.logs[1]
        .iter()
        .filter_map(|(e, d)| match e {
            EcuEvent::Message { id, .. } => Some((id.pgn, id.priority, d.clone().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(msgs, [(Pgn::EEC1, 3, std::vec![0xFF, 0xFF, 0xFF, 0x40, 0x38, 0xFF, 0xFF, 0xFF])]);
}

#[test]
fn etp_between_ecus_and_large_answers() {
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| std::vec![0u8; 120_000]).collect();
    let mut it = bufs.iter_mut();
    let (b0, b1, b2, b3) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let e0: Ecu<'_, 4, 8, 2> =
        Ecu::with_etp_buffers(EcuConfig::new(Name::from_u64(10), 0x00), [&mut b0[..], &mut b1[..]]).unwrap();
    let e1: Ecu<'_, 4, 8, 2> =
        Ecu::with_etp_buffers(EcuConfig::new(Name::from_u64(20), 0xF9), [&mut b2[..], &mut b3[..]]).unwrap();
    let mut sim = Sim::new(vec![e0, e1], 5, Faults::default());
    sim.nodes[0].start(t(0));
    sim.nodes[1].start(t(0));
    assert!(sim.run(t(1000), 1000));
    // Direct send above 1785 bytes: ETP.
    sim.nodes[0].send(6, Pgn::PROPRIETARY_A, 0xF9, &big).unwrap();
    assert_eq!(sim.nodes[0].send(6, Pgn::PROPRIETARY_A, 0xFF, &big), Err(EcuError::TooLong));
    let now = sim.now;
    assert!(sim.run(now + Duration::from_secs(10), 100_000));
    let got =
        sim.logs[1].iter().find_map(|(e, d)| matches!(e, EcuEvent::ReceivedExtended(_)).then(|| d.clone())).flatten();
    assert!(got.as_deref() == Some(&big[..]));
    // A request answered with 3000 bytes goes by ETP to the requester.
    let answer: &'static [u8] = std::vec![7u8; 3000].leak();
    sim.nodes[0].register(Pgn::ECU_IDENTIFICATION, Responder::Data(answer)).unwrap();
    let now = sim.now;
    sim.nodes[1].request(now, Pgn::ECU_IDENTIFICATION, 0x00).unwrap();
    assert!(sim.run(now + Duration::from_secs(10), 100_000));
    assert!(sim.logs[1]
        .iter()
        .any(|(e, d)| matches!(e, EcuEvent::ReceivedExtended(r) if r.pgn == Pgn::ECU_IDENTIFICATION)
            && d.as_deref() == Some(answer)));
    assert!(sim.logs[1].iter().any(|(e, _)| matches!(
        e,
        EcuEvent::RequestDone { pgn: Pgn::ECU_IDENTIFICATION, outcome: RequestOutcome::Answered, .. }
    )));
    assert_eq!(sim.nodes[0].stats().etp.rejected_sends, 0);
}

#[test]
fn etp_refused_without_buffers() {
    let mut sim = pair();
    let now = sim.now;
    // Ecu<_, 4> has no ETP session at all: the send is refused locally.
    assert_eq!(
        sim.nodes[1].send(6, Pgn::PROPRIETARY_A, 0x00, &[0; 2000]),
        Err(EcuError::Transport(crate::j1939::transport::SendError::NoSession))
    );
    // An ETP RTS from elsewhere is answered with Abort(2).
    let rts = crate::j1939::etp::EtpCm::Rts { size: 2000, pgn: Pgn::PROPRIETARY_A };
    let f = frame(6, Pgn::ETP_CM, 0xF9, 0x00, &rts.emit());
    sim.nodes[0].handle_frame(now, &Frame::Can(f));
    let out = frames_of(&mut sim, 0);
    assert_eq!(out[0].raw_id(), 0x1CC8_F900);
    assert_eq!(out[0].data()[..2], [0xFF, 2]);
}

#[test]
fn request_address_claims_refreshes_table() {
    let mut sim = pair();
    let mut late = ecu(30, 0x50);
    // A newcomer without an address asks from 254; both answer.
    late.request_address_claims().unwrap();
    assert_eq!(late.poll_transmit(sim.now).unwrap().raw_id(), 0x18EA_FFFE);
    sim.add(late);
    let now = sim.now;
    sim.nodes[2].request_address_claims().unwrap();
    assert!(sim.run(now + Duration::from_secs(1), 100));
    assert_eq!(sim.nodes[2].table().len(), 2);
    assert_eq!(sim.nodes[2].table().name_at(0xF9), Some(Name::from_u64(20)));
}

#[test]
fn dm1_with_many_dtcs_by_bam_and_dm11_clear() {
    use crate::j1939::dm::{lamp, DmAnswer, DmMessage, DtcStore};
    let mut sim = pair();
    let mut store = DtcStore::<8>::new();
    store.activate(190, 2).unwrap();
    store.activate(110, 0).unwrap();
    store.activate(174, 3).unwrap();
    store.lamps.amber_warning = lamp::ON;
    let mut buf = [0u8; 64];
    let n = store.emit(false, &mut buf).unwrap();
    assert_eq!(n, 14);
    // Broadcast: more than one DTC goes by BAM.
    sim.nodes[0].send(6, Pgn::DM1, 0xFF, &buf[..n]).unwrap();
    let now = sim.now;
    assert!(sim.run(now + Duration::from_secs(2), 1000));
    let got = sim.logs[1]
        .iter()
        .find_map(|(e, d)| {
            matches!(e, EcuEvent::Received(r) if r.pgn == Pgn::DM1 && r.destination == 0xFF).then(|| d.clone())
        })
        .flatten()
        .unwrap();
    let dm1 = DmMessage::parse(&got).unwrap();
    assert_eq!(dm1.lamps.amber_warning, lamp::ON);
    assert_eq!(dm1.dtcs().map(|d| (d.spn, d.fmi)).collect::<Vec<_>>(), [(190, 2), (110, 0), (174, 3)]);

    // DM11 requested by the tool: the application clears and ACKs.
    sim.nodes[0].register(Pgn::DM11, Responder::Application).unwrap();
    let now = sim.now;
    sim.nodes[1].request(now, Pgn::DM11, 0x00).unwrap();
    sim.run(now + Duration::from_millis(5), 100);
    let (pgn, requester) = sim.logs[0]
        .iter()
        .rev()
        .find_map(|(e, _)| match e {
            EcuEvent::Request { pgn, requester, .. } => Some((*pgn, *requester)),
            _ => None,
        })
        .unwrap();
    assert_eq!(store.handle_request(pgn, &mut buf), Some(Ok(DmAnswer::Ack)));
    sim.nodes[0].acknowledge(AckControl::Ack, pgn, requester).unwrap();
    assert!(sim.run(now + Duration::from_secs(2), 1000));
    assert_eq!(store.active().count(), 0);
    assert!(sim.logs[1].iter().any(|(e, _)| matches!(
        e,
        EcuEvent::RequestDone { pgn: Pgn::DM11, outcome: RequestOutcome::Acknowledged(AckControl::Ack), .. }
    )));
    // DM1 with no DTC is a single frame again.
    let n = store.emit(false, &mut buf).unwrap();
    assert_eq!(&buf[..n], &[0x00, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF]);
}
